"""Latency histograms in compiled code: fixed buckets from 1 µs to 10 ms (the client library's
default buckets start at 5 ms and would hide everything this service measures), read by the
Prometheus collector (``rtdecoder.metrics``) at scrape time."""

from __future__ import annotations

import numpy as np
from numba import njit

BUCKETS_NS = np.array(
    [1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
     1_000_000, 2_000_000, 5_000_000, 10_000_000], dtype=np.int64)
"""Histogram upper bounds in ns: 1 µs to 10 ms (Prometheus ``le`` in seconds: 1e-6 .. 1e-2)."""
NUM_BUCKETS = len(BUCKETS_NS) + 1


@njit(cache=True, _nrt=False)
def observe(hist, row, value_ns):
    """Add one observation to row ``row`` of ``hist`` (int64, ``(rows, NUM_BUCKETS + 2)``):
    ``hist[row, :NUM_BUCKETS]`` non-cumulative bucket counts (the last one is +Inf),
    ``hist[row, NUM_BUCKETS]`` the count and ``hist[row, NUM_BUCKETS + 1]`` the sum in ns."""
    b = 0
    while b < NUM_BUCKETS - 1 and value_ns > BUCKETS_NS[b]:
        b += 1
    hist[row, b] += 1
    hist[row, NUM_BUCKETS] += 1
    hist[row, NUM_BUCKETS + 1] += value_ns
