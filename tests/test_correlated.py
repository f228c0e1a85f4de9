"""``matching_correlated``: PyMatching's correlated matching in rtdecoder's windows, and the
deadline's fallback chain through its fast mode (plain matching)."""

import numpy as np
import pymatching
import pytest
import sinter
import stim

from rtdecoder import decoders
from rtdecoder.config import StreamConfig
from rtdecoder.dem import dem_components, detector_layout
from rtdecoder.engine import Engine
from rtdecoder.kernels import tables as T
from rtdecoder.offline import decode_file, write_example
from rtdecoder.sinter import RtDecoder
from rtdecoder.windows import plan_windows

P = 0.005


def _circuit(name="surface_code:rotated_memory_z", d=5):
    return stim.Circuit.generated(name, distance=d, rounds=d, after_clifford_depolarization=P,
                                  before_round_data_depolarization=P, before_measure_flip_probability=P,
                                  after_reset_flip_probability=P)


@pytest.mark.parametrize("name", ["surface_code:rotated_memory_z", "surface_code:rotated_memory_x"])
def test_whole_shots_equal_pymatchings_correlated_decoding(name):
    """Bit for bit against the edges PyMatching's correlated ``decode_to_edges_array`` returns (the
    observables of each edge from the DEM's graph); PyMatching's own ``decode`` disagrees with
    those edges on a few shots in a thousand (X memory), so against it: all but 0.5%."""
    circuit = _circuit(name)
    dem = circuit.detector_error_model(decompose_errors=True)
    dets, obs = circuit.compile_detector_sampler(seed=11).sample(1500, separate_observables=True)
    m = pymatching.Matching.from_detector_error_model(dem, enable_correlations=True)
    mask = {}
    for a, b, attrs in m.edges():
        mask[(a, -1 if b is None else b)] = mask[(-1 if b is None else b, a)] = sum(1 << f for f in attrs["fault_ids"])
    edges = np.zeros_like(obs)
    for s, row in enumerate(dets):
        o = 0
        for a, b in m.decode_to_edges_array(row, enable_correlations=True).tolist():
            o ^= mask[(a, b)]
        edges[s, 0] = o & 1
    ref = m.decode_batch(dets, enable_correlations=True)
    plain = pymatching.Matching.from_detector_error_model(dem).decode_batch(dets)
    e = Engine([StreamConfig(id=0, circuit=name, distance=5, rounds=5, p=P, decoder="matching_correlated",
                             window=0)])
    assert e.streams[0].keep.all()  # the other basis's events are kept: they carry the correlations
    ours = e.decode_shots(0, dets.astype(np.uint8), rounds_per_packet=1)
    assert np.array_equal(ours, edges)
    assert np.sum(np.any(ours != ref, axis=1)) <= 0.005 * len(dets)
    assert not np.array_equal(ref, plain)  # the correlations changed some answers


def test_windows_keep_most_of_the_gain():
    """Windows of 2d rounds committing d: fewer logical errors than plain matching's windows on the
    same shots, and close to whole-shot correlated decoding's."""
    d = 5
    circuit = stim.Circuit.generated("surface_code:rotated_memory_z", distance=d, rounds=3 * d,
                                     after_clifford_depolarization=P, before_round_data_depolarization=P,
                                     before_measure_flip_probability=P, after_reset_flip_probability=P)
    dets, obs = circuit.compile_detector_sampler(seed=5).sample(3000, separate_observables=True)
    kw = dict(distance=d, rounds=3 * d, p=P, window=2 * d, commit=d)
    e = Engine([StreamConfig(id=0, decoder="matching_correlated", **kw), StreamConfig(id=1, decoder="matching", **kw)])
    wrong = {sid: int(np.sum(np.any(e.decode_shots(sid, dets.astype(np.uint8)) != obs, axis=1))) for sid in (0, 1)}
    whole = pymatching.Matching.from_detector_error_model(circuit.detector_error_model(decompose_errors=True),
                                                          enable_correlations=True)
    ref = int(np.sum(np.any(whole.decode_batch(dets, enable_correlations=True) != obs, axis=1)))
    assert wrong[0] < 0.8 * wrong[1], wrong
    assert wrong[0] <= 1.3 * ref + 3, (wrong, ref)


def test_an_error_straddling_the_window_keeps_its_parts_inside():
    dem = stim.DetectorErrorModel("""
        error(0.1) D0 D2 ^ D1 L0
        error(0.2) D2 D4 ^ D3 D5
        error(0.05) D4 ^ D5
        error(0.01) D0 D1
        detector(0, 0, 0) D0
        detector(1, 0, 0) D1
        detector(0, 0, 1) D2
        detector(1, 0, 1) D3
        detector(0, 0, 2) D4
        detector(1, 0, 2) D5
    """)
    layout = detector_layout(dem)
    plan = plan_windows(layout, dem_components(dem), 2, 1, np.ones(6, np.uint8), correlations=True)
    assert plan.start.tolist() == [0, 1] and len(plan.graphs) == 2
    first = plan.graphs[plan.graph[0]].errors_dem  # rounds 0-1: the second error's D4 is past the top
    assert first == stim.DetectorErrorModel("error(0.1) D0 D2 ^ D1 L0\nerror(0.2) D2 ^ D3\nerror(0.01) D0 D1\n"
                                            "detector D3")
    second = plan.graphs[plan.graph[1]].errors_dem  # rounds 1-2: the first error's D0 part is committed
    assert second == stim.DetectorErrorModel("error(0.2) D0 D2 ^ D1 D3\nerror(0.05) D2 ^ D3\ndetector D3")
    plain = plan_windows(layout, dem_components(dem), 2, 1, np.ones(6, np.uint8))
    assert all(g.errors_dem is None for g in plain.graphs)


def test_a_deadline_steps_down_to_plain_matching_then_union_find():
    kw = dict(distance=3, rounds=9, p=0.01, window=4, commit=2)
    e = Engine([StreamConfig(id=0, decoder="matching_correlated", deadline_us=1e6, **kw),
                StreamConfig(id=1, decoder="matching", **kw), StreamConfig(id=2, decoder="union_find", **kw),
                StreamConfig(id=3, decoder="matching_correlated", **kw)])
    corr = decoders.get("matching_correlated")
    assert e.st[0, T.C_FAST] == decoders.get("matching").wire_id + 1 and e.st[3, T.C_FAST] == 0
    # Stream 1 keeps fewer detectors (matching drops the other basis), so compare the predictions.
    dets = e.streams[0].circuit.compile_detector_sampler(seed=8).sample(200).astype(np.uint8)
    windows = e.streams[0].plan.num_windows * len(dets)
    e.st[0, T.S_ESCAPE_NS] = 10**13  # the correlated decode's estimate is far past a 1 s deadline ...
    fast = e.decode_shots(0, dets)  # ... plain matching's (learned as it goes) is not
    assert e.local.counters[T.CNT_FALLBACK_FAST + corr.wire_id] == windows
    assert e.local.counters[T.CNT_FALLBACK + corr.wire_id] == 0
    assert np.array_equal(fast, e.decode_shots(1, dets))
    assert 0 < e.st[0, T.S_FAST_NS] < 10**9
    e.st[0, T.S_FAST_NS] = 10**13  # now both are
    slow = e.decode_shots(0, dets)
    assert e.local.counters[T.CNT_FALLBACK + corr.wire_id] == windows
    assert np.array_equal(slow, e.decode_shots(2, dets))
    assert not np.array_equal(e.decode_shots(3, dets), slow)  # without a deadline: correlated


def test_decode_and_sinter_take_it(tmp_path):
    circuit = _circuit(d=3)
    dem = circuit.detector_error_model(decompose_errors=True)
    src = tmp_path / "shots.b8"
    write_example(src, dem, circuit, 400, "b8", seed=2)
    s = decode_file(str(src), str(tmp_path / "out.01"), dem, append_observables=True, decoder="matching_correlated")
    dets, obs = circuit.compile_detector_sampler(seed=2).sample(400, separate_observables=True)
    ref = pymatching.Matching.from_detector_error_model(dem, enable_correlations=True).decode_batch(
        dets, enable_correlations=True)
    assert s.logical_errors == int(np.sum(np.any(ref != obs, axis=1)))
    compiled = RtDecoder("matching_correlated", 6, 3).compile_decoder_for_dem(dem=dem)
    preds = compiled.decode_shots_bit_packed(bit_packed_detection_event_data=np.packbits(dets, axis=1,
                                                                                         bitorder="little"))
    assert preds.shape == (400, 1)
    stats = sinter.collect(num_workers=1, tasks=[sinter.Task(circuit=circuit)],
                           decoders=["rtdecoder_matching_correlated"], custom_decoders={"rtdecoder_matching_correlated": RtDecoder("matching_correlated")},
                           max_shots=200, max_errors=10_000)
    assert stats[0].shots == 200
