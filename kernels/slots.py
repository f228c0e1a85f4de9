"""The persistent GPU decoder's slot layout, shared by the host data plane
(``rtdecoder.dataplane``) and the device kernel (``rtdecoder.kernels.uf_cuda``).

Each slot is one 64-byte line of int64 request words and one of result words, in mapped
(page-locked, device-visible) host memory. The host writes a request's words and then, last,
a new sequence number with a release store; the device answers with the chosen edges, fences
(``threadfence_system``) and writes the same sequence number last. Importing this module does
not import ``numba.cuda``.
"""

WORDS = 8
RQ_SEQ = 0
"""Request: the host's sequence number, written last; a new value is a new window."""
RQ_GRAPH = 1
"""Request: the window's global union-find graph (a row of ``Engine.uf_base``)."""
RQ_EVENTS = 2
"""Request: offset of the window's first detection event in the mapped ``syn``."""
RS_SEQ = 0
"""Result: the sequence number answered, written last."""
RS_COUNT = 1
"""Result: edges chosen, written to the slot's row of ``chosen`` (-1: no correction exists)."""
CTL_STOP = 0
"""Control word: the kernels return when it is non-zero."""
TIMEOUT_NS = 2_000_000_000
"""How long the host waits for an answer before it poisons the shot (INTERNAL)."""
