"""CUDA-Q QEC's real-time RPC (CUQR) and YAML configuration (docs/cuqr-compat.md).

The requests are made by ``rtdecoder.cuqr_client`` and the configurations by
``tests/cudaq_fixture.py``, both written from the public format apart from the service's code; the
reference predictions are offline PyMatching's on the same matrices."""

import os
import struct
import sys

import numpy as np
import pytest
import stim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtdecoder import cuqr_client as C
from rtdecoder import dataplane as D
from rtdecoder import protocol as P
from rtdecoder.cli import ServiceProcess, _stream_argv, main
from rtdecoder.config import ConfigError, StreamConfig
from rtdecoder.configfile import load_config
from rtdecoder.engine import Engine
from rtdecoder.kernels import cuqr as CQ
from rtdecoder.kernels import tables as T
from rtdecoder.transport.libc import source_words

sys.path.insert(0, os.path.dirname(__file__))
import cudaq_fixture as F  # noqa: E402

OK, INVALID_DECODER, BAD_REQUEST, INTERNAL_ERROR, NOT_READY, BUSY, DROPPED = range(7)


def circuit(d=3, rounds=3, p=0.01):
    return stim.Circuit.generated("surface_code:rotated_memory_z", distance=d, rounds=rounds,
                                  after_clifford_depolarization=p, before_round_data_depolarization=p,
                                  before_measure_flip_probability=p, after_reset_flip_probability=p)


class Rpc:
    """CUQR requests to an ``Engine`` in process (the data path the transports run)."""

    def __init__(self, engine, source="127.0.0.1"):
        self.e, self.source, self.rid = engine, source, 0

    def _id(self):
        self.rid += 1
        return self.rid

    def send(self, msg, shed=0):
        e = self.e
        buf = np.zeros(e.slot_bytes, np.uint8)
        buf[:min(len(msg), e.slot_bytes)] = np.frombuffer(msg, np.uint8)[:e.slot_bytes]
        hi, lo = source_words(self.source)
        loc = e.local
        D.process_datagram(buf, len(msg), 1, 0, 0, hi, lo, 1, shed, D.FLUSH_NONE, e.tables, loc.arrays,
                           loc.workspace, loc.tx_arrays)
        return [C.parse_response(r) for r in loc.replies()]

    def one(self, msg, shed=0):
        (r,) = self.send(msg, shed)
        return r

    def enqueue(self, did, bits, shed=0, **kw):
        return self.one(C.enqueue_syndromes(did, bits, self._id(), **kw), shed).status

    def get(self, did, n, reset=False, shed=0):
        return self.one(C.get_corrections(did, n, self._id(), reset), shed)

    def reset(self, did, shed=0):
        return self.one(C.reset_decoder(did, self._id()), shed).status


def test_function_ids_are_fnv1a_of_the_names():
    assert C.ENQUEUE == CQ.FN_ENQUEUE_SYNDROMES == 0x7ED8BE82
    assert C.GET_CORRECTIONS == CQ.FN_GET_CORRECTIONS == 0x882D5BA1
    assert C.RESET == CQ.FN_RESET_DECODER == 0x977A59CF
    assert C.enqueue_syndromes(1, np.ones(3, np.uint8), 5)[:4] == b"RQUC"  # 'CUQR' as a little-endian u32


@pytest.fixture(scope="module")
def engine():
    kw = dict(distance=3, rounds=6, p=0.01, window=4, commit=2)
    e = Engine([StreamConfig(id=3, decoder="union_find", input="measurements", **kw),
                StreamConfig(id=4, decoder="union_find", **kw),
                StreamConfig(id=5, decoder="matching", input="measurements", allow=("10.0.0.0/8",), **kw)])
    e.warm_up()
    return e


def shots(rt, n, seed):
    meas = rt.circuit.compile_sampler(seed=seed).sample(n)
    dets = rt.circuit.compile_m2d_converter().convert(measurements=meas, separate_observables=False)
    return meas.astype(np.uint8), dets.astype(np.uint8)


@pytest.mark.parametrize("chunk", ["round", 7, "shot"])
def test_corrections_equal_the_native_paths_for_any_chunking(engine, chunk):
    rpc = Rpc(engine)
    rt = engine.streams[3]
    ml, nobs = rt.mlayout, rt.layout.num_observables
    meas, dets = shots(rt, 60, seed=11)
    want = engine.decode_shots(4, dets)  # the same shots as detection events, natively
    assert rpc.reset(3) == OK
    for s in range(len(meas)):
        if chunk == "round":
            parts = [meas[s, a:b] for a, b in zip(ml.meas_offsets[:-1], ml.meas_offsets[1:])]
        elif chunk == "shot":
            parts = [meas[s]]
        else:
            parts = [meas[s, a:a + chunk] for a in range(0, meas.shape[1], chunk)]
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                assert rpc.get(3, nobs).status == NOT_READY
            assert rpc.enqueue(3, part) == OK
        r = rpc.get(3, nobs)
        assert r.status == OK and len(r.result) == 1
        assert np.array_equal(r.bits(nobs), want[s]), s
        assert rpc.get(3, nobs).status == OK  # read again: still there
        assert rpc.get(3, nobs, reset=True).status == OK
        assert rpc.get(3, nobs).status == NOT_READY  # cleared


def test_a_detection_event_stream_takes_detection_events(engine):
    rpc = Rpc(engine)
    rt = engine.streams[4]
    _, dets = shots(rt, 20, seed=12)
    want = engine.decode_shots(4, dets)
    rpc.reset(4)
    for s in range(len(dets)):
        assert rpc.enqueue(4, dets[s]) == OK
        assert np.array_equal(rpc.get(4, 1, reset=True).bits(1), want[s])


def test_a_stream_serves_both_dialects_in_turn(engine):
    rpc = Rpc(engine)
    rt = engine.streams[3]
    ml = rt.mlayout
    meas, dets = shots(rt, 6, seed=13)
    want = engine.decode_shots(4, dets)
    packed = P.pack_rounds(meas, ml.meas_offsets, ml.round_bytes)
    for s in range(6):
        if s % 2:  # native: a new shot id each time, far above the CUQR ones
            for r in range(rt.layout.num_rounds):
                reps = engine.handle(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=3, shot_id=1000 + s,
                                                       first_round=r, num_rounds=1), packed[s, r].tobytes()))
            fin = P.decode_correction(reps[-1], 1)
            assert fin.final and np.array_equal(fin.cumulative, want[s])
        else:
            assert rpc.enqueue(3, meas[s]) == OK
            assert np.array_equal(rpc.get(3, 1, reset=True).bits(1), want[s])


def test_bad_requests_are_answered_and_change_nothing(engine):
    rpc = Rpc(engine)
    nobs = 1
    bits = np.ones(9, np.uint8)
    assert rpc.get(9, nobs).status == INVALID_DECODER
    assert rpc.get(-1, nobs).status == INVALID_DECODER
    assert rpc.enqueue(70000, bits) == INVALID_DECODER
    assert rpc.get(3, 2).status == BAD_REQUEST  # return_size is not the stream's observables
    assert rpc.get(3, 0).status == BAD_REQUEST
    assert rpc.get(3, -5).status == BAD_REQUEST
    hdr = struct.Struct("<IIIIQ")
    magic = 0x43555152

    def raw(fn, args, arg_len=None):
        return rpc.send(hdr.pack(magic, fn, len(args) if arg_len is None else arg_len, 77, 99) + args)

    good = struct.pack("<qqqQ", 3, 0, 0, 9) + b"\xff\x01"
    assert raw(C.ENQUEUE, good)[0].status == OK
    assert rpc.reset(3) == OK
    for args, arg_len in [(struct.pack("<qqqQ", 3, 0, 0, 0), None),  # no bits
                          (struct.pack("<qqqQ", 3, 0, 0, (1 << 20) + 1), None),  # over the cap
                          (struct.pack("<qqqQ", 3, 0, 0, 9) + b"\xff", None),  # bytes missing
                          (good, len(good) + 1),  # arg_len beyond the datagram
                          (good[:30], None)]:  # arguments cut short
        (r,) = raw(C.ENQUEUE, args, arg_len)
        assert r.status == BAD_REQUEST and r.request_id == 77 and r.ptp_timestamp == 99
        assert rpc.get(3, 1).status == INTERNAL_ERROR  # a bad enqueue fails the shot (cudaqx main)
        assert rpc.reset(3) == OK
    assert raw(0x12345678, struct.pack("<q", 3)) == []  # no such function: dropped, as main's dispatcher does
    assert raw(C.GET_CORRECTIONS, struct.pack("<qq", 3, 1))[0].status == BAD_REQUEST  # reset byte missing
    assert raw(C.RESET, b"\x03")[0].status == BAD_REQUEST
    assert raw(C.GET_CORRECTIONS, struct.pack("<qqB7x", 3, 1, 0))[0].status == NOT_READY  # longer arguments
    assert rpc.send(hdr.pack(magic, C.RESET, 8, 1, 0)[:20]) == []  # shorter than a header: nothing to echo
    assert rpc.get(3, 1).status == NOT_READY  # none of the others touched the shot


def test_a_lost_shot_is_latched_until_reset(engine):
    rpc = Rpc(engine)
    rt = engine.streams[3]
    meas, dets = shots(rt, 2, seed=14)
    want = engine.decode_shots(4, dets)
    rpc.reset(3)
    assert rpc.enqueue(3, meas[0, :10]) == OK
    assert rpc.enqueue(3, meas[0]) == OK  # more bits than the shot has: acknowledged, the shot fails
    assert rpc.get(3, 1).status == INTERNAL_ERROR
    assert rpc.enqueue(3, meas[1]) == OK  # ignored while failed
    assert rpc.get(3, 1).status == INTERNAL_ERROR
    assert rpc.reset(3) == OK
    assert rpc.enqueue(3, meas[1], mapping_id=2) == BAD_REQUEST  # only the identity mapping (0) is known
    assert rpc.get(3, 1).status == INTERNAL_ERROR  # and the shot has failed
    assert rpc.reset(3) == OK
    assert rpc.enqueue(3, meas[1]) == OK
    assert np.array_equal(rpc.get(3, 1).bits(1), want[1])


def test_overload_drops_new_shots_and_says_busy(engine):
    rpc = Rpc(engine)
    rt = engine.streams[3]
    meas, dets = shots(rt, 2, seed=15)
    rpc.reset(3)
    assert rpc.enqueue(3, meas[0, :8]) == OK
    assert rpc.enqueue(3, meas[0, 8:], shed=1) == OK  # the shot in flight goes on
    assert rpc.get(3, 1, shed=1).status == BUSY
    assert rpc.get(3, 1).status == OK
    assert rpc.enqueue(3, meas[1], shed=1) == DROPPED  # a new shot while overloaded
    assert rpc.get(3, 1).status == DROPPED  # latched
    assert rpc.enqueue(3, meas[1]) == OK  # ignored
    assert rpc.get(3, 1).status == DROPPED
    assert rpc.reset(3, shed=1) == BUSY
    assert rpc.reset(3) == OK
    assert rpc.get(3, 1).status == NOT_READY
    assert rpc.enqueue(3, meas[1]) == OK
    assert np.array_equal(rpc.get(3, 1).bits(1), engine.decode_shots(4, dets[1:])[0])
    c = engine.local.counters
    assert c[T.CNT_CQ_STATUS + DROPPED] >= 3 and c[T.CNT_CQ_STATUS + BUSY] >= 2


def test_strangers_get_no_reply(engine):
    before = engine.local.counters[T.REJECT_NOT_ALLOWED]
    assert Rpc(engine, source="192.0.2.1").send(C.get_corrections(3, 1, 1)) == []
    assert Rpc(engine).send(C.get_corrections(5, 1, 1)) == []  # stream 5 takes 10.0.0.0/8 only
    assert Rpc(engine, source="10.1.2.3").get(5, 1).status == NOT_READY
    assert engine.local.counters[T.REJECT_NOT_ALLOWED] == before + 2


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=80), fn=st.sampled_from([C.ENQUEUE, C.GET_CORRECTIONS, C.RESET, 0, 0xFFFFFFFF]),
       arg_len=st.one_of(st.none(), st.integers(0, 1 << 32 - 1)), did=st.sampled_from([3, 4, 5, 9, -1, 1 << 62]))
def test_hostile_requests_never_crash(engine, body, fn, arg_len, did):
    args = struct.pack("<q", did) + body
    msg = struct.pack("<IIIIQ", 0x43555152, fn, len(args) if arg_len is None else arg_len, 1, 0) + args
    for r in Rpc(engine).send(msg):
        assert 0 <= r.status <= 6


# --- CUDA-Q YAML ------------------------------------------------------------------------------

def write(tmp_path, text, name="decoders.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_a_yaml_decoder_decodes_as_offline_pymatching(tmp_path):
    c = circuit()
    cfg = load_config(write(tmp_path, F.yaml_text(c, decoder_id=4)))
    (s,) = cfg.streams
    assert s.id == 4 and s.input == "measurements" and s.decoder == "matching" and s.window == 0
    e = Engine(cfg.streams)
    rpc = Rpc(e)
    meas = c.compile_sampler(seed=3).sample(200).astype(np.uint8)
    ref = F.reference_predictions(c, meas)
    got = np.array([(rpc.enqueue(4, m), rpc.get(4, 1, reset=True).bits(1))[1] for m in meas])
    assert np.array_equal(got, ref)


def test_a_sliding_window_yaml_decoder_has_rounds_and_windows(tmp_path):
    c = stim.Circuit.generated("repetition_code:memory", distance=5, rounds=8, after_clifford_depolarization=0.02,
                               before_measure_flip_probability=0.02)
    cfg = load_config(write(tmp_path, F.yaml_text(c, 1, per_round=4, window=4, step=2)))
    (s,) = cfg.streams
    e = Engine(cfg.streams)
    rt = e.streams[1]
    assert (s.window, s.commit) == (4, 2) and rt.layout.num_rounds == 9 and rt.plan.num_windows > 1
    meas = c.compile_sampler(seed=5).sample(300).astype(np.uint8)
    dets, obs = c.compile_m2d_converter().convert(measurements=meas.astype(bool), separate_observables=True)
    rpc = Rpc(e)
    got = np.array([(rpc.enqueue(1, m), rpc.get(1, 1, reset=True).bits(1))[1] for m in meas])
    ref = F.reference_predictions(c, meas)
    assert np.mean(got != obs) <= np.mean(ref != obs) + 0.02  # windows: about as good as the whole shot


def test_stim_dem_path_gives_the_model(tmp_path):
    c = circuit()
    (tmp_path / "m.dem").write_text(str(c.detector_error_model(decompose_errors=True)))
    _, _, d, _ = F.matrices(c)
    cfg = load_config(write(tmp_path, f"decoders:\n  - id: 2\n    type: pymatching\n    stim_dem_path: m.dem\n"
                                      f"    D_sparse: {F.sparse(d)}\n"))
    e = Engine(cfg.streams)
    rpc = Rpc(e)
    meas = c.compile_sampler(seed=9).sample(50).astype(np.uint8)
    dets = c.compile_m2d_converter().convert(measurements=meas.astype(bool), separate_observables=False)
    import pymatching

    want = pymatching.Matching.from_detector_error_model(c.detector_error_model(decompose_errors=True)).decode_batch(dets)
    got = np.array([(rpc.enqueue(2, m), rpc.get(2, 1, reset=True).bits(1))[1] for m in meas])
    assert np.array_equal(got, want)
    assert e.streams[2].layout.num_rounds == 4  # the DEM's time coordinates: 3 rounds and the final block
    # without coordinates, and windowed: the rounds are num_syndromes_per_round's
    plain = stim.DetectorErrorModel("\n".join(str(i) for i in c.detector_error_model(decompose_errors=True).flattened()
                                              if i.type != "detector"))
    (tmp_path / "plain.dem").write_text(str(plain))
    (s,) = load_config(write(tmp_path, f"decoders:\n  - id: 2\n    type: sliding_window\n    stim_dem_path: plain.dem\n"
                                       f"    D_sparse: {F.sparse(d)}\n    decoder_custom_args:\n"
                                       "      num_syndromes_per_round: 8\n      window_size: 2\n      step_size: 1\n",
                             "w.yaml")).streams
    assert Engine([s]).streams[2].layout.num_rounds == 3 and (s.window, s.commit) == (2, 1)


@pytest.mark.parametrize("edit, says", [
    (lambda y: y.replace("type: pymatching", "type: nv-qldpc-decoder"), "'nv-qldpc-decoder' is not supported"),
    (lambda y: y.replace("    block_size:", "    colour: red\n    block_size:"), "'colour' was unexpected"),
    (lambda y: y.replace("    block_size:", "    dem_chunks: {}\n    block_size:"), "dem_chunks: 'seam' is a required"),
    (lambda y: y.replace("syndrome_size: 24", "syndrome_size: 23"), "syndrome_size is 23"),
    (lambda y: y.split("    decoder_custom_args:")[0], "error_rate_vec is required"),
    (lambda y: y.replace("merge_strategy: smallest_weight", "merge_strategy: best"), "merge_strategy"),
    (lambda y: y.replace("decoders:", "servers:"), "'decoders' is a required property"),
    (lambda y: y + "  - id: 0\n", "'type' is a required property"),
    (lambda y: ":\n -", "not valid YAML"),
])
def test_yaml_mistakes_are_named(tmp_path, edit, says):
    with pytest.raises(ConfigError, match=says):
        load_config(write(tmp_path, edit(F.yaml_text(circuit()))))


def test_the_shape_of_cudaqs_example_configuration(tmp_path):
    """Three detectors, each one measurement and one mechanism flipping one observable (the
    identity H, O and D of decoding_server_config.yaml): syndrome bit 1 set gives correction
    bit 1."""
    text = ("decoders:\n  - id: 0\n    type: pymatching\n    block_size: 3\n    syndrome_size: 3\n"
            "    H_sparse: [0, -1, 1, -1, 2, -1]\n    O_sparse: [0, -1, 1, -1, 2, -1]\n"
            "    D_sparse: [0, -1, 1, -1, 2, -1]\n    decoder_custom_args:\n      error_rate_vec: [0.1, 0.1, 0.1]\n"
            "      merge_strategy: smallest_weight\n")
    rpc = Rpc(Engine(load_config(write(tmp_path, text)).streams))
    for bits in ([0, 1, 0], [1, 0, 1], [0, 0, 0]):
        assert rpc.enqueue(0, np.array(bits, np.uint8)) == OK
        assert rpc.get(0, 3, reset=True).bits(3).tolist() == bits


def test_dem_chunks_stitch_into_the_flat_model(tmp_path):
    n, rounds, pd, pm = 5, 6, 0.03, 0.02
    chunked = load_config(write(tmp_path, F.chunked_yaml(n, rounds, pd, pm, decoder_id=3), "chunks.yaml")).streams[0]
    h, o, d, priors = F.chunked_matrices(n, rounds, pd, pm)
    flat = load_config(write(tmp_path, F.flat_yaml(h, o, d, priors, decoder_id=3), "flat.yaml")).streams[0]
    errors = [[str(i) for i in m.dem if i.type == "error"] for m in (chunked.model, flat.model)]
    assert errors[0] == errors[1] and chunked.model.d_rows == flat.model.d_rows  # the same mechanisms and D
    assert chunked.model.num_rounds == rounds and flat.model.num_rounds == 1  # the chunks also give the rounds
    e = Engine([chunked])
    assert e.streams[3].layout.num_detectors == rounds * (n - 1)
    meas, dets, obs = F.sample_chunked(h, o, priors, rounds, n - 1, 300, seed=4)
    want = F.check_matrix_predictions(h, o, priors, dets)
    rpc = Rpc(e)
    got = np.array([(rpc.enqueue(3, m), rpc.get(3, 1, reset=True).bits(1))[1] for m in meas])
    assert np.array_equal(got, want)
    assert 0 < np.mean(want != obs) < np.mean(obs)  # it corrects


def test_the_h_sparse_shorthand_gives_both_seams_the_same_rows(tmp_path):
    import json

    doc = json.loads(F.chunked_yaml(2, 3, 0.03, 0.02))  # one check: every fault flips only it
    for ph in doc["decoders"][0]["dem_chunks"]["phases"]:
        to_rows = ph["spec"].pop("seam_specs")[0]["spec"]["H_sparse"]
        ph["spec"]["H_sparse"] = to_rows
    (s,) = load_config(write(tmp_path, json.dumps(doc))).streams
    # a fault of round t is in the check's row of both seams: detectors t and t + 1 (the last round's: t only)
    errors = {tuple(t.val for t in i.targets_copy() if t.is_relative_detector_id())
              for i in s.model.dem if i.type == "error"}
    assert errors == {(0, 1), (1, 2), (2,)}


def test_dem_chunks_mistakes_are_named(tmp_path):
    import json

    doc = json.loads(F.chunked_yaml(5, 6, 0.03, 0.02))

    def fails(says, edit):
        d = json.loads(json.dumps(doc))
        edit(d["decoders"][0], d["decoders"][0]["dem_chunks"])
        with pytest.raises(ConfigError, match=says):
            load_config(write(tmp_path, json.dumps(d)))

    fails("no num_rounds", lambda e, c: c.pop("num_rounds"))
    fails("D_sparse must not be given with dem_chunks", lambda e, c: e.update(D_sparse=[0, -1]))
    fails("phase 'middle'", lambda e, c: c["connections"].append({"from": "final", "to": "middle"}))
    fails("error_rates has 3 entries", lambda e, c: c["phases"][1]["spec"].update(error_rates=[0.1] * 3))
    fails("seam widths differ", lambda e, c: c["phases"][2]["spec"]["seam_specs"][0]["spec"].update(
        H_sparse=[0, -1, 1, -1]))
    fails("give H_sparse .* or seam_specs, one of them", lambda e, c: c["phases"][0]["spec"].update(H_sparse=[0, -1]))


def test_a_hyperedge_is_refused_with_the_fix(tmp_path):
    text = ("decoders:\n  - id: 0\n    type: pymatching\n    block_size: 1\n    syndrome_size: 3\n"
            "    H_sparse: [0, -1, 0, -1, 0, -1]\n    O_sparse: [0, -1]\n    D_sparse: [0, -1, 1, -1, 2, -1]\n"
            "    error_rate_vec: [0.1]\n")
    with pytest.raises(ConfigError, match="flips 3 detectors.*decompose"):
        load_config(write(tmp_path, text))


# --- over UDP ---------------------------------------------------------------------------------

def test_the_client_drives_a_yaml_service_over_udp(tmp_path):
    c = circuit(d=3, rounds=3, p=0.01)
    path = write(tmp_path, F.yaml_text(c, decoder_id=7))
    meas = c.compile_sampler(seed=21).sample(300).astype(np.uint8)
    ref = F.reference_predictions(c, meas)
    with ServiceProcess(["--config", path]) as svc:
        cl = C.Client((svc.host, svc.port))
        try:
            assert cl.reset(7).status == OK
            assert cl.reset(8).status == INVALID_DECODER
            got = np.array([cl.decode_shot(7, [m[:20], m[20:]], 1) for m in meas])
        finally:
            cl.close()
        text = svc.scrape()
    assert np.array_equal(got, ref)
    assert 'rtdecoder_cuqr_requests_total{function="enqueue_syndromes"} 600.0' in text


def test_emulate_speaks_cuqr(tmp_path, capsys):
    cfg = StreamConfig(distance=3, rounds=4, p=0.005, decoder="union_find", input="measurements")
    with ServiceProcess(_stream_argv(cfg)) as svc:
        out = tmp_path / "r.json"
        rc = main(["emulate", "--dialect", "cuqr", "--port", str(svc.port), "--distance", "3", "--rounds", "4",
                   "--p", "0.005", "--shots", "300", "--no-progress", "--json", str(out), "--cycle-us", "0"])
    import json

    r = json.loads(out.read_text())
    assert rc == 0 and r["shots"] == 300 and r["lost"] == 0 and r["errors"] == 0
    assert r["disagreements_with_reference"] <= 3  # union-find vs offline matching


def test_sighup_keeps_an_unchanged_yaml_decoder_and_rebuilds_a_changed_one(tmp_path):
    import signal
    import time

    c = circuit()
    path = tmp_path / "d.yaml"
    two = F.yaml_text(c, 1) + F.yaml_text(c, 2).replace("decoders:\n", "")
    path.write_text(two)
    with ServiceProcess(["--config", str(path)]) as svc:
        path.write_text(F.yaml_text(circuit(p=0.02), 1) + F.yaml_text(c, 2).replace("decoders:\n", ""))
        svc.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 120
        while "reloaded in" not in svc.stderr() and time.monotonic() < end:
            time.sleep(0.1)
        log = svc.stderr()
        cl = C.Client((svc.host, svc.port))
        try:
            assert cl.reset(1).status == OK and cl.reset(2).status == OK
        finally:
            cl.close()
    assert "changed [1]" in log and "[2] keep serving" in log, log[-2000:]
    assert "change only at a restart" not in log


def test_demo_speaks_cuqr(tmp_path):
    out = tmp_path / "r.json"
    rc = main(["demo", "--dialect", "cuqr", "--distance", "3", "--rounds", "3", "--p", "0.005", "--shots", "200",
               "--no-progress", "--json", str(out), "--cycle-us", "0"])
    import json

    r = json.loads(out.read_text())
    assert rc == 0 and r["dialect"] == "cuqr" and r["shots"] == 200 and r["lost"] == 0 and r["errors"] == 0
    assert r["disagreements_with_reference"] == 0  # matching, whole windows as offline


def test_demo_cuqr_refuses_parallel_windows():
    assert main(["demo", "--dialect", "cuqr", "--parallel-windows", "2", "--shots", "1"]) == 2
