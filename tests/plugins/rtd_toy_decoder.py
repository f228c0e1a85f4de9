"""A toy decoder plug-in, outside the package: registers ``toy`` (wire id 9) through the registry
alone. It decodes a window with PyMatching on the window graph and maps the matched node pairs
to edges through a dictionary of its own (the built-in ``matching`` uses a compiled binary
search), so its answers equal ``matching``'s; it counts its calls, so a test can tell that it,
and not a built-in decoder, ran."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtdecoder.decoders import DecoderSpec, register

CALLS = [0]


@dataclass(frozen=True)
class ToyDecoder:
    def compile(self, plan) -> "CompiledToy":
        return CompiledToy(plan)


class CompiledToy:
    def __init__(self, plan):
        self.graphs = plan.graphs
        self.lookup = []
        for g in plan.graphs:
            table = {}
            for e, (u, v) in enumerate(zip(g.edge_u.tolist(), g.edge_v.tolist())):
                table.setdefault((min(u, v), max(u, v)) if v >= 0 else (-1, u), e)
            self.lookup.append(table)
        self.chosen = np.zeros(max(g.num_edges for g in plan.graphs) + 1, np.int64)

    def decode_window(self, graph: int, events: np.ndarray) -> tuple[np.ndarray, int]:
        CALLS[0] += 1
        g, table = self.graphs[graph], self.lookup[graph]
        pairs = g.matching.decode_to_edges_array(events)
        for i, (a, b) in enumerate(pairs.tolist()):
            key = (-1, max(a, b)) if min(a, b) < 0 else (min(a, b), max(a, b))
            self.chosen[i] = table[key]
        return self.chosen, len(pairs)


SPEC = register(DecoderSpec(name="toy", wire_id=9, description=ToyDecoder, call="escape",
                            summary="a test's toy decoder (PyMatching through a lookup table)"))
