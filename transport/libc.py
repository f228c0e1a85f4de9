"""The C library's socket calls, callable from numba nopython code, and the message-header
arrays they work on.

The data plane calls ``recvmmsg``/``sendmmsg`` of the C library
directly with ``MSG_DONTWAIT``, so that no Python bytecode runs per datagram. Each function here
is emitted as an external call by symbol name (``recvmmsg``, ``sendmmsg``, ``send``, ``recv``,
``__errno_location``), resolved by the JIT linker against the process's libc, the same functions
that ``ctypes.CDLL(None)`` would hand out. Naming the symbol instead of embedding a ctypes
function pointer keeps every function that uses them cacheable by numba (a ctypes pointer is a
per-process address, so numba refuses to cache code that holds one, and the compiled data plane
would be rebuilt at every start).

Pointers are passed as int64 addresses (``array.ctypes.data`` in numba).

Message headers (Linux, LP64; checked against ``ctypes`` layouts at import): ``struct
mmsghdr`` is 64 bytes, held here as eight int64 words ``[msg_name, msg_namelen, msg_iov,
msg_iovlen, msg_control, msg_controllen, msg_flags, msg_len]`` (the 32-bit fields sit in the low
half of their word, the high half is padding). ``struct iovec`` is two words ``[base, len]``.
"""

from __future__ import annotations

import ctypes
import ipaddress
import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
EAGAIN = 11
EINTR = 4
SOCKADDR_BYTES = 128  # sizeof(struct sockaddr_storage)
AF_INET = 2
AF_INET6 = 10
V4_MAPPED = 0xFFFF << 32  # ::ffff:a.b.c.d, the low half

# mmsghdr word indices
H_NAME = 0
H_NAMELEN = 1
H_IOV = 2
H_IOVLEN = 3
H_CONTROL = 4
H_CONTROLLEN = 5
H_FLAGS = 6
H_LEN = 7
HDR_WORDS = 8


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint32)]


SUPPORTED = sys.platform.startswith("linux") and ctypes.sizeof(ctypes.c_void_p) == 8
if SUPPORTED:
    assert ctypes.sizeof(_Iovec) == 16
    assert ctypes.sizeof(_Mmsghdr) == 8 * HDR_WORDS
    assert _Msghdr.namelen.offset == 8 * H_NAMELEN and _Msghdr.iov.offset == 8 * H_IOV
    assert _Msghdr.flags.offset == 8 * H_FLAGS and _Mmsghdr.len.offset == 8 * H_LEN


def require_supported() -> None:
    """Raise ``RuntimeError`` where the compiled data plane cannot run (it needs Linux, 64-bit)."""
    if not SUPPORTED:
        raise RuntimeError(f"the compiled data plane needs 64-bit Linux (recvmmsg/sendmmsg); this is {sys.platform}")


_LT = {"i32": ir.IntType(32), "i64": ir.IntType(64), "p": ir.IntType(8).as_pointer()}


def _extern(symbol: str, ret: str, kinds: tuple[str, ...]):
    """An intrinsic calling the C function ``symbol`` with int arguments cast to ``kinds``."""

    def typer(typingctx, args):
        for a in args:
            if not isinstance(a, types.Integer):
                return None
        rty = types.int64 if ret == "i64" else types.int32
        sig = rty(*args)

        def codegen(context, builder, signature, cargs):
            fnty = ir.FunctionType(_LT[ret], [_LT[k] for k in kinds])
            fn = cgutils.get_or_insert_function(builder.module, fnty, symbol)
            vals = []
            for k, v, t in zip(kinds, cargs, signature.args):
                v64 = context.cast(builder, v, t, types.int64)
                if k == "i32":
                    vals.append(builder.trunc(v64, _LT["i32"]))
                elif k == "p":
                    vals.append(builder.inttoptr(v64, _LT["p"]))
                else:
                    vals.append(v64)
            return builder.call(fn, vals)

        return sig, codegen

    if len(kinds) == 3:
        def t3(typingctx, a, b, c):
            return typer(typingctx, (a, b, c))
        return intrinsic(t3)
    if len(kinds) == 4:
        def t4(typingctx, a, b, c, d):
            return typer(typingctx, (a, b, c, d))
        return intrinsic(t4)
    if len(kinds) == 5:
        def t5(typingctx, a, b, c, d, e):
            return typer(typingctx, (a, b, c, d, e))
        return intrinsic(t5)
    raise ValueError(len(kinds))


_recvmmsg = _extern("recvmmsg", "i32", ("i32", "p", "i32", "i32", "p"))
_sendmmsg = _extern("sendmmsg", "i32", ("i32", "p", "i32", "i32"))
_send = _extern("send", "i64", ("i32", "p", "i64", "i32"))
_recv = _extern("recv", "i64", ("i32", "p", "i64", "i32"))
_memcpy = _extern("memcpy", "i64", ("p", "p", "i64"))


@intrinsic
def _sched_yield(typingctx):
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        return builder.sext(builder.call(fn, []), ir.IntType(64))

    return types.int64(), codegen


@njit(_nrt=False, cache=True, inline="always")
def memcpy(dst, src, n):
    """``memcpy(dst, src, n)`` between raw addresses (neither checked)."""
    _memcpy(dst, src, n)


@njit(_nrt=False, cache=True, inline="always")
def sched_yield():
    """``sched_yield()``: let another thread of this core run (a spinning thread with nothing to do)."""
    return _sched_yield()


@intrinsic
def _errno(typingctx):
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32).as_pointer(), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "__errno_location")
        return builder.sext(builder.load(builder.call(fn, [])), ir.IntType(64))

    return types.int64(), codegen


@njit(_nrt=False, cache=True, inline="always")
def recvmmsg(fd, msgvec, vlen, flags):
    """``recvmmsg(fd, msgvec, vlen, flags, NULL)``: datagrams received, or -1 (see ``errno``)."""
    return _recvmmsg(fd, msgvec, vlen, flags, 0)


@njit(_nrt=False, cache=True, inline="always")
def sendmmsg(fd, msgvec, vlen, flags):
    """``sendmmsg(fd, msgvec, vlen, flags)``: datagrams sent, or -1 (see ``errno``)."""
    return _sendmmsg(fd, msgvec, vlen, flags)


@njit(_nrt=False, cache=True, inline="always")
def send(fd, buf, nbytes, flags):
    """``send(fd, buf, nbytes, flags)`` on a connected socket: bytes sent, or -1."""
    return _send(fd, buf, nbytes, flags)


@njit(_nrt=False, cache=True, inline="always")
def recv(fd, buf, nbytes, flags):
    """``recv(fd, buf, nbytes, flags)``: the datagram's length, or -1 (see ``errno``)."""
    return _recv(fd, buf, nbytes, flags)


@njit(_nrt=False, cache=True, inline="always")
def errno():
    """The calling thread's ``errno`` (int64)."""
    return _errno()


def _ring_word(arr) -> bool:
    """An int64 or uint32 array: the words that acquire/release loads and stores take."""
    return isinstance(arr, types.Array) and arr.dtype in (types.int64, types.uint32)


@intrinsic
def _load_acquire(typingctx, arr, idx):
    if not _ring_word(arr) or not isinstance(idx, types.Integer):
        return None
    bits = arr.dtype.bitwidth

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        v = builder.load_atomic(builder.gep(a.data, [i]), "acquire", bits // 8)
        return v if bits == 64 else builder.zext(v, ir.IntType(64))

    return types.int64(arr, idx), codegen


@njit(_nrt=False, cache=True, inline="always")
def load_acquire(arr, i):
    """``arr[i]`` (int64, or uint32 widened to int64) read afresh with acquire semantics: another
    thread, or the kernel, may have written it (the stop flag; AF_XDP ring indices,
    ``rtdecoder.transport.xsk``); the compiler may not keep it in a register across iterations."""
    return _load_acquire(arr, i)


@njit(_nrt=False, cache=True, inline="always")
def source_of(name):
    """``(high, low, port)`` of the ``struct sockaddr_storage`` bytes ``name`` (uint8): the
    address as 128 bits in two big-endian int64 halves, IPv4 mapped to ``::ffff:a.b.c.d``
    (``sockaddr_in``: port at bytes 2-3, address at 4-7; ``sockaddr_in6``: port at 2-3, address
    at 8-23, network byte order). ``(-1, -1, 0)`` for any other family, which no allow-list holds."""
    family = np.int64(name[0]) | (np.int64(name[1]) << 8)
    port = (np.int64(name[2]) << 8) | np.int64(name[3])
    if family == AF_INET:
        a = (np.int64(name[4]) << 24) | (np.int64(name[5]) << 16) | (np.int64(name[6]) << 8) | np.int64(name[7])
        return np.int64(0), np.int64(V4_MAPPED) | a, port
    if family == AF_INET6:
        hi = np.int64(0)
        lo = np.int64(0)
        for i in range(8):
            hi = (hi << 8) | np.int64(name[8 + i])
            lo = (lo << 8) | np.int64(name[16 + i])
        return hi, lo, port
    return np.int64(-1), np.int64(-1), np.int64(0)


@intrinsic
def _store_release(typingctx, arr, idx, val):
    if not _ring_word(arr) or not isinstance(idx, types.Integer) or not isinstance(val, types.Integer):
        return None
    bits = arr.dtype.bitwidth

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        v = context.cast(builder, args[2], signature.args[2], types.int64)
        if bits != 64:
            v = builder.trunc(v, ir.IntType(bits))
        builder.store_atomic(v, builder.gep(a.data, [i]), "release", bits // 8)
        return context.get_dummy_value()

    return types.none(arr, idx, val), codegen


@intrinsic
def _fetch_add(typingctx, arr, idx, val):
    if (not isinstance(arr, types.Array) or arr.dtype != types.int64 or not isinstance(idx, types.Integer)
            or not isinstance(val, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        a = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        v = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", builder.gep(a.data, [i]), v, "seq_cst")

    return types.int64(arr, idx, val), codegen


@njit(_nrt=False, cache=True, inline="always")
def fetch_add(arr, i, value):
    """Atomically add ``value`` to ``arr[i]`` (int64) and return what it held before: several
    threads taking the next index from one counter each get a different one."""
    return _fetch_add(arr, i, value)


@njit(_nrt=False, cache=True, inline="always")
def store_release(arr, i, value):
    """``arr[i] = value`` (int64, or the low 32 bits into a uint32 array) after every earlier store
    of this thread: a reader that sees ``value`` with ``load_acquire`` (or, on the GPU, after
    ``threadfence_system``) sees them too."""
    _store_release(arr, i, value)


class MessageBatch:
    """``n`` message headers over ``n`` buffers of ``buf_bytes`` bytes, made once.

    Attributes:
        hdr: int64 ``(n, 8)``, the ``struct mmsghdr`` array (see the module docstring).
        iov: int64 ``(n, 2)``, one ``struct iovec`` per message.
        name: uint8 ``(n, 128)``, one ``struct sockaddr_storage`` per message (the source
            address of a received datagram, the destination of a reply).
        buf: uint8 ``(n, buf_bytes)``, the message buffers (``buffers`` overrides them: the
            receive ring's slots).
    """

    def __init__(self, n: int, buf_bytes: int, buffers: np.ndarray | None = None):
        require_supported()
        self.buf = np.zeros((n, buf_bytes), np.uint8) if buffers is None else buffers
        if self.buf.shape[0] != n or not self.buf.flags.c_contiguous:
            raise ValueError("buffers must be a C-contiguous (n, bytes) uint8 array")
        self.name = np.zeros((n, SOCKADDR_BYTES), np.uint8)
        self.iov = np.zeros((n, 2), np.int64)
        self.hdr = np.zeros((n, HDR_WORDS), np.int64)
        stride = self.buf.strides[0]
        self.iov[:, 0] = self.buf.ctypes.data + stride * np.arange(n)
        self.iov[:, 1] = self.buf.shape[1]
        self.hdr[:, H_NAME] = self.name.ctypes.data + SOCKADDR_BYTES * np.arange(n)
        self.hdr[:, H_NAMELEN] = SOCKADDR_BYTES
        self.hdr[:, H_IOV] = self.iov.ctypes.data + 16 * np.arange(n)
        self.hdr[:, H_IOVLEN] = 1


# --- addresses as the data plane sees them ---------------------------------------------------
def _halves(value: int) -> tuple[int, int]:
    """A 128-bit integer as two int64 halves (high, low), two's complement."""
    hi, lo = value >> 64, value & ((1 << 64) - 1)
    return tuple(int(x) for x in np.array([hi, lo], np.uint64).view(np.int64))


def _as_v6(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return int(addr) | (0xFFFF << 32) if addr.version == 4 else int(addr)


def source_words(host: str) -> tuple[int, int]:
    """``host`` as the data plane sees a source address (``libc.source_of``): two int64 halves of
    its IPv6 form (IPv4 mapped to ``::ffff:a.b.c.d``)."""
    return _halves(_as_v6(ipaddress.ip_address(host)))


def allow_rows(networks) -> np.ndarray:
    """int64 ``(len(networks), 4)``: ``(network high, network low, mask high, mask low)`` of each
    address or CIDR subnet, IPv4 ones mapped into ``::ffff:0:0/96``."""
    rows = []
    for text in networks:
        net = ipaddress.ip_network(text, strict=False)
        prefix = net.prefixlen + (96 if net.version == 4 else 0)
        mask = ((1 << prefix) - 1) << (128 - prefix) if prefix else 0
        rows.append((*_halves(_as_v6(net.network_address) & mask), *_halves(mask)))
    return np.asarray(rows, np.int64).reshape(-1, 4)
