"""Conformance of ``rtdecoder serve --config decoders.yaml`` with CUDA-Q's real-time RPC as cudaqx
main speaks it, one test per row of docs/cuqr-compat.md.

The caller (``tests/cuqr_conformance.py``) is written from cudaqx main's headers alone and the
YAML (``tests/cudaq_fixture.py``) from stim alone: neither shares code with the service. Every
request goes as a whole 256-byte slot, as cuda-quantum's UDP transport sends it.
"""

import os
import struct
import sys

import numpy as np
import pytest
import stim

from rtdecoder.cli import ServiceProcess

sys.path.insert(0, os.path.dirname(__file__))
import cudaq_fixture as F  # noqa: E402
import cuqr_conformance as Q  # noqa: E402

DISTANCE, ROUNDS, P = 5, 5, 0.003
DECODER = 0


def memory_circuit() -> stim.Circuit:
    return stim.Circuit.generated("surface_code:rotated_memory_z", distance=DISTANCE, rounds=ROUNDS,
                                  after_clifford_depolarization=P, before_round_data_depolarization=P,
                                  before_measure_flip_probability=P, after_reset_flip_probability=P)


def split_rounds(meas: np.ndarray) -> list[list[int]]:
    """A shot's measurements as the controller streams them: one block per syndrome round, then
    the data qubits' final measurements."""
    data = DISTANCE * DISTANCE
    per_round = (len(meas) - data) // ROUNDS
    blocks = [meas[r * per_round:(r + 1) * per_round] for r in range(ROUNDS)] + [meas[ROUNDS * per_round:]]
    return [[int(b) for b in block] for block in blocks]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    c = memory_circuit()
    path = tmp_path_factory.mktemp("cuqr") / "decoders.yaml"
    path.write_text(F.yaml_text(c, decoder_id=DECODER))
    with ServiceProcess(["--config", str(path)]) as svc:
        caller = Q.Caller(svc.host, svc.port)
        try:
            yield c, svc, caller
        finally:
            caller.close()


@pytest.fixture
def caller(served):
    c, svc, caller = served
    assert caller.reset_decoder(DECODER).status == Q.OK
    return caller


def a_shot(seed: int) -> list[list[int]]:
    return split_rounds(memory_circuit().compile_sampler(seed=seed).sample(1)[0].astype(np.uint8))


def test_two_thousand_shots_in_cudaq_mains_layout_equal_offline_pymatching(served):
    c, svc, caller = served
    meas = c.compile_sampler(seed=2026).sample(2000).astype(np.uint8)
    ref = F.reference_predictions(c, meas)
    got = np.array([caller.shot(DECODER, split_rounds(m), 1)[0] for m in meas], np.uint8)
    assert caller.oversized == 0  # no reply longer than the slot (cuda-quantum's transport would drop it)
    assert got.shape == ref.shape and int(np.sum(got != ref)) == 0
    assert int(ref.sum()) > 0  # the shots are not all trivial
    text = svc.scrape()
    assert 'rtdecoder_cuqr_replies_total{status="ok"}' in text


# --- the wire format ----------------------------------------------------------------------------

def test_function_ids_are_the_fnv1a_hashes_of_the_names():
    assert Q.fnv1a_32("enqueue_syndromes") == Q.ENQUEUE_SYNDROMES
    assert Q.fnv1a_32("get_corrections") == Q.GET_CORRECTIONS
    assert Q.fnv1a_32("reset_decoder") == Q.RESET_DECODER


def test_replies_echo_request_id_and_ptp_timestamp(caller):
    for fn, args in [(Q.RESET_DECODER, Q.reset_args(DECODER)),
                     (Q.GET_CORRECTIONS, Q.get_corrections_args(DECODER, 1, False)),
                     (Q.ENQUEUE_SYNDROMES, Q.enqueue_args(DECODER, [1, 0, 1])),
                     (Q.RESET_DECODER, Q.reset_args(99))]:
        r = caller.call(fn, args, ptp=0x0123456789ABCDEF)
        assert r.ptp == 0x0123456789ABCDEF and r.size == Q.RPC_RESPONSE.size + r.result_len


def test_enqueue_has_four_fields_then_the_bits_lsb_first(caller):
    shot = a_shot(7)
    flat = [b for block in shot for b in block]
    want = F.reference_predictions(memory_circuit(), np.array([flat], np.uint8))[0]
    # The whole shot in one request: decoded as soon as its last bit is in.
    assert caller.enqueue(DECODER, flat).status == Q.OK
    r = caller.get_corrections(DECODER, 1)
    assert r.status == Q.OK and r.result_len == 1 and r.bits(1) == [int(want[0])]


def test_the_older_five_field_form_is_read_as_mains_layout(caller):
    bits = a_shot(8)[0]
    n = len(bits)
    old = struct.pack("<qqqqq", DECODER, 0, 0, n, n) + Q.pack_bits_lsb_first(bits)
    r = caller.call(Q.ENQUEUE_SYNDROMES, old)
    # Read as main's layout it is a request whose bits begin with a copy of num_syndromes: it
    # parses (arg_len covers them) and is taken as the shot's first bits, not as a length.
    assert r.status == Q.OK
    assert caller.get_corrections(DECODER, 1).status == Q.NOT_READY


def test_unpadded_requests_work_too(caller):
    shot = a_shot(9)
    for block in shot:
        assert caller.call(Q.ENQUEUE_SYNDROMES, Q.enqueue_args(DECODER, block), pad=False).status == Q.OK
    r = caller.call(Q.GET_CORRECTIONS, Q.get_corrections_args(DECODER, 1, False), pad=False)
    flat = np.array([[b for block in shot for b in block]], np.uint8)
    assert r.status == Q.OK and r.bits(1) == [int(F.reference_predictions(memory_circuit(), flat)[0, 0])]


@pytest.mark.parametrize("case", ["no bits", "over the cap", "bytes missing", "fields cut short"])
def test_an_enqueue_that_does_not_parse_is_bad_request_and_fails_the_shot(caller, case):
    args = {"no bits": struct.pack("<qqqq", DECODER, 0, 0, 0),
            "over the cap": struct.pack("<qqqq", DECODER, 0, 0, Q.MAX_SYNDROME_BITS + 1) + bytes(200),
            "bytes missing": struct.pack("<qqqq", DECODER, 0, 0, 24) + b"\x01\x02",
            "fields cut short": struct.pack("<qqq", DECODER, 0, 0)}[case]
    assert caller.call(Q.ENQUEUE_SYNDROMES, args).status == Q.BAD_REQUEST
    assert caller.get_corrections(DECODER, 1).status == Q.INTERNAL_ERROR


def test_an_unknown_syndrome_mapping_is_bad_request_at_the_enqueue(caller):
    assert caller.enqueue(DECODER, a_shot(10)[0], mapping_id=3).status == Q.BAD_REQUEST
    assert caller.get_corrections(DECODER, 1).status == Q.INTERNAL_ERROR


def test_short_get_corrections_and_reset_arguments_are_bad_request(caller):
    assert caller.call(Q.GET_CORRECTIONS, struct.pack("<qq", DECODER, 1)).status == Q.BAD_REQUEST
    assert caller.call(Q.RESET_DECODER, b"\x00" * 7).status == Q.BAD_REQUEST
    assert caller.call(Q.GET_CORRECTIONS, b"").status == Q.BAD_REQUEST
    assert caller.get_corrections(DECODER, 1).status == Q.NOT_READY  # neither failed the shot


def test_an_unknown_function_gets_no_reply(caller):
    caller.send(Q.request(0x12345678, Q.reset_args(DECODER), caller.rid()))
    r = caller.reset_decoder(DECODER)  # the next reply is the reset's: the unknown one was dropped
    assert r.status == Q.OK


def test_a_request_shorter_than_its_header_gets_no_reply(caller):
    caller.send(Q.request(Q.RESET_DECODER, Q.reset_args(DECODER), caller.rid())[:20], pad=False)
    assert caller.reset_decoder(DECODER).status == Q.OK


def test_an_unknown_decoder_is_invalid_decoder_before_its_arguments_are_parsed(caller):
    assert caller.reset_decoder(42).status == Q.INVALID_DECODER
    assert caller.reset_decoder(-1).status == Q.INVALID_DECODER
    assert caller.get_corrections(42, 1).status == Q.INVALID_DECODER
    assert caller.call(Q.GET_CORRECTIONS, struct.pack("<q", 42)).status == Q.INVALID_DECODER
    assert caller.call(Q.GET_CORRECTIONS, struct.pack("<q", DECODER)).status == Q.BAD_REQUEST
    assert caller.call(Q.ENQUEUE_SYNDROMES, Q.enqueue_args(42, [1])).status == Q.INVALID_DECODER


def test_arguments_too_short_for_a_decoder_id_are_bad_request(caller):
    for fn in (Q.ENQUEUE_SYNDROMES, Q.GET_CORRECTIONS, Q.RESET_DECODER):
        assert caller.call(fn, b"\x00\x00\x00").status == Q.BAD_REQUEST


def test_every_request_is_answered_with_no_error_budget(served):
    c, svc, _ = served
    caller = Q.Caller(svc.host, svc.port)
    try:
        n = 600
        ids = [caller.rid() for _ in range(n)]
        for i, rid in enumerate(ids):
            caller.send(Q.request(Q.RESET_DECODER, Q.reset_args(1000 + i), rid))
            if i % 50 == 49:  # keep within the socket's receive buffer: read as we go
                for want in ids[i - 49:i + 1]:
                    r = caller.receive()
                    assert r.request_id == want and r.status == Q.INVALID_DECODER
    finally:
        caller.close()


# --- what the functions do ----------------------------------------------------------------------

def test_an_enqueue_is_acknowledged_and_the_shot_decodes_when_its_last_bits_arrive(caller):
    shot = a_shot(11)
    for block in shot[:-1]:
        assert caller.enqueue(DECODER, block).status == Q.OK
        assert caller.get_corrections(DECODER, 1).status == Q.NOT_READY
    assert caller.enqueue(DECODER, shot[-1]).status == Q.OK
    assert caller.get_corrections(DECODER, 1).status == Q.OK


def test_the_next_enqueue_after_a_decode_begins_a_new_shot(caller):
    one, two = a_shot(12), a_shot(13)
    flat = np.array([[b for block in s for b in block] for s in (one, two)], np.uint8)
    want = F.reference_predictions(memory_circuit(), flat)[:, 0]
    for block in one:
        caller.enqueue(DECODER, block)
    assert caller.get_corrections(DECODER, 1).bits(1) == [int(want[0])]
    assert caller.enqueue(DECODER, two[0]).status == Q.OK  # no reset_decoder between them
    assert caller.get_corrections(DECODER, 1).status == Q.NOT_READY  # the old correction is gone
    for block in two[1:]:
        caller.enqueue(DECODER, block)
    assert caller.get_corrections(DECODER, 1).bits(1) == [int(want[1])]


def test_more_bits_than_the_shot_holds_fail_it_and_later_enqueues_are_ignored(caller):
    shot = a_shot(14)
    flat = [b for block in shot for b in block]
    assert caller.enqueue(DECODER, flat[:10]).status == Q.OK
    assert caller.enqueue(DECODER, flat).status == Q.OK  # acknowledged: failures are deferred
    assert caller.get_corrections(DECODER, 1).status == Q.INTERNAL_ERROR
    assert caller.enqueue(DECODER, flat).status == Q.OK  # ignored while failed
    assert caller.get_corrections(DECODER, 1).status == Q.INTERNAL_ERROR
    assert caller.reset_decoder(DECODER).status == Q.OK
    assert caller.enqueue(DECODER, flat).status == Q.OK
    assert caller.get_corrections(DECODER, 1).status == Q.OK


def test_get_corrections_checks_in_mains_order(caller):
    assert caller.get_corrections(DECODER, 0).status == Q.BAD_REQUEST
    assert caller.get_corrections(DECODER, -3).status == Q.BAD_REQUEST
    assert caller.get_corrections(DECODER, 2).status == Q.BAD_REQUEST  # not the decoder's observables
    assert caller.get_corrections(DECODER, 1).status == Q.NOT_READY
    caller.enqueue(DECODER, [1] * 5, mapping_id=1)  # fail the shot
    assert caller.get_corrections(DECODER, 0).status == Q.BAD_REQUEST  # return_size first
    assert caller.get_corrections(DECODER, 2).status == Q.INTERNAL_ERROR  # the failure before the size check


def test_reset_one_clears_the_correction_and_reset_zero_keeps_it(caller):
    for block in a_shot(15):
        caller.enqueue(DECODER, block)
    first = caller.get_corrections(DECODER, 1, reset=False)
    again = caller.get_corrections(DECODER, 1, reset=True)
    assert first.status == again.status == Q.OK and first.result == again.result
    assert caller.get_corrections(DECODER, 1).status == Q.NOT_READY


def test_reset_decoder_drops_the_shot_in_progress(caller):
    one, two = a_shot(16), a_shot(17)
    caller.enqueue(DECODER, one[0])
    caller.enqueue(DECODER, one[1])
    assert caller.reset_decoder(DECODER).status == Q.OK
    for block in two:
        caller.enqueue(DECODER, block)
    flat = np.array([[b for block in two for b in block]], np.uint8)
    assert caller.get_corrections(DECODER, 1).bits(1) == [int(F.reference_predictions(memory_circuit(), flat)[0, 0])]


# --- where rtdecoder differs, deliberately (docs/cuqr-compat.md, "Differences") -------------------

def test_replies_are_as_long_as_their_result_not_a_whole_slot(caller):
    r = caller.get_corrections(DECODER, 1)
    assert r.size == Q.RPC_RESPONSE.size
    for block in a_shot(18):
        caller.enqueue(DECODER, block)
    r = caller.get_corrections(DECODER, 1)
    assert r.status == Q.OK and r.size == Q.RPC_RESPONSE.size + 1 <= Q.SLOT


def test_an_arg_len_past_a_short_datagram_is_bad_request(caller):
    args = Q.enqueue_args(DECODER, [1, 0, 1])
    r = caller.call(Q.ENQUEUE_SYNDROMES, args, arg_len=len(args) + 40, pad=False)
    assert r.status == Q.BAD_REQUEST


def test_another_magic_is_read_as_rtdecoders_own_protocol(caller):
    caller.send(struct.pack("<IIIIQ", 0x12345678, Q.RESET_DECODER, 8, caller.rid(), 0) + Q.reset_args(DECODER))
    data = caller.sock.recv(65536)  # the native protocol's ERROR, not a CUQS reply
    assert struct.unpack_from("<I", data)[0] != Q.RPC_MAGIC_RESPONSE
    assert caller.reset_decoder(DECODER).status == Q.OK


def test_every_row_of_the_compatibility_doc_cites_main_and_names_a_test_here():
    import re

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "cuqr-compat.md")).read()
    assert "ef991e9791eb258ec878e782f0f2e1ff5094763d" in doc
    here = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    tested = set()
    rows = [line for line in doc.splitlines() if line.startswith("| ") and not line.startswith("| fact")
            and not line.startswith("|---")]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 4:  # fact | rtdecoder | source | test
            assert re.search(r"\d", cells[2]), f"no lines cited: {row}"
            for t in re.findall(r"`([a-z0-9_]+)`", cells[3]):
                assert t in here, f"{t} is named in docs/cuqr-compat.md but is no test here"
                tested.add(t)
        elif len(cells) == 3 and not cells[0].startswith("`") and "short name" not in cells[0]:
            assert re.search(r"\d", cells[2]), f"no lines cited: {row}"
    assert len(tested) >= 20
