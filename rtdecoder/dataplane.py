"""One datagram's handling, in compiled code: check → append rounds → decode → commit → reply.

``process_datagram`` is the one implementation of it: every transport's compiled loop
(``rtdecoder.transport.udp.serve_loop``, ``rtdecoder.transport.ring.ring_serve_loop``) and the
in-process path (``Engine.handle``: tests, ``Engine.decode_shots``, sinter) call it. It hands a
CUDA-Q real-time RPC request (``CUQR`` magic) to ``process_cuqr``, which runs each round such a
controller completes through ``process_native`` as a SYNDROME of the service's own protocol
(docs/cuqr-compat.md); every other datagram goes to ``process_native``. It is
compiled with ``_nrt=False``: numba's runtime is off, so it cannot allocate and takes no
reference counts.

A stream's decoder is called the way its registration says (``rtdecoder.decoders``; the
stream table's ``C_CALL`` column), never by its name:

- ``CALL_COMPILED``: the union-find kernel (``rtdecoder.kernels.union_find.decode``) on the
  engine's concatenated CSR graphs, in the loop; or, where the worker has a slot of the resident
  GPU decoder (``rtdecoder.gpu.PersistentDecoder``), posted to that slot in mapped memory
  (``rtdecoder.kernels.slots``) and waited for.
- ``CALL_ESCAPE``: ``escape``, a small function holding one numba ``objmode`` block that takes
  the GIL and calls the compiled decoder's ``decode_window`` on the window's detection events (a view of ``syn`` made at
  configuration), copying the chosen edges into a preallocated array; only integers cross.
  What the escape costs beyond the decoder's own call is the histogram row ``HIST_ESCAPE``.

A decoder that finds no correction poisons the shot and answers INTERNAL.

Stage timestamps (ns, CLOCK_MONOTONIC, ``rtdecoder.kernels.clock``) of every decoded window go to
the worker's trace ring and histograms (``rtdecoder.kernels.tables``): *received* (the receive
call returned), *checked* (``ingest`` done), *decoded* (the CORRECTION written), *sent* (its
``flush``). Replies are queued in the worker's transmit batch; the transport's loop sends them
(``flush``) when its receive batch is done, when the batch is full, and at once after a
datagram that completed a shot, so a FINAL correction never waits for the datagrams behind it.
"""

from __future__ import annotations

import time
import warnings
import weakref

import numpy as np
from numba import njit, objmode

from rtdecoder import protocol as P
from rtdecoder.kernels import cuqr as CQ
from rtdecoder.kernels import parallel as KP
from rtdecoder.kernels import slots as GS
from rtdecoder.kernels import union_find as uf
from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.kernels.record import KIND_RX, KIND_TX, record
from rtdecoder.kernels.histogram import observe
from rtdecoder.kernels.ingest import allowed, ingest
from rtdecoder.kernels.tables import (
    CALL_COMPILED, CALL_ESCAPE, CNT_BYTES, CNT_CQ_FUNCTION as CQ_FUNCTION, CNT_CQ_REQUESTS as CQ_REQUESTS,
    CNT_CQ_STATUS as CQ_STATUS, CNT_ERRORS_SUPPRESSED, CNT_FALLBACK, CNT_FALLBACK_FAST, CNT_PACKETS, CNT_PAR_HELPER,
    CNT_OVERLOADED, CNT_PAR_OWNER, CNT_SEND_DROPPED, CQ_COLLECTING, CQ_FAILED, CQ_READY, CTL_BEHIND, CTL_BUSY_BATCHES,
    CTL_DRAIN, CTL_HELPERS, CTL_SHED,
    CTL_WORKER, CTL_WORKERS, C_ALLOW_BASE, C_ALLOW_N, C_CALL, C_CONFIGURED, C_CQ_BASE, C_CQ_BITS, C_DEADLINE,
    C_DECODER, C_FALLBACK, C_FAST, C_INPUT, C_MOFF_BASE, C_NDET, C_NOBS, C_NROUNDS, C_NWIN, C_OFF_BASE, C_PARALLEL, C_PRES_BASE,
    C_READY, C_SYN_BASE, C_WIN_BASE, HIST_CHECK, HIST_DECODE, HIST_ESCAPE, HIST_SEND, HIST_SERVER, HIST_STAGE_DECODE,
    M_NEXT, M_PENDING, OUT_REPLY_LEN, OUT_STAMP, OUT_STREAM, REJECT_NOT_ALLOWED, S_CQ_DROPPED, S_CQ_POS, S_CQ_RESULT,
    S_CQ_ROUNDS, S_CQ_STATE, S_DONE, S_ESCAPE_NS, S_FAST_NS, S_HAS_SHOT, S_NEXT_ROUND, S_NEXT_WIN, S_PADDRLEN,
    S_PA_NEXT, S_PB_NEXT, S_PCLEAN, S_PGEN, S_PIN, S_POISONED, S_PREPLY, S_RX_NS, S_SHOT, TRACE_LEN, TR_CHECKED,
    TR_DECODED, TR_FIRST_ROUND, TR_RECEIVED, TR_SENT, TR_STREAM, W_COMMIT, W_CORE, W_END, W_GRAPH, W_START)
from rtdecoder.kernels.window import commit_window, next_window, write_correction
from rtdecoder.kernels.wire import (OFF_ERR_STATUS, OFF_STREAM, OFF_TYPE, ST_SHOT_ABANDONED, STAMP_OFFSET, T_ERROR, rd,
                                   wr, write_error)
from rtdecoder.transport import libc as L

# process_datagram is nogil (the in-process path must not hold the GIL while it waits for the GPU
# simulator's threads) and calls one objmode block (``escape``), which takes the GIL itself.
warnings.filterwarnings("ignore", message="Code running in object mode won't allow parallel execution")

ST_INTERNAL = int(P.Status.INTERNAL)
TX_BYTES = 256
"""Transmit buffer per reply; the longest reply (a CORRECTION for 64 observables) is 72 bytes."""
STAMP = 1
"""``queue_reply``'s ``stamp``: write the send time at byte 48 just before sending."""
FLUSH_NONE = -1
"""``fd`` for the paths that send replies themselves (in process, ring transports): ``flush``
stamps and closes the trace but leaves the replies queued."""

# --- error-reply rate limit (``rl``, per worker) -----------------------------------------------
RL_SLOTS = 256
"""Sources tracked at once (a direct-mapped table: a source that collides with another takes its
slot over with a full bucket)."""
RL_KEY_HI, RL_KEY_LO, RL_PORT, RL_TOKENS, RL_LAST, RL_USED = 0, 1, 2, 3, 4, 5
RL_RATE, RL_BURST = 0, 1  # row 0: the limits (replies per second, burst)
TOKEN = 1_000_000_000
"""One reply in the bucket's units (token-nanoseconds: refilling at ``rate`` per second adds
``rate`` units per ns)."""

_STATES: dict[int, weakref.ref] = {}
"""Live ``rtdecoder.worker.WorkerState``s by ``wid``, for the escapes (only integers cross into
object mode). Weak: a state, and the engine it serves, is freed once nothing else holds it (and
its entry goes with it)."""
_next_wid = [0]


def register_state(state) -> int:
    """A new ``wid`` under which the escapes find ``state``."""
    wid = _next_wid[0]
    _next_wid[0] += 1
    _STATES[wid] = weakref.ref(state, lambda _, wid=wid: _STATES.pop(wid, None))
    return wid


def _decode_escape(wid: int, sid: int, k: int, fast: int) -> int:
    """Object-mode side of the escape: decode global window ``k`` of stream ``sid`` with the
    stream's compiled decoder (its ``decode_window_fast`` when ``fast``); the number of chosen
    edges (in the state's ``chosen``), or -1."""
    state = _STATES[wid]()
    e = state.engine
    t0 = time.perf_counter_ns()
    try:
        g, events = e.escape_windows[sid][k]
        d = e.decoders[sid]
        chosen, n = d.decode_window_fast(g, events) if fast else d.decode_window(g, events)
        state.escape_chosen[:n] = chosen[:n]
    except ValueError:
        n = -1
    state.escape[0] = time.perf_counter_ns() - t0
    return n


def post_replies(wid: int, q: int, consumed: int) -> int:
    """Object-mode side of a ring transport's reply escape: post ``q`` queued replies through the
    worker's ``WorkerState.poster``; -1 if the link is gone (the replies count as dropped)."""
    try:
        return _STATES[wid]().poster.post(q, consumed)
    except Exception:  # noqa: BLE001 - the link is gone: the replies are counted as dropped
        return -1


@njit(cache=True, _nrt=False)
def shots_in_flight(st, worker, workers):
    """Shots begun and neither complete nor poisoned on the streams this worker owns."""
    n = 0
    for sid in range(st.shape[0]):
        if sid % workers == worker and st[sid, C_CONFIGURED] == 1 and st[sid, S_HAS_SHOT] == 1 \
                and st[sid, S_DONE] == 0 and st[sid, S_POISONED] == 0:
            n += 1
    return n


@njit(cache=True, inline="always", _nrt=False)
def turn_read(ctl, counters, got, batch, full):
    """The overload bookkeeping of a loop turn that read ``got`` datagrams (frames, ring
    messages) where it asked for ``batch``, shared by every transport's loop so that each answers
    BUSY and takes the deadline fallback alike (docs/wire-protocol.md §6.1): ``ctl[CTL_BEHIND]``
    is 1 while the read was full (escape decoders with a deadline then fall back); after
    ``ctl[CTL_BUSY_BATCHES]`` full reads in a row ``ctl[CTL_SHED]`` is 1 (counted in
    ``CNT_OVERLOADED``): SYNDROMEs that would begin a new shot are answered BUSY; a short read ends
    both. ``full``: the full reads in a row before this one; returns the count after it."""
    if got >= batch:
        ctl[CTL_BEHIND] = 1
        full += 1
        if full == ctl[CTL_BUSY_BATCHES]:
            ctl[CTL_SHED] = 1
            counters[CNT_OVERLOADED] += 1
        return full
    ctl[CTL_BEHIND] = 0
    ctl[CTL_SHED] = 0
    return 0


@njit(cache=True, inline="always", _nrt=False)
def turn_empty(ctl):
    """The overload bookkeeping of a loop turn that found nothing to read: no backlog, so no
    shedding and not behind; returns the full reads in a row (0)."""
    ctl[CTL_BEHIND] = 0
    ctl[CTL_SHED] = 0
    return 0


@njit(cache=True, inline="always")
def drained(ctl, st):
    """Draining (``ctl[CTL_DRAIN]`` holds a deadline) and either past the deadline or with no
    shot of this worker's streams in flight: the loop may return. The loops call it only after
    a read that found nothing and that began after they had seen the deadline, so a datagram
    sent before the drain was asked for has been taken and its shot counts as in flight."""
    deadline = L.load_acquire(ctl, CTL_DRAIN)
    return deadline != 0 and (monotonic_ns() > deadline or shots_in_flight(st, ctl[CTL_WORKER], ctl[CTL_WORKERS]) == 0)


@njit(cache=True, _nrt=False)
def take_error_token(rl, src_hi, src_lo, port, now):
    """Whether source ``(src_hi, src_lo, port)`` may get one more ERROR reply at ``now`` (ns):
    a token bucket of ``rl[0, RL_BURST]`` replies refilled at ``rl[0, RL_RATE]`` per second."""
    rate = rl[0, RL_RATE]
    burst = rl[0, RL_BURST] * TOKEN
    h = (src_lo ^ (src_lo >> 17) ^ src_hi ^ (port * 40503)) & (RL_SLOTS - 1)
    row = rl[1 + h]
    if row[RL_USED] == 0 or row[RL_KEY_HI] != src_hi or row[RL_KEY_LO] != src_lo or row[RL_PORT] != port:
        row[RL_KEY_HI] = src_hi
        row[RL_KEY_LO] = src_lo
        row[RL_PORT] = port
        row[RL_TOKENS] = burst
        row[RL_LAST] = now
        row[RL_USED] = 1
    elapsed = min(max(now - row[RL_LAST], 0), burst // rate + 1)
    tokens = min(burst, row[RL_TOKENS] + elapsed * rate)
    row[RL_LAST] = now
    if tokens < TOKEN:
        row[RL_TOKENS] = tokens
        return False
    row[RL_TOKENS] = tokens - TOKEN
    return True


@njit(cache=True, nogil=True, _nrt=False)
def escape(wid, sid, k, fast):
    """The escape: one object-mode block (it takes the GIL) calling ``_decode_escape``; only
    integers cross. A function of its own, so that ``process_native``, which calls it, has no
    object-mode block and can be inlined into its two callers."""
    with objmode(nchosen="int64"):
        nchosen = _decode_escape(wid, sid, k, fast)
    return nchosen


@njit(cache=True, _nrt=False)
def _decode_gpu(gq, gr, g, lo):
    """Post window (graph ``g``, events at ``syn[lo:]``) to this worker's GPU slot and wait for
    the answer: the number of chosen edges (in the slot's chosen row), -1 if no correction
    exists, -2 if the device did not answer within ``slots.TIMEOUT_NS``."""
    seq = gq[GS.RQ_SEQ] + 1
    gq[GS.RQ_GRAPH] = g
    gq[GS.RQ_EVENTS] = lo
    L.store_release(gq, GS.RQ_SEQ, seq)
    t0 = monotonic_ns()
    while L.load_acquire(gr, GS.RS_SEQ) != seq:
        if monotonic_ns() - t0 > GS.TIMEOUT_NS:
            return -2
    return L.load_acquire(gr, GS.RS_COUNT)


@njit(cache=True, inline="always")
def row_addr(a, i):
    """Address of row ``i`` of the C-contiguous 2-D array ``a``."""
    return a.ctypes.data + i * a.strides[0]


@njit(cache=True, _nrt=False)
def queue_reply(tx, addr, length, stamp, name_addr, namelen):
    """Queue ``length`` bytes at address ``addr`` (a transmit buffer row, or for the echo the
    ring slot itself) for ``name_addr``; ``stamp``: ``STAMP`` to write the send time at byte 48
    first, else 0."""
    q = tx.q[0]
    tx.iov[q, 0] = addr
    tx.iov[q, 1] = length
    tx.hdr[q, L.H_NAME] = name_addr
    tx.hdr[q, L.H_NAMELEN] = namelen
    tx.flag[q] = stamp
    tx.q[0] = q + 1


@njit(cache=True, _nrt=False)
def flush(fd, tx, state):
    """Stamp the queued replies' send times, send them with ``sendmmsg`` on ``fd`` (``fd >= 0``),
    and close their windows' trace entries and histograms. With ``fd == FLUSH_NONE`` the replies
    stay queued for the caller."""
    q = tx.q[0]
    if q == 0:
        return
    now = monotonic_ns()
    for j in range(q):
        if tx.flag[j] == STAMP:
            wr(tx.buf[j], STAMP_OFFSET, 8, now)
        if tx.iov[j, 0] == row_addr(tx.buf, j):  # a reply built here (not an echo)
            record(state.rec, state.recw, KIND_TX, now, tx.buf[j], min(tx.iov[j, 1], tx.buf.shape[1]))
    if fd >= 0:
        sent = 0
        tries = 0
        while sent < q:
            r = L.sendmmsg(fd, tx.hdr.ctypes.data + sent * (8 * L.HDR_WORDS), q - sent, L.MSG_DONTWAIT)
            if r > 0:
                sent += r
                continue
            e = L.errno()
            if (e == L.EAGAIN or e == L.EINTR) and tries < 100_000:
                tries += 1  # the socket's send buffer is full: the kernel drains it in microseconds
                continue
            state.counters[CNT_SEND_DROPPED] += 1  # this reply cannot be sent (its address is unreachable)
            sent += 1
        tx.q[0] = 0
    t_sent = monotonic_ns()
    trace, tmeta, hist = state.trace, state.tmeta, state.hist
    for i in range(tmeta[M_PENDING], tmeta[M_NEXT]):
        row = trace[i % TRACE_LEN]
        row[TR_SENT] = t_sent
        observe(hist, HIST_SERVER, now - row[TR_RECEIVED])  # as the reply's own stamps say (§9)
        observe(hist, HIST_SEND, t_sent - row[TR_DECODED])
    tmeta[M_PENDING] = tmeta[M_NEXT]


@njit(cache=True, nogil=True, _nrt=False)
def process_datagram(buf, n, rx, name_addr, namelen, src_hi, src_lo, src_port, shed, fd, tables, state, ws, tx):
    """Handle one received datagram of either dialect: CUQR (``process_cuqr``) when it begins
    with CUQR's request magic, else the service's own (``process_native``). Arguments and result
    as ``process_native``'s."""
    record(state.rec, state.recw, KIND_RX, rx, buf, min(n, buf.shape[0]))
    if CQ.is_cuqr(buf, n):
        return process_cuqr(buf, n, rx, name_addr, namelen, src_hi, src_lo, src_port, shed, fd, tables, state, ws,
                            tx)
    return process_native(buf, n, rx, name_addr, namelen, src_hi, src_lo, src_port, shed, fd, tables, state, ws, tx)


@njit(cache=True, nogil=True, _nrt=False)
def process_cuqr(buf, n, rx, name_addr, namelen, src_hi, src_lo, src_port, shed, fd, tables, state, ws, tx):
    """Handle one CUQR request (``rtdecoder.kernels.cuqr``; docs/cuqr-compat.md) and queue its
    reply. ``enqueue_syndromes`` hands every round it completes to ``process_native`` as a
    SYNDROME of the service's protocol. Returns 1 for a ``get_corrections`` answered OK (the
    reply the controller waits for: the caller sends it at once), else 0: an enqueue's
    acknowledgement goes with the rest of the receive batch's replies.

    The checks run in the order of cudaqx main's host dispatch (docs/cuqr-compat.md, "The wire
    format"): a request shorter than the header, or naming a function outside the three, gets
    no reply; arguments too short to hold a ``decoder_id`` are BAD_REQUEST; a ``decoder_id``
    that names no servable stream is INVALID_DECODER; then each function's own parse
    (BAD_REQUEST; for ``enqueue_syndromes`` it also fails the shot). One from a source outside
    the stream's allow-list gets no reply and is counted (``REJECT_NOT_ALLOWED``). Every other
    request is answered: CUQR replies are not subject to the native ERROR reply budget."""
    st, counters = tables.st, state.counters
    counters[CQ_REQUESTS] += 1
    counters[CNT_BYTES] += n
    if not allowed(tables.allow, 0, tables.allow.shape[0], src_hi, src_lo):
        counters[REJECT_NOT_ALLOWED] += 1
        return 0
    if n < CQ.HEADER_BYTES:
        return 0  # nothing to echo
    fn = rd(buf, 4, 4)
    if fn == CQ.FN_ENQUEUE_SYNDROMES:
        counters[CQ_FUNCTION] += 1
    elif fn == CQ.FN_GET_CORRECTIONS:
        counters[CQ_FUNCTION + 1] += 1
    elif fn == CQ.FN_RESET_DECODER:
        counters[CQ_FUNCTION + 2] += 1
    else:
        return 0  # outside the function table: dropped, counted as function="other"
    if n > buf.shape[0]:  # longer than a receive slot: what fits is the header
        _cq_reply(buf, CQ.BAD_REQUEST, 0, 0, name_addr, namelen, rx, fd, state, tx)
        return 0
    arg_len = rd(buf, 8, 4)
    physical = n - CQ.HEADER_BYTES  # argument bytes the datagram holds (a 256-byte slot: zeros after)
    a = CQ.HEADER_BYTES
    if arg_len < 8 or physical < 8:
        _cq_reply(buf, CQ.BAD_REQUEST, 0, 0, name_addr, namelen, rx, fd, state, tx)
        return 0
    sid = CQ.stream_of(st, rd(buf, a, 8))
    if sid < 0:
        _cq_reply(buf, CQ.INVALID_DECODER, 0, 0, name_addr, namelen, rx, fd, state, tx)
        return 0
    if not allowed(tables.allow, st[sid, C_ALLOW_BASE], st[sid, C_ALLOW_N], src_hi, src_lo):
        counters[REJECT_NOT_ALLOWED] += 1
        return 0
    if st[sid, C_READY] == 0:
        _cq_reply(buf, CQ.NOT_READY, 0, 0, name_addr, namelen, rx, fd, state, tx)
        return 0
    if fn == CQ.FN_RESET_DECODER:
        if arg_len > physical:
            status = CQ.BAD_REQUEST
        elif shed:
            status = CQ.BUSY
        else:
            CQ.reset_decoder(st, sid)
            status = CQ.OK
        _cq_reply(buf, status, 0, 0, name_addr, namelen, rx, fd, state, tx)
        return 0
    if fn == CQ.FN_GET_CORRECTIONS:
        size = rd(buf, a + 8, 8)
        if arg_len < CQ.GET_CORRECTIONS_ARGS or arg_len > physical:
            status = CQ.BAD_REQUEST
        elif shed:
            status = CQ.BUSY
        elif size <= 0:
            status = CQ.BAD_REQUEST
        elif st[sid, S_CQ_DROPPED] == 1:
            status = CQ.SYNDROMES_DROPPED
        elif st[sid, S_CQ_STATE] == CQ_FAILED:
            status = CQ.INTERNAL_ERROR
        elif size != st[sid, C_NOBS]:
            status = CQ.BAD_REQUEST
        elif st[sid, S_CQ_STATE] != CQ_READY:
            status = CQ.NOT_READY
        else:
            status = CQ.OK
        if status != CQ.OK:
            _cq_reply(buf, status, 0, 0, name_addr, namelen, rx, fd, state, tx)
            return 0
        _cq_reply(buf, CQ.OK, (size + 7) >> 3, st[sid, S_CQ_RESULT], name_addr, namelen, rx, fd, state, tx)
        if buf[a + 16] != 0:
            st[sid, S_CQ_STATE] = CQ_COLLECTING  # the correction is cleared; the shot stays complete
        return 1  # the answer the controller waits for: sent at once
    # --- enqueue_syndromes ---------------------------------------------------------------------
    nbits = rd(buf, a + 24, 8) if arg_len >= CQ.ENQUEUE_ARGS and physical >= CQ.ENQUEUE_ARGS else 0
    if arg_len > physical or arg_len < CQ.ENQUEUE_ARGS or nbits <= 0 or nbits > CQ.MAX_SYNDROME_BITS \
            or (nbits + 7) >> 3 > arg_len - CQ.ENQUEUE_ARGS or rd(buf, a + 16, 8) != 0:
        # Unparsable, or a syndrome mapping other than the identity (0): BAD_REQUEST, and the
        # shot's measurement history is unknowable from here on (failed until reset_decoder).
        st[sid, S_CQ_STATE] = CQ_FAILED
        _cq_reply(buf, CQ.BAD_REQUEST, 0, 0, name_addr, namelen, rx, fd, state, tx)
        return 0
    if st[sid, S_CQ_DROPPED] == 1 or st[sid, S_CQ_STATE] == CQ_FAILED:
        # The shot is lost already: acknowledged and ignored until reset_decoder (the latch is
        # what get_corrections reports).
        _cq_reply(buf, CQ.OK, 0, 0, name_addr, namelen, rx, fd, state, tx)
        return 0
    total = st[sid, C_CQ_BITS]
    if st[sid, S_CQ_POS] == total:  # the last shot is complete: these bits begin the next
        CQ.start_shot(st, sid)
    pos = st[sid, S_CQ_POS]
    if pos == 0 and shed:
        st[sid, S_CQ_DROPPED] = 1
        _cq_reply(buf, CQ.SYNDROMES_DROPPED, 0, 0, name_addr, namelen, rx, fd, state, tx)
        return 0
    st[sid, S_CQ_STATE] = CQ_COLLECTING
    if pos + nbits > total:  # more bits than the shot holds: acknowledged, the shot fails
        st[sid, S_CQ_STATE] = CQ_FAILED
        _cq_reply(buf, CQ.OK, 0, 0, name_addr, namelen, rx, fd, state, tx)
        return 0
    CQ.unpack_bits(buf, a + CQ.ENQUEUE_ARGS, nbits, tables.cqbits, st[sid, C_CQ_BASE] + pos)
    pos += nbits
    st[sid, S_CQ_POS] = pos
    counts = tables.moffs if st[sid, C_INPUT] else tables.offs
    cb = st[sid, C_MOFF_BASE] if st[sid, C_INPUT] else st[sid, C_OFF_BASE]
    nrounds = st[sid, C_NROUNDS]
    dg, cq_tx = state.cq_in, state.cq_tx
    status = CQ.OK
    while st[sid, S_CQ_ROUNDS] < nrounds and counts[cb + st[sid, S_CQ_ROUNDS] + 1] - counts[cb] <= pos:
        r = st[sid, S_CQ_ROUNDS]
        size = CQ.round_datagram(st, counts, tables.cqbits, sid, r, dg)
        process_native(dg, size, rx, name_addr, namelen, src_hi, src_lo, src_port, shed, FLUSH_NONE, tables,
                              state, ws, cq_tx)
        counters[CNT_PACKETS] -= 1  # the request was counted once, as a CUQR request
        counters[CNT_BYTES] -= size
        st[sid, S_CQ_ROUNDS] = r + 1
        if CQ.take_replies(st, sid, cq_tx) == CQ.BUSY:
            st[sid, S_CQ_DROPPED] = 1
            status = CQ.SYNDROMES_DROPPED
            break
        if st[sid, S_CQ_STATE] == CQ_FAILED:
            break
    _cq_reply(buf, status, 0, 0, name_addr, namelen, rx, fd, state, tx)
    return 0  # an acknowledgement: it leaves with the batch's other replies


@njit(cache=True, _nrt=False)
def _cq_reply(buf, status, result_len, result, name_addr, namelen, rx, fd, state, tx):
    """Queue a CUQR reply with ``status`` and ``result_len`` bytes of ``result`` (a mask, least
    significant byte first). Every CUQR request that names a function is answered, as cudaqx
    main's dispatch answers them: no reply budget applies (docs/cuqr-compat.md)."""
    state.counters[CQ_STATUS + status] += 1
    if tx.q[0] == tx.buf.shape[0]:
        flush(fd, tx, state)
    q = tx.q[0]
    row = tx.buf[q]
    size = CQ.write_reply(row, buf, status, result_len)
    for i in range(result_len):
        row[CQ.HEADER_BYTES + i] = np.uint8((result >> (8 * i)) & 0xFF) if i < 8 else 0
    queue_reply(tx, row_addr(tx.buf, q), size, 0, name_addr, namelen)


@njit(cache=True, _nrt=False, inline="always")
def trace_window(state, sid, first_round, rx, checked, decoded):
    """A decoded window's row in the worker's trace ring (its send time is written by ``flush``)."""
    row = state.trace[state.tmeta[M_NEXT] % TRACE_LEN]
    row[TR_SENT] = 0  # first: a scrape reading this row meanwhile skips it as not yet sent
    row[TR_STREAM] = sid
    row[TR_FIRST_ROUND] = first_round
    row[TR_RECEIVED] = rx
    row[TR_CHECKED] = checked
    row[TR_DECODED] = decoded
    state.tmeta[M_NEXT] += 1


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def process_native(buf, n, rx, name_addr, namelen, src_hi, src_lo, src_port, shed, fd, tables, state, ws, tx):
    """Handle one received datagram: check it, append its rounds, decode and commit every window
    it completed, and queue the replies (docs/wire-protocol.md §6, §7).

    Args:
        buf: uint8 array, the ring slot holding the datagram; ``n`` its length as the transport
            reported it (it may exceed ``len(buf)``: then it is rejected TOO_LARGE).
        rx: receive time, ns.
        name_addr, namelen: the sender's ``sockaddr`` (address, bytes); replies go there.
        src_hi, src_lo, src_port: the sender's address (``libc.source_of``), for the
            allow-lists and the error-reply rate limit (``take_error_token``).
        shed: non-zero while the worker is overloaded: new shots are answered BUSY.
        fd: the socket to flush a full transmit batch to (``FLUSH_NONE``: leave it queued).
        tables: ``rtdecoder.kernels.tables.Tables`` (``Engine.tables``); state:
            ``WorkerArrays``; ws: the union-find workspace; tx: ``TxArrays``.

    Returns:
        1 if the datagram completed a shot (its replies end with the FINAL CORRECTION; the
        caller sends them at once), else 0.
    """
    st, offs, syn, win = tables.st, tables.offs, tables.syn, tables.win
    counters, hist, out = state.counters, state.hist, state.out
    txbuf = tx.buf
    cap = txbuf.shape[0]
    if tx.q[0] == cap:
        flush(fd, tx, state)
    q = tx.q[0]
    ingest(buf, n, rx, st, offs, syn, tables.keep, tables.moffs, tables.meas, tables.dptr, tables.drec, tables.dflip,
           tables.dkept, tables.dkptr, tables.dshift, counters, txbuf[q], out, tables.allow, src_hi, src_lo, shed)
    sid = out[OUT_STREAM]
    error = out[OUT_REPLY_LEN] != 0 and txbuf[q, OFF_TYPE] == T_ERROR
    abandoned = error and sid >= 0 and rd(txbuf[q], OFF_ERR_STATUS, 2) == ST_SHOT_ABANDONED
    if abandoned and next_window(st, win, sid) >= 0:
        pass  # about the old shot: the new shot's corrections are the answer instead (§6.2 rule 2)
    elif error and not take_error_token(state.rl, src_hi, src_lo, src_port, rx):
        counters[CNT_ERRORS_SUPPRESSED] += 1
    elif out[OUT_REPLY_LEN]:
        queue_reply(tx, row_addr(txbuf, q), out[OUT_REPLY_LEN], out[OUT_STAMP], name_addr, namelen)
    if sid < 0:
        return 0
    checked = monotonic_ns()
    observe(hist, HIST_CHECK, checked - rx)
    if st[sid, C_PARALLEL] > 1:
        return parallel_step(sid, name_addr, namelen, fd, tables, state, ws, tx)
    dec = st[sid, C_DECODER]
    call = st[sid, C_CALL]
    sbase = st[sid, C_SYN_BASE]
    obase = st[sid, C_OFF_BASE]
    gq = state.gpu_request
    while True:
        k = next_window(st, win, sid)
        if k < 0:
            return st[sid, S_DONE]
        if tx.q[0] == cap:
            flush(fd, tx, state)
        q = tx.q[0]
        t0 = monotonic_ns()
        way = call
        fast = 0  # the fallback chain: the decoder, its fast mode, union-find
        used = dec  # the wire id of the decoder that decodes the window (its HIST_DECODE row)
        if call == CALL_ESCAPE and st[sid, C_DEADLINE] > 0:
            late = t0 - st[sid, S_RX_NS]
            behind = state.ctl[CTL_BEHIND] == 1
            if behind or late + st[sid, S_ESCAPE_NS] > st[sid, C_DEADLINE]:
                if st[sid, C_FAST] > 0 and not behind and late + st[sid, S_FAST_NS] <= st[sid, C_DEADLINE]:
                    fast = 1  # the fast mode still meets the deadline
                    used = st[sid, C_FAST] - 1
                    counters[CNT_FALLBACK_FAST + dec] += 1
                else:
                    way = CALL_COMPILED  # past the deadline, or behind: union-find on the CPU instead
                    used = st[sid, C_FALLBACK]
                    counters[CNT_FALLBACK + dec] += 1
        if way == CALL_COMPILED and call == CALL_COMPILED and gq.shape[0] > 0:
            nchosen = _decode_gpu(gq, state.gpu_result, win[k, W_GRAPH], sbase + offs[obase + win[k, W_START]])
            chosen = state.gpu_chosen
            t1 = monotonic_ns()
        elif way == CALL_COMPILED:
            g = win[k, W_GRAPH]
            ub = tables.uf_base
            pb, nn, sb, ns, eb, m = ub[g, 0], ub[g, 1], ub[g, 2], ub[g, 3], ub[g, 4], ub[g, 5]
            lo = sbase + offs[obase + win[k, W_START]]
            hb = tables.uf_hbase[g]  # the graph's heralds (none: an empty hidx)
            nchosen = uf.decode(tables.uf_ptr[pb:pb + nn + 1], tables.uf_slot[sb:sb + ns], tables.uf_eu[eb:eb + m],
                                tables.uf_ev[eb:eb + m], syn[lo:lo + nn], tables.uf_hidx[hb[0]:hb[0] + hb[1]],
                                tables.uf_hptr[hb[2]:], tables.uf_hedge[hb[3]:], *ws)
            chosen = ws[-1]
            t1 = monotonic_ns()
        else:
            nchosen = escape(state.wid, sid, k, fast)
            chosen = state.escape_chosen
            t1 = monotonic_ns()
            observe(hist, HIST_ESCAPE, max(t1 - t0 - state.escape[0], 0))
            if st[sid, C_DEADLINE] > 0:  # the running estimates the deadline is judged by
                col = S_FAST_NS if fast else S_ESCAPE_NS
                st[sid, col] += (t1 - t0 - st[sid, col]) >> 3
        if nchosen < 0:  # no correction explains the events: poison the shot, say INTERNAL
            st[sid, S_POISONED] = 1
            counters[ST_INTERNAL] += 1
            size = write_error(txbuf[q], txbuf[q], 0, ST_INTERNAL, st[sid, S_SHOT], win[k, W_START], st[sid, S_RX_NS])
            wr(txbuf[q], OFF_STREAM, 2, sid)
            queue_reply(tx, row_addr(txbuf, q), size, 0, name_addr, namelen)
            return 0
        size = commit_window(st, offs, syn, win, tables.gbase, tables.node_round, tables.edges, sid, k, chosen,
                             nchosen, txbuf[q], counters)
        decoded = monotonic_ns()
        observe(hist, HIST_DECODE + used, t1 - t0)
        observe(hist, HIST_STAGE_DECODE, decoded - checked)
        queue_reply(tx, row_addr(txbuf, q), size, STAMP, name_addr, namelen)
        trace_window(state, sid, win[k, W_START], rx, checked, decoded)


# --- parallel streams (``StreamConfig.parallel > 1``): the owning worker's side -----------------
PARALLEL_WAIT_NS = 1_000_000_000
"""How long a worker waits for a helper's jobs of an old shot before it reuses their carry row."""


@njit(cache=True, _nrt=False)
def take_result(tables, state, tx, fd, sid, k, gen, flips, ok):
    """A decoded window of a parallel stream: kept for its reply if it is of the shot in progress
    (a stale one, of an earlier shot, is dropped); a window without a correction poisons the shot
    and is answered INTERNAL."""
    st = tables.st
    if gen != st[sid, S_PGEN] or st[sid, S_POISONED] == 1 or st[sid, S_HAS_SHOT] == 0:
        return
    if ok == 0:
        st[sid, S_POISONED] = 1
        state.counters[ST_INTERNAL] += 1
        if tx.q[0] == tx.buf.shape[0]:
            flush(fd, tx, state)
        q = tx.q[0]
        size = write_error(tx.buf[q], tx.buf[q], 0, ST_INTERNAL, st[sid, S_SHOT], tables.win[k, W_START],
                           st[sid, S_RX_NS])
        wr(tx.buf[q], OFF_STREAM, 2, sid)
        alen = st[sid, S_PADDRLEN]
        queue_reply(tx, row_addr(tx.buf, q), size, 0, row_addr(tables.paddr, sid) if alen > 0 else 0, alen)
        return
    row = st[sid, C_PRES_BASE] + k - st[sid, C_WIN_BASE]
    tables.pres[row, 0] = gen
    tables.pres[row, 1] = flips


@njit(cache=True, _nrt=False)
def _dispatch(tables, state, ws, tx, fd, sid, k, turn):
    """Window ``k`` to worker ``turn`` of the stream's: 0 is this worker, which decodes it now, as
    it does a helper's turn when that helper is not running or its ring is full."""
    st = tables.st
    gen = st[sid, S_PGEN]
    h = turn - 1
    if h >= 0 and h < state.ctl[CTL_HELPERS]:
        idx = state.pidx[h]
        head = idx[KP.JOB_HEAD]
        if head - idx[KP.RES_TAIL] < KP.RING:
            job = state.pjobs[h, head & (KP.RING - 1)]
            job[0] = sid
            job[1] = k
            job[2] = gen
            L.store_release(idx, KP.JOB_HEAD, head + 1)
            st[sid, S_PIN + (gen & 1)] += 1
            state.counters[CNT_PAR_HELPER] += 1
            return
    flips, ok = KP.decode_region(tables, sid, k, gen, state.pscratch, *ws)
    state.counters[CNT_PAR_OWNER] += 1
    take_result(tables, state, tx, fd, sid, k, gen, flips, ok)


@njit(cache=True, _nrt=False)
def advance(tables, state, ws, tx, fd, sid):
    """Move parallel stream ``sid``'s shot on: dispatch every A window whose rounds have all
    arrived and every B window whose two A windows are decoded (window ``j`` of a layer to the
    stream's worker ``j % parallel``), then reply, in round order, for every window decoded
    (``S_PREPLY``): one CORRECTION per commit region, FINAL for the last."""
    st, win = tables.st, tables.win
    gen = st[sid, S_PGEN]
    nwin = st[sid, C_NWIN]
    wb = st[sid, C_WIN_BASE]
    pres = tables.pres[st[sid, C_PRES_BASE]:]  # the stream's results by local window
    kw = st[sid, C_PARALLEL]
    progress = True
    while progress:
        progress = False
        while st[sid, S_PA_NEXT] < nwin and st[sid, S_POISONED] == 0 and st[sid, S_HAS_SHOT] == 1 \
                and st[sid, S_NEXT_ROUND] >= win[wb + st[sid, S_PA_NEXT], W_END]:
            r = st[sid, S_PA_NEXT]
            st[sid, S_PA_NEXT] = r + 2
            _dispatch(tables, state, ws, tx, fd, sid, wb + r, (r >> 1) % kw)
            progress = True
        while st[sid, S_PB_NEXT] < nwin and st[sid, S_POISONED] == 0 and st[sid, S_HAS_SHOT] == 1:
            r = st[sid, S_PB_NEXT]
            k = wb + r
            if pres[r - 1, 0] != gen or (r + 1 < nwin and pres[r + 1, 0] != gen) \
                    or st[sid, S_NEXT_ROUND] < win[k, W_END]:
                break
            st[sid, S_PB_NEXT] = r + 2
            _dispatch(tables, state, ws, tx, fd, sid, k, (r >> 1) % kw)
            progress = True
        while st[sid, S_PREPLY] < nwin and st[sid, S_POISONED] == 0 and pres[st[sid, S_PREPLY], 0] == gen:
            r = st[sid, S_PREPLY]
            k = wb + r
            if tx.q[0] == tx.buf.shape[0]:
                flush(fd, tx, state)
            q = tx.q[0]
            first = win[k, W_CORE]
            size = write_correction(st, sid, first, win[k, W_COMMIT] - first, win[k, W_COMMIT] == st[sid, C_NROUNDS],
                                    pres[r, 1], tx.buf[q], state.counters)
            st[sid, S_PREPLY] += 1
            st[sid, S_NEXT_WIN] = st[sid, S_PREPLY]  # windows committed (the backlog gauge reads it)
            alen = st[sid, S_PADDRLEN]
            queue_reply(tx, row_addr(tx.buf, q), size, STAMP, row_addr(tables.paddr, sid) if alen > 0 else 0, alen)
            now = monotonic_ns()
            observe(state.hist, HIST_STAGE_DECODE, now - st[sid, S_RX_NS])
            trace_window(state, sid, first, st[sid, S_RX_NS], now, now)


@njit(cache=True, _nrt=False)
def poll_parallel(tables, state, ws, tx, fd):
    """Take every result the worker's helpers have posted and move their streams on
    (``advance``); 1 if jobs are still with a helper, else 0."""
    st = tables.st
    pending = 0
    for h in range(state.pjobs.shape[0]):
        idx = state.pidx[h]
        while True:
            tail = idx[KP.RES_TAIL]
            if L.load_acquire(idx, KP.RES_HEAD) == tail:
                break
            res = state.pres_ring[h, tail & (KP.RING - 1)]
            sid, k, gen, flips, ok = res[0], res[1], res[2], res[3], res[4]
            L.store_release(idx, KP.RES_TAIL, tail + 1)
            st[sid, S_PIN + (gen & 1)] -= 1
            take_result(tables, state, tx, fd, sid, k, gen, flips, ok)
            advance(tables, state, ws, tx, fd, sid)
    for h in range(state.pjobs.shape[0]):  # after every advance: one may have dealt a job to any helper
        if state.pidx[h, KP.JOB_HEAD] != state.pidx[h, KP.RES_TAIL]:
            pending = 1
    return pending


@njit(cache=True, _nrt=False)
def parallel_step(sid, name_addr, namelen, fd, tables, state, ws, tx):
    """``process_native``'s part for a parallel stream after ``ingest``: keep the controller's
    address for the replies that go later (``Tables.paddr``), at a new shot wait for the helpers'
    jobs of the shot two before (they wrote the carry row this one uses) and clear that row, then
    ``advance``. Returns 1 if the shot is done (its FINAL queued), else 0."""
    st = tables.st
    if name_addr != 0 and 0 < namelen <= tables.paddr.shape[1]:
        L.memcpy(row_addr(tables.paddr, sid), name_addr, namelen)
        st[sid, S_PADDRLEN] = namelen
    gen = st[sid, S_PGEN]
    if st[sid, S_PCLEAN] != gen and st[sid, S_HAS_SHOT] == 1:
        par = gen & 1
        t0 = monotonic_ns()
        while st[sid, S_PIN + par] > 0 and monotonic_ns() - t0 < PARALLEL_WAIT_NS:
            poll_parallel(tables, state, ws, tx, fd)
        lo = st[sid, C_SYN_BASE]
        hi = lo + st[sid, C_NDET]
        tables.pcarry[par, 0, lo:hi] = 0
        tables.pcarry[par, 1, lo:hi] = 0
        st[sid, S_PCLEAN] = gen
    advance(tables, state, ws, tx, fd, sid)
    return st[sid, S_DONE]


@njit(cache=True, _nrt=False)
def settle_parallel(tables, state, ws, tx, fd, timeout_ns):
    """Poll until no job is with a helper (or ``timeout_ns`` passed): before a loop returns, so
    that its helpers can stop with empty rings. 1 if jobs are still out, else 0."""
    t0 = monotonic_ns()
    while poll_parallel(tables, state, ws, tx, fd):
        if monotonic_ns() - t0 > timeout_ns:
            return 1
    return 0
