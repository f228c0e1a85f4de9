"""AF_XDP sockets: a UMEM (one memory area of equal frames, shared with the kernel) and its four
rings (fill, completion, RX, TX), set up from Python through the kernel's AF_XDP interface
(include/uapi/linux/if_xdp.h; Documentation/networking/af_xdp.rst), for a compiled loop to poll.

``XskSocket(ifindex, queue)`` allocates the UMEM once (on huge pages where the host has them:
``allocate_umem``), registers it
(``XDP_UMEM_REG``), sizes the rings, maps them (``XDP_MMAP_OFFSETS`` and the four page offsets),
binds to the interface's queue in copy or zero-copy mode, fills the fill ring with every RX frame,
and puts the socket in an ``XSKMAP`` (``xdp_prog.RedirectProgram``) under its queue number, so
the redirect program sends it the service's datagrams. Each ring is exposed as numpy views of the
shared memory: ``producer``/``consumer`` (uint32, one element) and ``desc`` (the ring's entries:
uint64 frame addresses for fill and completion, ``(addr u64, len u32, options u32)`` for RX and
TX as a ``(size, 2)`` uint64 array whose second word holds ``len | options << 32``). A consumer
reads ``producer`` with acquire semantics and publishes ``consumer`` with release semantics, and
the other way round for a producer (af_xdp.rst, "Rings").

``rx_frames`` and ``send`` are Python-level helpers for tests and set-up; the service's loop
does the same in compiled code.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct

import numpy as np

AF_XDP = 44
SOL_XDP = 283
XDP_MMAP_OFFSETS, XDP_RX_RING, XDP_TX_RING, XDP_UMEM_REG = 1, 2, 3, 4
XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING = 5, 6
XDP_COPY, XDP_ZEROCOPY, XDP_USE_NEED_WAKEUP = 1 << 1, 1 << 2, 1 << 3
XDP_PGOFF_RX_RING, XDP_PGOFF_TX_RING = 0, 0x80000000
XDP_UMEM_PGOFF_FILL_RING, XDP_UMEM_PGOFF_COMPLETION_RING = 0x100000000, 0x180000000
XDP_RING_NEED_WAKEUP = 1
MODES = {"copy": XDP_COPY, "zerocopy": XDP_ZEROCOPY, "auto": 0}
"""``bind`` modes: copy (any driver, the kernel copies each frame), zero-copy (the driver DMAs into
the UMEM; drivers that support it), or whichever the kernel picks."""
FRAME = 4096
"""Bytes per UMEM frame (one page: any MTU up to about 3,500 bytes with the headroom)."""
HUGE_PAGE = 2 << 20
MAP_HUGETLB = 0x40000  # include/uapi/asm-generic/mman-common.h (not in Python's mmap module)


def allocate_umem(size: int, huge_pages: bool = True) -> tuple[mmap.mmap, str]:
    """An anonymous mapping of ``size`` bytes for a UMEM, and what backs it: ``"hugetlb"`` (2 MiB
    pages from the kernel's reserved pool, vm.nr_hugepages; ``size`` rounded up to them),
    ``"thp"`` (4 KiB pages with transparent huge pages asked for, ``madvise(MADV_HUGEPAGE)``, which
    the kernel grants where it can), or ``"4k"`` (``huge_pages`` false). Fewer, larger pages mean
    fewer TLB misses when the loop touches frames all over the UMEM."""
    if huge_pages:
        try:
            rounded = -(-size // HUGE_PAGE) * HUGE_PAGE
            return mmap.mmap(-1, rounded, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB), "hugetlb"
        except OSError:  # no reserved huge pages free (ENOMEM), or no hugetlbfs
            pass
    m = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge_pages and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
            return m, "thp"
        except OSError:
            pass
    return m, "4k"

_libc = ctypes.CDLL(None, use_errno=True)


class Ring:
    """One mapped ring: ``producer``, ``consumer`` and ``flags`` (uint32 views of one element) and
    ``desc`` (its entries), ``size`` entries (a power of two)."""

    def __init__(self, fd: int, pgoff: int, offsets: tuple[int, int, int, int], size: int, entry: int):
        prod, cons, desc, flags = offsets
        self.size = size
        self.map = mmap.mmap(fd, desc + size * entry, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                             offset=pgoff)
        raw = np.frombuffer(self.map, np.uint8)
        self.producer = raw[prod:prod + 4].view(np.uint32)
        self.consumer = raw[cons:cons + 4].view(np.uint32)
        self.flags = raw[flags:flags + 4].view(np.uint32)
        words = raw[desc:desc + size * entry].view(np.uint64)
        self.desc = words.reshape(size, entry // 8) if entry > 8 else words

    def close(self) -> None:
        """Unmap, or, while views of it are still held (a loop's arguments), leave the mapping to
        go with the last of them."""
        self.producer = self.consumer = self.flags = self.desc = None
        try:
            self.map.close()
        except BufferError:
            pass


class XskSocket:
    """One AF_XDP socket on ``queue`` of interface ``ifindex``, its UMEM of ``frames`` frames
    (half for receiving, half for sending) and its four rings of ``ring`` entries each.

    Attributes:
        umem: uint8 ``(frames * FRAME,)``, the frames; frame ``i`` at ``i * FRAME``.
        fill, completion, rx, tx: ``Ring``.
        mode: ``"copy"`` or ``"zerocopy"``: what the kernel granted.
        pages: what backs the UMEM (``allocate_umem``): ``"hugetlb"``, ``"thp"`` or ``"4k"``.

    Raises:
        OSError: the kernel refused a step (the message names it; EPERM needs root, EOPNOTSUPP a
            mode the driver lacks, EBUSY a queue another socket holds).
    """

    def __init__(self, ifindex: int, queue: int = 0, frames: int = 4096, ring: int = 2048, mode: str = "auto",
                 xskmap_fd: int | None = None, huge_pages: bool = True):
        if frames & (frames - 1) or ring & (ring - 1):
            raise ValueError("frames and ring must be powers of two")
        self.ifindex, self.queue, self.frames = ifindex, queue, frames
        self.sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        fd = self.sock.fileno()
        try:
            self._umem_map, self.pages = allocate_umem(frames * FRAME, huge_pages)
            self.umem = np.frombuffer(self._umem_map, np.uint8)[:frames * FRAME]
            self.umem[::4096] = 0  # touch every page before the kernel pins them
            addr = self.umem.ctypes.data
            self._set(XDP_UMEM_REG, struct.pack("=QQII", addr, frames * FRAME, FRAME, 0), "registering the UMEM")
            for opt, what in ((XDP_UMEM_FILL_RING, "fill"), (XDP_UMEM_COMPLETION_RING, "completion"),
                              (XDP_RX_RING, "RX"), (XDP_TX_RING, "TX")):
                self._set(opt, struct.pack("=i", ring), f"sizing the {what} ring")
            off = struct.unpack("=16Q", self.sock.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128))
            rx, tx, fr, cr = (tuple(off[i:i + 4]) for i in range(0, 16, 4))
            self.rx = Ring(fd, XDP_PGOFF_RX_RING, rx, ring, 16)
            self.tx = Ring(fd, XDP_PGOFF_TX_RING, tx, ring, 16)
            self.fill = Ring(fd, XDP_UMEM_PGOFF_FILL_RING, fr, ring, 8)
            self.completion = Ring(fd, XDP_UMEM_PGOFF_COMPLETION_RING, cr, ring, 8)
            # Every RX frame to the kernel before binding, so the first frames have somewhere to go.
            n = min(frames // 2, ring)
            self.fill.desc[:n] = np.arange(n, dtype=np.uint64) * FRAME
            self.fill.producer[0] = n
            self.rx_frames_n = n
            self.mode = self._bind(ifindex, queue, mode)
            if xskmap_fd is not None:
                key, value = ctypes.c_uint32(queue), ctypes.c_uint32(fd)
                rc = _bpf().bpf_map_update_elem(xskmap_fd, ctypes.byref(key), ctypes.byref(value), 0)
                if rc < 0:
                    raise OSError(-rc, f"putting the socket in the XSKMAP under queue {queue}")
        except BaseException:
            self.close()
            raise

    def _set(self, opt: int, value: bytes, what: str) -> None:
        try:
            self.sock.setsockopt(SOL_XDP, opt, value)
        except OSError as e:
            raise OSError(e.errno, f"AF_XDP: {what}: {e.strerror}") from None

    def _bind(self, ifindex: int, queue: int, mode: str) -> str:
        tries = [MODES[mode]] if mode != "auto" else [XDP_ZEROCOPY, XDP_COPY]
        err = 0
        for flags in tries:
            sa = struct.pack("=HHIII", AF_XDP, flags | XDP_USE_NEED_WAKEUP, ifindex, queue, 0)
            buf = ctypes.create_string_buffer(sa, len(sa))
            if _libc.bind(self.sock.fileno(), buf, len(sa)) == 0:
                return "zerocopy" if flags == XDP_ZEROCOPY else "copy"
            err = ctypes.get_errno()
        try:
            name = socket.if_indextoname(ifindex)
        except OSError:
            name = f"index {ifindex}"
        hint = ""
        if err == errno.EOPNOTSUPP and mode == "zerocopy":
            hint = (f": the driver of {name} has no AF_XDP zero-copy (rtdecoder doctor lists the interfaces that "
                    "do); use --xdp-mode copy or auto")
        elif err == errno.EBUSY:
            hint = ": another AF_XDP socket holds this queue"
        raise OSError(err, f"AF_XDP: binding to queue {queue} of interface {name} ({mode} mode): "
                           f"{os.strerror(err)}{hint}")

    def rx_frames(self) -> list[bytes]:
        """Take every frame the RX ring holds, copy it out and give its UMEM frame back through the
        fill ring (tests; the service's loop does this in compiled code)."""
        out = []
        cons = int(self.rx.consumer[0])
        prod = int(self.rx.producer[0])
        fprod = int(self.fill.producer[0])
        while cons != prod:
            addr, lenopt = self.rx.desc[cons & (self.rx.size - 1)]
            n = int(lenopt) & 0xFFFFFFFF
            out.append(self.umem[int(addr):int(addr) + n].tobytes())
            self.fill.desc[fprod & (self.fill.size - 1)] = (int(addr) // FRAME) * FRAME
            fprod += 1
            cons += 1
        self.rx.consumer[0] = cons & 0xFFFFFFFF
        self.fill.producer[0] = fprod & 0xFFFFFFFF
        if self.fill.flags[0] & XDP_RING_NEED_WAKEUP:  # the kernel waits to be told the fill ring has frames
            try:
                self.sock.recv(0, socket.MSG_DONTWAIT)
            except OSError:
                pass
        return out

    def close(self) -> None:
        for name in ("rx", "tx", "fill", "completion"):
            r = getattr(self, name, None)
            if r is not None:
                r.close()
                setattr(self, name, None)
        self.sock.close()
        if getattr(self, "_umem_map", None) is not None:
            self.umem = None
            try:
                self._umem_map.close()
            except BufferError:  # views still held: the mapping goes with the last of them
                pass
            self._umem_map = None


def _bpf():
    from rtdecoder.transport.xdp_prog import libbpf

    lib = libbpf()
    lib.bpf_map_update_elem.restype = ctypes.c_int
    lib.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
    return lib
