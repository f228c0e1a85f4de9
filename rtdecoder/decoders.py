"""Window decoders: picklable descriptions that compile, for a stream's window plan, into
objects that decode windows.

The two phases follow sinter's ``Decoder`` / ``CompiledDecoder`` split: ``compile`` does every
allocation, graph build and warm-up; ``decode_window`` then only decodes.

A compiled decoder returns the *edges* it chose (indices into the window graph's edge arrays,
``rtdecoder.windows.WindowGraph``), not observable flips: the commit/carry rule
(``rtdecoder.kernels.stream.commit_window``) needs to know which edges lie in the commit region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rtdecoder.kernels.stream import edges_of_pairs
from rtdecoder.windows import WindowPlan


class CompiledWindowDecoder(Protocol):
    name: str

    def decode_window(self, graph: int, events: np.ndarray) -> tuple[np.ndarray, int]:
        """Decode one window.

        Args:
            graph: index into the plan's ``graphs``.
            events: uint8 array of shape ``(num_nodes,)``, the window's detection events (0 or 1)
                with the carry already applied.

        Returns:
            ``(chosen, n)``: the first ``n`` entries of the int64 array ``chosen`` are the chosen
            edges. The array may be reused by the next call.

        Raises:
            ValueError: when no set of edges explains the detection events (a window graph
                with a component that has no boundary and an odd number of detection events).
        """
        ...


class WindowDecoder(Protocol):
    name: str

    def compile(self, plan: WindowPlan) -> CompiledWindowDecoder: ...


@dataclass(frozen=True)
class MatchingDecoder:
    """Minimum-weight perfect matching with PyMatching's sparse blossom (Higgott and Gidney,
    arXiv:2303.15933) on each window graph: the accuracy reference."""

    name: str = "matching"

    def compile(self, plan: WindowPlan) -> "CompiledMatching":
        return CompiledMatching(plan)


class CompiledMatching:
    """PyMatching on the plan's window graphs (built in ``rtdecoder.windows``)."""

    name = "matching"

    def __init__(self, plan: WindowPlan):
        self.graphs = plan.graphs
        self._matchings = [g.matching for g in plan.graphs]
        self._keys = [g.edge_keys for g in plan.graphs]
        self._nodes = [g.num_nodes for g in plan.graphs]
        # A matching uses each edge at most once, so no graph's answer is longer than its edge list.
        self._chosen = np.zeros(max(g.num_edges for g in plan.graphs) + 1, np.int64)
        for i, g in enumerate(plan.graphs):  # warm up PyMatching's search state and the kernel
            self.decode_window(i, np.zeros(g.num_nodes, np.uint8))

    def decode_window(self, graph: int, events: np.ndarray) -> tuple[np.ndarray, int]:
        pairs = self._matchings[graph].decode_to_edges_array(events)
        n = edges_of_pairs(self._keys[graph], self._nodes[graph], pairs, self._chosen)
        if n < 0:
            raise ValueError(f"PyMatching returned a node pair that is not an edge of window graph {graph}")
        return self._chosen, n


@dataclass(frozen=True)
class UnionFindDecoder:
    """Weighted union-find with peeling (``rtdecoder.kernels.union_find``) on each window graph:
    the same graphs as ``MatchingDecoder``, edge weights ``ln((1-p)/p)`` quantised to integers."""

    name: str = "union_find"

    def compile(self, plan: WindowPlan) -> "CompiledUnionFind":
        return CompiledUnionFind(plan)


class CompiledUnionFind:
    """Union-find on the plan's window graphs; one workspace shared by all of them.

    Attributes:
        graphs: per window graph, the kernel's arrays (``rtdecoder.kernels.union_find.build_graph``).
        workspace: the kernel's scratch arrays (``Workspace.arrays()``), sized for the largest graph.
        chosen: the workspace's int64 output array (the chosen edges).
    """

    name = "union_find"

    def __init__(self, plan: WindowPlan):
        from rtdecoder.kernels import union_find as uf

        self._decode = uf.decode
        self.graphs = [uf.build_graph(g.num_nodes, g.edge_u, g.edge_v, g.edge_weight) for g in plan.graphs]
        ws = uf.Workspace(max(g.num_nodes for g in plan.graphs), max(g.num_edges for g in plan.graphs),
                          max(uf.max_length(g) for g in self.graphs))
        self.workspace = ws.arrays()
        self.chosen = ws.chosen
        for i, g in enumerate(plan.graphs):  # compile (or load) the kernel now, not on the first packet
            self.decode_window(i, np.zeros(g.num_nodes, np.uint8))

    def decode_window(self, graph: int, events: np.ndarray) -> tuple[np.ndarray, int]:
        n = self._decode(*self.graphs[graph], events, *self.workspace)
        if n < 0:
            raise ValueError(f"union-find found no correction for window graph {graph}: "
                             "a component with an odd number of detection events and no boundary")
        return self.chosen, n


DECODERS = {"matching": MatchingDecoder, "union_find": UnionFindDecoder}


def make_decoder(name: str) -> WindowDecoder:
    """The decoder description called ``name``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    try:
        return DECODERS[name]()
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; known decoders: {', '.join(DECODERS)}") from None
