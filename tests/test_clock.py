"""The numba-readable monotonic clock (kernels/clock.py)."""

import time

from numba import njit

from rtdecoder.kernels.clock import monotonic_ns


@njit(cache=False)
def _elapsed(n):
    t0 = monotonic_ns()
    s = 0
    for i in range(n):
        s += i
    return monotonic_ns() - t0, s


def test_reads_the_same_clock_as_perf_counter():
    monotonic_ns()
    for _ in range(100):
        a = time.perf_counter_ns()
        b = monotonic_ns()
        c = time.perf_counter_ns()
        assert a <= b <= c


def test_callable_from_compiled_code_and_monotonic():
    dt, s = _elapsed(1000)
    assert dt >= 0 and s == 499500
