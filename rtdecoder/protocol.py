"""rtdecoder wire protocol, version 1: message layouts, status codes and bit packing.

This module is the executable form of ``docs/wire-protocol.md``; section numbers below (``§3``)
refer to that document. Everything is little-endian. Every message is one datagram (UDP) or one
ring slot (RoCE): a fixed 40-byte header (§2) followed by ``payload_len`` bytes of payload (§4).

The ``struct.Struct`` layouts are the single source of truth for sizes and offsets; their sizes
are checked when this module is imported, and the byte offsets exported as ``OFF_*`` constants
are derived from them so that the numba code on the hot path (``rtdecoder.kernels.wire``)
reads the same bytes.

Bit order of detection events (§5): detector ``j`` of a round (its index among that round's
detectors, in the stim circuit's detector order) is bit ``j % 8`` (least-significant first) of
byte ``j // 8`` of the round's block, the order of ``numpy.packbits(..., bitorder="little")`` and
of stim's ``b8`` format.

>>> HEADER.size, HELLO_REPLY.size, CORRECTION_PREFIX.size, ERROR_BODY.size, PONG_BODY.size
(40, 28, 16, 16, 16)
>>> h = Header(MsgType.PING, stream_id=3, shot_id=7, controller_ts_ns=99)
>>> decode_header(encode_header(h)) == h
True
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = 0x51445452
"""Bytes ``b"RTDQ"`` read as a little-endian u32 (§2)."""
VERSION = 1
"""The protocol version this module speaks (§8)."""
MIN_VERSION = 1
MAX_VERSION = 1

HEADER = struct.Struct("<IBBHHHIQIIQ")
"""§2 header: magic u32, version u8, msg_type u8, flags u16, header_len u16, stream_id u16,
first_round u32, shot_id u64, num_rounds u32, payload_len u32, controller_ts_ns u64."""
HEADER_LEN = HEADER.size

# Byte offsets into the header (§2, table). Derived by hand from HEADER and checked below.
OFF_MAGIC = 0
OFF_VERSION = 4
OFF_TYPE = 5
OFF_FLAGS = 6
OFF_HEADER_LEN = 8
OFF_STREAM = 10
OFF_FIRST_ROUND = 12
OFF_SHOT = 16
OFF_NUM_ROUNDS = 24
OFF_PAYLOAD_LEN = 28
OFF_CONTROLLER_TS = 32

HELLO_REPLY = struct.Struct("<BBBBIIHHIII")
"""§4.2 HELLO_REPLY payload: min_version u8, max_version u8, decoder u8, input u8,
num_detectors u32, num_rounds u32, num_observables u16, round_bytes u16, max_datagram u32,
window_rounds u32, commit_rounds u32."""

CORRECTION_PREFIX = struct.Struct("<QQ")
"""§4.4 CORRECTION payload prefix: server_rx_ns u64, server_tx_ns u64; followed by
``obs_bytes`` bytes of committed flips and ``obs_bytes`` bytes of cumulative flips."""

ERROR_BODY = struct.Struct("<HHIQ")
"""§4.5 ERROR payload: status u16, reserved u16, expected_round u32, server_rx_ns u64."""

PONG_BODY = struct.Struct("<QQ")
"""§4.6 PONG payload: server_rx_ns u64, server_tx_ns u64."""

DESCRIBE_PREFIX = struct.Struct("<Q")
"""§4.8 DESCRIBE_REPLY payload prefix: the DEM fingerprint u64; followed by ``num_rounds`` u16
detector counts, one per round from ``first_round``."""
MAX_DESCRIBE_ROUNDS = 100
"""Most round counts one DESCRIBE_REPLY carries (§4.8): 40 + 8 + 200 bytes."""

# Offsets inside payloads, relative to the start of the datagram.
OFF_CORR_RX = HEADER_LEN
OFF_CORR_TX = HEADER_LEN + 8
OFF_CORR_FLIPS = HEADER_LEN + CORRECTION_PREFIX.size
OFF_ERR_STATUS = HEADER_LEN
OFF_ERR_EXPECTED = HEADER_LEN + 4
OFF_ERR_RX = HEADER_LEN + 8
OFF_PONG_RX = HEADER_LEN
OFF_PONG_TX = HEADER_LEN + 8
OFF_DESCRIBE_FINGERPRINT = HEADER_LEN
OFF_DESCRIBE_COUNTS = HEADER_LEN + DESCRIBE_PREFIX.size

INPUT_DETECTION_EVENTS = 0
"""HELLO_REPLY ``input``: SYNDROME blocks carry detection events (§5)."""
INPUT_MEASUREMENTS = 1
"""HELLO_REPLY ``input``: SYNDROME blocks carry raw measurement results (§5.1)."""

FLAG_FINAL = 0x0001
"""CORRECTION flag (§4.4): this correction ends the shot; its cumulative flips are the shot's
observable prediction."""
FLAG_HERALDS = 0x0002
"""HELLO_REPLY flag (§5.2): some of the stream's detectors are herald detectors."""

DEFAULT_MAX_DATAGRAM = 4096
"""Largest datagram the server accepts unless configured otherwise (§7), in bytes."""


class MsgType(enum.IntEnum):
    """Message types (§3)."""

    HELLO = 1
    HELLO_REPLY = 2
    SYNDROME = 3
    CORRECTION = 4
    ERROR = 5
    PING = 6
    PONG = 7
    RESET = 8
    RESET_ACK = 9
    DESCRIBE = 10
    DESCRIBE_REPLY = 11


class Status(enum.IntEnum):
    """Status codes carried by ERROR messages (§6), also the ``reason`` label of
    ``rtdecoder_packets_rejected_total``."""

    OK = 0
    MALFORMED = 1
    BAD_MAGIC = 2
    UNSUPPORTED_VERSION = 3
    UNKNOWN_TYPE = 4
    UNKNOWN_STREAM = 5
    TOO_LARGE = 6
    BAD_PAYLOAD = 7
    BAD_ROUNDS = 8
    ROUND_GAP = 9
    DUPLICATE = 10
    SHOT_ABANDONED = 11
    STALE_SHOT = 12
    SHOT_POISONED = 13
    NOT_READY = 14
    BUSY = 15
    INTERNAL = 16


NUM_STATUS = max(Status) + 1

def _check_layouts() -> None:
    expected = {
        "HEADER": (HEADER, 40),
        "HELLO_REPLY": (HELLO_REPLY, 28),
        "CORRECTION_PREFIX": (CORRECTION_PREFIX, 16),
        "ERROR_BODY": (ERROR_BODY, 16),
        "PONG_BODY": (PONG_BODY, 16),
        "DESCRIBE_PREFIX": (DESCRIBE_PREFIX, 8),
    }
    for name, (layout, size) in expected.items():
        if layout.size != size:
            raise ImportError(f"protocol layout {name} is {layout.size} bytes, spec §2/§4 says {size}")
    probe = bytearray(HEADER_LEN)
    fields = (
        (OFF_MAGIC, "<I"), (OFF_VERSION, "<B"), (OFF_TYPE, "<B"), (OFF_FLAGS, "<H"),
        (OFF_HEADER_LEN, "<H"), (OFF_STREAM, "<H"), (OFF_FIRST_ROUND, "<I"), (OFF_SHOT, "<Q"),
        (OFF_NUM_ROUNDS, "<I"), (OFF_PAYLOAD_LEN, "<I"), (OFF_CONTROLLER_TS, "<Q"),
    )
    values = tuple(range(1, len(fields) + 1))
    HEADER.pack_into(probe, 0, *values)
    for (off, fmt), value in zip(fields, values):
        if struct.unpack_from(fmt, probe, off)[0] != value:
            raise ImportError(f"protocol header offset {off} does not match the HEADER layout")


_check_layouts()


@dataclass(frozen=True)
class Header:
    """A decoded §2 header. ``header_len`` and ``payload_len`` are filled in by ``encode``."""

    msg_type: int
    stream_id: int = 0
    shot_id: int = 0
    first_round: int = 0
    num_rounds: int = 0
    flags: int = 0
    controller_ts_ns: int = 0
    payload_len: int = 0
    version: int = VERSION
    header_len: int = HEADER_LEN
    magic: int = MAGIC


class ProtocolError(ValueError):
    """A message that does not parse; ``status`` is the §6 code the server would answer."""

    def __init__(self, status: Status, message: str):
        super().__init__(f"{status.name}: {message}")
        self.status = status


def encode_header(h: Header, payload_len: int | None = None) -> bytes:
    """Pack ``h`` into 40 bytes (§2); ``payload_len`` overrides ``h.payload_len``. Written by
    ``rtdecoder.kernels.wire.encode_header``, the encoder the data plane and the emulator use."""
    from rtdecoder.kernels.wire import encode_header as write

    buf = np.zeros(HEADER_LEN, np.uint8)
    write(buf, h.magic, h.version, int(h.msg_type), h.flags, h.header_len, h.stream_id, h.first_round, h.shot_id,
          h.num_rounds, h.payload_len if payload_len is None else payload_len, h.controller_ts_ns)
    return buf.tobytes()


def encode(h: Header, payload: bytes = b"") -> bytes:
    """One whole message: header (with ``payload_len`` set) followed by ``payload``."""
    return encode_header(h, len(payload)) + bytes(payload)


def decode_header(buf: bytes | bytearray | memoryview) -> Header:
    """Parse the §2 header of a message.

    Raises:
        ProtocolError: MALFORMED if shorter than 40 bytes or if ``header_len`` or
            ``payload_len`` disagree with the message's length; BAD_MAGIC; UNSUPPORTED_VERSION.
    """
    if len(buf) < HEADER_LEN:
        raise ProtocolError(Status.MALFORMED, f"{len(buf)} bytes is shorter than the 40-byte header")
    (magic, version, msg_type, flags, header_len, stream_id, first_round, shot_id, num_rounds,
     payload_len, ts) = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ProtocolError(Status.BAD_MAGIC, f"magic 0x{magic:08x}, expected 0x{MAGIC:08x}")
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ProtocolError(Status.UNSUPPORTED_VERSION, f"version {version}")
    if header_len != HEADER_LEN or header_len + payload_len != len(buf):
        raise ProtocolError(
            Status.MALFORMED,
            f"header_len {header_len} + payload_len {payload_len} != message length {len(buf)}",
        )
    return Header(msg_type, stream_id, shot_id, first_round, num_rounds, flags, ts, payload_len,
                  version, header_len, magic)


@dataclass(frozen=True)
class StreamInfo:
    """The §4.2 HELLO_REPLY payload: what a controller needs to frame syndrome packets."""

    num_detectors: int
    num_rounds: int
    num_observables: int
    round_bytes: int
    max_datagram: int
    window_rounds: int
    commit_rounds: int
    decoder: int = 0
    min_version: int = MIN_VERSION
    max_version: int = MAX_VERSION
    input: int = 0
    """``INPUT_DETECTION_EVENTS`` or ``INPUT_MEASUREMENTS``: what SYNDROME blocks carry (§4.3)."""

    def pack(self) -> bytes:
        return HELLO_REPLY.pack(
            self.min_version, self.max_version, self.decoder, self.input, self.num_detectors,
            self.num_rounds, self.num_observables, self.round_bytes, self.max_datagram,
            self.window_rounds, self.commit_rounds,
        )

    @classmethod
    def unpack(cls, payload: bytes | memoryview) -> "StreamInfo":
        (vmin, vmax, decoder, inp, ndet, nrounds, nobs, rbytes, maxdg, w, c) = HELLO_REPLY.unpack_from(payload, 0)
        return cls(ndet, nrounds, nobs, rbytes, maxdg, w, c, decoder, vmin, vmax, inp)


@dataclass(frozen=True)
class Correction:
    """A decoded §4.4 CORRECTION message.

    ``flips`` and ``cumulative`` are uint8 arrays of shape ``(num_observables,)`` holding one
    bit per observable: the flips committed by this message, and the XOR of every flip committed
    so far in the shot (on a FINAL correction, the shot's observable prediction).
    """

    header: Header
    server_rx_ns: int
    server_tx_ns: int
    flips: np.ndarray
    cumulative: np.ndarray

    @property
    def final(self) -> bool:
        return bool(self.header.flags & FLAG_FINAL)


def obs_bytes(num_observables: int) -> int:
    """Bytes of one observable bit field (§4.4): ``ceil(num_observables / 8)``."""
    return (num_observables + 7) // 8


def decode_correction(buf: bytes | memoryview, num_observables: int) -> Correction:
    """Parse a CORRECTION message.

    Raises:
        ProtocolError: on a malformed header, or a payload whose length is not
            ``16 + 2 * ceil(num_observables / 8)``.
    """
    h = decode_header(buf)
    if h.msg_type != MsgType.CORRECTION:
        raise ProtocolError(Status.UNKNOWN_TYPE, f"expected CORRECTION, got type {h.msg_type}")
    nb = obs_bytes(num_observables)
    if h.payload_len != CORRECTION_PREFIX.size + 2 * nb:
        raise ProtocolError(Status.BAD_PAYLOAD, f"payload_len {h.payload_len} for {num_observables} observables")
    rx, tx = CORRECTION_PREFIX.unpack_from(buf, HEADER_LEN)
    raw = np.frombuffer(bytes(buf[OFF_CORR_FLIPS:OFF_CORR_FLIPS + 2 * nb]), dtype=np.uint8)
    flips = np.unpackbits(raw[:nb], bitorder="little")[:num_observables]
    cumulative = np.unpackbits(raw[nb:], bitorder="little")[:num_observables]
    return Correction(h, rx, tx, flips, cumulative)


def decode_error(buf: bytes | memoryview) -> tuple[Header, Status, int, int]:
    """Parse an ERROR message into ``(header, status, expected_round, server_rx_ns)``."""
    h = decode_header(buf)
    if h.msg_type != MsgType.ERROR or h.payload_len != ERROR_BODY.size:
        raise ProtocolError(Status.MALFORMED, "not an ERROR message")
    status, _r, expected, rx = ERROR_BODY.unpack_from(buf, HEADER_LEN)
    return h, Status(status), expected, rx


@dataclass(frozen=True)
class Description:
    """A decoded §4.8 DESCRIBE_REPLY: the stream's DEM fingerprint and the detector counts of
    rounds ``first_round .. first_round + len(counts) - 1``."""

    fingerprint: int
    first_round: int
    counts: tuple[int, ...]


def decode_describe(buf: bytes | memoryview) -> Description:
    """Parse a DESCRIBE_REPLY.

    Raises:
        ProtocolError: a malformed header, another type, or a payload that is not
            ``8 + 2 * num_rounds`` bytes.
    """
    h = decode_header(buf)
    if h.msg_type != MsgType.DESCRIBE_REPLY:
        raise ProtocolError(Status.UNKNOWN_TYPE, f"expected DESCRIBE_REPLY, got type {h.msg_type}")
    if h.payload_len != DESCRIBE_PREFIX.size + 2 * h.num_rounds:
        raise ProtocolError(Status.BAD_PAYLOAD, f"payload_len {h.payload_len} for {h.num_rounds} rounds")
    (fp,) = DESCRIBE_PREFIX.unpack_from(buf, HEADER_LEN)
    counts = struct.unpack_from(f"<{h.num_rounds}H", buf, OFF_DESCRIBE_COUNTS)
    return Description(fp, h.first_round, counts)


def dem_fingerprint(dem) -> int:
    """§4.8: the first 8 bytes of SHA-256 over the DEM in stim's text format (``str(dem)``, UTF-8),
    read as a little-endian u64. Equal fingerprints mean the same DEM (same circuit and noise,
    written by the same stim format).

    >>> import stim
    >>> dem_fingerprint(stim.DetectorErrorModel("error(0.1) D0 L0")) == dem_fingerprint(
    ...     stim.DetectorErrorModel("error(0.1) D0 L0"))
    True
    """
    import hashlib

    return int.from_bytes(hashlib.sha256(str(dem).encode()).digest()[:8], "little")


def pack_rounds(events: np.ndarray, round_offsets: np.ndarray, round_bytes: int) -> np.ndarray:
    """Pack detection events into §5 round blocks.

    Args:
        events: bool or uint8 array of shape ``(num_shots, num_detectors)``, detectors in stim order.
        round_offsets: int array of shape ``(num_rounds + 1,)``: the detectors of round ``r`` are
            ``round_offsets[r] <= j < round_offsets[r + 1]``.
        round_bytes: bytes per round block (from HELLO_REPLY).

    Returns:
        uint8 array of shape ``(num_shots, num_rounds, round_bytes)``; detector ``j`` of round
        ``r`` of shot ``s`` is bit ``k % 8`` of ``out[s, r, k // 8]`` with ``k = j - round_offsets[r]``.

    >>> pack_rounds(np.array([[1, 0, 1, 1]]), np.array([0, 3, 4]), 1).tolist()
    [[[5], [1]]]
    """
    events = np.asarray(events, dtype=np.uint8)
    shots, ndet = events.shape
    offsets = np.asarray(round_offsets, dtype=np.int64)
    nrounds = len(offsets) - 1
    if offsets[-1] != ndet:
        raise ValueError(f"round_offsets end at {offsets[-1]} but there are {ndet} detectors")
    det_round = np.repeat(np.arange(nrounds), np.diff(offsets))
    slot = det_round * (round_bytes * 8) + (np.arange(ndet) - offsets[det_round])
    unpacked = np.zeros((shots, nrounds * round_bytes * 8), dtype=np.uint8)
    unpacked[:, slot] = events
    return np.packbits(unpacked.reshape(shots, nrounds, round_bytes * 8), axis=-1, bitorder="little")
