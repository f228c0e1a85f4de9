"""Compute kernels (numba, and numba.cuda in a later stage), imported as ``rtdecoder.kernels``.

- ``rtdecoder.kernels.stream``: the hot path's datagram parser, stream state machine, window
  commit/carry and latency histograms.
"""
