"""CUDA-Q QEC's real-time RPC dialect ("CUQR") in compiled code: the second wire dialect of the
service, beside its own (docs/cuqr-compat.md).

A CUQR datagram is a packed 24-byte little-endian request header, ``magic u32`` (``CUQR``,
0x43555152), ``function_id u32`` (FNV-1a-32 of the function's name), ``arg_len u32``,
``request_id u32``, ``ptp_timestamp u64``, then ``arg_len`` bytes of arguments; every reply is a
24-byte header, ``magic u32`` (``CUQS``, 0x43555153), ``status i32``, ``result_len u32``, and the
request's ``request_id`` and ``ptp_timestamp`` echoed, then ``result_len`` bytes. The functions:

- ``enqueue_syndromes`` (0x7ED8BE82): ``decoder_id u64, counter u64, syndrome_mapping_id u64,
  num_syndromes u64`` (32 bytes), then ``ceil(num_syndromes / 8)`` bytes of bits, least
  significant first, no padding and no second length prefix: the next bits of the decoder's
  current shot. Answered OK at once (an acknowledgement); a failure of the shot is latched and
  reported by the next ``get_corrections``. Arguments that do not parse, or a
  ``syndrome_mapping_id`` other than 0 (the identity), are BAD_REQUEST and fail the shot.
- ``get_corrections`` (0x882D5BA1): ``decoder_id i64, return_size i64, reset u8`` (17 bytes).
  OK with ``ceil(return_size / 8)`` bytes of observable flips (observable ``i`` at bit ``i % 8``
  of byte ``i // 8``) once the shot's bits are all in and decoded, else NOT_READY;
  ``reset = 1`` clears the correction once read.
- ``reset_decoder`` (0x977A59CF): ``decoder_id i64``. Drops the shot in progress and the
  latched states; OK.

A datagram may be longer than ``24 + arg_len`` (CUDA-Q's UDP transport sends every request as a
whole 256-byte slot); the bytes past ``arg_len`` are ignored. Statuses: OK 0, INVALID_DECODER 1,
BAD_REQUEST 2, INTERNAL_ERROR 3, NOT_READY 4, BUSY 5, SYNDROMES_DROPPED 6. Source: NVIDIA/cudaqx
main at ef991e97, ``libs/qec/include/cudaq/qec/realtime/decoder_rpc_wire_format.h`` and
``libs/qec/lib/realtime/decoding-server-cqr/`` (``RpcSlot.h``, ``DecodingSession.cpp``,
``decoding_server_cqr.cpp``); the lines of each fact are in docs/cuqr-compat.md.

How a CUQR decoder maps onto the service: ``decoder_id`` is a stream id; the stream's shot is
its measurements (``input = "measurements"``) or its detection events, in the order of its
rounds. ``rtdecoder.dataplane.process_cuqr`` keeps the enqueued bits of the current shot
(``cqbits``); as each round becomes complete it writes that round as a SYNDROME of the
service's own protocol into the worker's scratch datagram (``cq_in``, ``round_datagram``) and
hands it to the data path (``rtdecoder.dataplane.process_native``), which checks it, converts
it, decodes every window it completes and commits them, exactly as for a native controller; the
data path's replies to those SYNDROMEs go to a scratch transmit batch (``cq_tx``) that
``take_replies`` reads (the final CORRECTION's cumulative flips become the shot's result) and
that is never sent.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder.kernels.ingest import SPREAD
from rtdecoder.kernels.memory import load_word, store_word
from rtdecoder.kernels.tables import (
    C_CONFIGURED, C_PARALLEL, C_CQ_BASE, C_INPUT, C_MOFF_BASE, C_OFF_BASE, C_RBYTES, CQ_COLLECTING, CQ_FAILED, CQ_READY,
    S_CQ_DROPPED, S_CQ_POS, S_CQ_RESULT, S_CQ_ROUNDS, S_CQ_SHOT, S_CQ_STATE, S_CUM, S_DONE, S_HAS_SHOT, S_POISONED,
    S_SHOT)
from rtdecoder.kernels.wire import (FLAG_FINAL, HEADER_LEN, OFF_ERR_STATUS, OFF_FLAGS, OFF_SHOT, OFF_TYPE, ST_BUSY,
                                   ST_SHOT_ABANDONED, T_CORRECTION, T_ERROR, T_SYNDROME, rd, wr, write_header)

MAGIC_REQUEST = 0x43555152
"""``b"RQUC"`` on the wire: the u32 ``CUQR`` little-endian."""
MAGIC_RESPONSE = 0x43555153
HEADER_BYTES = 24
MAX_SYNDROME_BITS = 1 << 20
ENQUEUE_ARGS = 32
"""Bytes of ``enqueue_syndromes``' arguments before the bits (four u64, ``num_syndromes`` last)."""
GET_CORRECTIONS_ARGS = 17
RESET_ARGS = 8

OK = 0
INVALID_DECODER = 1
BAD_REQUEST = 2
INTERNAL_ERROR = 3
NOT_READY = 4
BUSY = 5
SYNDROMES_DROPPED = 6
STATUS_NAMES = ("OK", "INVALID_DECODER", "BAD_REQUEST", "INTERNAL_ERROR", "NOT_READY", "BUSY", "SYNDROMES_DROPPED")


def fnv1a_32(name: str) -> int:
    """FNV-1a, 32 bits, of ``name``'s UTF-8 bytes: how CUQR derives a function id.

    >>> hex(fnv1a_32("enqueue_syndromes")), hex(fnv1a_32("get_corrections")), hex(fnv1a_32("reset_decoder"))
    ('0x7ed8be82', '0x882d5ba1', '0x977a59cf')
    """
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


FN_ENQUEUE_SYNDROMES = fnv1a_32("enqueue_syndromes")
FN_GET_CORRECTIONS = fnv1a_32("get_corrections")
FN_RESET_DECODER = fnv1a_32("reset_decoder")


@njit(cache=True, inline="always", _nrt=False)
def is_cuqr(buf, n):
    """Whether the datagram in ``buf`` (``n`` bytes) starts with CUQR's request magic."""
    return n >= 4 and buf.shape[0] >= 4 and rd(buf, 0, 4) == MAGIC_REQUEST


@njit(cache=True, _nrt=False)
def write_reply(tx, buf, status, result_len):
    """A reply header into ``tx[0:24]`` echoing the request in ``buf``; its length (without the
    result bytes, which the caller writes at ``tx[24:]``)."""
    wr(tx, 0, 4, MAGIC_RESPONSE)
    wr(tx, 4, 4, status)
    wr(tx, 8, 4, result_len)
    for i in range(12, 24):  # request_id and ptp_timestamp, echoed
        tx[i] = buf[i]
    return HEADER_BYTES + result_len


@njit(cache=True, _nrt=False)
def stream_of(st, decoder_id):
    """The stream a CUQR ``decoder_id`` names, or -1 (also for a parallel stream: its corrections
    come back as its helpers finish, not within the request that completes a round)."""
    if decoder_id < 0 or decoder_id >= st.shape[0] or st[decoder_id, C_CONFIGURED] != 1 \
            or st[decoder_id, C_PARALLEL] > 1:
        return -1
    return decoder_id


@njit(cache=True, _nrt=False)
def start_shot(st, sid):
    """Begin a new CUQR shot on stream ``sid``: nothing enqueued, and a shot id for the data path
    newer than any it has seen (a native controller may have used the stream before)."""
    st[sid, S_CQ_POS] = 0
    st[sid, S_CQ_ROUNDS] = 0
    st[sid, S_CQ_STATE] = CQ_COLLECTING
    st[sid, S_CQ_SHOT] = max(st[sid, S_CQ_SHOT], st[sid, S_SHOT]) + 1


@njit(cache=True, _nrt=False)
def reset_decoder(st, sid):
    """``reset_decoder``: forget the shot in progress (the data path's too) and the latches."""
    start_shot(st, sid)
    st[sid, S_CQ_DROPPED] = 0
    st[sid, S_CQ_RESULT] = 0
    st[sid, S_HAS_SHOT] = 0
    st[sid, S_POISONED] = 0
    st[sid, S_DONE] = 0


@njit(cache=True, _nrt=False)
def unpack_bits(buf, at, nbits, dst, o):
    """Bits ``0 .. nbits - 1`` of ``buf[at:]`` (least significant first) into bytes ``dst[o:]``:
    a word store per whole byte (``ingest.SPREAD``), bit by bit for the rest."""
    full = nbits >> 3
    for k in range(full):
        store_word(dst, o + 8 * k, SPREAD[buf[at + k]])
    for j in range(full << 3, nbits):
        dst[o + j] = (buf[at + (j >> 3)] >> (j & 7)) & 1


GATHER = np.uint64(0x0102040810204080)
"""Eight bytes of 0 or 1 loaded as a little-endian word, times this, have them as the top byte's
bits (byte ``i`` at bit ``i``): ``packbits(..., bitorder="little")`` of a word."""


@njit(cache=True, _nrt=False)
def round_datagram(st, counts, cqbits, sid, r, dg):
    """Round ``r`` of stream ``sid``'s current CUQR shot as a SYNDROME of the service's protocol
    in ``dg``; its length."""
    cb = st[sid, C_MOFF_BASE] if st[sid, C_INPUT] else st[sid, C_OFF_BASE]
    a = counts[cb + r]
    cnt = counts[cb + r + 1] - a
    rbytes = st[sid, C_RBYTES]
    size = write_header(dg, T_SYNDROME, 0, sid, r, st[sid, S_CQ_SHOT], 1, rbytes, 0)
    src = st[sid, C_CQ_BASE] + a
    full = cnt >> 3
    for k in range(full):
        dg[HEADER_LEN + k] = np.uint8((load_word(cqbits, src + 8 * k) * GATHER) >> np.uint64(56))
    for k in range(full, rbytes):
        v = 0
        for i in range(8):
            j = 8 * k + i
            if j < cnt:
                v |= cqbits[src + j] << i
        dg[HEADER_LEN + k] = v
    return size


@njit(cache=True, _nrt=False)
def take_replies(st, sid, cq_tx):
    """Read the data path's replies to one round (``cq_tx``) into the CUQR state of stream
    ``sid``; empty the batch. Returns ``BUSY`` if the data path refused the shot for overload,
    else ``OK``."""
    result = OK
    shot = st[sid, S_CQ_SHOT]
    for j in range(cq_tx.q[0]):
        rep = cq_tx.buf[j]
        t = rep[OFF_TYPE]
        if t == T_CORRECTION and (rd(rep, OFF_FLAGS, 2) & FLAG_FINAL) != 0 and rd(rep, OFF_SHOT, 8) == shot:
            st[sid, S_CQ_RESULT] = st[sid, S_CUM]
            st[sid, S_CQ_STATE] = CQ_READY
        elif t == T_ERROR:
            status = rd(rep, OFF_ERR_STATUS, 2)
            if status == ST_SHOT_ABANDONED and rd(rep, OFF_SHOT, 8) != shot:
                continue  # about a shot a reset left behind
            if status == ST_BUSY:
                result = BUSY
            st[sid, S_CQ_STATE] = CQ_FAILED
    cq_tx.q[0] = 0
    return result
