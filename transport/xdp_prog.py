"""The XDP program that steers the service's UDP datagrams to its AF_XDP sockets and leaves every
other frame (ARP, neighbour discovery, other ports, other protocols) to the kernel.

The program is a few dozen eBPF instructions, written here (the instruction set: the Linux
kernel's Documentation/bpf/standardization/instruction-set.rst; the XDP context, ``struct
xdp_md``, and the helper ``bpf_redirect_map``: include/uapi/linux/bpf.h), so that nothing has to
be compiled to BPF on the host. For each frame: Ethernet (at most one 802.1Q tag), then IPv4 (any
header length; no later fragment) or IPv6 (UDP right after the fixed header, or after the fragment
header of a first fragment), then UDP; a datagram (or a datagram's first fragment) to the
service's port is redirected to the AF_XDP socket bound to the receive queue it arrived on
(``bpf_redirect_map`` on an ``XSKMAP`` indexed by ``rx_queue_index``), and when no socket is
bound there, the map lookup fails and the frame gets the program's ``fallback`` action (default
``XDP_PASS``: the kernel's own stack). Everything else gets ``XDP_PASS``. The program checks
every packet access against ``data_end`` first, as the verifier demands; checksums and lengths are
left to the service (``rtdecoder.kernels.frames``), which counts what is wrong with a frame.

Maps and programs are created and loaded with libbpf (``bpf_map_create``, ``bpf_prog_load``,
``bpf_xdp_attach``; Debian's libbpf1) through ctypes. Needs CAP_BPF and CAP_NET_ADMIN (root).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
BPF_MAP_TYPE_XSKMAP = 17
BPF_PROG_TYPE_XDP = 6
BPF_FUNC_REDIRECT_MAP = 51
BPF_PSEUDO_MAP_FD = 1
XDP_FLAGS_UPDATE_IF_NOEXIST = 1
XDP_FLAGS_SKB_MODE = 2
XDP_FLAGS_DRV_MODE = 4
XDP_MODES = {"skb": XDP_FLAGS_SKB_MODE, "native": XDP_FLAGS_DRV_MODE}
"""``attach``'s modes: generic (the kernel's socket buffers, any driver) or native (in the
driver, before a socket buffer exists)."""

# struct xdp_md (include/uapi/linux/bpf.h): u32 data, data_end, data_meta, ingress_ifindex, rx_queue_index
XDP_MD_DATA, XDP_MD_DATA_END, XDP_MD_RX_QUEUE = 0, 4, 16

# eBPF opcodes (class | size/source | mode/op)
LDX_W, LDX_H, LDX_B = 0x61, 0x69, 0x71
MOV64_X, MOV64_K = 0xBF, 0xB7
ADD64_X, ADD64_K = 0x0F, 0x07
AND64_K, LSH64_K = 0x57, 0x67
JA, JEQ_K, JNE_K, JGT_X, JLT_K = 0x05, 0x15, 0x55, 0x2D, 0xA5
LD_IMM64 = 0x18
CALL, EXIT = 0x85, 0x95
LICENSE = b"Dual MIT/GPL"


def _le16(big_endian_value: int) -> int:
    """A 16-bit field as the program's little-endian half-word load reads it."""
    return struct.unpack("<H", struct.pack(">H", big_endian_value))[0]


def program(port: int, map_fd: int, fallback: int = XDP_PASS) -> bytes:
    """The instructions (``struct bpf_insn``, 8 bytes each) of the redirect program.

    Args:
        port: the service's UDP port.
        map_fd: the ``XSKMAP``'s file descriptor.
        fallback: the action for a service datagram when no socket is bound to its queue.

    Raises:
        ValueError: a port or action out of range.
    """
    if not 0 < port < 65536 or fallback not in (XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX):
        raise ValueError(f"port {port} must be 1..65535 and fallback {fallback} an XDP action")
    code: list[tuple] = []  # (opcode, dst, src, off or label, imm)
    labels: dict[str, int] = {}

    def at(label: str) -> None:
        labels[label] = len(code)

    def op(opcode: int, dst: int = 0, src: int = 0, off=0, imm: int = 0) -> None:
        code.append((opcode, dst, src, off, imm))

    op(MOV64_X, 6, 1)                               # r6 = ctx
    op(LDX_W, 2, 6, XDP_MD_DATA)                    # r2 = data
    op(LDX_W, 3, 6, XDP_MD_DATA_END)                # r3 = data_end
    op(MOV64_X, 4, 2)
    op(ADD64_K, 4, imm=14)
    op(JGT_X, 4, 3, "pass")                         # the Ethernet header
    op(LDX_H, 5, 2, 12)                             # r5 = ethertype
    op(MOV64_K, 7, imm=14)                          # r7 = where the IP header starts
    op(JNE_K, 5, off="l3", imm=_le16(0x8100))
    op(MOV64_X, 4, 2)                               # one 802.1Q tag
    op(ADD64_K, 4, imm=18)
    op(JGT_X, 4, 3, "pass")
    op(LDX_H, 5, 2, 16)
    op(MOV64_K, 7, imm=18)
    at("l3")
    op(ADD64_X, 2, 7)                               # r2 = the IP header
    op(JEQ_K, 5, off="ipv4", imm=_le16(0x0800))
    op(JEQ_K, 5, off="ipv6", imm=_le16(0x86DD))
    op(JA, off="pass")
    at("ipv4")
    op(MOV64_X, 4, 2)
    op(ADD64_K, 4, imm=20)
    op(JGT_X, 4, 3, "pass")
    op(LDX_B, 5, 2, 9)                              # protocol
    op(JNE_K, 5, off="pass", imm=17)
    op(LDX_H, 5, 2, 6)                              # flags and fragment offset
    op(AND64_K, 5, imm=0xFF1F)                      # the offset (little-endian load)
    op(JNE_K, 5, off="pass", imm=0)                 # a later fragment: no UDP header here
    op(LDX_B, 5, 2, 0)
    op(AND64_K, 5, imm=0x0F)
    op(LSH64_K, 5, imm=2)                           # header length, bytes
    op(JLT_K, 5, off="pass", imm=20)
    op(ADD64_X, 2, 5)                               # r2 = the UDP header
    op(JA, off="udp")
    at("ipv6")
    op(MOV64_X, 4, 2)
    op(ADD64_K, 4, imm=40)
    op(JGT_X, 4, 3, "pass")
    op(LDX_B, 5, 2, 6)                              # next header
    op(ADD64_K, 2, imm=40)
    op(JEQ_K, 5, off="udp", imm=17)
    op(JNE_K, 5, off="pass", imm=44)                # a fragment header: the first fragment's UDP header
    op(MOV64_X, 4, 2)
    op(ADD64_K, 4, imm=8)
    op(JGT_X, 4, 3, "pass")
    op(LDX_B, 5, 2, 0)                              # its next header
    op(JNE_K, 5, off="pass", imm=17)
    op(LDX_H, 5, 2, 2)                              # offset 0, M set
    op(JNE_K, 5, off="pass", imm=_le16(1))
    op(ADD64_K, 2, imm=8)
    at("udp")
    op(MOV64_X, 4, 2)
    op(ADD64_K, 4, imm=8)
    op(JGT_X, 4, 3, "pass")
    op(LDX_H, 5, 2, 2)                              # destination port
    op(JNE_K, 5, off="pass", imm=_le16(port))
    op(LDX_W, 2, 6, XDP_MD_RX_QUEUE)                # r2 = the receive queue: the map's key
    op(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd)   # r1 = the XSKMAP (two instruction slots)
    op(0, 0, 0, 0, 0)
    op(MOV64_K, 3, imm=fallback)                    # r3 = flags: the action if no socket is bound
    op(CALL, imm=BPF_FUNC_REDIRECT_MAP)
    op(EXIT)
    at("pass")
    op(MOV64_K, 0, imm=XDP_PASS)
    op(EXIT)
    out = bytearray()
    for i, (opcode, dst, src, off, imm) in enumerate(code):
        if isinstance(off, str):
            off = labels[off] - (i + 1)
        out += struct.pack("<BBhi", opcode, (src << 4) | dst, off, imm)
    return bytes(out)


class _ProgLoadOpts(ctypes.Structure):
    """libbpf's ``struct bpf_prog_load_opts`` (tools/lib/bpf/bpf.h), up to the verifier log."""

    _fields_ = [("sz", ctypes.c_size_t), ("attempts", ctypes.c_int), ("expected_attach_type", ctypes.c_int),
                ("prog_btf_fd", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32), ("prog_ifindex", ctypes.c_uint32),
                ("kern_version", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
                ("attach_prog_fd", ctypes.c_uint32), ("attach_btf_obj_fd", ctypes.c_uint32),
                ("fd_array", ctypes.c_void_p), ("func_info", ctypes.c_void_p), ("func_info_cnt", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_void_p),
                ("line_info_cnt", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32), ("log_buf", ctypes.c_char_p)]


class _TestRunOpts(ctypes.Structure):
    """libbpf's ``struct bpf_test_run_opts`` (tools/lib/bpf/bpf.h)."""

    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_void_p),
                ("ctx_out", ctypes.c_void_p), ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32)]


def libbpf() -> ctypes.CDLL:
    """libbpf, with the signatures used here.

    Raises:
        OSError: libbpf is not installed (Debian: ``apt-get install libbpf1``).
    """
    path = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(path, use_errno=True)
    except OSError as e:
        raise OSError(f"libbpf is not installed ({e}): apt-get install libbpf1") from None
    lib.bpf_map_create.restype = ctypes.c_int
    lib.bpf_map_create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                                   ctypes.c_void_p]
    lib.bpf_prog_load.restype = ctypes.c_int
    lib.bpf_prog_load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                  ctypes.POINTER(_ProgLoadOpts)]
    lib.bpf_prog_test_run_opts.restype = ctypes.c_int
    lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(_TestRunOpts)]
    lib.bpf_xdp_attach.restype = ctypes.c_int
    lib.bpf_xdp_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p]
    lib.bpf_xdp_detach.restype = ctypes.c_int
    lib.bpf_xdp_detach.argtypes = [ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p]
    return lib


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise OSError(-rc, f"{what}: {os.strerror(-rc)}" + (" (needs root: CAP_BPF, CAP_NET_ADMIN)"
                                                             if -rc in (errno.EPERM, errno.EACCES) else ""))
    return rc


class RedirectProgram:
    """The redirect program for ``port``, loaded, with its ``XSKMAP`` of ``queues`` entries.

    Raises:
        OSError: libbpf is missing, or the kernel refused the map or the program (the message
            holds the verifier's log).
    """

    def __init__(self, port: int, queues: int = 64, fallback: int = XDP_PASS):
        self._lib = lib = libbpf()
        self.port = port
        self.map_fd = _check(lib.bpf_map_create(BPF_MAP_TYPE_XSKMAP, b"rtd_xsks", 4, 4, queues, None),
                             "creating the XSKMAP")
        insns = program(port, self.map_fd, fallback)
        log = ctypes.create_string_buffer(1 << 16)
        opts = _ProgLoadOpts(sz=ctypes.sizeof(_ProgLoadOpts), log_level=1, log_size=len(log),
                             log_buf=ctypes.cast(log, ctypes.c_char_p))
        rc = lib.bpf_prog_load(BPF_PROG_TYPE_XDP, b"rtd_redirect", LICENSE, insns, len(insns) // 8,
                               ctypes.byref(opts))
        if rc < 0:
            os.close(self.map_fd)
            raise OSError(-rc, f"the kernel refused the XDP program: {os.strerror(-rc)}\n"
                               f"{log.value.decode(errors='replace')}")
        self.prog_fd = rc
        self.attached: list[tuple[int, int]] = []

    def test_run(self, frame: bytes) -> int:
        """Run the program on ``frame`` in the kernel (``BPF_PROG_TEST_RUN``): its XDP action."""
        buf = ctypes.create_string_buffer(frame, len(frame))
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.cast(buf, ctypes.c_void_p),
                            data_size_in=len(frame), repeat=1)
        _check(self._lib.bpf_prog_test_run_opts(self.prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
        return int(opts.retval)

    def attach(self, ifindex: int, mode: str = "skb") -> None:
        """Attach to interface ``ifindex`` in ``mode`` (``XDP_MODES``); not over another program."""
        _check(self._lib.bpf_xdp_attach(ifindex, self.prog_fd, XDP_MODES[mode] | XDP_FLAGS_UPDATE_IF_NOEXIST, None),
               f"attaching the XDP program to interface {ifindex} in {mode} mode")
        self.attached.append((ifindex, XDP_MODES[mode]))

    def close(self) -> None:
        """Detach from every interface and release the program and the map."""
        for ifindex, flags in self.attached:
            self._lib.bpf_xdp_detach(ifindex, flags, None)
        self.attached = []
        for fd in (getattr(self, "prog_fd", -1), self.map_fd):
            if fd >= 0:
                os.close(fd)
        self.prog_fd = self.map_fd = -1

    def __enter__(self) -> "RedirectProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
