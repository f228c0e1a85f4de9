"""One datagram's handling, in compiled code: check → append rounds → decode → commit → reply.

``process_datagram`` is the one implementation of it: every transport's compiled loop
(``rtdecoder.transport.udp.serve_loop``, ``rtdecoder.transport.ring.ring_serve_loop``) and the
in-process path (``Engine.handle``: tests, ``Engine.decode_shots``, sinter) call it. It is
compiled with ``_nrt=False``: numba's runtime is off, so it cannot allocate and takes no
reference counts.

A stream's decoder is called the way its registration says (``rtdecoder.decoders``; the
stream table's ``C_CALL`` column), never by its name:

- ``CALL_COMPILED``: the union-find kernel (``rtdecoder.kernels.union_find.decode``) on the
  engine's concatenated CSR graphs, in the loop; or, where the worker has a slot of the resident
  GPU decoder (``rtdecoder.gpu.PersistentDecoder``), posted to that slot in mapped memory
  (``rtdecoder.kernels.slots``) and waited for.
- ``CALL_ESCAPE``: one numba ``objmode`` block that takes the GIL and calls the compiled
  decoder's ``decode_window`` on the window's detection events (a view of ``syn`` made at
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

from numba import njit, objmode

from rtdecoder import protocol as P
from rtdecoder.kernels import slots as GS
from rtdecoder.kernels import union_find as uf
from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.kernels.histogram import observe
from rtdecoder.kernels.ingest import ingest
from rtdecoder.kernels.tables import (
    C_CALL, C_CONFIGURED, C_DECODER, C_OFF_BASE, C_SYN_BASE, CALL_COMPILED, CNT_ERRORS_SUPPRESSED,
    CNT_SEND_DROPPED, CTL_DRAIN, CTL_WORKER, CTL_WORKERS, HIST_CHECK, HIST_DECODE, HIST_ESCAPE, HIST_SEND,
    HIST_SERVER, HIST_STAGE_DECODE, M_NEXT, M_PENDING, OUT_REPLY_LEN, OUT_STAMP, OUT_STREAM, S_DONE, S_HAS_SHOT,
    S_POISONED, S_RX_NS, S_SHOT, TR_CHECKED, TR_DECODED, TR_FIRST_ROUND, TR_RECEIVED, TR_SENT, TR_STREAM,
    TRACE_LEN, W_GRAPH, W_START)
from rtdecoder.kernels.window import commit_window, next_window
from rtdecoder.kernels.wire import (OFF_ERR_STATUS, OFF_STREAM, OFF_TYPE, ST_SHOT_ABANDONED, STAMP_OFFSET, T_ERROR, rd,
                                   wr, write_error)
from rtdecoder.transport import libc as L

# process_datagram is nogil (the in-process path must not hold the GIL while it waits for the GPU
# simulator's threads) and has one objmode block (the escape), which takes the GIL itself.
warnings.filterwarnings("ignore", message="Code running in object mode won't allow parallel execution")

ST_INTERNAL = int(P.Status.INTERNAL)
TX_BYTES = 256
"""Transmit buffer per reply; the longest reply (a CORRECTION for 64 observables) is 72 bytes."""
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


def _decode_escape(wid: int, sid: int, k: int) -> int:
    """Object-mode side of the escape: decode global window ``k`` of stream ``sid`` with the
    stream's compiled decoder; the number of chosen edges (in the state's ``chosen``), or -1."""
    state = _STATES[wid]()
    e = state.engine
    t0 = time.perf_counter_ns()
    try:
        g, events = e.escape_windows[sid][k]
        chosen, n = e.decoders[sid].decode_window(g, events)
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
    ring slot itself) for ``name_addr``; ``stamp``: write the send time at byte 48 first."""
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
        if tx.flag[j]:
            wr(tx.buf[j], STAMP_OFFSET, 8, now)
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
        observe(hist, HIST_SERVER, t_sent - row[TR_RECEIVED])
        observe(hist, HIST_SEND, t_sent - row[TR_DECODED])
    tmeta[M_PENDING] = tmeta[M_NEXT]


@njit(cache=True, nogil=True, _nrt=False)
def process_datagram(buf, n, rx, name_addr, namelen, src_hi, src_lo, src_port, shed, fd, tables, state, ws, tx):
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
    counters, hist, out, trace, tmeta = state.counters, state.hist, state.out, state.trace, state.tmeta
    txbuf = tx.buf
    cap = txbuf.shape[0]
    if tx.q[0] == cap:
        flush(fd, tx, state)
    q = tx.q[0]
    ingest(buf, n, rx, st, offs, syn, tables.keep, tables.moffs, tables.meas, tables.dptr, tables.drec, tables.dflip,
           tables.dkept, tables.dkptr, counters, txbuf[q], out, tables.allow, src_hi, src_lo, shed)
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
        if call == CALL_COMPILED and gq.shape[0] > 0:
            nchosen = _decode_gpu(gq, state.gpu_result, win[k, W_GRAPH], sbase + offs[obase + win[k, W_START]])
            chosen = state.gpu_chosen
            t1 = monotonic_ns()
        elif call == CALL_COMPILED:
            g = win[k, W_GRAPH]
            ub = tables.uf_base
            pb, nn, sb, ns, eb, m = ub[g, 0], ub[g, 1], ub[g, 2], ub[g, 3], ub[g, 4], ub[g, 5]
            lo = sbase + offs[obase + win[k, W_START]]
            nchosen = uf.decode(tables.uf_ptr[pb:pb + nn + 1], tables.uf_slot[sb:sb + ns], tables.uf_eu[eb:eb + m],
                                tables.uf_ev[eb:eb + m], syn[lo:lo + nn], *ws)
            chosen = ws[-1]
            t1 = monotonic_ns()
        else:
            wid = state.wid
            with objmode(nchosen="int64"):
                nchosen = _decode_escape(wid, sid, k)
            chosen = state.escape_chosen
            t1 = monotonic_ns()
            observe(hist, HIST_ESCAPE, max(t1 - t0 - state.escape[0], 0))
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
        observe(hist, HIST_DECODE + dec, t1 - t0)
        observe(hist, HIST_STAGE_DECODE, decoded - checked)
        queue_reply(tx, row_addr(txbuf, q), size, 1, name_addr, namelen)
        row = trace[tmeta[M_NEXT] % TRACE_LEN]
        row[TR_SENT] = 0  # first: a scrape reading this row meanwhile skips it as not yet sent
        row[TR_STREAM] = sid
        row[TR_FIRST_ROUND] = win[k, W_START]
        row[TR_RECEIVED] = rx
        row[TR_CHECKED] = checked
        row[TR_DECODED] = decoded
        tmeta[M_NEXT] += 1
