"""The stream state machine (docs/wire-protocol.md §6): every bad datagram is answered and
counted, and no correction is ever sent from incomplete or out-of-order data."""

import numpy as np
import pytest

from rtdecoder import protocol as P
from rtdecoder.config import StreamConfig
from rtdecoder.engine import Engine
from rtdecoder.transport.libc import source_words
from rtdecoder.kernels import ingest as KI
from rtdecoder.kernels import tables as T

SID = 0


@pytest.fixture()
def eng():
    return Engine([StreamConfig(id=SID, distance=3, rounds=6, p=0.001)])  # 7 round blocks, W=6, C=3


def syndrome(eng, shot, first, n=1, payload=None, sid=SID):
    rb = eng.streams[SID].layout.round_bytes
    body = bytes(n * rb) if payload is None else payload
    return P.encode(P.Header(P.MsgType.SYNDROME, stream_id=sid, shot_id=shot, first_round=first, num_rounds=n), body)


def kinds(replies, nobs=1):
    out = []
    for r in replies:
        h = P.decode_header(r)
        if h.msg_type == P.MsgType.ERROR:
            out.append(P.decode_error(r)[1].name)
        else:
            out.append(P.MsgType(h.msg_type).name + ("+FINAL" if h.flags & P.FLAG_FINAL else ""))
    return out


def send_shot(eng, shot, rounds=None):
    replies = []
    for r in (range(eng.streams[SID].layout.num_rounds) if rounds is None else rounds):
        replies += eng.handle(syndrome(eng, shot, r))
    return replies


def test_clean_shot_gets_one_correction_per_window_and_a_final(eng):
    replies = send_shot(eng, 1)
    assert kinds(replies) == ["CORRECTION", "CORRECTION+FINAL"]
    assert eng.counters[T.CNT_SHOTS] == 1
    assert eng.counters[:P.NUM_STATUS].sum() == 0


@pytest.mark.parametrize("raw, status", [
    (b"\x00" * 10, "MALFORMED"),
    (b"XXXX" + P.encode(P.Header(P.MsgType.PING))[4:], "BAD_MAGIC"),
    (P.encode(P.Header(P.MsgType.PING, version=9)), "UNSUPPORTED_VERSION"),
    (P.encode(P.Header(P.MsgType.PING)) + b"\x01", "MALFORMED"),
    (P.encode(P.Header(P.MsgType.CORRECTION)), "UNKNOWN_TYPE"),
    (P.encode(P.Header(P.MsgType.HELLO, stream_id=9)), "UNKNOWN_STREAM"),
    (P.encode(P.Header(P.MsgType.SYNDROME, stream_id=SID, shot_id=1, num_rounds=0)), "BAD_ROUNDS"),
    (P.encode(P.Header(P.MsgType.SYNDROME, stream_id=SID, shot_id=1, first_round=6, num_rounds=2), bytes(2)), "BAD_ROUNDS"),
    (P.encode(P.Header(P.MsgType.SYNDROME, stream_id=SID, shot_id=1, num_rounds=1), bytes(2)), "BAD_PAYLOAD"),
])
def test_parser_rejects_bad_datagrams_with_status_and_count(eng, raw, status):
    assert kinds(eng.handle(raw)) == [status]
    assert eng.counters[P.Status[status]] == 1


def test_oversized_datagram_is_too_large(eng):
    assert kinds(eng.handle(P.encode(P.Header(P.MsgType.PING), bytes(eng.slot_bytes)))) == ["TOO_LARGE"]


def test_round_gap_poisons_the_shot_and_sends_no_correction(eng):
    replies = send_shot(eng, 1, [0, 1, 3])
    assert kinds(replies) == ["ROUND_GAP"]
    assert P.decode_error(replies[0])[2] == 2  # expected round
    later = send_shot(eng, 1, [4, 5, 6])
    assert kinds(later) == ["SHOT_POISONED"] * 3
    # a new shot clears the poison and decodes normally
    assert kinds(send_shot(eng, 2))[-1] == "CORRECTION+FINAL"


def test_duplicate_and_reordered_rounds_poison_the_shot(eng):
    assert kinds(send_shot(eng, 1, [0, 1, 1])) == ["DUPLICATE"]
    assert kinds(send_shot(eng, 2, [0, 2])) == ["ROUND_GAP"]
    assert kinds(send_shot(eng, 2, [1])) == ["SHOT_POISONED"]


def test_stale_shot_does_not_disturb_the_current_one(eng):
    send_shot(eng, 5, [0, 1])
    assert kinds(eng.handle(syndrome(eng, 4, 0))) == ["STALE_SHOT"]
    assert kinds(send_shot(eng, 5, range(2, 7))) == ["CORRECTION", "CORRECTION+FINAL"]


def test_new_shot_before_the_last_finished_abandons_it(eng):
    send_shot(eng, 1, [0, 1, 2])
    replies = eng.handle(syndrome(eng, 2, 0))
    assert kinds(replies) == ["SHOT_ABANDONED"]
    assert P.decode_header(replies[0]).shot_id == 1
    assert kinds(send_shot(eng, 2, range(1, 7))) == ["CORRECTION", "CORRECTION+FINAL"]


def test_bits_past_the_detector_count_are_rejected(eng):
    lay = eng.streams[SID].layout
    first_round_count = lay.round_offsets[1] - lay.round_offsets[0]
    assert first_round_count < 8 * lay.round_bytes
    bad = bytearray(lay.round_bytes)
    bad[first_round_count // 8] |= 1 << (first_round_count % 8)
    assert kinds(eng.handle(syndrome(eng, 1, 0, payload=bytes(bad)))) == ["BAD_PAYLOAD"]
    assert kinds(eng.handle(syndrome(eng, 1, 1))) == ["SHOT_POISONED"]


def test_reset_clears_shot_history(eng):
    send_shot(eng, 10)
    assert kinds(eng.handle(syndrome(eng, 3, 0))) == ["STALE_SHOT"]
    assert kinds(eng.handle(P.encode(P.Header(P.MsgType.RESET, stream_id=SID)))) == ["RESET_ACK"]
    assert kinds(send_shot(eng, 3))[-1] == "CORRECTION+FINAL"


def test_multi_round_packets_complete_several_windows_at_once(eng):
    nr = eng.streams[SID].layout.num_rounds
    replies = eng.handle(syndrome(eng, 1, 0, n=nr))
    assert kinds(replies) == ["CORRECTION", "CORRECTION+FINAL"]
    firsts = [P.decode_header(r).first_round for r in replies]
    counts = [P.decode_header(r).num_rounds for r in replies]
    assert firsts == [0, 3] and counts == [3, 4]


def test_other_streams_are_unaffected_by_a_poisoned_one():
    eng = Engine([StreamConfig(id=0, distance=3, rounds=3), StreamConfig(id=1, distance=3, rounds=3)])
    rb = eng.streams[0].layout.round_bytes

    def pkt(sid, shot, r):
        return P.encode(P.Header(P.MsgType.SYNDROME, stream_id=sid, shot_id=shot, first_round=r, num_rounds=1), bytes(rb))

    eng.handle(pkt(0, 1, 0))
    assert kinds(eng.handle(pkt(0, 1, 2))) == ["ROUND_GAP"]
    out = []
    for r in range(4):
        out += eng.handle(pkt(1, 1, r))
    assert kinds(out)[-1] == "CORRECTION+FINAL"


def test_ingest_unpacks_each_round_into_its_detectors_and_writes_nothing_else():
    """Rounds of 12 and 24 detectors (d = 5: a whole byte plus four bits, and three whole bytes)
    unpacked into ``syn``, least significant bit first (§5), each detector's event ANDed with its
    ``keep`` byte; the next stream's bytes are untouched."""
    eng = Engine([StreamConfig(id=0, distance=5, rounds=4), StreamConfig(id=1, distance=3, rounds=2)])
    lay = eng.streams[0].layout
    assert lay.round_offsets[1] == 12 and lay.round_offsets[2] - lay.round_offsets[1] == 24
    events = np.random.default_rng(7).integers(0, 2, (1, lay.num_detectors)).astype(np.uint8)
    packed = P.pack_rounds(events, lay.round_offsets, lay.round_bytes)[0]
    n0 = lay.num_detectors
    out = np.zeros(3, np.int64)
    tx = np.zeros(256, np.uint8)
    mixed = np.random.default_rng(8).integers(0, 2, n0).astype(np.uint8)
    for keep in (np.ones(n0, np.uint8), eng.streams[0].keep, mixed):
        eng.keep[:n0] = keep
        eng.syn[:n0] = 5
        eng.syn[n0:] = 7  # stream 1's detectors: nothing of stream 0 may reach them
        eng.st[0, T.S_HAS_SHOT:] = 0  # no shot in progress
        for first, nr in ((0, 2), (2, lay.num_rounds - 2)):
            datagram = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1, first_round=first,
                                         num_rounds=nr), packed[first:first + nr].tobytes())
            buf = np.zeros(eng.slot_bytes, np.uint8)
            buf[:len(datagram)] = np.frombuffer(datagram, np.uint8)
            KI.ingest(buf, len(datagram), 0, eng.st, eng.offs, eng.syn, eng.keep, eng.moffs, eng.meas, eng.dptr,
                      eng.drec, eng.dflip, eng.dkept, eng.dkptr, eng.dshift, eng.counters, tx, out, eng.allow,
                     *source_words("127.0.0.1"), 0)
            assert out[T.OUT_REPLY_LEN] == 0 and out[T.OUT_STREAM] == 0
        assert np.array_equal(eng.syn[:n0], events[0] & keep)
        assert np.all(eng.syn[n0:] == 7)
