"""Compute kernels (numba, and numba.cuda), imported as ``rtdecoder.kernels``.

- ``rtdecoder.kernels.stream``: the hot path's datagram parser, stream state machine, window
  commit/carry and latency histograms.
- ``rtdecoder.kernels.union_find``: weighted union-find with peeling (CPU).
- ``rtdecoder.kernels.uf_cuda``: the same decoder compiled for CUDA, batch and persistent
  kernels (imported only by ``rtdecoder.gpu``).
- ``rtdecoder.kernels.slots``: the persistent GPU decoder's slot layout.
- ``rtdecoder.kernels.clock``: CLOCK_MONOTONIC from compiled code.
- ``rtdecoder.kernels.memory``: unaligned 8-byte loads and stores of uint8 arrays, cache prefetches.
"""
