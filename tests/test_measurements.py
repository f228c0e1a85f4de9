"""Streams whose controller sends raw measurement records: the service turns them into detection
events in the compiled path (docs/wire-protocol.md §5.1) exactly as stim's m2d converter does,
and every decoder then answers as it does for the same shots sent as detection events."""

import numpy as np
import pytest

from rtdecoder import decoders
from rtdecoder import protocol as P
from rtdecoder.cli import ServiceProcess, _stream_argv
from rtdecoder.config import ConfigError, StreamConfig
from rtdecoder.dem import detector_layout, make_circuit, measurement_layout
from rtdecoder.engine import Engine, stream_for_dem
from rtdecoder.kernels import tables as T

CIRCUITS = ["surface_code:rotated_memory_z", "surface_code:rotated_memory_x", "repetition_code:memory",
            "color_code:memory_xyz"]


@pytest.mark.parametrize("name", CIRCUITS)
def test_the_detector_tables_give_stims_detection_events(name):
    c = make_circuit(StreamConfig(circuit=name, distance=3, rounds=4, p=0.02))
    lay = detector_layout(c)
    ml = measurement_layout(c, lay)
    assert ml.meas_offsets[0] == 0 and ml.meas_offsets[-1] == c.num_measurements
    assert np.all(np.diff(ml.meas_offsets) >= 0)
    meas = c.compile_sampler(seed=4).sample(300).astype(np.uint8)
    want = c.compile_m2d_converter().convert(measurements=meas.astype(bool), separate_observables=False)
    got = np.zeros_like(want, np.uint8)
    for j in range(lay.num_detectors):
        recs = ml.det_rec[ml.det_ptr[j]:ml.det_ptr[j + 1]]
        assert np.all(recs < ml.meas_offsets[np.searchsorted(lay.round_offsets, j, side="right")])
        got[:, j] = (np.bitwise_xor.reduce(meas[:, recs], axis=1) if len(recs) else 0) ^ ml.det_flip[j]
    assert np.array_equal(got, want)


def test_the_compiled_path_writes_stims_detection_events_as_rounds_arrive():
    cfg = StreamConfig(distance=3, rounds=5, p=0.02, window=0, input="measurements")
    e = Engine([cfg])
    rt = e.streams[0]
    c, ml = rt.circuit, rt.mlayout
    meas = c.compile_sampler(seed=6).sample(40)
    dets = c.compile_m2d_converter().convert(measurements=meas, separate_observables=False).astype(np.uint8)
    packed = P.pack_rounds(meas, ml.meas_offsets, ml.round_bytes)
    nd = rt.layout.num_detectors
    for s in range(len(meas)):
        for r in range(rt.layout.num_rounds):  # one round per datagram
            e.handle(P.encode(P.Header(P.MsgType.SYNDROME, shot_id=s + 1, first_round=r, num_rounds=1),
                              packed[s, r].tobytes()))
        assert np.array_equal(e.syn[:nd], dets[s] & rt.keep), s  # whole shots: no carry touched syn


@pytest.mark.parametrize("decoder", ["matching", "union_find"])
def test_corrections_equal_those_of_the_same_shots_sent_as_detection_events(decoder):
    assert set(decoders.names()) >= {"matching", "union_find"}
    kw = dict(distance=3, rounds=9, p=0.01, decoder=decoder, window=4, commit=2)
    e = Engine([StreamConfig(id=0, **kw), StreamConfig(id=1, input="measurements", **kw)])
    m = e.streams[1]
    assert m.plan is not e.streams[0].plan and e.st[1, T.C_INPUT] == P.INPUT_MEASUREMENTS
    meas = m.circuit.compile_sampler(seed=8).sample(300)
    dets = m.circuit.compile_m2d_converter().convert(measurements=meas, separate_observables=False)
    for rpp in (1, 3):
        assert np.array_equal(e.decode_shots(1, meas, rpp), e.decode_shots(0, dets, rpp))


def test_hello_reply_and_describe_say_the_stream_takes_measurements():
    e = Engine([StreamConfig(distance=3, rounds=4, input="measurements")])
    ml = e.streams[0].mlayout
    info = P.StreamInfo.unpack(e.handle(P.encode(P.Header(P.MsgType.HELLO)))[0][P.HEADER_LEN:])
    assert info.input == P.INPUT_MEASUREMENTS and info.round_bytes == ml.round_bytes
    d = P.decode_describe(e.handle(P.encode(P.Header(P.MsgType.DESCRIBE)))[0])
    assert list(d.counts) == np.diff(ml.meas_offsets).tolist()


def test_a_measurement_stream_needs_its_circuit():
    c = make_circuit(StreamConfig(distance=3, rounds=3))
    with pytest.raises(ConfigError, match="needs the circuit"):
        stream_for_dem(StreamConfig(input="measurements"), c.detector_error_model(decompose_errors=True))
    with pytest.raises(ConfigError, match="input 'bits'"):
        StreamConfig(input="bits")


def test_the_emulator_sends_measurements_to_a_measurement_stream_and_matches_pymatching():
    from rtdecoder.emulator import EmulatorOptions, run_emulator

    cfg = StreamConfig(distance=3, rounds=6, p=0.005, decoder="union_find", window=0, input="measurements")
    with ServiceProcess(_stream_argv(cfg)) as svc:
        report = run_emulator(cfg, EmulatorOptions(host=svc.host, port=svc.port, shots=400, progress=False,
                                                   timeout_s=5.0))
    assert report.lost == 0 and report.errors == 0
    assert report.disagreements_with_reference == 0


def test_decode_takes_measurement_files_and_reports_the_logical_error_rate(tmp_path):
    import stim

    from rtdecoder.cli import main

    cfg = StreamConfig(distance=3, rounds=6, p=0.01)
    c = make_circuit(cfg)
    meas = c.compile_sampler(seed=9).sample(500)
    stim.write_shot_data_file(data=meas, path=str(tmp_path / "m.b8"), format="b8", num_measurements=c.num_measurements)
    dets, obs = c.compile_m2d_converter().convert(measurements=meas, separate_observables=True)
    stim.write_shot_data_file(data=np.concatenate([dets, obs], axis=1), path=str(tmp_path / "d.b8"), format="b8",
                              num_detectors=dets.shape[1] + obs.shape[1])
    flags = ["--distance", "3", "--rounds", "6", "--p", "0.01"]
    assert main(["decode", str(tmp_path / "m.b8"), str(tmp_path / "m.01"), "--measurements", *flags]) == 0
    assert main(["decode", str(tmp_path / "d.b8"), str(tmp_path / "d.01"), "--append-observables", *flags]) == 0
    assert (tmp_path / "m.01").read_text() == (tmp_path / "d.01").read_text()
    assert main(["decode", str(tmp_path / "m.b8"), str(tmp_path / "x.01"), "--measurements", "--dem", "x.dem"]) == 2
