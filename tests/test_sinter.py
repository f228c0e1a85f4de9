"""rtdecoder's decoders plug into sinter."""

import numpy as np
import pymatching
import sinter
import stim

from rtdecoder.sinter import RtDecoder, decoders


def _circuit(d=3, p=0.01):
    return stim.Circuit.generated("surface_code:rotated_memory_z", distance=d, rounds=3 * d,
                                  after_clifford_depolarization=p, before_round_data_depolarization=p,
                                  before_measure_flip_probability=p, after_reset_flip_probability=p)


def test_whole_shot_matching_equals_pymatching_bit_for_bit():
    c = _circuit()
    dem = c.detector_error_model(decompose_errors=True)
    packed, _ = c.compile_detector_sampler(seed=3).sample(500, separate_observables=True, bit_packed=True)
    ours = RtDecoder("matching").compile_decoder_for_dem(dem=dem).decode_shots_bit_packed(
        bit_packed_detection_event_data=packed)
    theirs = pymatching.Matching.from_detector_error_model(dem).decode_batch(packed, bit_packed_shots=True,
                                                                             bit_packed_predictions=True)
    assert ours.shape == (500, 1) and np.array_equal(ours, theirs)


def test_windowed_union_find_decodes_bit_packed_shots():
    c = _circuit()
    dem = c.detector_error_model(decompose_errors=True)
    packed, obs = c.compile_detector_sampler(seed=4).sample(400, separate_observables=True, bit_packed=True)
    preds = RtDecoder("union_find", window=6, commit=3).compile_decoder_for_dem(dem=dem).decode_shots_bit_packed(
        bit_packed_detection_event_data=packed)
    wrong = np.sum(np.any(preds != obs, axis=1))
    assert 0 < wrong < 400 * 0.3  # p=1% at d=3: logical errors happen, but far from half the shots


def test_sinter_collect_runs_the_custom_decoders():
    stats = sinter.collect(num_workers=1, tasks=[sinter.Task(circuit=_circuit(), json_metadata={"d": 3})],
                           decoders=["rtdecoder_union_find", "rtdecoder_matching"], custom_decoders=decoders(),
                           max_shots=300, max_errors=10_000)
    by_decoder = {s.decoder: s for s in stats}
    assert set(by_decoder) == {"rtdecoder_union_find", "rtdecoder_matching"}
    assert all(s.shots == 300 for s in stats)
    assert all(0 < s.errors < 150 for s in stats)
