"""Memory access helpers for compiled code (CPU and CUDA): unaligned 8-byte loads and stores on
uint8 arrays, and cache prefetches.

Numba indexes a uint8 array one byte at a time; these read or write eight consecutive bytes as
one little-endian uint64 at any offset, which x86-64 does in one instruction (LLVM splits the
access on a target that needs alignment, such as NVPTX). The bytes must be contiguous (stride 1)
and ``arr`` must hold ``i + 8`` of them: neither is checked. Used to unpack a wire byte of
detection events into eight detector bytes (``rtdecoder.kernels.ingest.ingest``) and to skip
nodes without a detection event 32 and 8 at a time (``rtdecoder.kernels.union_find.decode``).

``prefetch(arr, i)`` asks the CPU to bring the cache line holding ``arr[i]`` into every level of
cache (LLVM's ``llvm.prefetch``, ``prefetcht0`` on x86-64) and returns at once; it never faults,
whatever ``i`` is. ``union_find.decode`` issues the loads of all its events' adjacency and node
rows before it uses any, so their cache misses overlap instead of following one another. For the
CUDA target it compiles to nothing.
"""

from __future__ import annotations

import sys

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

assert sys.byteorder == "little", "word loads and stores of detector bytes assume a little-endian machine"


def _uint8_array(arr) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.uint8


def _word_pointer(context, builder, signature, args):
    a = context.make_array(signature.args[0])(context, builder, args[0])
    i = context.cast(builder, args[1], signature.args[1], types.intp)
    return builder.bitcast(builder.gep(a.data, [i]), ir.IntType(64).as_pointer())


@intrinsic
def _load_word(typingctx, arr, idx):
    if not _uint8_array(arr) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.load(_word_pointer(context, builder, signature, args), align=1)

    return types.uint64(arr, idx), codegen


@intrinsic
def _store_word(typingctx, arr, idx, val):
    if not _uint8_array(arr) or not isinstance(idx, types.Integer) or not isinstance(val, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = context.cast(builder, args[2], signature.args[2], types.uint64)
        builder.store(v, _word_pointer(context, builder, signature, args), align=1)
        return context.get_dummy_value()

    return types.none(arr, idx, val), codegen


@intrinsic
def _prefetch(typingctx, arr, idx):
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        if "cuda" in type(context).__module__:
            return context.get_dummy_value()  # no prefetch on the device
        a = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic("llvm.prefetch", [byte_ptr],
                                              ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]))
        # read, locality 3 (keep in all levels), data cache
        builder.call(fn, [builder.bitcast(builder.gep(a.data, [i]), byte_ptr), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(arr, idx), codegen


@njit(_nrt=False, cache=True, inline="always")
def prefetch(arr, i):
    """Start loading the cache line of the element ``i`` places past ``arr``'s first (``i`` is not
    checked: a prefetch of an address outside the array does nothing)."""
    _prefetch(arr, i)


@njit(_nrt=False, cache=True, inline="always")
def load_word(arr, i):
    """``arr[i:i + 8]`` as one little-endian uint64, at any alignment (uint8 ``arr``)."""
    return _load_word(arr, i)


@njit(_nrt=False, cache=True, inline="always")
def store_word(arr, i, value):
    """``arr[i:i + 8] = value``'s 8 bytes, little-endian, at any alignment (uint8 ``arr``)."""
    _store_word(arr, i, value)
