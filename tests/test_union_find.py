"""Weighted union-find with peeling (kernels/union_find.py)."""

import numpy as np
import pytest

from rtdecoder.config import StreamConfig
from rtdecoder.engine import Engine
from rtdecoder.kernels import union_find as uf


def _decode(num_nodes, edges, weights, events):
    eu = np.array([e[0] for e in edges])
    ev = np.array([e[1] for e in edges])
    g = uf.build_graph(num_nodes, eu, ev, np.asarray(weights, float))
    ws = uf.Workspace(num_nodes, len(edges))
    k = uf.decode(*g, np.array(events, np.uint8), *ws.arrays())
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


def test_odd_component_without_boundary_is_reported():
    assert _decode(3, [(0, 1), (1, 2)], [1.0, 1.0], [1, 0, 0])[0] == -1


def test_workspace_is_clear_after_a_failed_decode():
    g = uf.build_graph(3, np.array([0, 1]), np.array([1, 2]), np.ones(2))
    ws = uf.Workspace(3, 2)
    assert uf.decode(*g, np.array([1, 0, 0], np.uint8), *ws.arrays()) == -1
    assert uf.decode(*g, np.array([1, 1, 0], np.uint8), *ws.arrays()) == 1
    assert ws.chosen[0] == 0


@pytest.fixture(scope="module")
def d5():
    eng = Engine([StreamConfig(distance=5, rounds=25, p=0.008, decoder="union_find")])
    rt = eng.streams[0]
    dets, _ = rt.circuit.compile_detector_sampler(seed=21).sample(300, separate_observables=True)
    return eng, rt, dets.astype(np.uint8)


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
