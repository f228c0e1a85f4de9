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

from rtdecoder.dem import Components, DemComponents, DetectorLayout
from rtdecoder.errors import ConfigError
from rtdecoder.heralds import herald_detectors, herald_map, kernel_arrays


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
    heralds: object = None
    """With heralds (``plan_windows(..., heralds=...)``), the graph's
    ``rtdecoder.heralds.HeraldMap``; None otherwise."""

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
    core: np.ndarray | None = None
    """The first round each window commits (default ``start``; an A window's core start)."""
    kind: np.ndarray | None = None
    """Per window ``kernels.tables.WK_*`` (default all sliding)."""

    def __post_init__(self) -> None:
        if self.core is None:
            self.core = self.start.copy()
        if self.kind is None:
            self.kind = np.zeros(len(self.start), np.int64)

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
                 keep: np.ndarray, correlations: bool = False, heralds: np.ndarray | None = None) -> WindowPlan:
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
        heralds: bool ``(num_detectors,)``, the herald detectors (``rtdecoder.heralds``), or None:
            each graph then gets its ``heralds`` map (``rtdecoder.heralds.herald_map``), and
            windows share a graph only when their errors are the same.
    """
    start, end, commit_end = window_schedule(layout.num_rounds, window, commit)
    gs = _GraphSet(layout, comps, keep, correlations, heralds)
    # Earlier rounds are committed (left out); the future is open (DEM order kept, so that W = all
    # reproduces the offline graph).
    graph_of = np.asarray([gs.index(int(s), int(e), False, True) for s, e in zip(start, end)], np.int64)
    return WindowPlan(layout, window, commit, start, end, commit_end, graph_of, gs.graphs)


class _GraphSet:
    """The distinct window graphs of one stream's plan: ``index`` cuts a window's components
    (``cut_components``) and returns the index of its graph in ``graphs``, built the first time
    its signature is seen (with ``errors_dem`` when ``correlations``)."""

    def __init__(self, layout: DetectorLayout, comps: DemComponents, keep: np.ndarray, correlations: bool,
                 heralds: np.ndarray | None = None):
        self.layout, self.comps, self.keep, self.correlations = layout, comps, keep, correlations
        self.heralds = heralds if heralds is not None and heralds.any() else None
        self.det_round = layout.det_round
        self.graphs: list[WindowGraph] = []
        self._seen: dict[bytes, int] = {}

    def index(self, start: int, end: int, lower_open: bool, upper_open: bool) -> int:
        off = self.layout.round_offsets
        n, p, u, v, ob, err = cut_components(self.comps, off, start, end, self.keep, lower_open, upper_open)
        node_round = self.det_round[off[start]:off[end]] - start
        key = _signature(n, node_round, p, u, v, ob)
        if self.correlations or self.heralds is not None:
            key += _error_signature(p, u, v, ob, err)
        if self.heralds is not None:
            key += np.packbits(self.heralds[off[start]:off[end]]).tobytes()
        if key not in self._seen:
            self._seen[key] = len(self.graphs)
            g = _graph_from_dem(n, node_round, _window_dem(n, p, u, v, ob))
            if self.correlations:
                g.errors_dem = _errors_dem(n, p, u, v, ob, err)
            if self.heralds is not None:
                g.heralds = herald_map(g, u, v, p, err, self.heralds[off[start]:off[end]])
            self.graphs.append(g)
        return self._seen[key]


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


@dataclass
class ParallelPlan:
    """The parallel-window (sandwich) schedule of one stream's shots (Skoric et al.,
    arXiv:2209.08552, section III; Tan et al., arXiv:2209.09219): windows of one shot that can
    be decoded at the same time.

    Layer A: window ``j`` has the core ``[core_start[j], core_end[j])`` (``C`` rounds; cores start
    every ``C + G`` rounds, ``G = W - C``) and a buffer of ``G`` rounds on each side (none below
    round 0 or past the last round): rounds ``[a_start[j], a_end[j])``. Both of its time
    boundaries are open (a component reaching past either becomes an edge to the boundary), so
    A windows need nothing from one another. An A window commits every chosen edge with an
    endpoint in its core; such an edge's other endpoint, if it lies in a buffer, is flipped for
    the B window there (the carry).

    Layer B: window ``j`` is the gap ``[b_start[j], b_end[j])`` between core ``j`` and core
    ``j + 1`` (or the end of the shot), decoded once the A windows on both sides have committed.
    Both its time boundaries are closed (components reaching into a core were the A windows'
    to decide, and are left out); it commits everything. Each component of the DEM is thus
    committed by exactly one window, as long as no component spans more than ``G`` rounds
    (checked). With ``W = 0``, or ``W`` past the shot's last round, the plan is one A window:
    the whole shot.

    Attributes:
        a_start, a_end, core_start, core_end, a_graph: int64 ``(num_a,)``.
        b_start, b_end, b_graph: int64 ``(num_b,)``.
        graphs: the distinct window graphs of both layers.
    """

    layout: DetectorLayout
    window: int
    commit: int
    a_start: np.ndarray
    a_end: np.ndarray
    core_start: np.ndarray
    core_end: np.ndarray
    a_graph: np.ndarray
    b_start: np.ndarray
    b_end: np.ndarray
    b_graph: np.ndarray
    graphs: list[WindowGraph]

    def as_window_plan(self) -> WindowPlan:
        """The windows in round order of their commit regions (A 0, B 0, A 1, B 1, ...: A windows
        at even indices, B windows at odd ones), as the service's window table holds them."""
        from rtdecoder.kernels.tables import WK_A, WK_B

        na, nb = len(self.a_start), len(self.b_start)
        n = na + nb
        cols = {name: np.zeros(n, np.int64) for name in ("start", "end", "commit_end", "graph", "core", "kind")}
        for name, a, b in (("start", self.a_start, self.b_start), ("end", self.a_end, self.b_end),
                           ("commit_end", self.core_end, self.b_end), ("graph", self.a_graph, self.b_graph),
                           ("core", self.core_start, self.b_start)):
            cols[name][0::2] = a
            cols[name][1::2] = b
        cols["kind"][0::2] = WK_A
        cols["kind"][1::2] = WK_B
        return WindowPlan(self.layout, self.window, self.commit, cols["start"], cols["end"], cols["commit_end"],
                          cols["graph"], self.graphs, cols["core"], cols["kind"])


def parallel_schedule(num_rounds: int, window: int, commit: int) -> tuple[np.ndarray, ...]:
    """``(a_start, a_end, core_start, core_end, b_start, b_end)``, as ``ParallelPlan`` says.

    >>> [a.tolist() for a in parallel_schedule(26, 10, 5)]
    [[0, 5, 15], [10, 20, 26], [0, 10, 20], [5, 15, 25], [5, 15, 25], [10, 20, 26]]
    >>> [a.tolist() for a in parallel_schedule(26, 0, 0)]
    [[0], [26], [0], [26], [], []]
    """
    if window == 0 or window >= num_rounds:
        one = np.asarray([0], np.int64), np.asarray([num_rounds], np.int64)
        return one[0], one[1], one[0], one[1], np.zeros(0, np.int64), np.zeros(0, np.int64)
    gap = window - commit
    if not 1 <= commit < window:
        raise ValueError(f"parallel windows need 1 <= commit < window (got window {window}, commit {commit})")
    cs = np.arange(0, num_rounds, commit + gap, dtype=np.int64)
    ce = np.minimum(cs + commit, num_rounds)
    a_start = np.maximum(cs - gap, 0)
    a_end = np.minimum(ce + gap, num_rounds)
    b_start = ce[ce < num_rounds]
    b_end = np.minimum(b_start + gap, num_rounds)
    return a_start, a_end, cs, ce, b_start, b_end


def cut_components(comps: DemComponents, off: np.ndarray, start: int, end: int, keep: np.ndarray,
                   lower_open: bool, upper_open: bool):
    """The components of the window of rounds ``[start, end)``, relative to its first detector:
    ``(n, prob, u, v, obs, err)``; ``v == -1`` for an edge to the boundary.

    A component with a detector before the window becomes an edge to the boundary at its other
    detector when ``lower_open``, else is left out (committed rounds, or a core decided by
    another window); one with a detector past the window likewise with ``upper_open``. One with
    a detector on each side is left out. Components at a detector with ``keep == 0`` are left
    out."""
    a, b = int(off[start]), int(off[end])
    c = comps.in_range(a, b)
    if lower_open and a > 0 and comps.max_span > 0:
        below = comps.in_range(max(0, a - comps.max_span), a)
        reach = (below.d1 >= a) & (below.d1 < b)
        below = below.take(reach)
        below = Components(below.prob, below.d1, np.full(len(below.d1), -1, np.int64), below.obs, below.err)
        c = Components(*(np.concatenate([getattr(below, f), getattr(c, f)])
                         for f in ("prob", "d0", "d1", "obs", "err")))
    if not upper_open:
        c = c.take(c.d1 < b)
    c = c.take(keep[c.d0] != 0)
    past = c.d1 >= b
    u = c.d0 - a
    v = np.where((c.d1 < 0) | past, -1, c.d1 - a)
    return b - a, c.prob, u, v, c.obs, c.err


def plan_parallel(layout: DetectorLayout, comps: DemComponents, window: int, commit: int, keep: np.ndarray,
                  correlations: bool = False, heralds: np.ndarray | None = None) -> ParallelPlan:
    """Build the parallel-window schedule and its distinct window graphs (once per stream); the
    arguments are ``plan_windows``'s."""
    if window and not 1 <= commit < window:
        raise ConfigError(f"parallel windows: commit {commit} must be at least 1 and less than the window {window} "
                          "(the rounds between cores are window - commit)")
    a_start, a_end, cs, ce, b_start, b_end = parallel_schedule(layout.num_rounds, window, commit)
    det_round = layout.det_round
    if len(b_start):
        span = max((int((det_round[sg.comps.d1[sg.comps.d1 >= 0] + sg.base]
                         - det_round[sg.comps.d0[sg.comps.d1 >= 0] + sg.base]).max(initial=0))
                    for sg in comps.segments), default=0)
        if span > window - commit:
            raise ConfigError(f"parallel windows: the DEM has an error spanning {span} rounds, more than the "
                              f"{window - commit} rounds between the cores of window {window} and commit {commit}: "
                              f"use window - commit >= {span}")
    gs = _GraphSet(layout, comps, keep, correlations, heralds)
    a_graph = np.asarray([gs.index(int(s), int(e), True, True) for s, e in zip(a_start, a_end)], np.int64)
    b_graph = np.asarray([gs.index(int(s), int(e), False, False) for s, e in zip(b_start, b_end)], np.int64)
    return ParallelPlan(layout, window, commit, a_start, a_end, cs, ce, a_graph, b_start, b_end, b_graph, gs.graphs)


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


@dataclass
class WholeShot:
    """A circuit's whole-shot decoding graph with its heralds (``whole_shot``).

    Attributes:
        graph: the ``rtdecoder.windows.WindowGraph`` of all rounds, every detector kept, with
            ``errors_dem`` (correlated matching).
        heralds: its ``HeraldMap``.
        hnode: int64, the herald detectors.
        kernel: union-find's ``(hidx, hptr, hedge)`` (``kernel_arrays``).
    """

    graph: object
    heralds: object
    hnode: np.ndarray
    kernel: tuple


def whole_shot(circuit: stim.Circuit) -> WholeShot:
    """The whole-shot graph and herald map of ``circuit`` (its DEM: ``rtdecoder.dem.circuit_dem``).

    Raises:
        ConfigError: the circuit's detectors have no round layout (``rtdecoder.dem.detector_layout``).
    """
    from rtdecoder.dem import circuit_dem, dem_components, detector_layout

    layout = detector_layout(circuit)
    comps = dem_components(circuit_dem(circuit))
    keep = np.ones(layout.num_detectors, np.uint8)
    graph = plan_windows(layout, comps, 0, 0, keep, correlations=True).graphs[0]
    n, p, u, v, _, err = cut_components(comps, layout.round_offsets, 0, layout.num_rounds, keep, False, True)
    is_h = herald_detectors(circuit)
    hm = herald_map(graph, u, v, p, err, is_h)
    return WholeShot(graph, hm, np.flatnonzero(is_h), kernel_arrays(hm))
