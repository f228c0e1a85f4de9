"""The compiled data plane: receive → check → append rounds → decode → send, in numba.

DESIGN.md, "The hot path". ``serve_loop`` busy-polls one UDP socket with ``recvmmsg``
(``MSG_DONTWAIT``) straight into the receive ring's slots, hands each datagram to
``process_datagram`` and sends the replies that datagram produced with one ``sendmmsg``, all in
nopython code: no Python bytecode runs per datagram when the stream decodes with union-find.

``process_datagram`` is the one implementation of a datagram's handling; the in-process path
(``Engine.handle``, used by tests, ``Engine.decode_shots`` and sinter) calls it too.

Everything on the data path (these loops, ``kernels/stream.py``, ``kernels/union_find.py``) is
compiled with ``_nrt=False``: numba's runtime is off, so the code cannot allocate (it would not
compile) and takes no reference counts. With the runtime on, each array taken out of the
``tables``/``state`` tuples or sliced (a window's events, a ring slot) cost an atomic increment
and decrement, a call each: ``process_datagram``'s code held 315 such calls, and the runtime's
two functions took 3.5 % of a busy worker's time at d = 13 (perf, cpu-clock samples).

Matching: PyMatching is C++ behind a Python API, so a matching window leaves compiled code for
exactly one call, a numba ``objmode`` block that takes the GIL, calls
``CompiledMatching.decode_window`` on the window's detection events (a view of ``syn`` made at
configuration) and copies the chosen edges into a preallocated array; only three integers cross
the boundary. What the escape costs beyond the decoder's own time is measured on every matching
window (histogram row ``HIST_ESCAPE``).

GPU (``--backend gpu``, ``rtdecoder.gpu.PersistentDecoder``): a union-find window is not decoded
here but posted to the worker's slot of the resident GPU kernel, in mapped host memory
(``rtdecoder.kernels.slots``): the graph and the offset of the window's events in ``syn`` (mapped
too, so the device reads them where ``ingest`` wrote them), then the sequence number with a
release store; the worker spins until the device writes the same number back, then commits the
chosen edges as it would the CPU kernel's. No launch, no copy call, no Python per window. A
device that does not answer within ``slots.TIMEOUT_NS`` poisons the shot (INTERNAL).

Per-stage timestamps (ns, CLOCK_MONOTONIC, ``rtdecoder.kernels.clock``) of every decoded window
go to a preallocated trace ring and per-stage histograms that the Prometheus collector reads at
scrape time:

- *received*: ``recvmmsg`` returned the batch holding the datagram that completed the window;
- *checked*: ``ingest`` checked the datagram and appended its rounds;
- *decoded*: the window was decoded and committed, its CORRECTION written;
- *sent*: ``sendmmsg`` returned for the datagram's replies (with the rest of its receive batch's,
  see the send policy below).

Stages: ``check`` = checked − received, ``decode`` = decoded − checked (with several windows
completed by one datagram, the earlier windows' time counts toward the later ones), ``send`` =
sent − decoded; ``HIST_SERVER`` is sent − received.

Send policy: the replies the datagrams of one ``recvmmsg`` batch produce (an error or control
reply, one CORRECTION per window completed) are queued in the transmit batch and sent with one
``sendmmsg`` when the receive batch has been handled; earlier when the transmit batch is full,
and at once after a datagram that completed a shot (its FINAL CORRECTION is the last reply that
datagram produces, so a shot's end never waits for the datagrams behind it). When the service
keeps up, a batch is one datagram and this is a send per datagram; in a backlog it is one send
system call per batch instead of one per window, so the worker catches up faster after a stall.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from numba import njit, objmode

from rtdecoder import protocol as P
from rtdecoder.kernels import slots as GS
from rtdecoder.kernels import stream as K
from rtdecoder.kernels import union_find as uf
from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.transport import libc as L
from rtdecoder.transport import roce as RING  # the §11 layout only; pyverbs is imported by its verbs code

# process_datagram is nogil (the in-process path must not hold the GIL while it waits for the GPU
# simulator's threads) and has one objmode block (the matching escape), which takes the GIL itself.
warnings.filterwarnings("ignore", message="Code running in object mode won't allow parallel execution")

# --- histogram rows (per worker; ``rtdecoder.metrics`` names them) ----------------------------
HIST_SERVER = 0
"""received → sent, per window."""
HIST_DECODE = 1
"""Rows ``HIST_DECODE + decoder id``: time inside the window decoder, per window."""
HIST_CHECK = HIST_DECODE + len(P.DECODER_IDS)
HIST_STAGE_DECODE = HIST_CHECK + 1
HIST_SEND = HIST_CHECK + 2
HIST_ESCAPE = HIST_CHECK + 3
"""Matching only: time in the objmode escape beyond PyMatching's own call, per window."""
NUM_HIST_ROWS = HIST_CHECK + 4

# --- trace ring ------------------------------------------------------------------------------
TRACE_LEN = 4096
TR_STREAM = 0
TR_FIRST_ROUND = 1
TR_RECEIVED = 2
TR_CHECKED = 3
TR_DECODED = 4
TR_SENT = 5
TR_WIDTH = 6
M_NEXT = 0      # tmeta: trace entries written so far (the ring index is this modulo TRACE_LEN)
M_PENDING = 1   # tmeta: first entry whose datagram's replies are not sent yet

# --- control words (``ctl``), written by the Python side ---------------------------------------
CTL_STOP = 0
CTL_DRAIN = 1
"""Non-zero: drain until this deadline (ns, CLOCK_MONOTONIC): the loop returns once the socket is
empty and none of its streams has a shot in flight, or at the deadline."""
CTL_WORKER = 2
CTL_WORKERS = 3
"""This worker's index and the number of workers: it owns the streams ``sid % workers == index``."""
CTL_BUSY_BATCHES = 4
"""Overload: after this many consecutive full ``recvmmsg`` batches (the socket held at least that
many batches of datagrams), new shots are answered BUSY until a read comes back short or empty."""
CACHE_LINE = 64


def control_words() -> np.ndarray:
    """int64 ``(8,)`` control words on a cache line of their own (``ctl[CTL_STOP]``).

    The loop reads the stop word on every iteration; if it shared a cache line with memory that
    another thread writes, each of those writes would evict the line from the worker's core.
    Measured: a one-element array here cost union_find's d = 5 round trip about 2.5 µs at p50.
    """
    buf = np.zeros(2 * CACHE_LINE // 8, np.int64)
    first = (-buf.ctypes.data % CACHE_LINE) // 8
    ctl = buf[first:first + CACHE_LINE // 8]
    ctl[CTL_WORKERS] = 1
    ctl[CTL_BUSY_BATCHES] = 4
    return ctl


@njit(cache=True, inline="always")
def drained(ctl, st):
    """Draining (``ctl[CTL_DRAIN]`` holds a deadline) and either past the deadline or with no
    shot of this worker's streams in flight: the loop may return. The loops call it only after
    a read that found nothing and that began after they had seen the deadline, so a datagram
    sent before the drain was asked for has been taken and its shot counts as in flight."""
    deadline = L.load_acquire(ctl, CTL_DRAIN)
    return deadline != 0 and (monotonic_ns() > deadline or shots_in_flight(st, ctl[CTL_WORKER], ctl[CTL_WORKERS]) == 0)


@njit(cache=True, _nrt=False)
def shots_in_flight(st, worker, workers):
    """Shots begun and neither complete nor poisoned on the streams this worker owns."""
    n = 0
    for sid in range(st.shape[0]):
        if sid % workers == worker and st[sid, K.C_CONFIGURED] == 1 and st[sid, K.S_HAS_SHOT] == 1 \
                and st[sid, K.S_DONE] == 0 and st[sid, K.S_POISONED] == 0:
            n += 1
    return n

# --- counters past those of rtdecoder.kernels.stream ------------------------------------------
CNT_RECV_ERRORS = K.CNT_BASE + 9
CNT_SEND_DROPPED = K.CNT_BASE + 10
CNT_BATCHES = K.CNT_BASE + 11
CNT_ERRORS_SUPPRESSED = K.CNT_BASE + 12
CNT_OVERLOADED = K.CNT_BASE + 13
"""Times the worker entered overload (and began answering new shots BUSY)."""
SHED = K.CNT_BASE + 14
"""Not a counter: 1 while the worker is overloaded (read by ``process_datagram``)."""
assert SHED < K.NUM_COUNTERS

# --- error-reply rate limit (``rl``, per worker) -----------------------------------------------
RL_SLOTS = 256
"""Sources tracked at once (a direct-mapped table: a source that collides with another takes its
slot over with a full bucket)."""
RL_KEY_HI, RL_KEY_LO, RL_PORT, RL_TOKENS, RL_LAST, RL_USED = 0, 1, 2, 3, 4, 5
RL_RATE, RL_BURST = 0, 1  # row 0: the limits (replies per second, burst)
TOKEN = 1_000_000_000
"""One reply in the bucket's units (token-nanoseconds: refilling at ``rate`` per second adds
``rate`` units per ns)."""

ST_INTERNAL = int(P.Status.INTERNAL)
DEC_MATCHING = P.DECODER_IDS["matching"]
DEC_UNION_FIND = P.DECODER_IDS["union_find"]
TX_BYTES = 256
"""Transmit buffer per reply; the longest reply (a CORRECTION for 64 observables) is 72 bytes."""
FLUSH_NONE = -1
"""``fd`` for the in-process path: replies stay queued for the caller."""

_HOOKS: list = []
"""Registered ``WorkerState``s, indexed by their ``wid``; the matching escape looks its state
up here (only integers cross into object mode)."""


def _decode_matching(wid: int, sid: int, k: int) -> int:
    """Object-mode side of the matching escape: decode global window ``k`` of stream ``sid``."""
    state = _HOOKS[wid]
    e = state.engine
    t0 = time.perf_counter_ns()
    try:
        chosen, n = e.decoders[sid].decode_window(e.window_graph[k], e.window_events[k])
        state.chosen_m[:n] = chosen[:n]
    except ValueError:
        n = -1
    state.escape[0] = time.perf_counter_ns() - t0
    return n


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
def _row_addr(a, i):
    """Address of row ``i`` of the C-contiguous 2-D array ``a``."""
    return a.ctypes.data + i * a.strides[0]


@njit(cache=True, _nrt=False)
def _queue_reply(txq, txhdr, txiov, txflag, addr, length, stamp, name_addr, namelen):
    """Queue ``length`` bytes at address ``addr`` (a transmit buffer row, or for the echo the
    ring slot itself) for ``name_addr``; ``stamp``: write the send time at byte 48 first."""
    q = txq[0]
    txiov[q, 0] = addr
    txiov[q, 1] = length
    txhdr[q, L.H_NAME] = name_addr
    txhdr[q, L.H_NAMELEN] = namelen
    txflag[q] = stamp
    txq[0] = q + 1


@njit(cache=True, _nrt=False)
def flush(fd, txbuf, txhdr, txiov, txflag, txq, counters, hist, trace, tmeta):
    """Stamp the queued replies' send times, send them (``fd >= 0``), and close their windows'
    trace entries and histograms. With ``fd == FLUSH_NONE`` the replies stay queued."""
    q = txq[0]
    if q == 0:
        return
    now = monotonic_ns()
    for j in range(q):
        if txflag[j]:
            K.wr(txbuf[j], K.STAMP_OFFSET, 8, now)
    if fd >= 0:
        sent = 0
        tries = 0
        while sent < q:
            r = L.sendmmsg(fd, txhdr.ctypes.data + sent * (8 * L.HDR_WORDS), q - sent, L.MSG_DONTWAIT)
            if r > 0:
                sent += r
                continue
            e = L.errno()
            if (e == L.EAGAIN or e == L.EINTR) and tries < 100_000:
                tries += 1  # the socket's send buffer is full: the kernel drains it in microseconds
                continue
            counters[CNT_SEND_DROPPED] += 1  # this reply cannot be sent (its address is unreachable)
            sent += 1
        txq[0] = 0
    t_sent = monotonic_ns()
    for i in range(tmeta[M_PENDING], tmeta[M_NEXT]):
        row = trace[i % TRACE_LEN]
        row[TR_SENT] = t_sent
        K.observe(hist, HIST_SERVER, t_sent - row[TR_RECEIVED])
        K.observe(hist, HIST_SEND, t_sent - row[TR_DECODED])
    tmeta[M_PENDING] = tmeta[M_NEXT]


@njit(cache=True, nogil=True, _nrt=False)
def process_datagram(buf, n, rx, name_addr, namelen, src_hi, src_lo, src_port, fd, wid, tables, state, ws, tx):
    """Handle one received datagram: check it, append its rounds, decode and commit every window
    it completed, and queue the replies (docs/wire-protocol.md §6, §7).

    Args:
        buf: uint8 array, the ring slot holding the datagram; ``n`` its length as the kernel
            reported it (it may exceed ``len(buf)``: then it is rejected TOO_LARGE).
        rx: receive time, ns.
        name_addr, namelen: the sender's ``sockaddr`` (address, bytes); replies go there.
        src_hi, src_lo, src_port: the sender's address (``libc.source_of``), for the
            allow-lists and the error-reply rate limit (``take_error_token``).
        fd: the socket to flush a full transmit batch to (``FLUSH_NONE`` in process).
        wid: this worker's index in ``_HOOKS`` (for the matching escape).
        tables: ``Engine.tables``; state: ``WorkerState.arrays``; ws: the union-find workspace;
        tx: ``WorkerState.tx_arrays``.

    Returns:
        1 if the datagram completed a shot (its replies end with the FINAL CORRECTION; the
        caller sends them at once), else 0.
    """
    st, offs, syn, keep, win, gbase, node_round, edges, uf_base, uf_ptr, uf_slot, uf_eu, uf_ev, allow = tables
    counters, hist, out, trace, tmeta, chosen_m, escape, gq, gr, gc, rl = state
    txbuf, txhdr, txiov, txflag, txq = tx
    cap = txbuf.shape[0]
    if txq[0] == cap:
        flush(fd, txbuf, txhdr, txiov, txflag, txq, counters, hist, trace, tmeta)
    q = txq[0]
    K.ingest(buf, n, rx, st, offs, syn, keep, counters, txbuf[q], out, allow, src_hi, src_lo, counters[SHED])
    if out[K.OUT_REPLY_LEN] and txbuf[q, K.OFF_TYPE] == K.T_ERROR and not take_error_token(rl, src_hi, src_lo,
                                                                                         src_port, rx):
        counters[CNT_ERRORS_SUPPRESSED] += 1
    elif out[K.OUT_REPLY_LEN]:
        _queue_reply(txq, txhdr, txiov, txflag, _row_addr(txbuf, q), out[K.OUT_REPLY_LEN], out[K.OUT_STAMP],
                     name_addr, namelen)
    sid = out[K.OUT_STREAM]
    if sid < 0:
        return 0
    checked = monotonic_ns()
    K.observe(hist, HIST_CHECK, checked - rx)
    dec = st[sid, K.C_DECODER]
    sbase = st[sid, K.C_SYN_BASE]
    obase = st[sid, K.C_OFF_BASE]
    while True:
        k = K.next_window(st, win, sid)
        if k < 0:
            return st[sid, K.S_DONE]
        if txq[0] == cap:
            flush(fd, txbuf, txhdr, txiov, txflag, txq, counters, hist, trace, tmeta)
        q = txq[0]
        t0 = monotonic_ns()
        if dec == DEC_UNION_FIND and gq.shape[0] > 0:
            nchosen = _decode_gpu(gq, gr, win[k, K.W_GRAPH], sbase + offs[obase + win[k, K.W_START]])
            chosen = gc
            t1 = monotonic_ns()
        elif dec == DEC_UNION_FIND:
            g = win[k, K.W_GRAPH]
            pb, nn, sb, ns, eb, m = uf_base[g, 0], uf_base[g, 1], uf_base[g, 2], uf_base[g, 3], uf_base[g, 4], uf_base[g, 5]
            lo = sbase + offs[obase + win[k, K.W_START]]
            nchosen = uf.decode(uf_ptr[pb:pb + nn + 1], uf_slot[sb:sb + ns], uf_eu[eb:eb + m], uf_ev[eb:eb + m],
                                syn[lo:lo + nn], *ws)
            chosen = ws[-1]
            t1 = monotonic_ns()
        else:
            with objmode(nchosen="int64"):
                nchosen = _decode_matching(wid, sid, k)
            chosen = chosen_m
            t1 = monotonic_ns()
            K.observe(hist, HIST_ESCAPE, max(t1 - t0 - escape[0], 0))
        if nchosen < 0:  # no correction explains the events: poison the shot, say INTERNAL
            st[sid, K.S_POISONED] = 1
            counters[ST_INTERNAL] += 1
            size = K.write_error(txbuf[q], txbuf[q], 0, ST_INTERNAL, st[sid, K.S_SHOT], win[k, K.W_START],
                                 st[sid, K.S_RX_NS])
            K.wr(txbuf[q], K.OFF_STREAM, 2, sid)
            _queue_reply(txq, txhdr, txiov, txflag, _row_addr(txbuf, q), size, 0, name_addr, namelen)
            return 0
        size = K.commit_window(st, offs, syn, win, gbase, node_round, edges, sid, k, chosen, nchosen,
                               txbuf[q], counters)
        decoded = monotonic_ns()
        K.observe(hist, HIST_DECODE + dec, t1 - t0)
        K.observe(hist, HIST_STAGE_DECODE, decoded - checked)
        _queue_reply(txq, txhdr, txiov, txflag, _row_addr(txbuf, q), size, 1, name_addr, namelen)
        row = trace[tmeta[M_NEXT] % TRACE_LEN]
        row[TR_SENT] = 0  # first: a scrape reading this row meanwhile skips it as not yet sent
        row[TR_STREAM] = sid
        row[TR_FIRST_ROUND] = win[k, K.W_START]
        row[TR_RECEIVED] = rx
        row[TR_CHECKED] = checked
        row[TR_DECODED] = decoded
        tmeta[M_NEXT] += 1


@njit(cache=True, nogil=True, _nrt=False)
def serve_loop(fd, ctl, rxhdr, rxname, rxbuf, batch, echo, wid, tables, state, ws, tx):
    """Busy-poll ``fd`` until ``ctl[CTL_STOP]`` is set, or, once ``ctl[CTL_DRAIN]`` holds a
    deadline, until the socket is empty and no shot of this worker's streams is in flight (or the
    deadline passes); handle every datagram (see the module docstring). After
    ``ctl[CTL_BUSY_BATCHES]`` consecutive full batches the worker is overloaded: SYNDROME
    datagrams that would start a new shot are answered BUSY (``counters[SHED]``) until a read
    comes back short or empty, so the shots in flight finish and the backlog, bounded by the
    socket's receive buffer, drains. Every read asks for ``batch`` datagrams (the ring position
    goes back to slot 0 where fewer slots are left; the replies of a batch leave before the next
    read), so that a full read always means the socket held a whole batch. ``rxhdr``/``rxname``/``rxbuf`` are the receive ring's ``MessageBatch`` arrays (a
    power of two of slots); ``batch`` bounds the datagrams taken per ``recvmmsg``. With ``echo`` set, each
    datagram is sent back unchanged and nothing else happens (the transport floor).

    Returns:
        The number of datagrams handled.
    """
    counters = state[0]
    txbuf, txhdr, txiov, txflag, txq = tx
    hist, trace, tmeta = state[1], state[3], state[4]
    slots = rxbuf.shape[0]
    mask = slots - 1
    slot = 0
    handled = 0
    full = 0
    counters[SHED] = 0
    while L.load_acquire(ctl, CTL_STOP) == 0:
        draining = L.load_acquire(ctl, CTL_DRAIN) != 0  # read first: see ``drained``
        if slots - slot < batch:  # every read asks for a whole batch, so a full one means a backlog
            slot = 0
        r = L.recvmmsg(fd, rxhdr.ctypes.data + slot * (8 * L.HDR_WORDS), batch, L.MSG_DONTWAIT | L.MSG_TRUNC)
        if r <= 0:
            empty = True
            if r < 0:
                e = L.errno()
                empty = e == L.EAGAIN
                if e != L.EAGAIN and e != L.EINTR:
                    counters[CNT_RECV_ERRORS] += 1
            if full and empty:  # the socket is empty: no backlog
                full = 0
                counters[SHED] = 0
            if draining and drained(ctl, tables[0]):
                break
            continue
        rx = monotonic_ns()
        counters[CNT_BATCHES] += 1
        if r == batch:  # the socket held a whole batch: a backlog, if it lasts
            full += 1
            if full == ctl[CTL_BUSY_BATCHES]:
                counters[SHED] = 1
                counters[CNT_OVERLOADED] += 1
        else:
            full = 0
            counters[SHED] = 0
        for i in range(r):
            s = slot + i
            n = rxhdr[s, L.H_LEN] & 0xFFFFFFFF
            name_addr = rxhdr[s, L.H_NAME]
            namelen = rxhdr[s, L.H_NAMELEN] & 0xFFFFFFFF
            if echo:  # send straight from the ring slot (no copy, any length up to the slot)
                if txq[0] == txbuf.shape[0]:
                    flush(fd, txbuf, txhdr, txiov, txflag, txq, counters, hist, trace, tmeta)
                _queue_reply(txq, txhdr, txiov, txflag, _row_addr(rxbuf, s), min(n, rxbuf.shape[1]), 0,
                             name_addr, namelen)
            else:
                src_hi, src_lo, src_port = L.source_of(rxname[s])
                if process_datagram(rxbuf[s], n, rx, name_addr, namelen, src_hi, src_lo, src_port, fd, wid,
                                    tables, state, ws, tx):
                    flush(fd, txbuf, txhdr, txiov, txflag, txq, counters, hist, trace, tmeta)
            rxhdr[s, L.H_NAMELEN] = L.SOCKADDR_BYTES  # value-result: reset for the next receive
        # the replies point into this batch's slots (names, echoed data): they leave before the
        # next recvmmsg can overwrite them
        flush(fd, txbuf, txhdr, txiov, txflag, txq, counters, hist, trace, tmeta)
        slot = (slot + r) & mask
        handled += r
    return handled


# --- ring transports (RoCE, docs/wire-protocol.md §11) ------------------------------------------
READY_BYTES = RING.READY_BYTES
"""The last 8 bytes of a ring slot: ``length | sequence << 32``, written after the message (§11.3)."""
RS_NEXT = 0      # rstate: the sequence number expected next (starts at 1)
RS_CONSUMED = 1  # rstate: messages consumed
RS_CREDITED = 2  # rstate: consumed count last reported to the peer


def _post_replies(wid: int, q: int, consumed: int) -> int:
    """Object-mode side of the reply escape of ``ring_serve_loop``: post ``q`` queued replies
    through the worker's ``WorkerState.poster`` (``RoceReplyPoster``, or ``MemoryLink``)."""
    try:
        return _HOOKS[wid].poster.post(q, consumed)
    except Exception:  # noqa: BLE001 - the link is gone: the replies are counted as dropped
        return -1


@njit(cache=True, nogil=True, _nrt=False)
def ring_serve_loop(ctl, ring, words, slots, slot_bytes, src_hi, src_lo, rstate, wid, tables, state, ws, tx):
    """The data plane over a ring that a peer writes into (RoCE, §11): poll the ready word of
    the next slot; when its sequence number is the one expected, hand the message to
    ``process_datagram``, clear the word, and post the replies through the reply escape (one
    ``objmode`` call per message that produced replies). Stops on ``ctl[CTL_STOP]``, or drains
    like ``serve_loop`` on ``ctl[CTL_DRAIN]``.

    Args:
        ring: uint8 ``(slots * slot_bytes,)``, the registered region; ``words`` the same memory
            as int64 (``ring.view(np.int64)``).
        src_hi, src_lo: the controller's address (for the allow-lists).
        rstate: int64 ``(4,)``, ``RS_*`` (kept across calls, so a session can be resumed).

    Returns:
        Messages handled.
    """
    counters = state[0]
    hist, trace, tmeta = state[1], state[3], state[4]
    txbuf, txhdr, txiov, txflag, txq = tx
    handled = 0
    mask = slots - 1
    body = slot_bytes - READY_BYTES
    while L.load_acquire(ctl, CTL_STOP) == 0:
        draining = L.load_acquire(ctl, CTL_DRAIN) != 0  # read first: see ``drained``
        seq = rstate[RS_NEXT]
        i = (seq - 1) & mask
        w = (i * slot_bytes + body) >> 3
        word = L.load_acquire(words, w)
        if (word >> 32) & 0xFFFFFFFF != seq & 0xFFFFFFFF:
            if draining and drained(ctl, tables[0]):
                break
            continue
        rx = monotonic_ns()
        n = word & 0xFFFFFFFF
        o = i * slot_bytes
        process_datagram(ring[o:o + body], n, rx, 0, 0, src_hi, src_lo, 0, FLUSH_NONE, wid, tables, state, ws, tx)
        L.store_release(words, w, 0)
        rstate[RS_NEXT] = seq + 1
        rstate[RS_CONSUMED] += 1
        handled += 1
        q = txq[0]
        if q > 0 or rstate[RS_CONSUMED] - rstate[RS_CREDITED] >= (slots >> 2):
            flush(FLUSH_NONE, txbuf, txhdr, txiov, txflag, txq, counters, hist, trace, tmeta)
            consumed = rstate[RS_CONSUMED]
            with objmode(r="int64"):
                r = _post_replies(wid, q, consumed)
            if r < 0:
                counters[CNT_SEND_DROPPED] += q
            else:
                rstate[RS_CREDITED] = consumed
            txq[0] = 0
    return handled


class WorkerState:
    """One worker's preallocated arrays: counters, histograms, trace ring, transmit batch and
    union-find workspace. Registered in ``_HOOKS`` for the matching escape.

    ``error_replies_per_s``/``error_burst``: the per-source ERROR reply budget (``rl``).
    ``gpu_slot``: ``(request words, result words, chosen row)`` of a ``PersistentDecoder`` slot
    (``PersistentDecoder.slot_arrays``) to decode union-find windows on the GPU; default: the CPU.

    Attributes:
        counters: int64 ``(K.NUM_COUNTERS,)``; hist: int64 ``(NUM_HIST_ROWS, K.NUM_BUCKETS + 2)``
            (``rtdecoder.kernels.stream.observe``); trace: int64 ``(TRACE_LEN, TR_WIDTH)``.
        tx: the transmit ``MessageBatch`` (``tx_slots`` replies of ``TX_BYTES``).
    """

    def __init__(self, engine, tx_slots: int = 64, gpu_slot: tuple | None = None,
                 error_replies_per_s: int = 1000, error_burst: int = 100):
        self.engine = engine
        self.wid = len(_HOOKS)
        _HOOKS.append(self)
        self.counters = np.zeros(K.NUM_COUNTERS, np.int64)
        self.hist = np.zeros((NUM_HIST_ROWS, K.NUM_BUCKETS + 2), np.int64)
        self.out = np.zeros(3, np.int64)
        self.trace = np.zeros((TRACE_LEN, TR_WIDTH), np.int64)
        self.tmeta = np.zeros(2, np.int64)
        self.chosen_m = np.zeros(engine.max_edges + 1, np.int64)
        self.escape = np.zeros(1, np.int64)  # the matching escape's inner call, ns
        self.tx = L.MessageBatch(tx_slots, TX_BYTES)
        self.txflag = np.zeros(tx_slots, np.int64)
        self.txq = np.zeros(1, np.int64)
        self._ws_size = (engine.uf_max_nodes, engine.uf_max_edges, engine.uf_max_length)
        self.workspace = uf.Workspace(*self._ws_size).arrays()
        self.poster = None  # ring transports: what sends the queued replies (``_post_replies``)
        self.rl = np.zeros((RL_SLOTS + 1, 6), np.int64)
        self.rl[0, RL_RATE] = error_replies_per_s
        self.rl[0, RL_BURST] = error_burst
        none = np.zeros(0, np.int64)
        self.gpu_slot = gpu_slot if gpu_slot is not None else (none, none, none)
        self.arrays = (self.counters, self.hist, self.out, self.trace, self.tmeta, self.chosen_m, self.escape,
                       *self.gpu_slot, self.rl)
        self.tx_arrays = (self.tx.buf, self.tx.hdr, self.tx.iov, self.txflag, self.txq)

    def rebind(self, engine) -> None:
        """Serve ``engine`` from now on (a reloaded configuration); counters, histograms, trace and
        transmit batch are kept, the matching output and union-find workspace grow if they must.
        Only while the worker's loop is not running."""
        self.engine = engine
        if engine.max_edges + 1 > len(self.chosen_m):
            self.chosen_m = np.zeros(engine.max_edges + 1, np.int64)
        need = (engine.uf_max_nodes, engine.uf_max_edges, engine.uf_max_length)
        if any(a > b for a, b in zip(need, self._ws_size)):
            self._ws_size = tuple(max(a, b) for a, b in zip(need, self._ws_size))
            self.workspace = uf.Workspace(*self._ws_size).arrays()
        self.arrays = (self.counters, self.hist, self.out, self.trace, self.tmeta, self.chosen_m, self.escape,
                       *self.gpu_slot, self.rl)

    def replies(self) -> list[bytes]:
        """The queued replies (in-process path), as ``bytes``; empties the queue."""
        q = int(self.txq[0])
        out = [self.tx.buf[j, : self.tx.iov[j, 1]].tobytes() for j in range(q)]
        self.txq[0] = 0
        return out
