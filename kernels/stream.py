"""Hot-path kernels: parse a datagram, run the stream state machine, commit a decoded window.

Everything here is numba nopython code that works on arrays allocated when the streams are
configured (``rtdecoder.engine.Engine``); nothing allocates, formats or logs. The same functions
serve the compiled data plane (``rtdecoder.dataplane``: the UDP and ring loops) and the in-process path.

Tables (all int64 unless said; built by ``rtdecoder.engine``):

- ``st[sid, col]``: one row per possible stream id; ``C_*`` columns are configuration,
  ``S_*`` columns the state of the stream's current shot.
- ``offs``: every stream's round offsets, concatenated; stream ``sid``'s round ``r`` starts at
  detector ``offs[st[sid, C_OFF_BASE] + r]`` (relative to the stream's first detector).
- ``syn``: uint8, one byte per detector of every stream's current shot (0 or 1), concatenated.
- ``keep``: uint8, parallel to ``syn``: 1 for a detector whose events can change an observable,
  0 for one whose events ingest drops (``rtdecoder.dem.observable_detectors``).
- ``win[k, :]``: ``(start, end, commit_end, graph)`` of every window of every stream.
- ``gbase[g, :]``: ``(first node, first edge)`` of window graph ``g`` in ``node_round`` and ``edges``.
- ``node_round``: each graph node's round relative to its window's first round.
- ``edges[e, :]``: ``(u, v, observable mask)``; ``v == -1`` for a boundary edge.
- ``allow[i, :]``: ``(network high, network low, mask high, mask low)``, one allowed subnet per
  row as a 128-bit IPv6 address in two big-endian int64 halves (IPv4 as ``::ffff:a.b.c.d``);
  stream ``sid``'s rows are ``[st[sid, C_ALLOW_BASE], + st[sid, C_ALLOW_N])``.
- ``counters``: ``[0, NUM_STATUS)`` rejected packets by status code, ``REJECT_NOT_ALLOWED``, then
  the ``CNT_*`` counters.
- ``out``: three int64 results of ``ingest`` (see there).

Wire layouts and status codes: ``docs/wire-protocol.md`` and ``rtdecoder.protocol``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder import protocol as P
from rtdecoder.kernels.memory import load_word, store_word

# --- stream table columns -------------------------------------------------------------------
C_CONFIGURED = 0
C_READY = 1
C_NROUNDS = 2
C_RBYTES = 3
C_NDET = 4
C_NOBS = 5
C_OFF_BASE = 6
C_SYN_BASE = 7
C_WIN_BASE = 8
C_NWIN = 9
C_MAXDG = 10
C_WINDOW = 11
C_COMMIT = 12
C_DECODER = 13
C_ALLOW_BASE = 14
C_ALLOW_N = 15
S_HAS_SHOT = 16
S_SHOT = 17
S_NEXT_ROUND = 18
S_POISONED = 19
S_DONE = 20
S_NEXT_WIN = 21
S_CUM = 22
S_RX_NS = 23
S_TS = 24
NUM_COLS = 25

# --- counters (after the per-status reject counts) ------------------------------------------
CNT_BASE = 32
CNT_PACKETS = CNT_BASE + 0
CNT_SYNDROME = CNT_BASE + 1
CNT_SHOTS = CNT_BASE + 2
CNT_CORRECTIONS = CNT_BASE + 3
CNT_BYTES = CNT_BASE + 4
CNT_HELLO = CNT_BASE + 5
CNT_PING = CNT_BASE + 6
CNT_RESET = CNT_BASE + 7
CNT_ABANDONED = CNT_BASE + 8
REJECT_NOT_ALLOWED = CNT_BASE - 1
"""``counters`` index of datagrams from sources outside the allow-lists (not a wire status: they
get no reply at all)."""
NUM_COUNTERS = CNT_BASE + 16
assert P.NUM_STATUS < CNT_BASE - 1

# --- out[] of ingest ------------------------------------------------------------------------
OUT_REPLY_LEN = 0
"""Bytes of reply written to ``tx`` (0: no reply)."""
OUT_STREAM = 1
"""Stream whose windows may now be ready (-1: none)."""
OUT_STAMP = 2
"""1 if the reply carries a server send time at byte 48 to stamp just before sending."""

W_START = 0
W_END = 1
W_COMMIT = 2
W_GRAPH = 3

HEADER_LEN = P.HEADER_LEN
MAGIC = P.MAGIC
T_HELLO = int(P.MsgType.HELLO)
T_HELLO_REPLY = int(P.MsgType.HELLO_REPLY)
T_SYNDROME = int(P.MsgType.SYNDROME)
T_CORRECTION = int(P.MsgType.CORRECTION)
T_ERROR = int(P.MsgType.ERROR)
T_PING = int(P.MsgType.PING)
T_PONG = int(P.MsgType.PONG)
T_RESET = int(P.MsgType.RESET)
T_RESET_ACK = int(P.MsgType.RESET_ACK)
ST_MALFORMED = int(P.Status.MALFORMED)
ST_BAD_MAGIC = int(P.Status.BAD_MAGIC)
ST_UNSUPPORTED_VERSION = int(P.Status.UNSUPPORTED_VERSION)
ST_UNKNOWN_TYPE = int(P.Status.UNKNOWN_TYPE)
ST_UNKNOWN_STREAM = int(P.Status.UNKNOWN_STREAM)
ST_TOO_LARGE = int(P.Status.TOO_LARGE)
ST_BAD_PAYLOAD = int(P.Status.BAD_PAYLOAD)
ST_BAD_ROUNDS = int(P.Status.BAD_ROUNDS)
ST_ROUND_GAP = int(P.Status.ROUND_GAP)
ST_DUPLICATE = int(P.Status.DUPLICATE)
ST_SHOT_ABANDONED = int(P.Status.SHOT_ABANDONED)
ST_STALE_SHOT = int(P.Status.STALE_SHOT)
ST_SHOT_POISONED = int(P.Status.SHOT_POISONED)
ST_NOT_READY = int(P.Status.NOT_READY)
ST_BUSY = int(P.Status.BUSY)
FLAG_FINAL = P.FLAG_FINAL
STAMP_OFFSET = P.OFF_CORR_TX
assert P.OFF_CORR_TX == P.OFF_PONG_TX
CORRECTION_PREFIX_SIZE = int(P.CORRECTION_PREFIX.size)
ERROR_BODY_SIZE = int(P.ERROR_BODY.size)
HELLO_REPLY_SIZE = int(P.HELLO_REPLY.size)
MAX_VERSION = int(P.MAX_VERSION)
MIN_VERSION = int(P.MIN_VERSION)
OFF_CONTROLLER_TS = int(P.OFF_CONTROLLER_TS)
OFF_CORR_FLIPS = int(P.OFF_CORR_FLIPS)
OFF_CORR_RX = int(P.OFF_CORR_RX)
OFF_CORR_TX = int(P.OFF_CORR_TX)
OFF_ERR_EXPECTED = int(P.OFF_ERR_EXPECTED)
OFF_ERR_RX = int(P.OFF_ERR_RX)
OFF_ERR_STATUS = int(P.OFF_ERR_STATUS)
OFF_FIRST_ROUND = int(P.OFF_FIRST_ROUND)
OFF_FLAGS = int(P.OFF_FLAGS)
OFF_HEADER_LEN = int(P.OFF_HEADER_LEN)
OFF_MAGIC = int(P.OFF_MAGIC)
OFF_NUM_ROUNDS = int(P.OFF_NUM_ROUNDS)
OFF_PAYLOAD_LEN = int(P.OFF_PAYLOAD_LEN)
OFF_PONG_RX = int(P.OFF_PONG_RX)
OFF_PONG_TX = int(P.OFF_PONG_TX)
OFF_SHOT = int(P.OFF_SHOT)
OFF_STREAM = int(P.OFF_STREAM)
OFF_TYPE = int(P.OFF_TYPE)
OFF_VERSION = int(P.OFF_VERSION)
PONG_BODY_SIZE = int(P.PONG_BODY.size)
VERSION = int(P.VERSION)


SPREAD = np.array([sum(((b >> i) & 1) << (8 * i) for i in range(8)) for b in range(256)], np.uint64)
"""``SPREAD[b]``: the 8 bits of byte ``b`` as 8 bytes of 0 or 1 (bit ``i`` in byte ``i``), as one
little-endian word: a wire byte of detection events (§5, least significant bit first) unpacked
with one load and one store."""


@njit(cache=True, inline="always", _nrt=False)
def rd(buf, off, nbytes):
    """Little-endian unsigned integer of ``nbytes`` bytes at ``buf[off]``."""
    v = np.int64(0)
    for i in range(nbytes):
        v |= np.int64(buf[off + i]) << (8 * i)
    return v


@njit(cache=True, inline="always", _nrt=False)
def wr(buf, off, nbytes, value):
    """Store ``value`` little-endian in ``nbytes`` bytes at ``buf[off]``."""
    v = np.int64(value)
    for i in range(nbytes):
        buf[off + i] = np.uint8((v >> (8 * i)) & 0xFF)


@njit(cache=True, _nrt=False)
def write_header(tx, msg_type, flags, stream_id, first_round, shot_id, num_rounds, payload_len, ts):
    wr(tx, OFF_MAGIC, 4, MAGIC)
    tx[OFF_VERSION] = VERSION
    tx[OFF_TYPE] = msg_type
    wr(tx, OFF_FLAGS, 2, flags)
    wr(tx, OFF_HEADER_LEN, 2, HEADER_LEN)
    wr(tx, OFF_STREAM, 2, stream_id)
    wr(tx, OFF_FIRST_ROUND, 4, first_round)
    wr(tx, OFF_SHOT, 8, shot_id)
    wr(tx, OFF_NUM_ROUNDS, 4, num_rounds)
    wr(tx, OFF_PAYLOAD_LEN, 4, payload_len)
    wr(tx, OFF_CONTROLLER_TS, 8, ts)
    return HEADER_LEN + payload_len


@njit(cache=True, _nrt=False)
def write_error(tx, buf, n, status, shot_id, expected_round, rx_ns):
    """An ERROR reply (§4.5) echoing what can be read of the offending header."""
    if n >= HEADER_LEN:
        stream = rd(buf, OFF_STREAM, 2)
        first = rd(buf, OFF_FIRST_ROUND, 4)
        nr = rd(buf, OFF_NUM_ROUNDS, 4)
        ts = rd(buf, OFF_CONTROLLER_TS, 8)
    else:
        stream = 0
        first = 0
        nr = 0
        ts = 0
    size = write_header(tx, T_ERROR, 0, stream, first, shot_id, nr, ERROR_BODY_SIZE, ts)
    wr(tx, OFF_ERR_STATUS, 2, status)
    wr(tx, OFF_ERR_STATUS + 2, 2, 0)
    wr(tx, OFF_ERR_EXPECTED, 4, expected_round)
    wr(tx, OFF_ERR_RX, 8, rx_ns)
    return size


@njit(cache=True, _nrt=False)
def reject(tx, buf, n, status, shot_id, expected_round, rx_ns, counters, out):
    counters[status] += 1
    out[OUT_REPLY_LEN] = write_error(tx, buf, n, status, shot_id, expected_round, rx_ns)


@njit(cache=True, _nrt=False)
def reset_shot(st, sid, shot_id):
    st[sid, S_HAS_SHOT] = 1
    st[sid, S_SHOT] = shot_id
    st[sid, S_NEXT_ROUND] = 0
    st[sid, S_POISONED] = 0
    st[sid, S_DONE] = 0
    st[sid, S_NEXT_WIN] = 0
    st[sid, S_CUM] = 0


@njit(cache=True, inline="always", _nrt=False)
def allowed(allow, lo_row, n_rows, src_hi, src_lo):
    """Whether the source ``(src_hi, src_lo)`` lies in one of ``allow[lo_row:lo_row + n_rows]``."""
    for i in range(lo_row, lo_row + n_rows):
        if (src_hi & allow[i, 2]) == allow[i, 0] and (src_lo & allow[i, 3]) == allow[i, 1]:
            return True
    return False


@njit(cache=True, _nrt=False)
def ingest(buf, n, rx_ns, st, offs, syn, keep, counters, tx, out, allow, src_hi, src_lo, shed):
    """Check one received datagram and apply it to its stream (docs/wire-protocol.md §6, §7).

    A datagram from a source in no stream's allow-list, or naming a stream whose allow-list does
    not hold its source, is counted (``REJECT_NOT_ALLOWED``) and dropped without a reply: a
    stranger learns nothing, not even that the port is a decoder's.

    Args:
        buf: uint8 array, the ring slot holding the datagram (its first ``min(n, len(buf))`` bytes).
        n: the datagram's length in bytes as the kernel reported it (may exceed ``len(buf)``).
        rx_ns: receive time, ns (CLOCK_MONOTONIC).
        st, offs, syn, keep, counters, allow: the tables described in the module docstring. A
            round's detection events go into ``syn`` ANDed with ``keep``.
        src_hi, src_lo: the source address, as in ``allow`` (IPv4 mapped into IPv6).
        shed: non-zero while the worker is overloaded: a SYNDROME that would start a new shot is
            answered BUSY and changes nothing (the shots in flight go on).
        tx: uint8 array receiving the reply, if any.
        out: int64 array of 3: ``out[OUT_REPLY_LEN]`` bytes of reply in ``tx`` (0: none),
            ``out[OUT_STREAM]`` the stream whose windows may now be complete (-1: none),
            ``out[OUT_STAMP]`` 1 when the reply needs the send time stamped at byte 48.
    """
    out[OUT_REPLY_LEN] = 0
    out[OUT_STREAM] = -1
    out[OUT_STAMP] = 0
    counters[CNT_PACKETS] += 1
    counters[CNT_BYTES] += n
    if not allowed(allow, 0, allow.shape[0], src_hi, src_lo):
        counters[REJECT_NOT_ALLOWED] += 1
        return
    if n < HEADER_LEN:
        reject(tx, buf, n, ST_MALFORMED, 0, 0, rx_ns, counters, out)
        return
    if n > buf.shape[0]:
        reject(tx, buf, n, ST_TOO_LARGE, rd(buf, OFF_SHOT, 8), 0, rx_ns, counters, out)
        return
    shot = rd(buf, OFF_SHOT, 8)
    if rd(buf, OFF_MAGIC, 4) != MAGIC:
        reject(tx, buf, n, ST_BAD_MAGIC, shot, 0, rx_ns, counters, out)
        return
    if buf[OFF_VERSION] != VERSION:
        reject(tx, buf, n, ST_UNSUPPORTED_VERSION, shot, 0, rx_ns, counters, out)
        return
    payload_len = rd(buf, OFF_PAYLOAD_LEN, 4)
    if rd(buf, OFF_HEADER_LEN, 2) != HEADER_LEN or HEADER_LEN + payload_len != n:
        reject(tx, buf, n, ST_MALFORMED, shot, 0, rx_ns, counters, out)
        return
    mtype = np.int64(buf[OFF_TYPE])
    ts = rd(buf, OFF_CONTROLLER_TS, 8)
    if mtype == T_PING:
        counters[CNT_PING] += 1
        size = write_header(tx, T_PONG, 0, rd(buf, OFF_STREAM, 2), 0, shot, 0, PONG_BODY_SIZE, ts)
        wr(tx, OFF_PONG_RX, 8, rx_ns)
        wr(tx, OFF_PONG_TX, 8, rx_ns)
        out[OUT_REPLY_LEN] = size
        out[OUT_STAMP] = 1
        return
    if mtype != T_SYNDROME and mtype != T_HELLO and mtype != T_RESET:
        reject(tx, buf, n, ST_UNKNOWN_TYPE, shot, 0, rx_ns, counters, out)
        return
    sid = rd(buf, OFF_STREAM, 2)
    if sid >= st.shape[0] or st[sid, C_CONFIGURED] == 0:
        reject(tx, buf, n, ST_UNKNOWN_STREAM, shot, 0, rx_ns, counters, out)
        return
    if not allowed(allow, st[sid, C_ALLOW_BASE], st[sid, C_ALLOW_N], src_hi, src_lo):
        counters[REJECT_NOT_ALLOWED] += 1
        return
    if mtype == T_HELLO:
        counters[CNT_HELLO] += 1
        size = write_header(tx, T_HELLO_REPLY, 0, sid, 0, shot, 0, HELLO_REPLY_SIZE, ts)
        o = HEADER_LEN
        tx[o] = MIN_VERSION
        tx[o + 1] = MAX_VERSION
        tx[o + 2] = st[sid, C_DECODER]
        tx[o + 3] = 0
        wr(tx, o + 4, 4, st[sid, C_NDET])
        wr(tx, o + 8, 4, st[sid, C_NROUNDS])
        wr(tx, o + 12, 2, st[sid, C_NOBS])
        wr(tx, o + 14, 2, st[sid, C_RBYTES])
        wr(tx, o + 16, 4, st[sid, C_MAXDG])
        wr(tx, o + 20, 4, st[sid, C_WINDOW])
        wr(tx, o + 24, 4, st[sid, C_COMMIT])
        out[OUT_REPLY_LEN] = size
        return
    if mtype == T_RESET:
        counters[CNT_RESET] += 1
        st[sid, S_HAS_SHOT] = 0
        st[sid, S_POISONED] = 0
        st[sid, S_DONE] = 0
        out[OUT_REPLY_LEN] = write_header(tx, T_RESET_ACK, 0, sid, 0, shot, 0, 0, ts)
        return
    # --- SYNDROME ---------------------------------------------------------------------------
    counters[CNT_SYNDROME] += 1
    if st[sid, C_READY] == 0:
        reject(tx, buf, n, ST_NOT_READY, shot, 0, rx_ns, counters, out)
        return
    if n > st[sid, C_MAXDG]:
        reject(tx, buf, n, ST_TOO_LARGE, shot, 0, rx_ns, counters, out)
        return
    first = rd(buf, OFF_FIRST_ROUND, 4)
    nr = rd(buf, OFF_NUM_ROUNDS, 4)
    nrounds = st[sid, C_NROUNDS]
    rbytes = st[sid, C_RBYTES]
    if nr == 0 or first + nr > nrounds:
        reject(tx, buf, n, ST_BAD_ROUNDS, shot, 0, rx_ns, counters, out)
        return
    if payload_len != nr * rbytes:
        reject(tx, buf, n, ST_BAD_PAYLOAD, shot, 0, rx_ns, counters, out)
        return
    # Sequencing (§6.2): shot ids increase; within a shot, rounds arrive in order, once each.
    if st[sid, S_HAS_SHOT] == 1 and shot < st[sid, S_SHOT]:
        reject(tx, buf, n, ST_STALE_SHOT, shot, 0, rx_ns, counters, out)
        return
    if st[sid, S_HAS_SHOT] == 0 or shot > st[sid, S_SHOT]:
        if shed:
            reject(tx, buf, n, ST_BUSY, shot, 0, rx_ns, counters, out)
            return
        if st[sid, S_HAS_SHOT] == 1 and st[sid, S_DONE] == 0 and st[sid, S_POISONED] == 0:
            # The controller moved on before finishing the shot in progress: it gets no
            # correction, and the controller hears so (unless this packet is bad itself).
            counters[CNT_ABANDONED] += 1
            counters[ST_SHOT_ABANDONED] += 1
            out[OUT_REPLY_LEN] = write_error(tx, buf, n, ST_SHOT_ABANDONED, st[sid, S_SHOT],
                                             st[sid, S_NEXT_ROUND], rx_ns)
        reset_shot(st, sid, shot)
    if st[sid, S_POISONED] == 1:
        reject(tx, buf, n, ST_SHOT_POISONED, shot, 0, rx_ns, counters, out)
        return
    expected = st[sid, S_NEXT_ROUND]
    if st[sid, S_DONE] == 1 or first < expected:
        st[sid, S_POISONED] = 1
        reject(tx, buf, n, ST_DUPLICATE, shot, expected, rx_ns, counters, out)
        return
    if first > expected:
        st[sid, S_POISONED] = 1
        reject(tx, buf, n, ST_ROUND_GAP, shot, expected, rx_ns, counters, out)
        return
    base = st[sid, C_OFF_BASE]
    # Bits past a round's detector count must be zero (§5).
    for i in range(nr):
        r = first + i
        cnt = offs[base + r + 1] - offs[base + r]
        blk = HEADER_LEN + i * rbytes
        for k in range(cnt >> 3, rbytes):
            b = np.int64(buf[blk + k])
            if k == (cnt >> 3):
                b = b >> (cnt & 7)
            if b != 0:
                st[sid, S_POISONED] = 1
                reject(tx, buf, n, ST_BAD_PAYLOAD, shot, expected, rx_ns, counters, out)
                return
    sbase = st[sid, C_SYN_BASE]
    for i in range(nr):  # unpack: a word store per whole byte, bit by bit for a round's last bits
        r = first + i
        o = sbase + offs[base + r]
        cnt = offs[base + r + 1] - offs[base + r]
        blk = HEADER_LEN + i * rbytes
        full = cnt >> 3
        for k in range(full):
            store_word(syn, o + 8 * k, SPREAD[buf[blk + k]] & load_word(keep, o + 8 * k))
        for j in range(full << 3, cnt):
            syn[o + j] = ((buf[blk + full] >> (j & 7)) & 1) & keep[o + j]
    st[sid, S_NEXT_ROUND] = first + nr
    st[sid, S_RX_NS] = rx_ns
    st[sid, S_TS] = ts
    out[OUT_STREAM] = sid


@njit(cache=True, _nrt=False)
def next_window(st, win, sid):
    """Global index of the stream's next window if all its rounds have arrived, else -1."""
    if st[sid, S_POISONED] == 1 or st[sid, S_HAS_SHOT] == 0:
        return -1
    w = st[sid, S_NEXT_WIN]
    if w >= st[sid, C_NWIN]:
        return -1
    k = st[sid, C_WIN_BASE] + w
    if st[sid, S_NEXT_ROUND] >= win[k, W_END]:
        return k
    return -1


@njit(cache=True, _nrt=False)
def commit_window(st, offs, syn, win, gbase, node_round, edges, sid, k, chosen, nchosen, tx, counters):
    """Commit window ``k`` of stream ``sid`` from its decoder's chosen edges; write the CORRECTION.

    An edge is committed when its earlier endpoint lies in the commit region (rounds
    ``[start, commit_end)``); a committed edge flips its observables into the correction and
    flips the detection events of its endpoints in the buffer (rounds ``>= commit_end``), which
    the next window then decodes (the carry). Edges wholly in the buffer are dropped: the next
    window decodes that region again with more rounds in view.

    Args:
        chosen: int64 array; its first ``nchosen`` entries are edge indices local to the
            window's graph (``0 <= e < number of edges of graph win[k, W_GRAPH]``).
        tx: uint8 array receiving the CORRECTION (§4.4); its send time at byte 48 is stamped by
            the caller just before sending.

    Returns:
        The CORRECTION's length in bytes.
    """
    g = win[k, W_GRAPH]
    nb = gbase[g, 0]
    eb = gbase[g, 1]
    start = win[k, W_START]
    final = win[k, W_END] == st[sid, C_NROUNDS]
    ncommit = win[k, W_COMMIT] - start
    lo = st[sid, C_SYN_BASE] + offs[st[sid, C_OFF_BASE] + start]
    flips = np.int64(0)
    for i in range(nchosen):
        e = eb + chosen[i]
        u = edges[e, 0]
        v = edges[e, 1]
        if node_round[nb + u] >= ncommit:
            continue
        flips ^= edges[e, 2]
        if v >= 0 and node_round[nb + v] >= ncommit:
            syn[lo + v] ^= 1
    cum = st[sid, S_CUM] ^ flips
    st[sid, S_CUM] = cum
    st[sid, S_NEXT_WIN] += 1
    flags = 0
    if final:
        flags = FLAG_FINAL
        st[sid, S_DONE] = 1
        counters[CNT_SHOTS] += 1
    counters[CNT_CORRECTIONS] += 1
    nobs = st[sid, C_NOBS]
    ob = (nobs + 7) >> 3
    size = write_header(tx, T_CORRECTION, flags, sid, start, st[sid, S_SHOT], ncommit,
                        CORRECTION_PREFIX_SIZE + 2 * ob, st[sid, S_TS])
    wr(tx, OFF_CORR_RX, 8, st[sid, S_RX_NS])
    wr(tx, OFF_CORR_TX, 8, st[sid, S_RX_NS])
    for i in range(ob):
        tx[OFF_CORR_FLIPS + i] = np.uint8((flips >> (8 * i)) & 0xFF)
        tx[OFF_CORR_FLIPS + ob + i] = np.uint8((cum >> (8 * i)) & 0xFF)
    return size


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


@njit(cache=True, _nrt=False)
def edges_of_pairs(keys, num_nodes, pairs, chosen):
    """Map node pairs to edge indices of a window graph.

    Args:
        keys: int64 ``(num_edges,)``, the graph's sorted edge keys
            (``(hi + 1) * (num_nodes + 1) + (lo + 1)`` with ``lo = -1`` for the boundary; see
            ``rtdecoder.windows.WindowGraph.edge_key``).
        pairs: int64 ``(k, 2)`` node pairs, ``-1`` for the boundary (PyMatching's
            ``decode_to_edges_array``).
        chosen: int64 output array, at least ``k`` long.

    Returns:
        ``k``, with ``chosen[:k]`` holding the edge indices; -1 if a pair is not an edge.
    """
    k = pairs.shape[0]
    for i in range(k):
        a = pairs[i, 0]
        b = pairs[i, 1]
        lo = min(a, b)
        hi = max(a, b)
        key = (hi + 1) * (num_nodes + 1) + (lo + 1)
        j = np.searchsorted(keys, key)
        if j >= keys.shape[0] or keys[j] != key:
            return -1
        chosen[i] = j
    return k
