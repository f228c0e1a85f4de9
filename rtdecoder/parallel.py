"""Parallel-window decoding of one stream's shots on ``k`` workers (the sandwich schedule of
``rtdecoder.windows.ParallelPlan``; Skoric et al., arXiv:2209.08552; Tan et al.,
arXiv:2209.09219).

A shot is decoded in two layers. The A windows (a core with a buffer on each side) need nothing
from one another: the workers decode them all at once. Then each B window (the gap between two
cores) is decoded with the carries of the A windows on both sides. The shot's observable flips
are the XOR of every window's commit. The carries of layer A go to two per-detector arrays
(``carry_up`` written by the A window below a gap, ``carry_down`` by the one above it), so no two
workers write one byte and the A windows read the detection events as received.

Union-find runs as one compiled call per worker for a whole batch of shots
(``rtdecoder.kernels.parallel.uf_worker``: nogil, no allocation, no Python between windows or
shots): the workers take a layer's windows one at a time from a shared counter (an atomic add),
meet at a spin barrier (an acquire/release word per worker) between layers, and take no lock.
Another decoder runs its ``decode_window`` per window, worker ``t`` taking windows ``t, t + k,
...`` of each layer with its own compiled copy, meeting at a ``threading.Barrier``. This is the
offline and benchmark path (``rtdecoder decode --parallel-windows``, ``bench/throughput.py``); a
shot's answer does not depend on ``k`` or on which worker took which window. Spinning workers
want a core each: ``k`` above the machine's cores is slower, not wrong.
"""

from __future__ import annotations

import threading

import numpy as np
import stim

from rtdecoder import decoders
from rtdecoder.config import ConfigError
from rtdecoder.dem import dem_components, detector_layout, observable_detectors
from rtdecoder.kernels import parallel as KP
from rtdecoder.kernels import union_find as uf
from rtdecoder.windows import ParallelPlan, plan_parallel


class ParallelWindowDecoder:
    """Decode whole shots of ``dem`` in parallel windows.

    Args:
        dem: a graphlike DEM with detector time coordinates (``decompose_errors=True``).
        decoder: a registered decoder's name.
        window, commit: ``W`` and ``C`` in rounds (cores of ``C`` rounds, buffers and gaps of
            ``W - C``; ``ParallelPlan``).
        workers: ``k >= 1``.

    Raises:
        ConfigError: an unknown decoder, ``workers < 1``, or a DEM whose errors span more rounds
            than ``W - C``.
    """

    def __init__(self, dem: stim.DetectorErrorModel, decoder: str = "union_find", window: int = 0,
                 commit: int = 0, workers: int = 1):
        if workers < 1:
            raise ConfigError(f"parallel windows: workers {workers} must be at least 1")
        self.spec = decoders.get(decoder)
        self.layout = detector_layout(dem)
        comps = dem_components(dem)
        nd = self.layout.num_detectors
        self.keep = np.ones(nd, np.uint8) if self.spec.correlations else observable_detectors(comps, nd)
        self.plan: ParallelPlan = plan_parallel(self.layout, comps, window, commit, self.keep, self.spec.correlations)
        self.workers = workers
        plan, off = self.plan, self.layout.round_offsets
        self._layers = []
        for starts, c0, c1, graphs in ((plan.a_start, plan.core_start - plan.a_start, plan.core_end - plan.a_start,
                                        plan.a_graph),
                                       (plan.b_start, np.zeros_like(plan.b_start), np.zeros_like(plan.b_start),
                                        plan.b_graph)):
            self._layers.append((np.ascontiguousarray(off[starts], np.int64), np.ascontiguousarray(c0, np.int64),
                                 np.ascontiguousarray(c1, np.int64), np.ascontiguousarray(graphs, np.int64)))
        gs = plan.graphs
        self._gb = np.zeros((len(gs), 2), np.int64)
        self._gb[1:, 0] = np.cumsum([g.num_nodes for g in gs])[:-1]
        self._gb[1:, 1] = np.cumsum([g.num_edges for g in gs])[:-1]
        self._node_round = np.concatenate([g.node_round for g in gs]).astype(np.int64)
        self._edges = np.ascontiguousarray(np.concatenate(
            [np.stack([g.edge_u, g.edge_v, g.edge_obs.view(np.int64)], axis=1) for g in gs]).astype(np.int64))
        max_nodes = max(g.num_nodes for g in gs)
        self._up = np.zeros((2, nd), np.uint8)  # by shot parity (kernels.parallel.uf_worker)
        self._down = np.zeros((2, nd), np.uint8)
        if self.spec.call == "compiled":
            graphs = [uf.build_graph(g.num_nodes, g.edge_u, g.edge_v, g.edge_weight) for g in gs]
            self._ub = np.zeros((len(gs), 6), np.int64)
            pb = sb = eb = 0
            for i, (ptr, slot, eu, ev) in enumerate(graphs):
                self._ub[i] = (pb, len(ptr) - 1, sb, len(slot), eb, len(eu))
                pb, sb, eb = pb + len(ptr), sb + len(slot), eb + len(eu)
            self._ptr = np.concatenate([g[0] for g in graphs]).astype(np.int64)
            self._slot = np.concatenate([g[1] for g in graphs]).astype(np.int64)
            self._ueu = np.concatenate([g[2] for g in graphs]).astype(np.int32)
            self._uev = np.concatenate([g[3] for g in graphs]).astype(np.int32)
            length = max(uf.max_length(g) for g in graphs)
            self._ws = [uf.Workspace(max_nodes, max(g.num_edges for g in gs), length).arrays() for _ in range(workers)]
        else:
            self._compiled = [self.spec.compile(plan) for _ in range(workers)]
        self._scratch = [np.zeros(max_nodes, np.uint8) for _ in range(workers)]
        self._arrive = np.zeros(workers * KP.PAD, np.int64)
        self.decode_shot(np.zeros(nd, np.uint8))  # compile (or load) the kernels now

    @property
    def num_windows(self) -> tuple[int, int]:
        """``(A windows, B windows)`` per shot."""
        return len(self.plan.a_start), len(self.plan.b_start)

    def decode_shot(self, events: np.ndarray) -> int:
        """Decode one shot: uint8 ``(num_detectors,)`` detection events (0 or 1) in, the predicted
        observable flips out, as a mask (observable ``i`` at bit ``i``).

        Raises:
            ValueError: a window has no correction.
        """
        flips, failed = self._run(np.ascontiguousarray(events, np.uint8).reshape(1, -1), self.workers)
        if failed[0]:
            raise ValueError("a window of the parallel schedule has no correction")
        return int(np.bitwise_xor.reduce(flips[0]))

    def decode_shots(self, events: np.ndarray, workers: int | None = None) -> np.ndarray:
        """Every row of uint8 ``(shots, num_detectors)``; uint8 ``(shots, num_observables)``
        predictions (a shot with a window without a correction predicts zero). ``workers``: use
        the first ``1 .. k`` of the decoder's workers (default all ``k``)."""
        k = self.workers if workers is None else workers
        if not 1 <= k <= self.workers:
            raise ValueError(f"workers {k} must be in 1..{self.workers}")
        flips, failed = self._run(np.ascontiguousarray(events, np.uint8), k)
        mask = np.bitwise_xor.reduce(flips, axis=1)
        mask[failed != 0] = 0
        no = self.layout.num_observables
        return ((mask[:, None] >> np.arange(no, dtype=np.int64)) & 1).astype(np.uint8)

    def _run(self, events: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        shots = len(events)
        flips = np.zeros((shots, k), np.int64)
        failed = np.zeros(shots, np.uint8)
        taken = np.zeros((shots, 2 * KP.PAD), np.int64)  # per shot, the next A and the next B window
        self._arrive[:] = 0
        if self.spec.call == "compiled":
            def work(t: int) -> None:
                (alo, ac0, ac1, ag), (blo, bc0, bc1, bg) = self._layers
                KP.uf_worker(t, k, events, self.keep, flips, failed, self._arrive, taken, alo, ac0, ac1, ag, blo, bc0,
                             bc1, bg, self._ub, self._ptr, self._slot, self._ueu, self._uev, self._gb, self._node_round,
                             self._edges, self._up, self._down, self._scratch[t], *self._ws[t])
        else:
            barrier = threading.Barrier(k) if k > 1 else None

            def work(t: int) -> None:
                self._escape_worker(t, k, barrier, events, flips, failed)
        helpers = [threading.Thread(target=work, args=(t,), name=f"rtdecoder-pw{t}") for t in range(1, k)]
        for th in helpers:
            th.start()
        work(0)
        for th in helpers:
            th.join()
        return flips, failed

    def _escape_worker(self, t: int, k: int, barrier, events, flips, failed) -> None:
        """A decoder through its ``decode_window`` (Python per window): the same schedule, with a
        ``threading.Barrier`` between layers."""
        up, down = self._up[0], self._down[0]
        for s, syn in enumerate(events):
            f = 0
            for layer in (KP.LAYER_A, KP.LAYER_B):
                wlo, c0, c1, wg = self._layers[layer]
                for j in range(t, len(wlo), k):
                    g = int(wg[j])
                    lo = int(wlo[j])
                    hi = lo + self.plan.graphs[g].num_nodes
                    ev = syn[lo:hi] & self.keep[lo:hi]
                    if layer == KP.LAYER_B:
                        ev ^= up[lo:hi] ^ down[lo:hi]
                        up[lo:hi] = 0
                        down[lo:hi] = 0
                    try:
                        chosen, n = self._compiled[t].decode_window(g, ev)
                    except ValueError:
                        failed[s] = 1
                        continue
                    f ^= int(KP.commit_edges(layer, chosen, n, self._edges, self._node_round,
                                             self._gb[g, 0], self._gb[g, 1], c0[j], c1[j], lo, up, down))
                if barrier is not None:
                    barrier.wait()
            flips[s, t] = f

    def close(self) -> None:
        """Nothing to release: the workers are threads of each ``decode_shots`` call (kept for
        ``with`` blocks)."""

    def __enter__(self) -> "ParallelWindowDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
