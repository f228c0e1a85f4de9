"""Compute kernels (numba, and numba.cuda), imported as ``rtdecoder.kernels``.

- ``rtdecoder.kernels.tables``: the layouts of the arrays the data path shares (stream table
  columns, counters, histogram rows, trace, control words) and the tuples compiled code takes.
- ``rtdecoder.kernels.wire``: the wire format in compiled code; the one header encoder.
- ``rtdecoder.kernels.ingest``: the datagram checks and the stream state machine.
- ``rtdecoder.kernels.window``: window completion, the commit/carry rule, PyMatching's node
  pairs to edges.
- ``rtdecoder.kernels.histogram``: latency histograms.
- ``rtdecoder.kernels.union_find``: weighted union-find with peeling (CPU).
- ``rtdecoder.kernels.uf_cuda``: the same decoder compiled for CUDA, batch and persistent
  kernels (imported only by ``rtdecoder.gpu``).
- ``rtdecoder.kernels.slots``: the persistent GPU decoder's slot layout.
- ``rtdecoder.kernels.clock``: CLOCK_MONOTONIC from compiled code.
- ``rtdecoder.kernels.memory``: unaligned 8-byte loads and stores of uint8 arrays, cache prefetches.
"""
