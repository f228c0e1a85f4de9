"""Weighted union-find with peeling (kernels/union_find.py)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rtdecoder.config import StreamConfig
from rtdecoder.engine import Engine
from rtdecoder.kernels import union_find as uf


def _decode(num_nodes, edges, weights, events):
    eu = np.array([e[0] for e in edges])
    ev = np.array([e[1] for e in edges])
    g = uf.build_graph(num_nodes, eu, ev, np.asarray(weights, float))
    ws = uf.Workspace(num_nodes, len(edges))
    k = uf.decode(*g, np.array(events, np.uint8), *uf.NO_HERALDS, *ws.arrays())
    return k, sorted(ws.chosen[:max(k, 0)].tolist())


LINE = [(0, -1), (0, 1), (1, 2), (2, 3), (3, -1)]  # boundary - 0 - 1 - 2 - 3 - boundary


@pytest.mark.parametrize("events, expected", [
    ([0, 0, 0, 0], []),
    ([0, 1, 1, 0], [2]),          # a pair joined by their edge
    ([1, 0, 0, 0], [0]),          # next to the boundary: out through it
    ([0, 0, 0, 1], [4]),
    ([1, 1, 1, 1], [1, 3]),       # two pairs
    ([1, 0, 0, 1], [0, 4]),       # two boundary exits beat the long path between them
])
def test_hand_drawn_line_graph(events, expected):
    assert _decode(4, LINE, [5.0] * 5, events) == (len(expected), expected)


def test_weights_choose_the_cheaper_explanation():
    # 0 and 1 are joined by an expensive edge but each has a cheap way to the boundary.
    edges = [(0, 1), (0, -1), (1, -1)]
    assert _decode(2, edges, [9.0, 1.0, 1.0], [1, 1])[1] == [1, 2]
    assert _decode(2, edges, [1.0, 9.0, 9.0], [1, 1])[1] == [0]


def test_a_cluster_that_stops_and_grows_again():
    """Events at 0, 1 and 2. 0 and 1 meet first (t = 1) and their even cluster stops with its
    edges' entries left queued; 2 keeps growing, reaches it (t = 4), and the odd cluster grows
    again, out through 2's boundary edge (t = 10) before 0's (t = 23)."""
    edges = [(0, 1), (1, 2), (2, -1), (0, -1)]
    lengths = np.array([2, 4, 10, 20])
    assert _decode(3, edges, lengths / uf.WEIGHT_RESOLUTION, [1, 1, 1]) == (2, [0, 2])
    # 0's boundary edge short, 2's long: 1-2 is due at t = 2 while both grow, but 0-1 stops at
    # t = 1, so its entry comes up short and is requeued for t = 3; the cluster grows again and
    # leaves through 0 (t = 10). Peeling pairs 1 with 2 and sends 0 out.
    lengths = np.array([2, 4, 30, 8])
    assert _decode(3, edges, lengths / uf.WEIGHT_RESOLUTION, [1, 1, 1]) == (2, [1, 3])


def test_odd_component_without_boundary_is_reported():
    assert _decode(3, [(0, 1), (1, 2)], [1.0, 1.0], [1, 0, 0])[0] == -1


def test_workspace_is_clear_after_a_failed_decode():
    g = uf.build_graph(3, np.array([0, 1]), np.array([1, 2]), np.ones(2))
    ws = uf.Workspace(3, 2)
    assert uf.decode(*g, np.array([1, 0, 0], np.uint8), *uf.NO_HERALDS, *ws.arrays()) == -1
    assert uf.decode(*g, np.array([1, 1, 0], np.uint8), *uf.NO_HERALDS, *ws.arrays()) == 1
    assert ws.chosen[0] == 0


@pytest.fixture(scope="module")
def d5():
    """A d = 5 union-find stream and 300 sampled shots' detection events as ingest leaves them
    (the detectors that cannot change an observable dropped: their window graphs have no edges)."""
    eng = Engine([StreamConfig(distance=5, rounds=25, p=0.008, decoder="union_find")])
    rt = eng.streams[0]
    dets, _ = rt.circuit.compile_detector_sampler(seed=21).sample(300, separate_observables=True)
    return eng, rt, dets.astype(np.uint8) & rt.keep


def test_correction_explains_the_syndrome_of_every_window(d5):
    _, rt, dets = d5
    plan, dec = rt.plan, rt.decoder
    off = rt.layout.round_offsets
    checked = 0
    for k in range(plan.num_windows):
        g = plan.graphs[plan.graph[k]]
        lo, hi = off[plan.start[k]], off[plan.end[k]]
        for shot in dets:
            events = shot[lo:hi].copy()
            chosen, n = dec.decode_window(int(plan.graph[k]), events)
            flips = np.zeros(g.num_nodes, np.uint8)
            for e in chosen[:n]:
                flips[g.edge_u[e]] ^= 1
                if g.edge_v[e] >= 0:
                    flips[g.edge_v[e]] ^= 1
            assert np.array_equal(flips, events)
            checked += int(events.any())
    assert checked > 500


def test_repeated_decodes_are_identical(d5):
    """The workspace is shared and reset incrementally: decoding the same windows again, in the
    opposite order, gives the same edges in the same order."""
    _, rt, dets = d5
    dec = rt.decoder
    g = int(rt.plan.graph[1])
    lo, hi = rt.layout.round_offsets[rt.plan.start[1]], rt.layout.round_offsets[rt.plan.end[1]]
    windows = [s[lo:hi].copy() for s in dets[:100]]

    def edges(events):
        chosen, n = dec.decode_window(g, events)
        return chosen[:n].tolist()

    first = [edges(w) for w in windows]
    again = [edges(w) for w in windows[::-1]][::-1]
    assert sum(len(x) > 0 for x in first) > 50
    assert first == again


def _syndrome(num_nodes, eu, ev, chosen):
    flips = np.zeros(num_nodes, np.uint8)
    for e in chosen:
        flips[eu[e]] ^= 1
        if ev[e] >= 0:
            flips[ev[e]] ^= 1
    return flips


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_graphs_are_explained_or_refused(data):
    """On random graphs (parallel edges, isolated nodes, components without a boundary), a
    decode's edges explain the events exactly, and -1 comes only from an odd component that has
    no boundary edge."""
    n = data.draw(st.integers(1, 12))
    m = data.draw(st.integers(1, 30))
    eu = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)))
    ev = np.array(data.draw(st.lists(st.integers(-1, n - 1), min_size=m, max_size=m)))
    ev[ev == eu] = -1
    weights = np.array(data.draw(st.lists(st.floats(0.05, 12.0), min_size=m, max_size=m)))
    events = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8)
    g = uf.build_graph(n, eu, ev, weights)
    ws = uf.Workspace(n, m, int(uf.quantise_weights(weights).max()))
    k = uf.decode(*g, events, *uf.NO_HERALDS, *ws.arrays())
    # the components, by a plain union over all edges
    comp = list(range(n))

    def root(v):
        while comp[v] != v:
            v = comp[v]
        return v
    for a, b in zip(eu, ev):
        if b >= 0:
            comp[root(a)] = root(b)
    has_boundary = {root(a) for a, b in zip(eu, ev) if b < 0}
    parity = {}
    for v in range(n):
        parity[root(v)] = parity.get(root(v), 0) ^ int(events[v])
    solvable = all(p == 0 or r in has_boundary for r, p in parity.items())
    if solvable:
        assert k >= 0
        chosen = ws.chosen[:k]
        assert len(set(chosen.tolist())) == k
        assert np.array_equal(_syndrome(n, eu, ev, chosen), events)
    else:
        assert k == -1
    # and the workspace is all-clear again: its state equals a fresh one's, and a decode of no
    # events chooses nothing
    fresh = uf.Workspace(n, m, int(uf.quantise_weights(weights).max()))
    for name in ("nd", "in_cluster", "es", "bucket", "count"):
        assert np.array_equal(getattr(ws, name), getattr(fresh, name)), name
    assert uf.decode(*g, np.zeros(n, np.uint8), *uf.NO_HERALDS, *ws.arrays()) == 0


def test_each_nodes_state_is_one_cache_line():
    ws = uf.Workspace(1000, 3000)
    assert ws.nd.shape == (1000, uf.NODE_COLUMNS) and ws.nd.strides == (64, 4)
    assert ws.nd.ctypes.data % 64 == 0
    assert np.array_equal(ws.nd[:, uf.PARENT], np.arange(1000)) and np.all(ws.nd[:, uf.BNODE] == -1)


def test_queue_rebuild_when_the_entry_pool_runs_out():
    """The entry pool is sized so that it rarely fills; when it does, the queue is rebuilt from
    the edges' current completion times and the answer is unchanged."""
    rng = np.random.default_rng(5)
    size = 8  # an 8x8 grid with boundary edges on two sides; at 30% events, 18 of 20 decodes
    n = size * size  # queue more entries than the small pool holds (checked by instrumenting)
    eu, ev = [], []
    for r in range(size):
        for c in range(size):
            v = r * size + c
            if c + 1 < size:
                eu.append(v), ev.append(v + 1)
            if r + 1 < size:
                eu.append(v), ev.append(v + size)
            if c in (0, size - 1):
                eu.append(v), ev.append(-1)
    eu, ev = np.array(eu), np.array(ev)
    weights = rng.uniform(0.5, 6.0, len(eu))
    g = uf.build_graph(n, eu, ev, weights)
    big = uf.Workspace(n, len(eu), int(uf.quantise_weights(weights).max()))
    small = uf.Workspace(n, len(eu), int(uf.quantise_weights(weights).max()))
    # the smallest pool that is safe: one entry more than there are edges and frontiers (live
    # entries <= edges + nodes)
    small.entry_edge = np.zeros(len(eu) + n + 1, np.int32)
    small.entry_next = np.zeros(len(eu) + n + 1, np.int32)
    for _ in range(20):
        events = (rng.random(n) < 0.3).astype(np.uint8)
        k1 = uf.decode(*g, events, *uf.NO_HERALDS, *big.arrays())
        k2 = uf.decode(*g, events, *uf.NO_HERALDS, *small.arrays())
        assert k1 == k2 >= 0
        assert sorted(big.chosen[:k1].tolist()) == sorted(small.chosen[:k2].tolist())
        assert np.array_equal(_syndrome(n, eu, ev, small.chosen[:k2]), events)


def test_erased_edges_are_complete_first_and_the_correction_stays_inside_them():
    """Delfosse and Zémor's erasure decoder inside the weighted kernel: a herald node's event
    erases its edges; when every error is in the erasure, the correction is made of erased edges
    and explains the events, whatever the erased edges' weights, and the herald's own event is no
    defect."""
    import stim

    from rtdecoder.dem import circuit_dem, dem_components, detector_layout
    from rtdecoder.windows import plan_windows

    c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=5, rounds=5, after_clifford_depolarization=0.002,
                               before_round_data_depolarization=0.002, before_measure_flip_probability=0.002,
                               after_reset_flip_probability=0.002)
    lay = detector_layout(c)
    graph = plan_windows(lay, dem_components(circuit_dem(c)), 0, 0, np.ones(lay.num_detectors, np.uint8)).graphs[0]
    n, m = graph.num_nodes, graph.num_edges
    h = n  # one herald node more, with its own edge to the boundary
    g = uf.build_graph(n + 1, np.append(graph.edge_u, h), np.append(graph.edge_v, -1),
                       np.append(graph.edge_weight, 4.0))
    ws = uf.Workspace(n + 1, m + 1, uf.max_length(g))
    hidx = np.full(n + 1, -1, np.int32)
    hidx[h] = 0

    def syndrome(edges):
        out = np.zeros(n + 1, np.uint8)
        for e in edges:
            out[graph.edge_u[e]] ^= 1
            if graph.edge_v[e] >= 0:
                out[graph.edge_v[e]] ^= 1
        return out

    rng = np.random.default_rng(11)
    for trial in range(200):
        erased = rng.choice(m, size=int(rng.integers(1, 40)), replace=False).astype(np.int32)
        flipped = erased[rng.random(len(erased)) < 0.5]
        events = syndrome(flipped)
        events[h] = 1
        k = uf.decode(*g, events, hidx, np.array([0, len(erased)], np.int64), erased, *ws.arrays())
        assert k >= 0
        chosen = ws.chosen[:k].copy()
        assert set(chosen.tolist()) <= set(erased.tolist()), trial
        back = syndrome(chosen)
        back[h] = 1
        assert np.array_equal(back, events), trial
        # without its herald's event nothing is erased: the same events decode as plain union-find
        events[h] = 0
        k2 = uf.decode(*g, events, hidx, np.array([0, len(erased)], np.int64), erased, *ws.arrays())
        plain = uf.decode(*g, events, *uf.NO_HERALDS, *ws.arrays())
        assert k2 == plain


def test_a_herald_erasing_an_edge_at_another_herald_counts_neither_as_a_defect():
    """Herald 0 erases edges (2, 3) and (1, 2), and node 1 is itself a herald with an event: both events are
    heralds, not defects, so nothing is to be corrected (every herald is quieted before any
    erased edge merges clusters)."""
    eu = np.array([0, 1, 1, 2, 3])
    ev = np.array([-1, -1, 2, 3, -1])
    g = uf.build_graph(4, eu, ev, np.full(5, 3.0))
    ws = uf.Workspace(4, 5, uf.max_length(g))
    hidx = np.array([0, 1, -1, -1], np.int32)
    hptr = np.array([0, 2, 2], np.int64)
    hedge = np.array([3, 2], np.int32)  # (2, 3) first, then (1, 2): node 1 joins a larger cluster
    assert uf.decode(*g, np.array([1, 1, 0, 0], np.uint8), hidx, hptr, hedge, *ws.arrays()) == 0
    # a real defect at node 3 still leaves by its boundary edge
    k = uf.decode(*g, np.array([1, 1, 0, 1], np.uint8), hidx, hptr, hedge, *ws.arrays())
    assert k == 1 and ws.chosen[0] == 4
    # a real defect at node 2 leaves through the erased edge (2, 3), then node 3's boundary edge
    k = uf.decode(*g, np.array([1, 1, 1, 0], np.uint8), hidx, hptr, hedge, *ws.arrays())
    assert k == 2 and sorted(ws.chosen[:2].tolist()) == [3, 4]
