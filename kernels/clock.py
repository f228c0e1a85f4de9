"""A monotonic clock that numba code can read: ``clock_gettime(CLOCK_MONOTONIC)`` from libc.

The call is emitted as an external function by name (resolved by the JIT linker against the
process's libc), so functions that read the clock stay cacheable. ``time.perf_counter_ns`` and
``time.monotonic_ns`` read the same clock on Linux, so times taken in compiled code and in
Python compare directly.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

CLOCK_MONOTONIC = 1  # <time.h>, Linux


@intrinsic
def _monotonic_ns(typingctx):
    sig = types.int64()

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        timespec = ir.LiteralStructType([i64, i64])  # struct timespec on LP64: tv_sec, tv_nsec
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), timespec.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, timespec)
        builder.call(fn, [ir.Constant(ir.IntType(32), CLOCK_MONOTONIC), ts])
        sec = builder.load(builder.gep(ts, [ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 0)]))
        nsec = builder.load(builder.gep(ts, [ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 1)]))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

    return sig, codegen


@njit(_nrt=False, cache=True)
def monotonic_ns():
    """Nanoseconds on the monotonic clock (int64), callable from numba and from Python."""
    return _monotonic_ns()
