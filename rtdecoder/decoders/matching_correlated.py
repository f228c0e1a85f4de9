"""``matching_correlated``: PyMatching's two-pass correlated matching (PyMatching 2.3+,
``enable_correlations=True``) on each window.

A Y error on a surface code's data qubit flips detectors of both bases; decomposed into graphlike
components (stim's ``decompose_errors=True``) it is an X edge and a Z edge that happen together.
Plain matching treats them as independent. Correlated matching decodes once, lowers the weights
of the edges correlated with those the first matching used, and decodes again; it is the method
of Google's real-time decoding (Acharya et al., arXiv:2408.13687, "Quantum error correction below
the surface code threshold", Methods) and PyMatching's ``decode(..., enable_correlations=True)``.

Each window graph's errors come from ``WindowGraph.errors_dem`` (``rtdecoder.windows``): the
stream DEM's errors with their components kept together. An error that straddles the window
keeps the components the window holds (committed rounds' parts are gone; parts past the window's
top are edges to its boundary); its correlation with the parts outside is lost. The stream keeps
every detector (``DecoderSpec.correlations``). Its fast mode (the deadline's middle level) is
plain matching on the same window graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymatching

from rtdecoder.decoders import DecoderSpec, register
from rtdecoder.kernels.window import edges_of_pairs


@dataclass(frozen=True)
class CorrelatedMatchingDecoder:
    """The picklable description: ``compile(plan)`` returns a ``CompiledCorrelatedMatching``."""

    def compile(self, plan) -> "CompiledCorrelatedMatching":
        return CompiledCorrelatedMatching(plan)


def correlated_matching(graph) -> pymatching.Matching:
    """PyMatching's correlated matching graph of a ``WindowGraph`` built with correlations.

    Raises:
        ValueError: the graph has no ``errors_dem`` (its plan was built without correlations).
    """
    if graph.errors_dem is None:
        raise ValueError("the window graph was built without correlations (plan_windows(..., correlations=True))")
    return pymatching.Matching.from_detector_error_model(graph.errors_dem, enable_correlations=True)


class CompiledCorrelatedMatching:
    """Correlated PyMatching on the plan's window graphs; node pairs mapped to the window graph's
    edge indices (``rtdecoder.kernels.window.edges_of_pairs``)."""

    def __init__(self, plan):
        self._correlated = [correlated_matching(g) for g in plan.graphs]
        self._plain = [g.matching for g in plan.graphs]
        self._keys = [g.edge_keys for g in plan.graphs]
        self._nodes = [g.num_nodes for g in plan.graphs]
        self._chosen = np.zeros(max(g.num_edges for g in plan.graphs) + 1, np.int64)
        for i, g in enumerate(plan.graphs):  # warm up both searches
            self.decode_window(i, np.zeros(g.num_nodes, np.uint8))
            self.decode_window_fast(i, np.zeros(g.num_nodes, np.uint8))

    def _edges(self, graph: int, pairs: np.ndarray) -> tuple[np.ndarray, int]:
        n = edges_of_pairs(self._keys[graph], self._nodes[graph], pairs, self._chosen)
        if n < 0:
            raise ValueError(f"PyMatching returned a node pair that is not an edge of window graph {graph}")
        return self._chosen, n

    def decode_window(self, graph: int, events: np.ndarray) -> tuple[np.ndarray, int]:
        """See ``rtdecoder.decoders.CompiledWindowDecoder``: correlated matching."""
        return self._edges(graph, self._correlated[graph].decode_to_edges_array(events, enable_correlations=True))

    def decode_window_fast(self, graph: int, events: np.ndarray) -> tuple[np.ndarray, int]:
        """The same window by plain matching (the fallback chain's middle level)."""
        return self._edges(graph, self._plain[graph].decode_to_edges_array(events))


def _decode_batch(graph, events: np.ndarray, backend: str, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """``rtdecoder decode``'s fast path: PyMatching's correlated ``decode_batch`` on the whole shot."""
    flips = correlated_matching(graph).decode_batch(events, enable_correlations=True).astype(np.int64)
    obs = (flips << np.arange(flips.shape[1], dtype=np.int64)).sum(axis=1) if flips.size else \
        np.zeros(len(events), np.int64)
    return obs, np.zeros(len(events), bool)


SPEC = register(DecoderSpec(
    name="matching_correlated", wire_id=2, description=CorrelatedMatchingDecoder, call="escape",
    decode_batch=_decode_batch, correlations=True, fast="matching", cost_us=0.08261,
    heralds="reweighted by correlated matching",
    summary="two-pass correlated matching (PyMatching enable_correlations), through the escape"))
