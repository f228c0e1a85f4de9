"""The wire format in compiled code: little-endian field access, and the encoders of the
messages the data path writes (docs/wire-protocol.md §2, §4).

``write_header`` is the one encoder of the §2 header: the service's replies, the emulator's
SYNDROME datagrams and ``rtdecoder.protocol.encode_header`` all write it. The offsets and codes
are ``rtdecoder.protocol``'s, copied into module-level integers that numba compiles as constants.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder import protocol as P

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
T_DESCRIBE = int(P.MsgType.DESCRIBE)
T_DESCRIBE_REPLY = int(P.MsgType.DESCRIBE_REPLY)
MAX_DESCRIBE_ROUNDS = int(P.MAX_DESCRIBE_ROUNDS)
OFF_DESCRIBE_FINGERPRINT = int(P.OFF_DESCRIBE_FINGERPRINT)
OFF_DESCRIBE_COUNTS = int(P.OFF_DESCRIBE_COUNTS)
DESCRIBE_PREFIX_SIZE = int(P.DESCRIBE_PREFIX.size)
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
FLAG_HERALDS = P.FLAG_HERALDS
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
def encode_header(tx, magic, version, msg_type, flags, header_len, stream_id, first_round, shot_id, num_rounds,
                  payload_len, ts):
    """Write every field of a §2 header into ``tx[0:40]`` (uint8), as given: the one header
    encoder (``write_header`` is its form for well-formed headers; tests and fuzzers give bad
    magic numbers, versions or lengths on purpose)."""
    wr(tx, OFF_MAGIC, 4, magic)
    tx[OFF_VERSION] = version
    tx[OFF_TYPE] = msg_type
    wr(tx, OFF_FLAGS, 2, flags)
    wr(tx, OFF_HEADER_LEN, 2, header_len)
    wr(tx, OFF_STREAM, 2, stream_id)
    wr(tx, OFF_FIRST_ROUND, 4, first_round)
    wr(tx, OFF_SHOT, 8, shot_id)
    wr(tx, OFF_NUM_ROUNDS, 4, num_rounds)
    wr(tx, OFF_PAYLOAD_LEN, 4, payload_len)
    wr(tx, OFF_CONTROLLER_TS, 8, ts)


@njit(cache=True, inline="always", _nrt=False)
def write_header(tx, msg_type, flags, stream_id, first_round, shot_id, num_rounds, payload_len, ts):
    """A well-formed §2 header of this protocol version into ``tx[0:40]``; returns the message's
    whole length, ``40 + payload_len``."""
    encode_header(tx, MAGIC, VERSION, msg_type, flags, HEADER_LEN, stream_id, first_round, shot_id, num_rounds,
                  payload_len, ts)
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
