"""The stream state machine: check one received datagram and apply it to its stream
(docs/wire-protocol.md §5, §6, §7), in compiled code that allocates nothing.

Tables (layouts in ``rtdecoder.kernels.tables``; built by ``rtdecoder.engine.Engine``):

- ``st``: the stream table; ``offs``: every stream's round offsets, concatenated (stream
  ``sid``'s round ``r`` starts at detector ``offs[st[sid, C_OFF_BASE] + r]`` of the stream);
- ``syn``: uint8, one byte per detector of every stream's current shot (0 or 1), concatenated;
  ``keep``: uint8, parallel to ``syn``: 1 for a detector whose events can change an observable,
  0 for one whose events are dropped (``rtdecoder.dem.observable_detectors``);
- ``allow[i, :]``: ``(network high, network low, mask high, mask low)``, one allowed subnet per
  row as a 128-bit IPv6 address in two big-endian int64 halves (IPv4 as ``::ffff:a.b.c.d``);
  stream ``sid``'s rows are ``[st[sid, C_ALLOW_BASE], + st[sid, C_ALLOW_N])``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder.kernels.memory import load_word, store_word
from rtdecoder.kernels.tables import (
    C_ALLOW_BASE, C_ALLOW_N, C_CONFIGURED, C_DECODER, C_MAXDG, C_NDET, C_NOBS, C_NROUNDS, C_OFF_BASE, C_RBYTES,
    C_READY, C_SYN_BASE, C_WINDOW, C_COMMIT, C_FINGERPRINT, C_INPUT, C_MOFF_BASE, C_DET_BASE, C_MEAS_BASE,
    C_KPTR_BASE, C_HERALDS, CNT_ABANDONED, CNT_DESCRIBE, CNT_BYTES, CNT_HELLO, CNT_PACKETS, CNT_PING, CNT_RESET,
    CNT_SYNDROME, OUT_REPLY_LEN, OUT_STAMP, OUT_STREAM, REJECT_NOT_ALLOWED, S_CUM, S_DONE, S_HAS_SHOT,
    S_NEXT_ROUND, S_NEXT_WIN, S_PA_NEXT, S_PB_NEXT, S_PGEN, S_POISONED, S_PREPLY, S_RX_NS, S_SHOT, S_TS)
from rtdecoder.kernels.wire import (
    DESCRIBE_PREFIX_SIZE, FLAG_HERALDS, HEADER_LEN, HELLO_REPLY_SIZE, MAGIC, MAX_DESCRIBE_ROUNDS, OFF_DESCRIBE_COUNTS,
    OFF_DESCRIBE_FINGERPRINT, OFF_FLAGS, MAX_VERSION, MIN_VERSION, OFF_CONTROLLER_TS, OFF_FIRST_ROUND,
    OFF_HEADER_LEN, OFF_MAGIC, OFF_NUM_ROUNDS, OFF_PAYLOAD_LEN, OFF_PONG_RX, OFF_PONG_TX, OFF_SHOT, OFF_STREAM,
    OFF_TYPE, OFF_VERSION, PONG_BODY_SIZE, ST_BAD_MAGIC, ST_BAD_PAYLOAD, ST_BAD_ROUNDS, ST_BUSY, ST_DUPLICATE,
    ST_MALFORMED, ST_NOT_READY, ST_ROUND_GAP, ST_SHOT_ABANDONED, ST_SHOT_POISONED, ST_STALE_SHOT, ST_TOO_LARGE,
    ST_UNKNOWN_STREAM, ST_UNKNOWN_TYPE, ST_UNSUPPORTED_VERSION, T_HELLO, T_HELLO_REPLY, T_PING, T_PONG, T_RESET,
    T_DESCRIBE, T_DESCRIBE_REPLY, T_RESET_ACK, T_SYNDROME, VERSION, rd, wr, write_error, write_header)

SPREAD = np.array([sum(((b >> i) & 1) << (8 * i) for i in range(8)) for b in range(256)], np.uint64)
"""``SPREAD[b]``: the 8 bits of byte ``b`` as 8 bytes of 0 or 1 (bit ``i`` in byte ``i``), as one
little-endian word: a wire byte of detection events (§5, least significant bit first) unpacked
with one load and one store."""


@njit(cache=True, inline="always", _nrt=False)
def padding_clear(buf, first, nr, rbytes, counts, cbase):
    """Whether every bit past a round's count (``counts[cbase + r + 1] - counts[cbase + r]``
    detectors or measurements) is zero in the ``nr`` blocks from round ``first`` (§5)."""
    for i in range(nr):
        r = first + i
        cnt = counts[cbase + r + 1] - counts[cbase + r]
        blk = HEADER_LEN + i * rbytes
        for k in range(cnt >> 3, rbytes):
            b = np.int64(buf[blk + k])
            if k == (cnt >> 3):
                b = b >> (cnt & 7)
            if b != 0:
                return False
    return True


@njit(cache=True, inline="always", _nrt=False)
def unpack_round(buf, blk, cnt, dst, o, keep, masked):
    """The ``cnt`` bits of the block at ``buf[blk]`` (§5, least significant first) into bytes
    ``dst[o:o + cnt]``, ANDed with ``keep[o:o + cnt]`` when ``masked``: a word store per whole wire
    byte (``SPREAD``), bit by bit for the last bits, so nothing is written past the round."""
    full = cnt >> 3
    if masked:
        for k in range(full):
            store_word(dst, o + 8 * k, SPREAD[buf[blk + k]] & load_word(keep, o + 8 * k))
        for j in range(full << 3, cnt):
            dst[o + j] = ((buf[blk + full] >> (j & 7)) & 1) & keep[o + j]
    else:
        for k in range(full):
            store_word(dst, o + 8 * k, SPREAD[buf[blk + k]])
        for j in range(full << 3, cnt):
            dst[o + j] = (buf[blk + full] >> (j & 7)) & 1


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
    st[sid, S_PGEN] += 1  # a new generation: a parallel stream's results of earlier shots are stale
    st[sid, S_PA_NEXT] = 0  # A windows are the even local windows, B windows the odd ones
    st[sid, S_PB_NEXT] = 1
    st[sid, S_PREPLY] = 0


@njit(cache=True, inline="always", _nrt=False)
def allowed(allow, lo_row, n_rows, src_hi, src_lo):
    """Whether the source ``(src_hi, src_lo)`` lies in one of ``allow[lo_row:lo_row + n_rows]``."""
    for i in range(lo_row, lo_row + n_rows):
        if (src_hi & allow[i, 2]) == allow[i, 0] and (src_lo & allow[i, 3]) == allow[i, 1]:
            return True
    return False


@njit(cache=True, _nrt=False)
def ingest(buf, n, rx_ns, st, offs, syn, keep, moffs, meas, dptr, drec, dflip, dkept, dkptr, dshift, counters, tx,
           out, allow, src_hi, src_lo, shed):
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
        moffs, meas, dptr, drec, dflip, dkept, dkptr, dshift: for streams whose controller sends
            measurements (``C_INPUT``): a round's measurements go into ``meas`` and its detectors are
            computed from them (``rtdecoder.kernels.tables.Tables``); a round with
            ``dshift[C_KPTR_BASE + r] = P > 0`` has detector ``k`` = measurement ``k`` of its block
            XOR the measurement ``P`` before it, computed eight at a time.
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
    sid = rd(buf, OFF_STREAM, 2)
    known = sid < st.shape[0] and st[sid, C_CONFIGURED] == 1
    if mtype == T_PING:  # needs no stream; one that names a stream is that stream's source's
        if known and not allowed(allow, st[sid, C_ALLOW_BASE], st[sid, C_ALLOW_N], src_hi, src_lo):
            counters[REJECT_NOT_ALLOWED] += 1
            return
        if payload_len != 0:
            reject(tx, buf, n, ST_BAD_PAYLOAD, shot, 0, rx_ns, counters, out)
            return
        counters[CNT_PING] += 1
        size = write_header(tx, T_PONG, 0, sid, 0, shot, 0, PONG_BODY_SIZE, ts)
        wr(tx, OFF_PONG_RX, 8, rx_ns)
        wr(tx, OFF_PONG_TX, 8, rx_ns)
        out[OUT_REPLY_LEN] = size
        out[OUT_STAMP] = 1
        return
    if mtype != T_SYNDROME and mtype != T_HELLO and mtype != T_RESET and mtype != T_DESCRIBE:
        reject(tx, buf, n, ST_UNKNOWN_TYPE, shot, 0, rx_ns, counters, out)
        return
    if not known:
        reject(tx, buf, n, ST_UNKNOWN_STREAM, shot, 0, rx_ns, counters, out)
        return
    if not allowed(allow, st[sid, C_ALLOW_BASE], st[sid, C_ALLOW_N], src_hi, src_lo):
        counters[REJECT_NOT_ALLOWED] += 1
        return
    if mtype != T_SYNDROME and payload_len != 0:  # HELLO, RESET and DESCRIBE carry no payload
        reject(tx, buf, n, ST_BAD_PAYLOAD, shot, 0, rx_ns, counters, out)
        return
    if mtype == T_HELLO:
        counters[CNT_HELLO] += 1
        size = write_header(tx, T_HELLO_REPLY, FLAG_HERALDS if st[sid, C_HERALDS] > 0 else 0, sid, 0, shot, 0,
                            HELLO_REPLY_SIZE, ts)
        o = HEADER_LEN
        tx[o] = MIN_VERSION
        tx[o + 1] = MAX_VERSION
        tx[o + 2] = st[sid, C_DECODER]
        tx[o + 3] = st[sid, C_INPUT]
        wr(tx, o + 4, 4, st[sid, C_NDET])
        wr(tx, o + 8, 4, st[sid, C_NROUNDS])
        wr(tx, o + 12, 2, st[sid, C_NOBS])
        wr(tx, o + 14, 2, st[sid, C_RBYTES])
        wr(tx, o + 16, 4, st[sid, C_MAXDG])
        wr(tx, o + 20, 4, st[sid, C_WINDOW])
        wr(tx, o + 24, 4, st[sid, C_COMMIT])
        out[OUT_REPLY_LEN] = size
        return
    if mtype == T_DESCRIBE:
        first = rd(buf, OFF_FIRST_ROUND, 4)
        nrounds = st[sid, C_NROUNDS]
        if first >= nrounds:
            reject(tx, buf, n, ST_BAD_ROUNDS, shot, 0, rx_ns, counters, out)
            return
        k = min(nrounds - first, MAX_DESCRIBE_ROUNDS)
        want = rd(buf, OFF_NUM_ROUNDS, 4)
        if want != 0:
            k = min(k, want)
        counters[CNT_DESCRIBE] += 1
        size = write_header(tx, T_DESCRIBE_REPLY, 0, sid, first, shot, k, DESCRIBE_PREFIX_SIZE + 2 * k, ts)
        wr(tx, OFF_DESCRIBE_FINGERPRINT, 8, st[sid, C_FINGERPRINT])
        counts = moffs if st[sid, C_INPUT] else offs
        base = (st[sid, C_MOFF_BASE] if st[sid, C_INPUT] else st[sid, C_OFF_BASE]) + first
        for i in range(k):
            wr(tx, OFF_DESCRIBE_COUNTS + 2 * i, 2, counts[base + i + 1] - counts[base + i])
        out[OUT_REPLY_LEN] = size
        return
    if mtype == T_RESET:
        counters[CNT_RESET] += 1
        st[sid, S_HAS_SHOT] = 0
        st[sid, S_POISONED] = 0
        st[sid, S_DONE] = 0
        out[OUT_REPLY_LEN] = write_header(tx, T_RESET_ACK, rd(buf, OFF_FLAGS, 2), sid, rd(buf, OFF_FIRST_ROUND, 4),
                                          shot, rd(buf, OFF_NUM_ROUNDS, 4), 0, ts)
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
    inp = st[sid, C_INPUT]
    cbase = st[sid, C_MOFF_BASE]
    if not (padding_clear(buf, first, nr, rbytes, moffs, cbase) if inp else
            padding_clear(buf, first, nr, rbytes, offs, base)):
        st[sid, S_POISONED] = 1
        reject(tx, buf, n, ST_BAD_PAYLOAD, shot, expected, rx_ns, counters, out)
        return
    sbase = st[sid, C_SYN_BASE]
    if inp:
        mbase = st[sid, C_MEAS_BASE]
        for i in range(nr):  # the measurements, unmasked: a detector may read any of them
            r = first + i
            unpack_round(buf, HEADER_LEN + i * rbytes, moffs[cbase + r + 1] - moffs[cbase + r], meas,
                         mbase + moffs[cbase + r], keep, False)
        dbase = st[sid, C_DET_BASE]
        kb = st[sid, C_KPTR_BASE]
        for i in range(nr):
            r = first + i
            shift = dshift[kb + r]
            if shift > 0:  # detector k of the round = measurement k of this block ^ the one shift before
                o = sbase + offs[base + r]
                cur = mbase + moffs[cbase + r]
                cnt = moffs[cbase + r + 1] - moffs[cbase + r]
                for k in range(0, cnt - 7, 8):
                    store_word(syn, o + k, (load_word(meas, cur + k) ^ load_word(meas, cur + k - shift))
                               & load_word(keep, o + k))
                for k in range(cnt & ~7, cnt):
                    syn[o + k] = (meas[cur + k] ^ meas[cur + k - shift]) & keep[o + k]
                continue
            for t in range(dkptr[kb + r], dkptr[kb + r + 1]):  # the kept detectors of the round
                j = dkept[t]  # the others' events are dropped: never computed, their syn bytes stay 0
                k0 = dptr[dbase + j]
                k1 = dptr[dbase + j + 1]
                v = dflip[dbase + j]
                if k1 - k0 == 2:  # a bulk detector: one ancilla's measurement in this round and the last
                    v ^= meas[mbase + drec[k0]] ^ meas[mbase + drec[k0 + 1]]
                else:
                    for k in range(k0, k1):
                        v ^= meas[mbase + drec[k]]
                syn[sbase + j] = v
    else:
        for i in range(nr):
            r = first + i
            o = sbase + offs[base + r]
            unpack_round(buf, HEADER_LEN + i * rbytes, offs[base + r + 1] - offs[base + r], syn, o, keep, True)
    st[sid, S_NEXT_ROUND] = first + nr
    st[sid, S_RX_NS] = rx_ns
    st[sid, S_TS] = ts
    out[OUT_STREAM] = sid
