"""The wire protocol: layouts, test vectors in both directions, bit packing."""

import struct

import numpy as np
import pytest

from rtdecoder import decoders
from rtdecoder import protocol as P
from rtdecoder.config import StreamConfig
from rtdecoder.engine import Engine


def _header_of(v):
    f = v["header"]
    return P.Header(P.MsgType[f["msg_type"]], stream_id=f["stream_id"], shot_id=f["shot_id"],
                    first_round=f["first_round"], num_rounds=f["num_rounds"], flags=f["flags"],
                    controller_ts_ns=f["controller_ts_ns"], payload_len=f["payload_len"])


def _payload_of(v):
    t = v["header"]["msg_type"]
    f = v.get("payload")
    if f is None:
        return b""
    if t == "HELLO_REPLY":
        return P.StreamInfo(f["num_detectors"], f["num_rounds"], f["num_observables"], f["round_bytes"],
                            f["max_datagram"], f["window_rounds"], f["commit_rounds"], decoders.get(f["decoder"]).wire_id,
                            f["min_version"], f["max_version"]).pack()
    if t == "SYNDROME":
        rb = len(bytes.fromhex(v["hex"])) - P.HEADER_LEN
        rb //= len(f["rounds"])
        out = b""
        for r in f["rounds"]:
            block = np.zeros(rb * 8, np.uint8)
            block[r["detection_events"]] = 1
            out += np.packbits(block, bitorder="little").tobytes()
        return out
    if t == "CORRECTION":
        def bits(b):
            return np.packbits(np.array(b, np.uint8), bitorder="little").tobytes()
        return P.CORRECTION_PREFIX.pack(f["server_rx_ns"], f["server_tx_ns"]) + bits(f["flips"]) + bits(f["cumulative"])
    if t == "ERROR":
        return P.ERROR_BODY.pack(P.Status[f["status"]], 0, f["expected_round"], f["server_rx_ns"])
    if t == "PONG":
        return P.PONG_BODY.pack(f["server_rx_ns"], f["server_tx_ns"])
    if t == "DESCRIBE_REPLY":
        return P.DESCRIBE_PREFIX.pack(f["fingerprint"]) + struct.pack(f"<{len(f['counts'])}H", *f["counts"])
    raise AssertionError(t)


def test_layout_sizes_match_the_spec():
    assert (P.HEADER.size, P.HELLO_REPLY.size, P.CORRECTION_PREFIX.size, P.ERROR_BODY.size) == (40, 28, 16, 16)
    assert struct.pack("<I", P.MAGIC) == b"RTDQ"


def test_vectors_encode_to_their_bytes(vectors):
    assert len(vectors) >= 12
    for v in vectors:
        assert P.encode(_header_of(v), _payload_of(v)).hex() == v["hex"], v["name"]


def test_vectors_decode_to_their_fields(vectors):
    for v in vectors:
        raw = bytes.fromhex(v["hex"])
        h = P.decode_header(raw)
        f = v["header"]
        assert (h.magic, h.version, P.MsgType(h.msg_type).name, h.flags, h.header_len, h.stream_id, h.first_round,
                h.shot_id, h.num_rounds, h.payload_len, h.controller_ts_ns) == (
            f["magic"], f["version"], f["msg_type"], f["flags"], f["header_len"], f["stream_id"], f["first_round"],
            f["shot_id"], f["num_rounds"], f["payload_len"], f["controller_ts_ns"]), v["name"]
        if f["msg_type"] == "CORRECTION":
            c = P.decode_correction(raw, len(v["payload"]["flips"]))
            assert c.flips.tolist() == v["payload"]["flips"]
            assert c.cumulative.tolist() == v["payload"]["cumulative"]
            assert (c.server_rx_ns, c.server_tx_ns) == (v["payload"]["server_rx_ns"], v["payload"]["server_tx_ns"])
            assert c.final == bool(f["flags"] & P.FLAG_FINAL)
        if f["msg_type"] == "ERROR":
            _, status, expected, rx = P.decode_error(raw)
            assert (status.name, expected, rx) == (v["payload"]["status"], v["payload"]["expected_round"],
                                                    v["payload"]["server_rx_ns"])
        if f["msg_type"] == "DESCRIBE_REPLY":
            d = P.decode_describe(raw)
            assert (d.fingerprint, d.first_round, list(d.counts)) == (v["payload"]["fingerprint"], f["first_round"],
                                                                      v["payload"]["counts"])
        if f["msg_type"] == "HELLO_REPLY":
            info = P.StreamInfo.unpack(raw[P.HEADER_LEN:])
            assert info.num_detectors == v["payload"]["num_detectors"]
            assert info.round_bytes == v["payload"]["round_bytes"]


@pytest.fixture(scope="module")
def d3_engine():
    # The stream of the vectors: rotated surface code d=3, 3 rounds (4 round blocks), stream 2.
    return Engine([StreamConfig(id=2, distance=3, rounds=3, p=0.001, window=0)])


def test_server_answers_vectors_with_vector_bytes(vectors, d3_engine):
    by_name = {v["name"]: bytes.fromhex(v["hex"]) for v in vectors}
    # HELLO → HELLO_REPLY, byte for byte.
    assert d3_engine.handle(by_name["hello"]) == [by_name["hello_reply"]]
    # RESET → RESET_ACK.
    assert d3_engine.handle(by_name["reset"]) == [by_name["reset_ack"]]
    # PING → PONG with the vector's server stamps.
    assert d3_engine.handle(by_name["ping"], rx_ns=10, tx_ns=11) == [by_name["pong"]]
    # DESCRIBE → DESCRIBE_REPLY: the vector's bytes but for the fingerprint, which is the DEM's.
    (got,) = d3_engine.handle(by_name["describe"])
    want = by_name["describe_reply"]
    fp = P.dem_fingerprint(d3_engine.streams[2].dem).to_bytes(8, "little")
    assert got == want[:P.HEADER_LEN] + fp + want[P.HEADER_LEN + 8:]


def test_kernel_writes_the_error_vector(vectors):
    from rtdecoder.kernels import wire as K

    raw = bytes.fromhex(next(v for v in vectors if v["name"] == "error_round_gap")["hex"])
    offending = np.frombuffer(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=2, shot_id=12, first_round=7,
                                                num_rounds=1, controller_ts_ns=3), bytes(1)), np.uint8).copy()
    tx = np.zeros(64, np.uint8)
    n = K.write_error(tx, offending, len(offending), int(P.Status.ROUND_GAP), 12, 5, 123456789)
    assert tx[:n].tobytes() == raw


def test_decode_header_rejects_truncated_and_inconsistent_lengths():
    good = P.encode(P.Header(P.MsgType.PING))
    with pytest.raises(P.ProtocolError) as e:
        P.decode_header(good[:39])
    assert e.value.status == P.Status.MALFORMED
    with pytest.raises(P.ProtocolError) as e:
        P.decode_header(good + b"\0")
    assert e.value.status == P.Status.MALFORMED
    with pytest.raises(P.ProtocolError) as e:
        P.decode_header(b"XXXX" + good[4:])
    assert e.value.status == P.Status.BAD_MAGIC


def test_pack_rounds_uses_little_endian_bit_order_per_round():
    events = np.zeros((1, 11), np.uint8)
    events[0, [0, 2, 9, 10]] = 1  # round 0: detectors 0..8 (9 of them), round 1: detectors 9..10
    out = P.pack_rounds(events, np.array([0, 9, 11]), 2)
    assert out.shape == (1, 2, 2)
    assert out[0, 0].tolist() == [0b101, 0]
    assert out[0, 1].tolist() == [0b11, 0]
