"""A CUDA-Q real-time RPC caller written from NVIDIA/cudaqx main's headers alone, for the
conformance tests (tests/test_cuqr_conformance.py).

It imports nothing of rtdecoder's: neither the service's CUQR code (``rtdecoder.kernels.cuqr``,
``rtdecoder.dataplane``) nor its controller (``rtdecoder.cuqr_client``), so that the tests check
the service against cudaqx main and not against another reading of the same team's. Every
constant cites its source in NVIDIA/cudaqx at commit ef991e9791eb258ec878e782f0f2e1ff5094763d
(main, 2026-08-22), or, for the transport, in NVIDIA/cuda-quantum as the path says.
"""

from __future__ import annotations

import socket
import struct

# cudaq::realtime::RPCHeader / RPCResponse: 24 bytes each, packed
# (libs/qec/include/cudaq/qec/realtime/decoder_rpc_wire_format.h:38-44).
RPC_HEADER = struct.Struct("<IIIIQ")  # magic, function_id, arg_len, request_id, ptp_timestamp
RPC_RESPONSE = struct.Struct("<IiIIQ")  # magic, status, result_len, request_id, ptp_timestamp
RPC_MAGIC_REQUEST = 0x43555152  # 'CUQR'
RPC_MAGIC_RESPONSE = 0x43555153  # 'CUQS'

# decoder_rpc_wire_format.h:21-36 (static_asserts pin the FNV-1a hashes of the names).
ENQUEUE_SYNDROMES = 0x7ED8BE82
GET_CORRECTIONS = 0x882D5BA1
RESET_DECODER = 0x977A59CF

# RpcStatus, decoder_rpc_wire_format.h:47-55.
OK, INVALID_DECODER, BAD_REQUEST, INTERNAL_ERROR, NOT_READY, BUSY, SYNDROMES_DROPPED = range(7)
NAMES = ("OK", "INVALID_DECODER", "BAD_REQUEST", "INTERNAL_ERROR", "NOT_READY", "BUSY", "SYNDROMES_DROPPED")

MAX_SYNDROME_BITS = 1 << 20  # kMaxSyndromeBits, decoder_rpc_wire_format.h:60

# cuda-quantum realtime/lib/cpu_transport/udp_transceiver.cpp: each request leaves as one
# whole page (slot) of the ring, zeros after the message; a datagram longer than the page is
# dropped. 256 bytes is the slot the controller used.
SLOT = 256


def fnv1a_32(name: str) -> int:
    """cudaq::realtime::fnv1a_hash: offset basis 0x811C9DC5, prime 0x01000193."""
    h = 0x811C9DC5
    for c in name.encode():
        h = ((h ^ c) * 0x01000193) & 0xFFFFFFFF
    return h


def pack_bits_lsb_first(bits) -> bytes:
    """``ceil(n / 8)`` bytes, bit ``i`` at ``(byte[i // 8] >> (i % 8)) & 1``
    (decoder_rpc_wire_format.h:67; RpcSlot.h:40-45)."""
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def request(function_id: int, args: bytes, request_id: int, ptp: int = 0, arg_len: int | None = None) -> bytes:
    """A request: the header, then ``args`` (``arg_len`` overrides the header's count)."""
    return RPC_HEADER.pack(RPC_MAGIC_REQUEST, function_id, len(args) if arg_len is None else arg_len,
                           request_id & 0xFFFFFFFF, ptp) + args


def enqueue_args(decoder_id: int, bits, counter: int = 0, mapping_id: int = 0) -> bytes:
    """EnqueueRequestPayload (decoder_rpc_wire_format.h:62-71): four 64-bit fields,
    ``num_syndromes`` last, then the packed bits, no pad."""
    return struct.pack("<qqqq", decoder_id, counter, mapping_id, len(bits)) + pack_bits_lsb_first(bits)


def get_corrections_args(decoder_id: int, return_size: int, reset: bool) -> bytes:
    """GetCorrectionsRequestPayload (decoder_rpc_wire_format.h:73-83): 17 bytes."""
    return struct.pack("<qqB", decoder_id, return_size, 1 if reset else 0)


def reset_args(decoder_id: int) -> bytes:
    """ResetRequestPayload (decoder_rpc_wire_format.h:85-90)."""
    return struct.pack("<q", decoder_id)


class Reply:
    def __init__(self, datagram: bytes):
        if len(datagram) < RPC_RESPONSE.size:
            raise AssertionError(f"a {len(datagram)}-byte reply is shorter than RPCResponse")
        magic, self.status, self.result_len, self.request_id, self.ptp = RPC_RESPONSE.unpack_from(datagram)
        if magic != RPC_MAGIC_RESPONSE:
            raise AssertionError(f"reply magic 0x{magic:08x}")
        self.size = len(datagram)
        self.result = datagram[RPC_RESPONSE.size:RPC_RESPONSE.size + self.result_len]

    def bits(self, n: int) -> list[int]:
        return [(self.result[i >> 3] >> (i & 7)) & 1 for i in range(n)]

    def __repr__(self) -> str:
        return f"Reply({NAMES[self.status] if 0 <= self.status < 7 else self.status}, id={self.request_id})"


class Caller:
    """A controller's side over UDP: every request padded to a whole ``slot``, as cuda-quantum's
    UDP transport sends it; a reply longer than the slot is dropped, as that transport drops it."""

    def __init__(self, host: str, port: int, slot: int = SLOT, timeout_s: float = 10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout_s)
        self.sock.connect((host, port))
        self.slot = slot
        self.next_id = 1
        self.oversized = 0

    def close(self) -> None:
        self.sock.close()

    def rid(self) -> int:
        r = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        return r

    def send(self, msg: bytes, pad: bool = True) -> None:
        if pad and len(msg) < self.slot:
            msg = msg + bytes(self.slot - len(msg))
        self.sock.send(msg)

    def receive(self) -> Reply:
        while True:
            data = self.sock.recv(65536)
            if len(data) > self.slot:
                self.oversized += 1
                continue
            return Reply(data)

    def call(self, function_id: int, args: bytes, ptp: int = 0, arg_len: int | None = None, pad: bool = True
             ) -> Reply:
        """One request and its reply (which must echo its id)."""
        rid = self.rid()
        self.send(request(function_id, args, rid, ptp, arg_len), pad)
        r = self.receive()
        if r.request_id != rid:
            raise AssertionError(f"reply to request {r.request_id} while waiting for {rid}")
        return r

    def enqueue(self, decoder_id: int, bits, **kw) -> Reply:
        return self.call(ENQUEUE_SYNDROMES, enqueue_args(decoder_id, bits, **kw))

    def get_corrections(self, decoder_id: int, return_size: int, reset: bool = False) -> Reply:
        return self.call(GET_CORRECTIONS, get_corrections_args(decoder_id, return_size, reset))

    def reset_decoder(self, decoder_id: int) -> Reply:
        return self.call(RESET_DECODER, reset_args(decoder_id))

    def shot(self, decoder_id: int, rounds: list, num_observables: int, max_polls: int = 1000) -> tuple[list[int], int]:
        """One shot as cudaqx main's libs/qec/unittests/realtime/app_examples/surface_code-1.cpp
        makes it (lines 355-430): ``reset_decoder``, one ``enqueue_syndromes`` per round (the data
        measurements last), ``get_corrections`` (reset = false). The requests go back to back,
        as fire-and-forget device calls do; every reply must be OK and in request order, and
        ``get_corrections`` is asked again while NOT_READY. Returns ``(flips, polls)``."""
        ids = [self.rid() for _ in range(len(rounds) + 2)]
        self.send(request(RESET_DECODER, reset_args(decoder_id), ids[0]))
        for rid, bits in zip(ids[1:], rounds):
            self.send(request(ENQUEUE_SYNDROMES, enqueue_args(decoder_id, bits), rid))
        self.send(request(GET_CORRECTIONS, get_corrections_args(decoder_id, num_observables, False), ids[-1]))
        for polls in range(max_polls):
            for rid in ids:
                r = self.receive()
                if r.request_id != rid:
                    raise AssertionError(f"reply {r.request_id} out of order (expected {rid})")
                if rid != ids[-1] and r.status != OK:
                    raise AssertionError(f"request {rid}: {r!r}")
            if r.status == OK:
                if r.result_len != (num_observables + 7) // 8:
                    raise AssertionError(f"result_len {r.result_len} for {num_observables} observables")
                return r.bits(num_observables), polls
            if r.status != NOT_READY:
                raise AssertionError(f"get_corrections: {r!r}")
            ids = [self.rid()]
            self.send(request(GET_CORRECTIONS, get_corrections_args(decoder_id, num_observables, False), ids[0]))
        raise AssertionError(f"get_corrections NOT_READY after {max_polls} polls")
