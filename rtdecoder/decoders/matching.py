"""``matching``: minimum-weight perfect matching with PyMatching's sparse blossom (Higgott and
Gidney, arXiv:2303.15933) on each window graph, the accuracy reference. PyMatching is C++ behind
a Python API, so the data plane calls it through its escape."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtdecoder.decoders import DecoderSpec, register
from rtdecoder.kernels.window import edges_of_pairs


@dataclass(frozen=True)
class MatchingDecoder:
    """The picklable description: ``compile(plan)`` returns a ``CompiledMatching``."""

    def compile(self, plan) -> "CompiledMatching":
        return CompiledMatching(plan)


class CompiledMatching:
    """PyMatching on the plan's window graphs (each ``WindowGraph.matching``, built in
    ``rtdecoder.windows``); its node pairs mapped to edge indices by
    ``rtdecoder.kernels.window.edges_of_pairs``."""

    def __init__(self, plan):
        self._matchings = [g.matching for g in plan.graphs]
        self._keys = [g.edge_keys for g in plan.graphs]
        self._nodes = [g.num_nodes for g in plan.graphs]
        # A matching uses each edge at most once, so no graph's answer is longer than its edge list.
        self._chosen = np.zeros(max(g.num_edges for g in plan.graphs) + 1, np.int64)
        for i, g in enumerate(plan.graphs):  # warm up PyMatching's search state and the kernel
            self.decode_window(i, np.zeros(g.num_nodes, np.uint8))

    def decode_window(self, graph: int, events: np.ndarray) -> tuple[np.ndarray, int]:
        """See ``rtdecoder.decoders.CompiledWindowDecoder``."""
        pairs = self._matchings[graph].decode_to_edges_array(events)
        n = edges_of_pairs(self._keys[graph], self._nodes[graph], pairs, self._chosen)
        if n < 0:
            raise ValueError(f"PyMatching returned a node pair that is not an edge of window graph {graph}")
        return self._chosen, n


def _decode_batch(graph, events: np.ndarray, backend: str, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """``rtdecoder decode``'s fast path: PyMatching's ``decode_batch`` on the whole-shot graph."""
    flips = graph.matching.decode_batch(events).astype(np.int64)
    obs = (flips << np.arange(flips.shape[1], dtype=np.int64)).sum(axis=1) if flips.size else \
        np.zeros(len(events), np.int64)
    return obs, np.zeros(len(events), bool)


SPEC = register(DecoderSpec(
    name="matching", wire_id=0, description=MatchingDecoder, call="escape", decode_batch=_decode_batch, cost_us=0.02337,
    summary="minimum-weight perfect matching (PyMatching sparse blossom), through the escape"))
