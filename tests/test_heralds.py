"""Heralded errors (``rtdecoder.heralds``): herald detectors in the circuit, the conditional map
from a herald to the edges it makes likely, and the service's decoders using them."""

import json
from pathlib import Path

import numpy as np
import pytest
import stim

from rtdecoder import protocol as P
from rtdecoder.config import ConfigError, StreamConfig
from rtdecoder.dem import circuit_dem, detector_layout, make_circuit
from rtdecoder.engine import Engine
from rtdecoder.heralds import ERASE_AT, herald_detectors, with_erasure
from rtdecoder.windows import whole_shot

VECTORS = {v["name"]: v for v in json.loads((Path(__file__).parents[1] / "docs" / "wire-vectors.json").read_text())
           ["vectors"]}


def _generated(d=3, rounds=3, p=0.001):
    return stim.Circuit.generated("surface_code:rotated_memory_z", distance=d, rounds=rounds,
                                  after_clifford_depolarization=p, before_round_data_depolarization=p,
                                  before_measure_flip_probability=p, after_reset_flip_probability=p)


def test_erasures_keep_every_detector_deterministic_and_add_one_herald_each():
    c = _generated()
    e = with_erasure(c, 0.01)
    # stim builds the DEM only when every detector is deterministic: the rewritten lookbacks are right
    dem = circuit_dem(e)
    h = herald_detectors(e)
    sites = sum(len(i.targets_copy()) for i in e.flattened() if i.name == "HERALDED_ERASE")
    assert h.sum() == sites == e.num_detectors - c.num_detectors and dem.num_detectors == e.num_detectors
    assert not herald_detectors(c).any()
    lay = detector_layout(e)  # heralds carry their round's time: the layout's order holds
    assert lay.num_rounds == detector_layout(c).num_rounds
    # the noiseless circuit's detectors are the original ones, in order, with the heralds between
    sample = e.compile_detector_sampler(seed=1).sample(2000)
    assert sample[:, h].mean() == pytest.approx(0.01, abs=0.004)  # a herald fires at the erasure rate


def test_with_erasure_refuses_what_it_cannot_place():
    with pytest.raises(ConfigError, match="rate"):
        with_erasure(_generated(), 1.5)
    bare = stim.Circuit("R 0 1\nCX 0 1\nM 0 1\nDETECTOR(0, 0) rec[-1]")
    with pytest.raises(ConfigError, match="no round start"):
        with_erasure(bare, 0.01, everywhere=False)
    with pytest.raises(ConfigError, match="generated circuits"):
        StreamConfig(circuit=str(Path(__file__)), erasure=0.01)


def test_a_herald_makes_its_erasures_components_even_odds():
    """Given the herald, each Pauli component of an erasure has probability one half: union-find
    erases those edges, and only those."""
    ws = whole_shot(with_erasure(_generated(), 0.004))
    hm = ws.heralds
    assert hm.any and np.allclose(hm.prob, 0.5)
    hnode = np.flatnonzero(hm.is_herald)
    assert all(hm.ptr[h + 1] > hm.ptr[h] for h in hnode)  # every erasure flips something
    assert hm.ptr[-1] == hm.erase_ptr[-1]  # all at least ERASE_AT


def test_a_heralded_pauli_channel_gives_its_conditional_probability():
    """``HERALDED_PAULI_CHANNEL_1(pI, pX, pY, pZ)``: given the herald, an X-type flip has
    probability (pX + pY) / (pI + pX + pY + pZ)."""
    c = stim.Circuit("""
        R 0 1 2
        HERALDED_PAULI_CHANNEL_1(0.02, 0.01, 0, 0) 1
        DETECTOR(1, 0, 0) rec[-1]
        X_ERROR(0.01) 0 1 2
        M 0 1 2
        DETECTOR(0, 0, 1) rec[-3] rec[-2]
        DETECTOR(2, 0, 1) rec[-2] rec[-1]
        OBSERVABLE_INCLUDE(0) rec[-1]
    """)
    assert herald_detectors(c).tolist() == [True, False, False]
    hm = whole_shot(c).heralds
    assert hm.ptr[1] - hm.ptr[0] == 1
    assert hm.prob[hm.ptr[0]] == pytest.approx(1 / 3)
    assert hm.erase_ptr[1] - hm.erase_ptr[0] == (1 if 1 / 3 >= ERASE_AT else 0)


def test_hello_reply_says_the_stream_has_heralds():
    """§5.2 and the test vector ``hello_reply_heralds``."""
    e = Engine([StreamConfig(id=3, distance=3, rounds=3, p=0.001, erasure=0.001, decoder="union_find", window=0)])
    reply = e.handle(P.encode(P.Header(P.MsgType.HELLO, stream_id=3, controller_ts_ns=1000)))[0]
    assert reply.hex() == VECTORS["hello_reply_heralds"]["hex"]
    plain = Engine([StreamConfig(id=3, distance=3, rounds=3, p=0.001, decoder="union_find", window=0)])
    assert P.decode_header(plain.handle(P.encode(P.Header(P.MsgType.HELLO, stream_id=3)))[0]).flags == 0
    assert "195 herald detectors per shot, erased by union-find" in "\n".join(e.describe())


@pytest.mark.parametrize("decoder", ["union_find", "matching_correlated"])
def test_the_service_corrects_far_more_with_the_heralds_than_without(decoder):
    """Half the noise heralded at 0.5 % (d = 5, windows 2d/d): the same shots through the
    service's data path, with the heralds as sent and with them cleared."""
    cfg = StreamConfig(id=0, distance=5, rounds=10, p=0.0025, erasure=0.0025, decoder=decoder, window=10, commit=5)
    e = Engine([cfg])
    rt = e.streams[0]
    dets, obs = rt.circuit.compile_detector_sampler(seed=4).sample(3000, separate_observables=True)
    dets = dets.astype(np.uint8)
    cleared = dets.copy()
    cleared[:, rt.heralds] = 0
    with_ = int(np.sum(e.decode_shots(0, dets)[:, 0] != obs[:, 0]))
    without = int(np.sum(e.decode_shots(0, cleared)[:, 0] != obs[:, 0]))
    assert with_ < 0.5 * without, (with_, without)


def test_the_erasure_flag_reaches_the_circuit_and_the_command_line():
    from rtdecoder.cli import _stream_argv

    cfg = StreamConfig(distance=3, rounds=3, erasure=0.002)
    assert herald_detectors(make_circuit(cfg)).sum() > 0
    assert "--erasure" in _stream_argv(cfg) and "erasure=0.002" in cfg.describe()


def test_rtdecoder_decode_uses_the_heralds_of_the_circuit_it_is_given(tmp_path):
    """Offline, whole shots: with the stream flags (the circuit, so its herald detectors), union-find
    erases; the same shots with the heralds cleared make far more logical errors."""
    import subprocess
    import sys

    cfg = StreamConfig(distance=5, rounds=10, p=0.0025, erasure=0.0025)
    c = make_circuit(cfg)
    dets, obs = c.compile_detector_sampler(seed=8).sample(3000, separate_observables=True)
    cleared = dets.copy()
    cleared[:, herald_detectors(c)] = False
    errors = []
    for name, d in (("with", dets), ("cleared", cleared)):
        path = tmp_path / f"{name}.b8"
        stim.write_shot_data_file(data=np.concatenate([d, obs], axis=1), path=str(path), format="b8",
                                  num_measurements=0, num_detectors=d.shape[1] + obs.shape[1], num_observables=0)
        r = subprocess.run([sys.executable, "-m", "rtdecoder", "decode", str(path), str(tmp_path / f"{name}.01"),
                            "--distance", "5", "--rounds", "10", "--p", "0.0025", "--erasure", "0.0025",
                            "--append-observables"] + (["--no-fit-check"] if name == "cleared" else []),
                           capture_output=True, text=True, timeout=600)  # cleared heralds do not fit the DEM
        assert r.returncode == 0, r.stderr[-2000:]
        errors.append(int(r.stderr.split("logical errors ")[1].split("/")[0]))
    assert errors[0] < 0.5 * errors[1], errors
