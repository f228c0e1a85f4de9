"""Parallel-window decoding (the sandwich schedule): every component committed by exactly one
window, the answer independent of the number of workers, whole shots when W = all, single
faults corrected, and the logical error rate of sequential windows."""

import numpy as np
import pytest
import stim

from rtdecoder.cli import main
from rtdecoder.config import ConfigError, StreamConfig
from rtdecoder.dem import dem_components, detector_layout, observable_detectors
from rtdecoder.engine import Engine
from rtdecoder.offline import write_example
from rtdecoder.parallel import ParallelWindowDecoder
from rtdecoder.windows import cut_components, plan_parallel


def _circuit(d=3, rounds=12, p=0.005, name="surface_code:rotated_memory_z"):
    return stim.Circuit.generated(name, distance=d, rounds=rounds, after_clifford_depolarization=p,
                                  before_round_data_depolarization=p, before_measure_flip_probability=p,
                                  after_reset_flip_probability=p)


@pytest.mark.parametrize("window,commit", [(4, 2), (6, 3), (5, 1), (3, 2)])
def test_every_component_is_committed_by_exactly_one_window(window, commit):
    """An A window commits the components with a detector in its core, a B window those wholly
    inside its gap: each component of the DEM, once; and each is in the graph of its owner."""
    dem = _circuit(rounds=14).detector_error_model(decompose_errors=True)
    layout = detector_layout(dem)
    comps = dem_components(dem)
    keep = np.ones(layout.num_detectors, np.uint8)
    plan = plan_parallel(layout, comps, window, commit, keep)
    r = layout.det_round
    off = layout.round_offsets
    full = comps.in_range(0, layout.num_detectors)
    r0 = r[full.d0]
    r1 = np.where(full.d1 >= 0, r[np.maximum(full.d1, 0)], r0)
    owners = np.zeros(len(full.d0), np.int64)
    for j in range(len(plan.a_start)):
        lo, hi = plan.core_start[j], plan.core_end[j]
        mine = ((r0 >= lo) & (r0 < hi)) | ((r1 >= lo) & (r1 < hi))
        owners += mine
        n, p, u, v, ob, err = cut_components(comps, off, int(plan.a_start[j]), int(plan.a_end[j]), keep, True, True)
        base = int(off[plan.a_start[j]])
        assert n == int(off[plan.a_end[j]]) - base and mine.sum() <= len(u)
    for j in range(len(plan.b_start)):
        mine = (r0 >= plan.b_start[j]) & (r1 < plan.b_end[j])
        owners += mine
        n, p, u, v, ob, err = cut_components(comps, off, int(plan.b_start[j]), int(plan.b_end[j]), keep, False, False)
        assert len(u) == mine.sum()  # a gap's graph holds exactly the components it owns
    assert set(owners.tolist()) == {1}


@pytest.mark.parametrize("decoder", ["union_find", "matching"])
def test_the_answer_does_not_depend_on_the_workers_and_matches_sequential_windows(decoder):
    d, rounds = 5, 30
    circuit = _circuit(d, rounds)
    dem = circuit.detector_error_model(decompose_errors=True)
    dets, obs = circuit.compile_detector_sampler(seed=3).sample(1500, separate_observables=True)
    dets = dets.astype(np.uint8)
    preds = {k: ParallelWindowDecoder(dem, decoder, 2 * d, d, k).decode_shots(dets) for k in (1, 2, 3)}
    assert np.array_equal(preds[1], preds[2]) and np.array_equal(preds[1], preds[3])
    e = Engine([StreamConfig(id=0, distance=d, rounds=rounds, p=0.005, decoder=decoder, window=2 * d, commit=d)])
    sequential = int(np.sum(np.any(e.decode_shots(0, dets) != obs, axis=1)))
    parallel = int(np.sum(np.any(preds[1] != obs, axis=1)))
    assert parallel <= 1.15 * sequential + 5 and sequential <= 1.15 * parallel + 5, (parallel, sequential)
    assert 0.05 * len(dets) < parallel < 0.4 * len(dets)  # the shots have errors to get wrong


def test_a_shot_is_decoded_whole_when_the_window_is_all():
    circuit = _circuit(rounds=9)
    dem = circuit.detector_error_model(decompose_errors=True)
    dets = circuit.compile_detector_sampler(seed=4).sample(400).astype(np.uint8)
    pw = ParallelWindowDecoder(dem, "union_find", 0, 0, 2)
    assert pw.num_windows == (1, 0)
    e = Engine([StreamConfig(id=0, distance=3, rounds=9, p=0.005, decoder="union_find", window=0)])
    assert np.array_equal(pw.decode_shots(dets), e.decode_shots(0, dets))


@pytest.mark.parametrize("decoder", ["union_find", "matching"])
def test_every_single_fault_is_corrected(decoder):
    """Each error mechanism of the DEM alone, wherever it falls (core, buffer, gap, seam)."""
    dem = _circuit(rounds=10).detector_error_model(decompose_errors=True).flattened()
    errors = [inst for inst in dem if inst.type == "error"]
    nd = dem.num_detectors
    events = np.zeros((len(errors), nd), np.uint8)
    truth = np.zeros((len(errors), 1), np.uint8)
    for i, inst in enumerate(errors):
        for t in inst.targets_copy():
            if t.is_relative_detector_id():
                events[i, t.val] ^= 1
            elif t.is_logical_observable_id():
                truth[i, 0] ^= 1
    pw = ParallelWindowDecoder(dem, decoder, 4, 2, 2)
    keep = observable_detectors(dem_components(dem), nd)
    relevant = (events & ~keep.astype(bool)).sum(axis=1) == 0  # faults that only touch the other basis: 0 anyway
    wrong = np.nonzero(np.any(pw.decode_shots(events) != truth, axis=1) & relevant)[0]
    assert len(wrong) == 0, [str(errors[i]) for i in wrong[:5]]


def test_mistakes_are_named():
    dem = _circuit(rounds=6).detector_error_model(decompose_errors=True)
    with pytest.raises(ConfigError, match="less than the window"):
        ParallelWindowDecoder(dem, "union_find", 4, 4, 2)
    with pytest.raises(ConfigError, match="at least 1"):
        ParallelWindowDecoder(dem, "union_find", 4, 2, 0)
    long = stim.DetectorErrorModel("""
        error(0.1) D0 D2
        error(0.1) D0
        error(0.1) D2 L0
        detector(0, 0, 0) D0
        detector(0, 0, 1) D1
        detector(0, 0, 2) D2
        detector(0, 0, 3) D3
        detector(0, 0, 4) D4
    """)
    with pytest.raises(ConfigError, match="spanning 2 rounds"):
        ParallelWindowDecoder(long, "union_find", 2, 1, 2)


def test_decode_takes_parallel_windows(tmp_path, capsys):
    circuit = _circuit(rounds=15)
    dem = circuit.detector_error_model(decompose_errors=True)
    src = tmp_path / "in.b8"
    write_example(src, dem, circuit, 300, "b8", seed=5)
    out = tmp_path / "out.01"
    flags = ["--distance", "3", "--rounds", "15", "--p", "0.005", "--append-observables"]
    assert main(["decode", str(src), str(out), "--parallel-windows", "2", "--window", "6", "--commit", "3"] + flags) == 0
    err = capsys.readouterr().err
    assert "2 parallel-window workers" in err and "logical errors" in err
    dets = circuit.compile_detector_sampler(seed=5).sample(300)
    ref = ParallelWindowDecoder(dem, "union_find", 6, 3, 1).decode_shots(dets.astype(np.uint8))
    assert out.read_text().split() == ["".join(map(str, r)) for r in ref.tolist()]
    assert main(["decode", str(src), str(out), "--window", "6"] + flags) == 2
    assert "for --parallel-windows" in capsys.readouterr().err


def test_sinter_decodes_in_parallel_windows():
    circuit = _circuit(rounds=12)
    dem = circuit.detector_error_model(decompose_errors=True)
    dets = circuit.compile_detector_sampler(seed=6).sample(200)
    from rtdecoder.sinter import RtDecoder

    packed = np.packbits(dets, axis=1, bitorder="little")
    for decoder in ("union_find", "matching"):
        got = RtDecoder(decoder, 4, 2, parallel=2).compile_decoder_for_dem(dem=dem).decode_shots_bit_packed(
            bit_packed_detection_event_data=packed)
        ref = ParallelWindowDecoder(dem, decoder, 4, 2, 1).decode_shots(dets.astype(np.uint8))
        assert np.array_equal(got, np.packbits(ref, axis=1, bitorder="little"))
