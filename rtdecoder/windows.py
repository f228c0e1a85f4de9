"""Sliding-window plans and window graphs.

A shot of ``T`` rounds is decoded in windows of ``W`` rounds that overlap by ``W - C``
(Skoric et al., arXiv:2209.08552, "Parallel window decoding..."; Tan et al.,
arXiv:2209.09219). Window ``k`` covers rounds ``[k*C, k*C + W)`` and is decoded as soon as its
last round has arrived; the corrections in its first ``C`` rounds, the *commit region*, are
committed, and committed edges that reach into the rest of the window (the *buffer*) flip those
detectors for the next window. The first window ``k`` with ``k*C + W >= T`` is the last: it runs
to the end of the shot and commits everything. ``W = 0`` ("all") makes the whole shot one window.

The graph of window ``[s, e)`` has the detectors of rounds ``s .. e-1`` as nodes, numbered from
0 in detector order, and the DEM's graphlike components that touch them:

- a component with a detector in an earlier round (``< s``) is left out: those rounds are
  committed, and the carry already accounts for the committed edges that cross into the window;
- a component with a detector in a later round (``>= e``) becomes an edge to the boundary: the
  future is not known yet, so the window's top is an open boundary;
- a component whose detectors cannot change an observable (``keep == 0``,
  ``rtdecoder.dem.observable_detectors``: its connected part of the graph holds no component
  that flips one) is left out; ingest drops those detectors' events, so the part never holds a
  detection event and no decoder needs its edges. Their nodes stay (the numbering is the
  detectors'), without edges;
- components are kept in DEM order and handed to PyMatching's DEM loader, which merges parallel
  edges; with ``W = 0`` the window graph is the offline graph of the whole DEM less those parts
  (which decode independently of the rest: they share no edge with it, only the boundary).

Leaving the parts out halves a surface-code memory experiment's window graphs (the other
basis's detectors), and with them the memory a decode reaches into at random; the corrections
are the same (tested).

Windows whose graphs are identical (the interior windows of a stim-generated memory experiment)
share one graph, so a stream builds a handful of graphs whatever its number of rounds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pymatching
import stim

from rtdecoder.dem import DemComponents, DetectorLayout


@dataclass
class WindowGraph:
    """The decoding graph of one or more windows.

    Attributes:
        num_nodes: detectors in the window; node ``i`` is detector ``round_offsets[s] + i``.
        node_round: int64 ``(num_nodes,)``, each node's round relative to the window's first.
        dem: the window's detector error model (nodes as ``D0 .. D{num_nodes-1}``).
        matching: the PyMatching graph built from ``dem``.
        edge_u, edge_v: int64 ``(num_edges,)``; ``edge_u < edge_v``, ``edge_v == -1`` for a
            boundary edge. Sorted by ``(edge_u, edge_v)``.
        edge_obs: uint64 ``(num_edges,)``, observable mask of each edge.
        edge_weight: float64 ``(num_edges,)``, ``ln((1-p)/p)`` as PyMatching computed it.
        edge_prob: float64 ``(num_edges,)``, merged error probability of each edge.
        edge_keys: int64 ``(num_edges,)``, sorted lookup keys of ``(u, v)`` (see ``edge_key``).
        errors_dem: with correlations (``plan_windows(..., correlations=True)``), the window's
            DEM with the components of each of the stream DEM's errors kept together in one
            ``error(p) A ^ B ...`` instruction, for correlated matching; its edges are the
            graph's. None otherwise.
    """

    num_nodes: int
    node_round: np.ndarray
    dem: stim.DetectorErrorModel
    matching: pymatching.Matching
    edge_u: np.ndarray
    edge_v: np.ndarray
    edge_obs: np.ndarray
    edge_weight: np.ndarray
    edge_prob: np.ndarray
    edge_keys: np.ndarray
    errors_dem: stim.DetectorErrorModel | None = None

    @property
    def num_edges(self) -> int:
        return len(self.edge_u)

    def edge_key(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Lookup keys for node pairs ``(a, b)`` in either order, ``-1`` meaning the boundary."""
        lo = np.minimum(a, b)
        hi = np.maximum(a, b)
        return (hi + 1) * (self.num_nodes + 1) + (lo + 1)


def _graph_from_dem(num_nodes: int, node_round: np.ndarray, dem: stim.DetectorErrorModel) -> WindowGraph:
    m = pymatching.Matching.from_detector_error_model(dem)
    edges = m.edges()
    k = len(edges)
    u = np.empty(k, np.int64)
    v = np.empty(k, np.int64)
    obs = np.zeros(k, np.uint64)
    w = np.empty(k, np.float64)
    p = np.empty(k, np.float64)
    for i, (a, b, attrs) in enumerate(edges):
        b = -1 if b is None else b
        u[i], v[i] = (min(a, b), max(a, b)) if b >= 0 else (a, -1)
        mask = 0
        for f in attrs.get("fault_ids", ()):
            mask |= 1 << f
        obs[i] = mask
        w[i] = attrs["weight"]
        ep = attrs.get("error_probability", -1.0)
        p[i] = ep if ep is not None and ep >= 0 else np.exp(-w[i]) / (1 + np.exp(-w[i]))
    g = WindowGraph(num_nodes, node_round, dem, m, u, v, obs, w, p, np.zeros(0, np.int64))
    keys = g.edge_key(u, v)
    order = np.argsort(keys, kind="stable")
    g.edge_u, g.edge_v, g.edge_obs, g.edge_weight, g.edge_prob = u[order], v[order], obs[order], w[order], p[order]
    g.edge_keys = keys[order]
    if len(np.unique(g.edge_keys)) != k:
        raise AssertionError("PyMatching returned parallel edges; window graphs must be simple")
    return g


@dataclass
class WindowPlan:
    """The windows of one stream's shots, and their graphs.

    Attributes:
        layout: the stream's detector layout.
        window, commit: ``W`` and ``C`` in rounds as configured (``W = 0``: whole shots).
        start, end, commit_end: int64 ``(num_windows,)``: window ``k`` covers rounds
            ``[start[k], end[k])`` and commits ``[start[k], commit_end[k])``; the last window has
            ``end == commit_end == num_rounds``.
        graph: int64 ``(num_windows,)``: index into ``graphs``.
        graphs: the distinct window graphs.
    """

    layout: DetectorLayout
    window: int
    commit: int
    start: np.ndarray
    end: np.ndarray
    commit_end: np.ndarray
    graph: np.ndarray
    graphs: list[WindowGraph]

    @property
    def num_windows(self) -> int:
        return len(self.start)


def window_schedule(num_rounds: int, window: int, commit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(start, end, commit_end)`` of each window, as described in the module docstring.

    >>> [a.tolist() for a in window_schedule(26, 10, 5)]
    [[0, 5, 10, 15, 20], [10, 15, 20, 25, 26], [5, 10, 15, 20, 26]]
    >>> [a.tolist() for a in window_schedule(26, 0, 0)]
    [[0], [26], [26]]
    """
    starts, ends, commits = [], [], []
    s = 0
    if window > 0:
        while s + window < num_rounds:
            starts.append(s)
            ends.append(s + window)
            commits.append(s + commit)
            s += commit
    starts.append(s)
    ends.append(num_rounds)
    commits.append(num_rounds)
    return (np.asarray(starts, np.int64), np.asarray(ends, np.int64), np.asarray(commits, np.int64))


def plan_windows(layout: DetectorLayout, comps: DemComponents, window: int, commit: int,
                 keep: np.ndarray, correlations: bool = False) -> WindowPlan:
    """Build the window schedule and every distinct window graph (done once per stream).

    Args:
        keep: uint8 ``(num_detectors,)`` (``rtdecoder.dem.observable_detectors``): components at
            a detector with ``keep == 0`` are left out of every window graph (module docstring).
        correlations: also build each graph's ``errors_dem`` (correlated matching). An error of
            the stream's DEM whose components straddle the window keeps, in the window, the
            components the window graph holds (those in committed rounds are gone, those reaching
            past the window's top are edges to its boundary), joined by ``^``: the correlation
            among them is used, the one with the parts outside is not. Windows then share a graph
            only when their errors, not only their merged edges, are the same.
    """
    start, end, commit_end = window_schedule(layout.num_rounds, window, commit)
    off = layout.round_offsets
    det_round = layout.det_round
    graphs: list[WindowGraph] = []
    seen: dict[bytes, int] = {}
    graph_of = np.empty(len(start), np.int64)
    for k in range(len(start)):
        a, b = int(off[start[k]]), int(off[end[k]])
        c = comps.in_range(a, b)  # DEM order, so that W = all reproduces the offline graph
        kept = keep[c.d0] != 0
        c = c.take(kept)
        p = c.prob
        u = c.d0 - a
        v = np.where((c.d1 < 0) | (c.d1 >= b), -1, c.d1 - a)
        ob = c.obs
        n = int(b - a)
        node_round = det_round[a:b] - start[k]
        key = _signature(n, node_round, p, u, v, ob)
        if correlations:
            key += _error_signature(p, u, v, ob, c.err)
        if key not in seen:
            seen[key] = len(graphs)
            graphs.append(_graph_from_dem(n, node_round, _window_dem(n, p, u, v, ob)))
            if correlations:
                graphs[-1].errors_dem = _errors_dem(n, p, u, v, ob, c.err)
        graph_of[k] = seen[key]
    return WindowPlan(layout, window, commit, start, end, commit_end, graph_of, graphs)


def _signature(n: int, node_round: np.ndarray, p: np.ndarray, u: np.ndarray, v: np.ndarray,
               obs: np.ndarray) -> bytes:
    """Identity of a window graph, independent of the order of its components.

    stim groups errors with the same symptoms differently from one repetition of a round to the
    next, so two windows at different times can list different components that merge into the
    same graph. The signature is that merged graph: components grouped by ``(u, v, obs)``, their
    probabilities combined as independent flips (``(1 - prod(1 - 2 p_i)) / 2``, computed as a
    sum of logs so that the order does not matter), compared as ``round(1e9 ln p)`` (a relative
    precision of 1e-9, far coarser than the rounding differences of the order of summation).
    """
    group = np.lexsort((obs, v, u))
    u, v, obs, p = u[group], v[group], obs[group], p[group]
    new = np.ones(len(u), bool)
    new[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1]) | (obs[1:] != obs[:-1])
    first = np.nonzero(new)[0]
    merged = (1.0 - np.exp(np.add.reduceat(np.log1p(-2.0 * p), first))) / 2.0 if len(p) else p
    sig = hashlib.blake2b(digest_size=16)
    for arr in (np.asarray([n]), node_round, u[first], v[first], obs[first]):
        sig.update(np.ascontiguousarray(arr, dtype=np.int64 if arr.dtype != np.uint64 else np.uint64).tobytes())
    sig.update(np.rint(np.log(merged) * 1e9).astype(np.int64).tobytes())
    return sig.digest()


def _error_signature(p: np.ndarray, u: np.ndarray, v: np.ndarray, obs: np.ndarray, err: np.ndarray) -> bytes:
    """Identity of a window's errors, independent of their order and of the order of their
    components: each component ``(u, v, obs)`` hashed to 64 bits, the hashes of an error's
    components summed (mod 2^64), and the sorted ``(sum, round(1e9 ln p))`` pairs digested."""
    if len(p) == 0:
        return b""
    with np.errstate(over="ignore"):
        h = (u.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        h ^= (v.astype(np.uint64) + np.uint64(2)) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= obs * np.uint64(0x165667B19E3779F9)
        h = (h ^ (h >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
        _, first, which = np.unique(err, return_index=True, return_inverse=True)
        total = np.zeros(len(first), np.uint64)
        np.add.at(total, which, h)
    lp = np.rint(np.log(p[first]) * 1e9).astype(np.int64)
    order = np.lexsort((lp, total))
    sig = hashlib.blake2b(digest_size=16)
    sig.update(total[order].tobytes())
    sig.update(lp[order].tobytes())
    return sig.digest()


def _errors_dem(n: int, p: np.ndarray, u: np.ndarray, v: np.ndarray, obs: np.ndarray,
                err: np.ndarray) -> stim.DetectorErrorModel:
    """The window's errors, each one instruction of its components joined by ``^`` (in DEM order;
    an error's components are adjacent)."""
    lines: list[str] = []
    prev = None
    for pi, ui, vi, oi, ei in zip(p.tolist(), u.tolist(), v.tolist(), obs.tolist(), err.tolist()):
        part = _component_targets(ui, vi, oi)
        if ei == prev:
            lines[-1] += " ^ " + part
        else:
            lines.append(f"error({pi!r}) {part}")
        prev = ei
    lines.append(f"detector D{n - 1}")
    return stim.DetectorErrorModel("\n".join(lines))


def _component_targets(u: int, v: int, o: int) -> str:
    parts = [f"D{u}"]
    if v >= 0:
        parts.append(f"D{v}")
    while o:
        bit = (o & -o).bit_length() - 1
        parts.append(f"L{bit}")
        o &= o - 1
    return " ".join(parts)


def _window_dem(n: int, p: np.ndarray, u: np.ndarray, v: np.ndarray, obs: np.ndarray) -> stim.DetectorErrorModel:
    lines = [f"error({pi!r}) {_component_targets(ui, vi, int(oi))}"
             for pi, ui, vi, oi in zip(p.tolist(), u.tolist(), v.tolist(), obs.tolist())]
    lines.append(f"detector D{n - 1}")
    return stim.DetectorErrorModel("\n".join(lines))
