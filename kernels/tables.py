"""The layouts of the preallocated arrays that the data path shares: one place allocates every
column, counter, histogram row and control word, so no two modules can give one index two
meanings.

Every array is int64 unless said; they are built when streams are configured
(``rtdecoder.engine.Engine``) or a worker is made (``rtdecoder.worker.WorkerState``) and never
resized on the data path.

- ``st[sid, col]``: one row per possible stream id; ``C_*`` columns are configuration, ``S_*``
  columns the state of the stream's current shot.
- ``win[k, col]``: ``W_*`` of every window of every stream, concatenated.
- ``out``: ``OUT_*``, the three results of ``rtdecoder.kernels.ingest.ingest``.
- ``counters``: ``[0, NUM_STATUS)`` datagrams rejected by wire status code (docs/wire-protocol.md
  §6), ``REJECT_NOT_ALLOWED``, then the ``CNT_*`` counters.
- ``hist[row]``: ``HIST_*`` rows of ``rtdecoder.kernels.histogram.observe``.
- ``trace[i % TRACE_LEN, col]``: ``TR_*`` of the last ``TRACE_LEN`` decoded windows; ``tmeta``:
  ``M_*``.
- ``ctl``: ``CTL_*`` control words of one worker, on a cache line of their own.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from rtdecoder import protocol as P
from rtdecoder.kernels import frames as F

# --- stream table columns (``st``) --------------------------------------------------------------
_column = itertools.count()
"""Each column's index is the next number: the order of the declarations below is the layout."""
C_CONFIGURED = next(_column)
C_READY = next(_column)
"""0 while the stream is being rebuilt by a reload: SYNDROME datagrams get NOT_READY."""
C_NROUNDS = next(_column)
C_RBYTES = next(_column)
C_NDET = next(_column)
C_NOBS = next(_column)
C_OFF_BASE = next(_column)
"""The stream's first entry in ``offs`` (its round offsets)."""
C_SYN_BASE = next(_column)
"""The stream's first detector in ``syn``/``keep``."""
C_WIN_BASE = next(_column)
C_NWIN = next(_column)
C_MAXDG = next(_column)
C_WINDOW = next(_column)
C_COMMIT = next(_column)
C_DECODER = next(_column)
"""The decoder's wire id (HELLO_REPLY, §4.2; ``rtdecoder.decoders``)."""
C_CALL = next(_column)
"""How the data plane calls the stream's decoder: ``CALL_*``."""
C_ALLOW_BASE = next(_column)
C_ALLOW_N = next(_column)
C_FINGERPRINT = next(_column)
"""The DEM fingerprint of DESCRIBE_REPLY (§4.8), as int64 bits."""
C_INPUT = next(_column)
"""What SYNDROME blocks carry: ``protocol.INPUT_DETECTION_EVENTS`` or ``INPUT_MEASUREMENTS``."""
C_MOFF_BASE = next(_column)
"""Measurement streams: the stream's first entry in ``moffs`` (its measurement round offsets)."""
C_DET_BASE = next(_column)
"""Measurement streams: the stream's first entry in ``dptr``/``dflip`` (its detector definitions)."""
C_MEAS_BASE = next(_column)
"""Measurement streams: the stream's first measurement in ``meas``."""
C_KPTR_BASE = next(_column)
"""Measurement streams: the stream's first entry in ``dkptr`` (its kept detectors per round)."""
C_CQ_BASE = next(_column)
"""The stream's first byte in ``cqbits``: the bits a CUQR controller has enqueued for the
current shot (``rtdecoder.kernels.cuqr``)."""
C_CQ_BITS = next(_column)
"""Bits per shot in the CUQR dialect: the stream's measurements, or its detectors."""
C_DEADLINE = next(_column)
"""Streams whose decoder escapes: the stream's ``deadline_us`` in ns (0: none). A window whose
decode would end later than this after its last round was received is decoded by the compiled
union-find instead (``rtdecoder.dataplane.process_native``)."""
C_FAST = next(_column)
"""Streams with a deadline whose decoder has a fast mode (``DecoderSpec.fast``): that
decoder's wire id + 1, else 0. Past the deadline such a window is decoded in the fast mode when
its estimate still meets the deadline, and by union-find otherwise."""
C_PARALLEL = next(_column)
"""Workers decoding the stream's windows (``StreamConfig.parallel``): 1 sliding windows; ``k > 1``
the parallel-window plan, its windows dealt to the owning worker and its helpers
(``rtdecoder.kernels.parallel.parallel_step``)."""
C_PRES_BASE = next(_column)
"""Parallel streams: the stream's first row in ``pres`` (one row per window of its plan; streams
sharing a plan share its window rows, not their results)."""
C_HERALDS = next(_column)
"""Herald detectors per shot (``rtdecoder.heralds``; HELLO_REPLY's ``HERALDS`` flag when not 0)."""
C_FALLBACK = next(_column)
"""Streams with a deadline: the wire id of the compiled decoder their windows fall back to
(``DecoderSpec.fallback``): its ``HIST_DECODE`` row takes the fallback's time."""
S_HAS_SHOT = next(_column)
S_SHOT = next(_column)
S_NEXT_ROUND = next(_column)
S_POISONED = next(_column)
S_DONE = next(_column)
S_NEXT_WIN = next(_column)
S_CUM = next(_column)
S_RX_NS = next(_column)
S_TS = next(_column)
S_CQ_POS = next(_column)
"""CUQR: bits of the current shot enqueued so far."""
S_CQ_ROUNDS = next(_column)
"""CUQR: rounds of the current shot handed to the data path so far."""
S_CQ_STATE = next(_column)
"""CUQR: ``CQ_COLLECTING``, ``CQ_READY`` (the shot's correction can be read) or ``CQ_FAILED``."""
S_CQ_DROPPED = next(_column)
"""CUQR: 1 once an enqueue was dropped (overload), until ``reset_decoder``."""
S_CQ_SHOT = next(_column)
"""CUQR: the shot id under which the current shot's rounds go through the data path."""
S_CQ_RESULT = next(_column)
"""CUQR: the observable flips of the last decoded shot (a mask, observable ``i`` at bit ``i``)."""
S_ESCAPE_NS = next(_column)
"""Streams with a deadline: a running estimate of the escape decoder's time per window, ns
(``rtdecoder.dataplane.process_native``: an exponential average, weight 1/8)."""
S_FAST_NS = next(_column)
"""Streams with a fast mode: a running estimate of its time per window, ns (as ``S_ESCAPE_NS``)."""
S_PGEN = next(_column)
"""Shots begun on the stream (``ingest.reset_shot``): tags a parallel stream's jobs and results."""
S_PA_NEXT = next(_column)
"""Parallel streams: the next A window to dispatch (a window index local to the stream)."""
S_PB_NEXT = next(_column)
"""Parallel streams: the next B window to dispatch (local index)."""
S_PREPLY = next(_column)
"""Parallel streams: the next window whose CORRECTION is due (local index; replies go in round
order)."""
S_PIN = next(_column)
"""Parallel streams: jobs with a helper for shots of even ``S_PGEN``; ``S_PIN + 1`` (``S_PIN_ODD``)
for odd ones (a column per parity: ``S_PIN + (S_PGEN & 1)``)."""
S_PIN_ODD = next(_column)
S_PCLEAN = next(_column)
"""Parallel streams: the shot (``S_PGEN``) whose carry rows were cleared."""
S_PADDRLEN = next(_column)
"""Parallel streams: length of the controller's address in ``paddr`` (0: replies stay queued)."""
NUM_COLS = next(_column)

CQ_COLLECTING = 0
CQ_READY = 1
CQ_FAILED = 2

CALL_ESCAPE = 0
"""The decoder's ``decode_window`` in Python, through the data plane's object-mode escape."""
CALL_COMPILED = 1
"""The union-find kernel in the compiled loop (or the worker's GPU slot, with the GPU backend)."""

# --- window table columns (``win``) -------------------------------------------------------------
W_START = 0
W_END = 1
W_COMMIT = 2
W_GRAPH = 3
W_CORE = 4
"""The first round the window commits (``W_START`` for sliding windows and gaps; an A window's
core start)."""
W_KIND = 5
"""``WK_SLIDING``, ``WK_A`` or ``WK_B`` (``rtdecoder.windows.ParallelPlan``)."""
NUM_W = 6
WK_SLIDING = 0
WK_A = 1
WK_B = 2

# --- ``out`` of ingest --------------------------------------------------------------------------
OUT_REPLY_LEN = 0
"""Bytes of reply written to ``tx`` (0: no reply)."""
OUT_STREAM = 1
"""Stream whose windows may now be ready (-1: none)."""
OUT_STAMP = 2
"""1 if the reply carries a server send time at byte 48 to stamp just before sending."""
NUM_OUT = 3

# --- counters -----------------------------------------------------------------------------------
CNT_BASE = 32
assert P.NUM_STATUS < CNT_BASE - 1
REJECT_NOT_ALLOWED = CNT_BASE - 1
"""Datagrams from sources outside the allow-lists (not a wire status: they get no reply)."""
CNT_PACKETS = CNT_BASE + 0
CNT_SYNDROME = CNT_BASE + 1
CNT_SHOTS = CNT_BASE + 2
CNT_CORRECTIONS = CNT_BASE + 3
CNT_BYTES = CNT_BASE + 4
CNT_HELLO = CNT_BASE + 5
CNT_PING = CNT_BASE + 6
CNT_RESET = CNT_BASE + 7
"""RESET messages answered (RESET_ACK)."""
CNT_ABANDONED = CNT_BASE + 8
CNT_RECV_ERRORS = CNT_BASE + 9
"""Receive calls that failed other than with 'nothing to receive'."""
CNT_SEND_DROPPED = CNT_BASE + 10
"""Replies that could not be sent."""
CNT_BATCHES = CNT_BASE + 11
"""Receive calls that returned datagrams."""
CNT_ERRORS_SUPPRESSED = CNT_BASE + 12
"""ERROR replies not sent: the source was over its budget."""
CNT_OVERLOADED = CNT_BASE + 13
"""Times the worker entered overload (and began answering new shots BUSY)."""
CNT_DESCRIBE = CNT_BASE + 14
"""DESCRIBE messages answered."""
CNT_CQ_REQUESTS = CNT_BASE + 15
"""CUQR requests received (``rtdecoder.kernels.cuqr``); they are not counted in ``CNT_PACKETS``."""
CNT_CQ_FUNCTION = CNT_BASE + 16
"""Three counters: CUQR ``enqueue_syndromes``, ``get_corrections`` and ``reset_decoder`` requests."""
CNT_CQ_STATUS = CNT_BASE + 19
"""``NUM_CQ_STATUS`` counters: CUQR replies by status (``OK`` .. ``SYNDROMES_DROPPED``)."""
NUM_CQ_STATUS = 7
MAX_DECODERS = 32
"""Decoder wire ids are ``0 .. MAX_DECODERS - 1`` (one ``HIST_DECODE`` row and one
``CNT_FALLBACK`` counter each)."""
CNT_FALLBACK = CNT_CQ_STATUS + NUM_CQ_STATUS
"""``MAX_DECODERS`` counters, by the stream's decoder's wire id: windows that decoder would have
decoded past the stream's deadline, decoded by union-find instead."""
CNT_FALLBACK_FAST = CNT_FALLBACK + MAX_DECODERS
"""``MAX_DECODERS`` counters, likewise: windows decoded by the decoder's fast mode instead."""
CNT_PAR_HELPER = CNT_FALLBACK_FAST + MAX_DECODERS
"""Parallel streams' windows decoded by a helper thread."""
CNT_PAR_OWNER = CNT_PAR_HELPER + 1
"""Parallel streams' windows decoded by the owning worker (its turn, no helper running, or the
helper's ring full)."""
CNT_FRAMES = CNT_PAR_OWNER + 1
"""``rtdecoder.kernels.frames.NUM_STATUS`` counters: frames a frame transport (AF_XDP) received, by
``parse_udp``'s status (``OK``: handed to the data path)."""
CNT_POLLS = CNT_FRAMES + F.NUM_STATUS
"""Turns of a worker's receive loop (busy or idle): a worker whose count stops is not polling
(``rtdecoder_worker_polls_total``)."""
NUM_COUNTERS = CNT_POLLS + 1

# --- histogram rows -----------------------------------------------------------------------------
HIST_SERVER = 0
"""received → sent, per window."""
HIST_DECODE = 1
"""Rows ``HIST_DECODE + decoder wire id``: time inside the window decoder, per window."""
HIST_CHECK = HIST_DECODE + MAX_DECODERS
HIST_STAGE_DECODE = HIST_CHECK + 1
HIST_SEND = HIST_CHECK + 2
HIST_ESCAPE = HIST_CHECK + 3
"""Escape decoders only: time in the object-mode escape beyond the decoder's own call, per window."""
NUM_HIST_ROWS = HIST_CHECK + 4

# --- trace ring ---------------------------------------------------------------------------------
TRACE_LEN = 4096
TR_STREAM = 0
TR_FIRST_ROUND = 1
TR_RECEIVED = 2
TR_CHECKED = 3
TR_DECODED = 4
TR_SENT = 5
TR_WIDTH = 6
M_NEXT = 0
"""tmeta: trace entries written so far (the ring index is this modulo ``TRACE_LEN``)."""
M_PENDING = 1
"""tmeta: first entry whose datagram's replies are not sent yet."""

# --- control words (``ctl``) --------------------------------------------------------------------
CTL_STOP = 0
"""Non-zero: the loop returns between two datagrams."""
CTL_DRAIN = 1
"""Non-zero: drain until this deadline (ns, CLOCK_MONOTONIC): the loop returns once its
transport is empty and none of its streams has a shot in flight, or at the deadline."""
CTL_WORKER = 2
CTL_WORKERS = 3
"""This worker's index and the number of workers: it owns the streams ``sid % workers == index``."""
CTL_BUSY_BATCHES = 4
"""Overload: after this many consecutive full receive batches, new shots are answered BUSY
until a read comes back short or empty."""
CTL_SHED = 5
"""Written by the loop: 1 while the worker is overloaded and answers new shots BUSY."""
CTL_BEHIND = 6
"""Written by the UDP loop: 1 while the datagrams being handled came in a full receive batch (more
wait in the socket: their receive times understate how long they waited); streams with a
deadline then decode with union-find (``rtdecoder.dataplane.process_native``). The ring loops
leave it 0: their slots are read as they fill."""
CTL_HELPERS = 7
"""Helper threads running for this worker's parallel streams (``rtdecoder.worker``); windows
dealt to helper ``h >= CTL_HELPERS`` are decoded by the worker itself."""
NUM_CTL = 8


# --- the tuples compiled code takes -------------------------------------------------------------
class Tables(NamedTuple):
    """Every configured stream's tables (``rtdecoder.engine.Engine.tables``)."""

    st: np.ndarray
    """``(max stream id + 1, NUM_COLS)``: the stream table."""
    offs: np.ndarray
    """Every stream's round offsets, concatenated (``rtdecoder.kernels.ingest``)."""
    syn: np.ndarray
    """uint8: every stream's current shot's detection events, one byte per detector."""
    keep: np.ndarray
    """uint8, parallel to ``syn``: 1 where an event can change an observable."""
    win: np.ndarray
    """``(windows, NUM_W)``: every window of every stream."""
    gbase: np.ndarray
    """``(graphs, 2)``: each window graph's first node and first edge in ``node_round``/``edges``."""
    node_round: np.ndarray
    edges: np.ndarray
    """``(edges, 3)``: ``(u, v, observable mask)``, ``v == -1`` for a boundary edge."""
    uf_base: np.ndarray
    """``(graphs, 6)``: each union-find graph's (ptr start, nodes, slot start, slots, edge start,
    edges) in the four arrays below (zeros for the graphs of streams whose decoder escapes)."""
    uf_ptr: np.ndarray
    uf_slot: np.ndarray
    uf_eu: np.ndarray
    uf_ev: np.ndarray
    allow: np.ndarray
    """``(subnets, 4)``: the allow-lists' rows (``rtdecoder.kernels.ingest``)."""
    moffs: np.ndarray
    """Measurement streams' measurement round offsets, concatenated (``MeasurementLayout``)."""
    meas: np.ndarray
    """uint8: every measurement stream's current shot's measurements, one byte each."""
    dptr: np.ndarray
    """Each measurement stream's detector definitions: detector ``j`` reads
    ``meas[drec[dptr[b + j]]:...]`` (``b = C_DET_BASE``; one more entry than detectors)."""
    drec: np.ndarray
    dflip: np.ndarray
    """uint8, parallel to ``dptr``: each detector's parity in the noiseless reference sample."""
    dkept: np.ndarray
    """The detectors that are computed (``keep``), per stream relative to ``C_DET_BASE``; those of
    round ``r`` are ``dkept[dkptr[C_KPTR_BASE + r]:dkptr[C_KPTR_BASE + r + 1]]``."""
    dkptr: np.ndarray
    dshift: np.ndarray
    """Parallel to ``dkptr``: per round, ``MeasurementLayout.round_shift`` (0: detectors one by one)."""
    cqbits: np.ndarray
    """uint8: every stream's current CUQR shot's enqueued bits, one byte each (``C_CQ_BASE``)."""
    pres: np.ndarray
    """``(rows, 2)``: parallel streams' window results, ``(S_PGEN of the shot it was decoded for,
    committed observable flips)``; local window ``r`` of stream ``sid`` at ``C_PRES_BASE + r``."""
    pcarry: np.ndarray
    """uint8 ``(2, 2, len(syn))``: parallel streams' carries by shot parity, up (from the A window
    below a gap) and down (from the one above)."""
    paddr: np.ndarray
    """uint8 ``(max stream id + 1, 128)``: parallel streams' controller address (a
    ``sockaddr_storage``) for the replies that leave after their datagram's slot is reused."""
    uf_hbase: np.ndarray
    """``(graphs, 4)``: each union-find graph's heralds (``rtdecoder.heralds``) in the three arrays
    below: (``uf_hidx`` start, its length: the graph's nodes, or 0 for a graph without heralds,
    ``uf_hptr`` start, ``uf_hedge`` start), as ``union_find.decode`` takes them."""
    uf_hidx: np.ndarray
    uf_hptr: np.ndarray
    uf_hedge: np.ndarray


class WorkerArrays(NamedTuple):
    """One worker's arrays (``rtdecoder.worker.WorkerState.arrays``)."""

    counters: np.ndarray
    """``(NUM_COUNTERS,)``."""
    hist: np.ndarray
    """``(NUM_HIST_ROWS, NUM_BUCKETS + 2)`` (``rtdecoder.kernels.histogram.observe``)."""
    out: np.ndarray
    """``(NUM_OUT,)``: ``ingest``'s results."""
    trace: np.ndarray
    """``(TRACE_LEN, TR_WIDTH)``."""
    tmeta: np.ndarray
    """``(2,)``: ``M_*``."""
    escape_chosen: np.ndarray
    """The escape's chosen edges (as long as the engine's largest window graph's edge list, + 1)."""
    escape: np.ndarray
    """``(1,)``: ns inside the escape's decoder call."""
    gpu_request: np.ndarray
    """The worker's GPU slot (``rtdecoder.kernels.slots``): request words; empty without a GPU."""
    gpu_result: np.ndarray
    gpu_chosen: np.ndarray
    rl: np.ndarray
    """``(RL_SLOTS + 1, 6)``: the error-reply token buckets (``rtdecoder.dataplane``)."""
    ctl: np.ndarray
    """``(NUM_CTL,)``: the control words."""
    cq_in: np.ndarray
    """uint8: where a CUQR request's rounds are written as a SYNDROME (``rtdecoder.kernels.cuqr``)."""
    cq_tx: "TxArrays"
    """The data path's replies to those SYNDROMEs: read by the CUQR layer, never sent."""
    pjobs: np.ndarray
    """int64 ``(helpers, RING, 4)``: each helper's job ring (``rtdecoder.kernels.parallel``)."""
    pres_ring: np.ndarray
    """int64 ``(helpers, RING, 4)``: each helper's result ring."""
    pidx: np.ndarray
    """int64 ``(helpers, 4 * PAD)``: per helper, the rings' head and tail counters, each on a cache
    line of its own (job head, job tail, result head, result tail)."""
    pscratch: np.ndarray
    """uint8: the worker's B-window events (as long as the largest window graph)."""
    rec: np.ndarray
    """uint8: the worker's record ring (``rtdecoder.kernels.record``; 8 bytes when not recording)."""
    recw: np.ndarray
    """int64 ``(record.REC_WORDS,)``: the record ring's counters."""
    wid: int
    """The key under which the escapes find the worker's ``WorkerState``."""


class TxArrays(NamedTuple):
    """One worker's transmit batch (``rtdecoder.transport.libc.MessageBatch`` and its queue)."""

    buf: np.ndarray
    """uint8 ``(slots, TX_BYTES)``: the replies."""
    hdr: np.ndarray
    """``struct mmsghdr`` rows for ``sendmmsg``."""
    iov: np.ndarray
    """``(slots, 2)``: each reply's address and length."""
    flag: np.ndarray
    """1 where the reply needs its send time stamped at byte 48."""
    q: np.ndarray
    """``(1,)``: replies queued."""
