"""The data path's side of ``rtdecoder serve --record``: each worker copies every datagram it
receives and every reply it sends into a ring of its own (single producer: the worker; single
consumer: the control thread's ``rtdecoder.record.Recorder``, which writes the files). Nothing
allocates or blocks; a full ring drops the entry and counts it.

Ring: ``rec`` uint8, a power of two long; ``recw`` int64 ``(REC_WORDS,)``: ``REC_HEAD`` (bytes
written, ever; the worker's), ``REC_TAIL`` (bytes consumed, ever; the recorder's), ``REC_DROPS``
and ``REC_ON``, each on a cache line of its own. An entry is ``ENTRY`` bytes of header: length u32
(little-endian), kind u8 (``KIND_RX``, ``KIND_TX``), three zero bytes, time i64 (the receive
stamp, or the send stamp, ``CLOCK_MONOTONIC`` ns), then the bytes, padded to 8; it may wrap
around the ring's end. The worker publishes ``REC_HEAD`` with release semantics after the entry,
the recorder ``REC_TAIL`` after reading it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder.transport.libc import load_acquire, store_release

REC_HEAD, REC_TAIL, REC_DROPS, REC_ON = 0, 8, 16, 24
REC_WORDS = 32
ENTRY = 16
KIND_RX, KIND_TX = 0, 1


@njit(cache=True, inline="always", _nrt=False)
def record(rec, recw, kind, t, buf, n):
    """Append one entry (``buf[:n]``, of ``kind``, at ``t``) when recording is on."""
    if recw[REC_ON] == 0:
        return
    cap = rec.shape[0]
    mask = cap - 1
    need = (ENTRY + n + 7) & ~7
    head = recw[REC_HEAD]
    if head + need - load_acquire(recw, REC_TAIL) > cap:
        recw[REC_DROPS] += 1
        return
    for i in range(4):
        rec[(head + i) & mask] = np.uint8((n >> (8 * i)) & 0xFF)
    rec[(head + 4) & mask] = np.uint8(kind)
    for i in range(5, 8):
        rec[(head + i) & mask] = 0
    for i in range(8):
        rec[(head + 8 + i) & mask] = np.uint8((t >> (8 * i)) & 0xFF)
    at = head + ENTRY
    for i in range(n):
        rec[(at + i) & mask] = buf[i]
    store_release(recw, REC_HEAD, head + need)
