"""A controller's side of CUDA-Q QEC's real-time RPC ("CUQR"), written from NVIDIA/cudaqx's public
sources and kept apart from the service's own CUQR code (``rtdecoder.kernels.cuqr`` and
``rtdecoder.dataplane.process_cuqr``): it imports nothing of the service's, so that the tests and
``rtdecoder emulate --dialect cuqr`` check the service against the format, not against itself.

Format (docs/cuqr-compat.md has the file and line of each fact): little-endian, packed.

- Request: ``magic u32 = 0x43555152`` ("CUQR"), ``function_id u32`` (FNV-1a-32 of the callee's
  name), ``arg_len u32``, ``request_id u32``, ``ptp_timestamp u64``; then the arguments.
- Response: ``magic u32 = 0x43555153`` ("CUQS"), ``status i32``, ``result_len u32``,
  ``request_id u32``, ``ptp_timestamp u64``; then the result.
- ``enqueue_syndromes(decoder_id u64, counter u64, syndrome_mapping_id u64, num_syndromes u64)``
  (32 bytes), then ``ceil(num_syndromes / 8)`` packed bytes, least significant bit first, no
  padding and no second length prefix (cudaqx main's ``EnqueueRequestPayload``).
- ``get_corrections(decoder_id i64, return_size i64, reset u8)``: 17 bytes of arguments; the
  result is ``ceil(return_size / 8)`` bytes of bits, least significant first.
- ``reset_decoder(decoder_id i64)``.
- CUDA-Q's UDP transport sends every request as one whole slot (256 bytes by default), zeros
  after the arguments, and reads a response of at most a slot: ``pad`` does the same here.

The shot pattern is that of cudaqx main's ``surface_code-1`` example: ``reset_decoder``, one
``enqueue_syndromes`` per round (the final data measurements last), then ``get_corrections``.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import numpy as np
from numba import njit

from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.transport import libc as L

REQUEST = struct.Struct("<IIIIQ")
RESPONSE = struct.Struct("<IiIIQ")
REQUEST_MAGIC = int.from_bytes(b"CUQR", "big")
RESPONSE_MAGIC = int.from_bytes(b"CUQS", "big")
STATUS = {0: "OK", 1: "INVALID_DECODER", 2: "BAD_REQUEST", 3: "INTERNAL_ERROR", 4: "NOT_READY", 5: "BUSY",
          6: "SYNDROMES_DROPPED"}


def function_id(name: str) -> int:
    """FNV-1a (32-bit: offset basis 2166136261, prime 16777619) of ``name``."""
    h = 2166136261
    for byte in name.encode("utf-8"):
        h ^= byte
        h = (h * 16777619) % (1 << 32)
    return h


ENQUEUE = function_id("enqueue_syndromes")
GET_CORRECTIONS = function_id("get_corrections")
RESET = function_id("reset_decoder")


SLOT_BYTES = 256
"""CUDA-Q's UDP transport's default slot: every request is sent as one whole slot."""


def _request(fn: int, args: bytes, request_id: int, ptp: int = 0) -> bytes:
    return REQUEST.pack(REQUEST_MAGIC, fn, len(args), request_id & 0xFFFFFFFF, ptp) + args


def pad(request: bytes, slot: int = SLOT_BYTES) -> bytes:
    """``request`` followed by zeros to ``slot`` bytes, as CUDA-Q's UDP transport sends it (a
    request longer than the slot is returned as it is)."""
    return request + bytes(max(0, slot - len(request)))


def enqueue_syndromes(decoder_id: int, bits: np.ndarray, request_id: int, counter: int = 0, mapping_id: int = 0,
                      ptp: int = 0) -> bytes:
    """One ``enqueue_syndromes`` request carrying ``bits`` (0/1 values, any integer dtype)."""
    bits = np.asarray(bits, np.uint8).ravel()
    packed = np.packbits(bits, bitorder="little").tobytes()
    args = struct.pack("<qqqQ", decoder_id, counter, mapping_id, len(bits)) + packed
    return _request(ENQUEUE, args, request_id, ptp)


def get_corrections(decoder_id: int, return_size: int, request_id: int, reset: bool = False, ptp: int = 0) -> bytes:
    return _request(GET_CORRECTIONS, struct.pack("<qqB", decoder_id, return_size, 1 if reset else 0), request_id, ptp)


def reset_decoder(decoder_id: int, request_id: int, ptp: int = 0) -> bytes:
    return _request(RESET, struct.pack("<q", decoder_id), request_id, ptp)


@dataclass(frozen=True)
class Response:
    status: int
    request_id: int
    ptp_timestamp: int
    result: bytes

    @property
    def status_name(self) -> str:
        return STATUS.get(self.status, f"status {self.status}")

    def bits(self, n: int) -> np.ndarray:
        """The first ``n`` result bits (uint8 0/1)."""
        return np.unpackbits(np.frombuffer(self.result, np.uint8), bitorder="little")[:n]


def parse_response(data: bytes) -> Response:
    """Decode a response (a datagram of exactly ``24 + result_len`` bytes, or a whole slot with
    zeros after the result); ``ValueError`` if it is not one."""
    if len(data) < RESPONSE.size:
        raise ValueError(f"{len(data)} bytes is shorter than a CUQR response header")
    magic, status, result_len, rid, ptp = RESPONSE.unpack_from(data)
    if magic != RESPONSE_MAGIC:
        raise ValueError(f"magic 0x{magic:08x} is not CUQS")
    if RESPONSE.size + result_len > len(data):
        raise ValueError(f"result_len {result_len} is longer than the datagram's {len(data)} bytes")
    return Response(status, rid, ptp, data[RESPONSE.size:RESPONSE.size + result_len])


class Client:
    """A blocking CUQR client over UDP, one request in flight except where said.

    Args:
        address: the service's ``(host, port)``.
        timeout_s: how long to wait for each response.
    """

    def __init__(self, address: tuple[str, int], timeout_s: float = 5.0, slot: int = SLOT_BYTES):
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout_s)
        self.sock.connect(address)
        self.next_id = 1
        self.slot = slot

    def close(self) -> None:
        self.sock.close()

    def _rid(self) -> int:
        rid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        return rid

    def call(self, request: bytes) -> Response:
        """Send one request and return the response with its ``request_id`` (others are dropped)."""
        rid = REQUEST.unpack_from(request)[3]
        self.sock.send(pad(request, self.slot))
        while True:
            r = parse_response(self.sock.recv(65536))
            if r.request_id == rid:
                return r

    def enqueue(self, decoder_id: int, bits: np.ndarray) -> Response:
        return self.call(enqueue_syndromes(decoder_id, bits, self._rid()))

    def corrections(self, decoder_id: int, num_observables: int, reset: bool = False) -> Response:
        return self.call(get_corrections(decoder_id, num_observables, self._rid(), reset))

    def reset(self, decoder_id: int) -> Response:
        return self.call(reset_decoder(decoder_id, self._rid()))

    def decode_shot(self, decoder_id: int, chunks: list[np.ndarray], num_observables: int,
                    max_polls: int = 10_000) -> np.ndarray:
        """``reset_decoder``, the shot's bits chunk by chunk, then ``get_corrections`` (reset = 1)
        polled until it is OK; the observable flips. The last chunk's request and the first
        poll are sent back to back, as a controller that does not wait for the
        acknowledgement does.

        Raises:
            RuntimeError: a status other than OK (reset, enqueue) or OK/NOT_READY
            (get_corrections).
        """
        r = self.reset(decoder_id)
        if r.status != 0:
            raise RuntimeError(f"reset_decoder: {r.status_name}")
        for c in chunks[:-1]:
            r = self.enqueue(decoder_id, c)
            if r.status != 0:
                raise RuntimeError(f"enqueue_syndromes: {r.status_name}")
        last, poll = self._rid(), self._rid()
        self.sock.send(pad(enqueue_syndromes(decoder_id, chunks[-1], last), self.slot))
        self.sock.send(pad(get_corrections(decoder_id, num_observables, poll, True), self.slot))
        answered: dict[int, Response] = {}
        for _ in range(max_polls):
            while poll not in answered:
                r = parse_response(self.sock.recv(65536))
                answered[r.request_id] = r
            got = answered.pop(poll)
            if last in answered and answered[last].status != 0:
                raise RuntimeError(f"enqueue_syndromes: {answered[last].status_name}")
            if got.status == 0:
                return got.bits(num_observables)
            if got.status != 4:
                raise RuntimeError(f"get_corrections: {got.status_name}")
            poll = self._rid()
            self.sock.send(pad(get_corrections(decoder_id, num_observables, poll, True), self.slot))
        raise RuntimeError(f"get_corrections: NOT_READY after {max_polls} polls")


# --- a compiled controller loop (``rtdecoder emulate --dialect cuqr``) --------------------------

# drive_cuqr_shot's results (int64 ``res``): the same slots as the native driver's where they mean
# the same (rtdecoder.emulator.R_*), so one report serves both dialects.
CR_FINAL = 0
CR_FAILED = 1
CR_LAST_SENT = 2
CR_FINAL_RECEIVED = 3
CR_STATUS = 4
"""The status that failed the shot (an enqueue's, or get_corrections' other than NOT_READY)."""
CR_POLLS = 5
CR_SHOT_START = 7
NUM_CR = 8


def shot_requests(decoder_id: int, chunks: list[np.ndarray], num_observables: int, first_id: int,
                  slot: int = SLOT_BYTES) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A shot's requests as cudaqx main's ``surface_code-1`` example makes them: one
    ``reset_decoder``, one ``enqueue_syndromes`` per chunk and one ``get_corrections``
    (reset = 0), each padded to ``slot`` bytes, back to back: ``(buf, offset, length,
    poll_offset)`` (``offset``/``length`` of the reset and the enqueues); request ids count up
    from ``first_id`` (the reset's), the poll's is ``first_id + len(chunks) + 1``."""
    msgs = [reset_decoder(decoder_id, first_id)]
    msgs += [enqueue_syndromes(decoder_id, c, first_id + 1 + i) for i, c in enumerate(chunks)]
    msgs.append(get_corrections(decoder_id, num_observables, first_id + 1 + len(chunks), False))
    msgs = [pad(m, slot) for m in msgs]
    sizes = np.array([len(m) for m in msgs], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    buf = np.frombuffer(b"".join(msgs), np.uint8).copy()
    return buf, starts[:-1][:-1].copy(), sizes[:-1].copy(), int(starts[-2])


@njit(cache=True, inline="always")
def _u32(b, o):
    return np.int64(b[o]) | (np.int64(b[o + 1]) << 8) | (np.int64(b[o + 2]) << 16) | (np.int64(b[o + 3]) << 24)


@njit(cache=True, nogil=True)
def _on_response(rx, n, poll_id, last_id, nobs, now, res, pred):
    """Apply one response; 1 if it asks for another poll (NOT_READY to the current poll)."""
    if n < 24 or _u32(rx, 0) != RESPONSE_MAGIC:
        return 0
    status = _u32(rx, 4)
    rid = _u32(rx, 12)
    if rid == poll_id:
        if status == 0:
            for o in range(nobs):
                pred[o] = (rx[24 + (o >> 3)] >> (o & 7)) & 1
            res[CR_FINAL] = 1
            res[CR_FINAL_RECEIVED] = now
            return 0
        if status == 4:
            return 1
        res[CR_FAILED] = 1
        res[CR_STATUS] = status
    elif status != 0 and rid <= last_id:  # an enqueue of this shot was refused
        res[CR_FAILED] = 1
        res[CR_STATUS] = status
    return 0


@njit(cache=True, nogil=True)
def drive_shot(fd, pkt, offset, length, ready, poll_off, poll_len, cycle_ns, timeout_ns, nobs, rx, res, pred):
    """Send one shot's requests (``reset_decoder`` and the enqueues) paced at the cycle time
    (request ``i`` when its last round has been measured, ``start + ready[i] * cycle_ns``), then
    at once the
    get_corrections at ``pkt[poll_off:]``, polled again on NOT_READY, until OK, a failure, or
    the timeout; in compiled code on a connected non-blocking socket."""
    res[:] = 0
    start = monotonic_ns()
    res[CR_SHOT_START] = start
    cap = rx.shape[0]
    npk = offset.shape[0]
    last_id = _u32(pkt, offset[npk - 1] + 12)
    poll_id = _u32(pkt, poll_off + 12)
    for i in range(npk):
        deadline = start + ready[i] * cycle_ns
        now = monotonic_ns()
        while now < deadline:
            n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
            now = monotonic_ns()
            if n > 0:
                _on_response(rx, n, poll_id, last_id, nobs, now, res, pred)
        res[CR_LAST_SENT] = now
        L.send(fd, pkt.ctypes.data + offset[i], length[i], 0)
    L.send(fd, pkt.ctypes.data + poll_off, poll_len, 0)
    end = res[CR_LAST_SENT] + timeout_ns
    while res[CR_FINAL] == 0 and res[CR_FAILED] == 0:
        n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
        now = monotonic_ns()
        if n > 0:
            if _on_response(rx, n, poll_id, last_id, nobs, now, res, pred):
                poll_id = (poll_id + 1) & 0xFFFFFFFF
                for k in range(4):
                    pkt[poll_off + 12 + k] = (poll_id >> (8 * k)) & 0xFF
                res[CR_POLLS] += 1
                L.send(fd, pkt.ctypes.data + poll_off, poll_len, 0)
        elif now > end:
            break


class ShotDriver:
    """Drives whole shots through a connected UDP socket in compiled code (``rtdecoder emulate
    --dialect cuqr``): each round (or ``rounds_per_request`` rounds) one ``enqueue_syndromes``.

    Args:
        sock: a connected UDP socket to the service.
        decoder_id: the CUQR decoder (the service's stream id).
        bounds: int64 ``(num_rounds + 1,)``: where each round's bits begin in a shot's bits.
        num_observables: the decoder's observables.
    """

    def __init__(self, sock: socket.socket, decoder_id: int, bounds: np.ndarray, num_observables: int,
                 rounds_per_request: int = 1, cycle_us: float = 1.0, timeout_s: float = 1.0):
        self.sock = sock
        self.sock.setblocking(False)
        self.decoder_id = decoder_id
        self.bounds = np.asarray(bounds, np.int64)
        self.nobs = num_observables
        rounds = len(self.bounds) - 1
        self.firsts = np.arange(0, rounds, rounds_per_request)
        self.ready = np.minimum(self.firsts + rounds_per_request, rounds).astype(np.int64)
        # reset_decoder goes at the shot's start; each enqueue when its last round is measured
        self.send_at = np.concatenate([[0], self.ready]).astype(np.int64)
        most = max(int(self.bounds[r] - self.bounds[f]) for f, r in zip(self.firsts, self.ready))
        self.slot = max(SLOT_BYTES, REQUEST.size + 32 + (most + 7) // 8)  # one slot holds any request
        self.cycle_ns = int(round(cycle_us * 1000))
        self.timeout_ns = int(timeout_s * 1e9)
        self.rx = np.zeros(65536, np.uint8)
        self.res = np.zeros(NUM_CR, np.int64)
        self.next_id = 1

    def run(self, bits: np.ndarray, pred_row: np.ndarray) -> np.ndarray:
        """Send one shot's bits (uint8 0/1, ``bounds[-1]`` of them) and wait for its correction;
        returns ``res`` (``CR_*``), the flips in ``pred_row``."""
        chunks = [bits[self.bounds[f]:self.bounds[r]] for f, r in zip(self.firsts, self.ready)]
        buf, off, length, poll = shot_requests(self.decoder_id, chunks, self.nobs, self.next_id, self.slot)
        self.next_id = (self.next_id + len(chunks) + 2 + 1024) & 0x7FFFFFFF  # room for polls
        drive_shot(self.sock.fileno(), buf, off, length, self.send_at, poll, len(buf) - poll, self.cycle_ns,
                    self.timeout_ns, self.nobs, self.rx, self.res, pred_row)
        return self.res
