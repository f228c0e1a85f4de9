"""``union_find``: weighted union-find with peeling (``rtdecoder.kernels.union_find``;
Delfosse and Nickerson, arXiv:1709.06218; Huang, Newman and Brown, arXiv:2004.04693) on the same
window graphs as ``matching``, edge weights ``ln((1-p)/p)`` quantised to integers. The data
plane calls the kernel in the compiled loop, or on the GPU backend's persistent kernel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtdecoder.decoders import DecoderSpec, register


@dataclass(frozen=True)
class UnionFindDecoder:
    """The picklable description: ``compile(plan)`` returns a ``CompiledUnionFind``."""

    def compile(self, plan) -> "CompiledUnionFind":
        return CompiledUnionFind(plan)


class CompiledUnionFind:
    """Union-find on the plan's window graphs; one workspace shared by all of them.

    Attributes:
        graphs: per window graph, the kernel's CSR arrays (``union_find.build_graph``); the
            engine concatenates them for the compiled loop.
        heralds: per window graph, its heralds as the kernel takes them (``hidx, hptr, hedge``:
            ``rtdecoder.heralds.kernel_arrays``; ``union_find.NO_HERALDS`` for none).
        workspace: the kernel's scratch arrays (``Workspace.arrays()``), sized for the largest graph.
        chosen: the workspace's int64 output array (the chosen edges).
    """

    def __init__(self, plan):
        from rtdecoder.kernels import union_find as uf

        from rtdecoder.heralds import kernel_arrays

        self._decode = uf.decode
        self.graphs = [uf.build_graph(g.num_nodes, g.edge_u, g.edge_v, g.edge_weight) for g in plan.graphs]
        self.heralds = [kernel_arrays(g.heralds) if g.heralds is not None else uf.NO_HERALDS for g in plan.graphs]
        ws = uf.Workspace(max(g.num_nodes for g in plan.graphs), max(g.num_edges for g in plan.graphs),
                          max(uf.max_length(g) for g in self.graphs))
        self.workspace = ws.arrays()
        self.chosen = ws.chosen
        for i, g in enumerate(plan.graphs):  # compile (or load) the kernel now, not on the first packet
            self.decode_window(i, np.zeros(g.num_nodes, np.uint8))

    def decode_window(self, graph: int, events: np.ndarray) -> tuple[np.ndarray, int]:
        """See ``rtdecoder.decoders.CompiledWindowDecoder``."""
        n = self._decode(*self.graphs[graph], events, *self.heralds[graph], *self.workspace)
        if n < 0:
            raise ValueError(f"union-find found no correction for window graph {graph}: "
                             "a component with an odd number of detection events and no boundary")
        return self.chosen, n


def _decode_batch(graph, events: np.ndarray, backend: str, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """``rtdecoder decode``'s fast path: every shot through the kernel in one compiled call
    (``union_find.decode_batch``), or on the GPU (``rtdecoder.gpu.BatchDecoder``, a chunk of
    shots per launch)."""
    from rtdecoder.kernels import union_find as uf

    emask = graph.edge_obs.view(np.int64)
    g = uf.build_graph(graph.num_nodes, graph.edge_u, graph.edge_v, graph.edge_weight)
    shots = len(events)
    obs = np.zeros(shots, np.int64)
    counts = np.zeros(shots, np.int64)
    if backend == "gpu":
        from rtdecoder.gpu import BatchDecoder

        bd = BatchDecoder.for_graph(g, emask)
        nd = events.shape[1]
        for a in range(0, shots, chunk):
            b = min(shots, a + chunk)
            c, o, _ = bd.decode(np.zeros(b - a, np.int64), np.arange(b - a, dtype=np.int64) * nd, events[a:b].ravel())
            counts[a:b], obs[a:b] = c, o
    else:
        from rtdecoder.heralds import kernel_arrays

        ws = uf.Workspace(graph.num_nodes, graph.num_edges, uf.max_length(g)).arrays()
        heralds = kernel_arrays(graph.heralds) if graph.heralds is not None else uf.NO_HERALDS
        uf.decode_batch(*g, emask, events, *heralds, counts, obs, *ws)
    return obs, counts < 0


SPEC = register(DecoderSpec(
    name="union_find", wire_id=1, description=UnionFindDecoder, call="compiled", gpu=True,
    decode_batch=_decode_batch, fallback=True, heralds="erased by union-find", cost_us=0.00947,
    summary="weighted union-find with peeling, compiled into the data plane (CPU or GPU)"))
