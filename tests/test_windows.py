"""Sliding-window decoding: the schedule, the commit/carry rule, and accuracy against offline
PyMatching on the same shots."""

import math

import numpy as np
import pymatching
import pytest
import stim

from rtdecoder.config import StreamConfig
from rtdecoder.dem import dem_components, observable_detectors
from rtdecoder.engine import Engine
from rtdecoder.kernels import window as KW
from rtdecoder.kernels import tables as T
from rtdecoder.kernels import union_find as uf
from rtdecoder.windows import plan_windows, window_schedule


@pytest.mark.parametrize("T, W, C", [(26, 10, 5), (7, 6, 3), (101, 14, 7), (5, 2, 1), (4, 10, 5), (30, 8, 8)])
def test_schedule_commit_regions_tile_the_shot(T, W, C):
    start, end, commit = window_schedule(T, W, C)
    assert start[0] == 0 and end[-1] == T and commit[-1] == T
    assert np.array_equal(start[1:], commit[:-1])  # each window starts where the last committed
    assert np.all(end - start <= W) and np.all(end[:-1] - start[:-1] == W)
    assert np.all(end[:-1] < T)  # only the last window reaches the final round


def test_repeat_blocks_expand_to_stims_own_flattening():
    circuit = stim.Circuit.generated("surface_code:rotated_memory_x", distance=3, rounds=9,
                                     after_clifford_depolarization=0.002, before_measure_flip_probability=0.001)
    dem = circuit.detector_error_model(decompose_errors=True)
    assert any(isinstance(x, stim.DemRepeatBlock) for x in dem)
    ours, flat = dem_components(dem), dem_components(dem.flattened())
    assert all(sg.count == 1 for sg in flat.segments)
    n = dem.num_detectors
    for a, b in [(0, n), (0, 1), (5, 37), (n - 8, n), (17, 18)]:
        x, y = ours.in_range(a, b), flat.in_range(a, b)
        for f in ("prob", "d0", "d1", "obs"):
            assert np.array_equal(getattr(x, f), getattr(y, f)), (a, b, f)
    assert len(ours.in_range(0, n).d0) > 0 and ours.in_range(n, n + 5).d0.size == 0



def test_observable_detectors_are_the_connected_parts_with_an_observable_edge():
    dem = stim.DetectorErrorModel("""
        error(0.1) D0 D1
        error(0.1) D1 L0
        error(0.1) D2 D3
        error(0.1) D3
        error(0.1) D4 ^ D5 L1
        detector D13
        repeat 3 {
            error(0.1) D7 D9
            error(0.1) D8 L0
            shift_detectors 2
        }
    """)
    # D6 sees no error; the repeat joins 7-9-11-13 (no observable) and marks 8, 10 and 12
    keep = observable_detectors(dem_components(dem), dem.num_detectors)
    assert keep.tolist() == [1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("circuit", ["surface_code:rotated_memory_z", "surface_code:rotated_memory_x"])
def test_a_memory_experiment_keeps_the_detectors_of_its_observables_basis(circuit):
    d, rounds = 3, 9
    dem = stim.Circuit.generated(circuit, distance=d, rounds=rounds, after_clifford_depolarization=0.002,
                                 before_measure_flip_probability=0.001).detector_error_model(decompose_errors=True)
    n = dem.num_detectors
    keep = observable_detectors(dem_components(dem), n)
    assert np.array_equal(keep, observable_detectors(dem_components(dem.flattened()), n))
    assert keep.sum() == (d * d - 1) // 2 * (rounds + 1)  # the stabilisers of the measured basis, every round
    c = dem_components(dem).in_range(0, n)
    inner = c.d1 >= 0
    assert np.array_equal(keep[c.d0[inner]], keep[c.d1[inner]])  # no edge leaves a kept part
    assert np.all(keep[c.d0[c.obs != 0]] == 1)


@pytest.mark.parametrize("decoder", ["matching", "union_find"])
def test_events_that_cannot_flip_an_observable_never_reach_the_decoder(decoder):
    eng = Engine([StreamConfig(distance=5, rounds=10, p=0.005, decoder=decoder, window=4, commit=2)])
    rt = eng.streams[0]
    dropped = rt.keep == 0
    events = np.random.default_rng(3).integers(0, 2, (40, rt.layout.num_detectors)).astype(np.uint8) * dropped
    assert events.sum() > 1000
    assert not eng.decode_shots(0, events, rounds_per_packet=3).any()
    assert not eng.syn.any() and eng.counters[T.CNT_SHOTS] == 40


def test_interior_windows_share_one_graph_whatever_the_rounds():
    short = Engine([StreamConfig(distance=3, rounds=30, window=6, commit=3)]).streams[0].plan
    long = Engine([StreamConfig(distance=3, rounds=300, window=6, commit=3)]).streams[0].plan
    assert len(short.graphs) == len(long.graphs) <= 4
    assert long.num_windows > 10 * len(long.graphs)


def _sample(eng, shots, seed):
    rt = eng.streams[0]
    dets, obs = rt.circuit.compile_detector_sampler(seed=seed).sample(shots, separate_observables=True)
    offline = pymatching.Matching.from_detector_error_model(rt.dem).decode_batch(dets)
    return dets, obs, offline


def test_window_graphs_leave_out_the_parts_that_cannot_flip_an_observable():
    """Each window graph is the unpruned one less exactly the edges at dropped detectors (the
    other basis's, in a memory experiment); node numbering and every kept edge are unchanged, and
    union-find chooses the same edges on either graph for the events ingest leaves."""
    eng = Engine([StreamConfig(distance=3, rounds=9, p=0.01, window=6, commit=3, decoder="union_find")])
    rt = eng.streams[0]
    full = plan_windows(rt.layout, dem_components(rt.dem), 6, 3, np.ones(rt.layout.num_detectors, np.uint8))
    off = rt.layout.round_offsets
    dets = rt.circuit.compile_detector_sampler(seed=5).sample(200).astype(np.uint8) & rt.keep
    assert rt.plan.num_windows == full.num_windows > 2
    nonempty = 0
    for k in range(rt.plan.num_windows):
        g, f = rt.plan.graphs[rt.plan.graph[k]], full.graphs[full.graph[k]]
        lo, hi = off[rt.plan.start[k]], off[rt.plan.end[k]]
        kept = rt.keep[lo:hi]
        assert g.num_nodes == f.num_nodes
        mine = kept[f.edge_u] == 1
        assert 0 < mine.sum() < len(mine)
        assert np.all(kept[g.edge_u] == 1) and np.all(kept[g.edge_v[g.edge_v >= 0]] == 1)
        for name in ("edge_keys", "edge_obs", "edge_weight"):
            assert np.array_equal(getattr(g, name), getattr(f, name)[mine]), (k, name)
        graphs = [uf.build_graph(x.num_nodes, x.edge_u, x.edge_v, x.edge_weight) for x in (g, f)]
        ws = uf.Workspace(f.num_nodes, f.num_edges, uf.max_length(graphs[1])).arrays()
        for events in dets[:, lo:hi]:
            pairs = []
            for x, graph in zip((g, f), graphs):
                n = uf.decode(*graph, np.ascontiguousarray(events), *uf.NO_HERALDS, *ws)
                pairs.append(x.edge_keys[ws[-1][:n]].tolist())
            assert pairs[0] == pairs[1], k
            nonempty += len(pairs[0]) > 0
    assert nonempty > 100


def test_whole_shot_window_equals_offline_decode_batch():
    eng = Engine([StreamConfig(distance=5, rounds=15, p=0.006, window=0)])
    dets, obs, offline = _sample(eng, 2000, seed=7)
    assert np.array_equal(eng.decode_shots(0, dets, rounds_per_packet=4), offline)
    assert (offline != obs).any()  # the shots do contain logical errors to get right


def test_windowed_logical_error_rate_agrees_with_offline_matching():
    """d=5, 25 rounds, p=0.5%, W=2d, C=d, 4000 shots (about 250 logical errors offline).

    The comparison is paired (both decoders see the same shots), so the sampling noise of the
    error rate itself cancels; what is left is how often the two decoders disagree. McNemar's test:
    with b shots that only the window decoder gets wrong and c that only offline matching gets
    wrong, b - c has standard deviation sqrt(b + c) if the two are equally accurate. The test
    allows 3 standard deviations; a window decoder that lost accuracy to its windows (a wrong
    carry, past edges left in, the future boundary missing) fails it by a wide margin.
    """
    eng = Engine([StreamConfig(distance=5, rounds=25, p=0.005)])
    dets, obs, offline = _sample(eng, 4000, seed=11)
    win = eng.decode_shots(0, dets, rounds_per_packet=5)
    w_wrong = np.any(win != obs, axis=1)
    o_wrong = np.any(offline != obs, axis=1)
    b = int(np.sum(w_wrong & ~o_wrong))
    c = int(np.sum(o_wrong & ~w_wrong))
    assert o_wrong.sum() > 100
    assert b - c <= 3 * math.sqrt(b + c) + 1, (b, c, int(w_wrong.sum()), int(o_wrong.sum()))


def _single_faults(dem: stim.DetectorErrorModel):
    n = dem.num_detectors
    events, masks = [], []
    for inst in dem.flattened():
        if inst.type != "error":
            continue
        row = np.zeros(n, np.uint8)
        mask = np.zeros(dem.num_observables, np.uint8)
        for t in inst.targets_copy():
            if t.is_relative_detector_id():
                row[t.val] ^= 1
            elif t.is_logical_observable_id():
                mask[t.val] ^= 1
        if row.any():
            events.append(row)
            masks.append(mask)
    return np.array(events), np.array(masks)


@pytest.mark.parametrize("decoder", ["matching", "union_find"])
@pytest.mark.parametrize("circuit", ["surface_code:rotated_memory_z", "surface_code:rotated_memory_x"])
@pytest.mark.parametrize("d", [3, 5])
def test_every_single_fault_is_decoded_to_its_observable(circuit, d, decoder):
    eng = Engine([StreamConfig(circuit=circuit, distance=d, rounds=5 * d, p=0.001, decoder=decoder)])
    events, masks = _single_faults(eng.streams[0].dem)
    assert len(events) > 100
    preds = eng.decode_shots(0, events, rounds_per_packet=eng.streams[0].layout.num_rounds)
    wrong = np.nonzero(np.any(preds != masks, axis=1))[0]
    assert len(wrong) == 0, f"{len(wrong)} of {len(events)} single faults misdecoded, e.g. #{wrong[:5]}"


def test_window_decoder_commits_only_commit_region():
    eng = Engine([StreamConfig(distance=3, rounds=6, p=0.001, window=6, commit=3)])
    plan = eng.streams[0].plan
    g = plan.graphs[plan.graph[0]]
    rnd = g.node_round
    u, v, obs = g.edge_u, g.edge_v, g.edge_obs
    in_commit = np.nonzero((v >= 0) & (rnd[u] < 3) & (rnd[np.maximum(v, 0)] < 3) & (obs != 0))[0]
    boundary_commit = np.nonzero((v < 0) & (rnd[u] < 3) & (obs != 0))[0]
    in_buffer = np.nonzero((rnd[u] >= 3) & (obs != 0))[0]  # wholly in the buffer, boundary edges included
    crossing = np.nonzero((v >= 0) & (rnd[u] == 2) & (rnd[np.maximum(v, 0)] == 3))[0]
    e_commit = (in_commit if len(in_commit) else boundary_commit)[0]
    e_buffer, e_cross = in_buffer[0], crossing[0]
    st = eng.st
    st[0, T.S_HAS_SHOT] = 1
    st[0, T.S_NEXT_ROUND] = 6
    syn_before = eng.syn.copy()
    chosen = np.array([e_commit, e_buffer, e_cross], np.int64)
    size = KW.commit_window(st, eng.offs, eng.syn, eng.win, eng.gbase, eng.node_round, eng.edges, 0, 0,
                           chosen, 3, eng.tx, eng.counters)
    from rtdecoder import protocol as P

    c = P.decode_correction(eng.tx[:size].tobytes(), 1)
    assert not c.final and c.header.first_round == 0 and c.header.num_rounds == 3
    assert int(c.flips[0]) == int(obs[e_commit] ^ obs[e_cross]) & 1
    assert obs[e_buffer] != 0  # so that committing it by mistake would show in the flips
    changed = np.nonzero(eng.syn != syn_before)[0].tolist()
    assert changed == [int(v[e_cross])]  # the crossing edge's buffer endpoint is carried; nothing else
    assert st[0, T.S_NEXT_WIN] == 1


def test_a_decoder_failure_poisons_the_shot_and_answers_internal():
    from rtdecoder import protocol as P

    eng = Engine([StreamConfig(distance=3, rounds=3, p=0.001, window=0)])
    rb = eng.streams[0].layout.round_bytes

    class Broken:
        def decode_window(self, graph, events):
            raise ValueError("no")

    eng.decoders[0] = Broken()
    replies = []
    for r in range(4):
        replies += eng.handle(P.encode(P.Header(P.MsgType.SYNDROME, shot_id=1, first_round=r, num_rounds=1), bytes(rb)))
    assert [P.decode_error(x)[1] for x in replies] == [P.Status.INTERNAL]
    assert eng.counters[P.Status.INTERNAL] == 1


@pytest.mark.parametrize("decoder", ["matching", "union_find"])
def test_offline_decoding_drops_the_same_events_and_predicts_as_on_the_full_syndrome(tmp_path, decoder):
    from rtdecoder.offline import decode_file, write_example

    circuit = stim.Circuit.generated("surface_code:rotated_memory_z", distance=5, rounds=5,
                                     after_clifford_depolarization=0.01, before_measure_flip_probability=0.01)
    dem = circuit.detector_error_model(decompose_errors=True)
    write_example(tmp_path / "d.b8", dem, circuit, 2000, "b8", seed=4)
    s = decode_file(tmp_path / "d.b8", tmp_path / "p.01", dem, append_observables=True, decoder=decoder)
    data = stim.read_shot_data_file(path=str(tmp_path / "d.b8"), format="b8", num_measurements=0,
                                    num_detectors=dem.num_detectors + dem.num_observables, num_observables=0)
    preds = stim.read_shot_data_file(path=str(tmp_path / "p.01"), format="01", num_measurements=0,
                                     num_detectors=0, num_observables=dem.num_observables)
    full = pymatching.Matching.from_detector_error_model(dem).decode_batch(data[:, :dem.num_detectors])
    if decoder == "matching":
        assert np.array_equal(preds, full.astype(bool))
    else:
        assert np.mean(np.any(preds != full.astype(bool), axis=1)) < 0.02  # union-find is not matching
    assert s.failed == 0 and 10 < s.logical_errors < 400  # the shots do hold logical errors to get right
