"""Window decoders as plug-ins: one registry that the configuration, the command line, the wire
protocol's decoder ids, the data plane, ``rtdecoder decode``, sinter, ``rtdecoder doctor`` and the
metrics all read.

A decoder is one module and one call of ``register``. Its ``DecoderSpec`` gives its name, its
wire id (HELLO_REPLY, docs/wire-protocol.md §4.2), its description (sinter's two phases: a
picklable description whose ``compile(plan)`` builds, allocates and warms up everything for a
stream's window plan, ``rtdecoder.windows.WindowPlan``, and returns an object whose
``decode_window`` only decodes), and how the data plane calls the compiled decoder
(``rtdecoder.dataplane``):

- ``"escape"``: ``decode_window(graph, events)`` in Python, through one object-mode call per
  window. Any decoder can be called this way.
- ``"compiled"``: the union-find kernel in the compiled loop, on the CSR graphs the compiled
  decoder exposes as ``graphs`` (``rtdecoder.kernels.union_find.build_graph``), and on the GPU
  slot of a worker where the GPU backend runs (``gpu=True``).

The built-in decoders (``matching``, ``union_find``, ``matching_correlated``) are registered on first use, with the
plug-ins named by the ``rtdecoder.plugins`` entry-point group of installed packages and by the
``RTDECODER_PLUGINS`` environment variable (``rtdecoder.plugins``): importing a plug-in module
registers what it holds.

>>> get("union_find").wire_id, get("union_find").call
(1, 'compiled')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from rtdecoder.errors import ConfigError
from rtdecoder.kernels.tables import CALL_COMPILED, CALL_ESCAPE, MAX_DECODERS

CALLS = {"escape": CALL_ESCAPE, "compiled": CALL_COMPILED}
"""How the data plane calls a compiled decoder, by the name a ``DecoderSpec`` gives."""


class CompiledWindowDecoder(Protocol):
    """What ``WindowDecoder.compile`` returns."""

    def decode_window(self, graph: int, events: np.ndarray) -> tuple[np.ndarray, int]:
        """Decode one window.

        Args:
            graph: index into the plan's ``graphs``.
            events: uint8 array of shape ``(num_nodes,)``, the window's detection events (0 or 1)
                with the carry already applied.

        Returns:
            ``(chosen, n)``: the first ``n`` entries of the int64 array ``chosen`` are the chosen
            edges (indices into the graph's edge arrays, ``rtdecoder.windows.WindowGraph``; the
            commit rule needs edges, not observable flips). The array may be reused by the next
            call.

        Raises:
            ValueError: when no set of edges explains the detection events.
        """
        ...


class WindowDecoder(Protocol):
    """A picklable decoder description."""

    def compile(self, plan) -> CompiledWindowDecoder: ...


@dataclass(frozen=True)
class DecoderSpec:
    """One registered decoder.

    Attributes:
        name: its name in config files, on the command line and in metric labels (letters,
            digits and ``_``).
        wire_id: its id in HELLO_REPLY (§4.2), ``0 .. MAX_DECODERS - 1``, unique.
        description: a callable with no arguments that returns the decoder's picklable
            ``WindowDecoder`` (usually its frozen dataclass).
        call: ``"escape"`` or ``"compiled"`` (see the module docstring).
        summary: one line for ``rtdecoder doctor`` and ``--help``.
        gpu: whether the GPU backend can decode its windows (``call == "compiled"`` only).
        decode_batch: optional fast path for ``rtdecoder decode``: ``f(graph, events, backend,
            chunk) -> (obs, failed)`` with ``graph`` a ``WindowGraph`` of whole shots, ``events``
            uint8 ``(shots, num_nodes)``, ``obs`` int64 ``(shots,)`` observable masks and
            ``failed`` bool ``(shots,)``; without it each shot goes through ``decode_window``.
        correlations: the decoder reads the DEM's hyperedge correlations: its streams keep every
            detector (no ``observable_detectors`` filter: the other basis's detection events
            are what reweights this one's edges) and their window graphs carry ``errors_dem``
            (``rtdecoder.windows.plan_windows``).
        fast: the name of a registered escape decoder that the compiled decoder's
            ``decode_window_fast(graph, events)`` equals (same contract as ``decode_window``,
            same graphs, less time): the middle level of the deadline's fallback chain
            (``rtdecoder.dataplane.process_native``). Empty: none.
        fallback: this compiled decoder is the last level of every deadline's fallback chain
            (``call == "compiled"``; at most one registered decoder has it).
        heralds: how the decoder uses herald detectors (``rtdecoder.heralds``), for the start-up
            log, e.g. ``"erased by union-find"``. Empty: it ignores them.
        cost_us: its CPU time per detector-round, µs, as ``bench/decode_cost.py`` measures it
            (``rtdecoder shard`` costs streams by it). 0: not measured (``shard`` then takes the
            costliest registered decoder's).
    """

    name: str
    wire_id: int
    description: Callable[[], WindowDecoder]
    call: str = "escape"
    summary: str = ""
    gpu: bool = False
    decode_batch: Callable | None = field(default=None, compare=False)
    correlations: bool = False
    fast: str = ""
    fallback: bool = False
    heralds: str = ""
    cost_us: float = 0.0

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"decoder name {self.name!r} must be letters, digits and '_'")
        if not 0 <= self.wire_id < MAX_DECODERS:
            raise ValueError(f"decoder {self.name!r}: wire id {self.wire_id} must be in 0..{MAX_DECODERS - 1}")
        if self.call not in CALLS:
            raise ValueError(f"decoder {self.name!r}: call {self.call!r} must be one of {', '.join(CALLS)}")
        if self.gpu and self.call != "compiled":
            raise ValueError(f"decoder {self.name!r}: only a compiled decoder runs on the GPU backend")
        if self.fast and self.call != "escape":
            raise ValueError(f"decoder {self.name!r}: only an escape decoder has a fast mode")
        if self.fallback and self.call != "compiled":
            raise ValueError(f"decoder {self.name!r}: only a compiled decoder can be the deadline's fallback")
        if self.cost_us < 0:
            raise ValueError(f"decoder {self.name!r}: cost_us {self.cost_us} must not be negative")

    @property
    def call_id(self) -> int:
        """The stream table's ``C_CALL`` value."""
        return CALLS[self.call]

    def compile(self, plan) -> CompiledWindowDecoder:
        """The description's ``compile(plan)``."""
        return self.description().compile(plan)


_REGISTRY: dict[str, DecoderSpec] = {}


def register(spec: DecoderSpec) -> DecoderSpec:
    """Add ``spec`` to the registry (a plug-in module calls this when it is imported).

    Raises:
        ValueError: its name or wire id is taken by another decoder.
    """
    for other in _REGISTRY.values():
        if other.name == spec.name and other != spec:
            raise ValueError(f"decoder name {spec.name!r} is already registered")
        if other.wire_id == spec.wire_id and other.name != spec.name:
            raise ValueError(f"decoder {spec.name!r}: wire id {spec.wire_id} is taken by {other.name!r}")
        if spec.fallback and other.fallback and other.name != spec.name:
            raise ValueError(f"decoder {spec.name!r}: {other.name!r} is already the deadline's fallback")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a decoder (tests that register a toy decoder clean up with this)."""
    _REGISTRY.pop(name, None)


def _loaded() -> dict[str, DecoderSpec]:
    from rtdecoder.plugins import load_plugins

    load_plugins()
    return _REGISTRY


def names() -> tuple[str, ...]:
    """The registered decoders' names, by wire id."""
    return tuple(s.name for s in specs())


def specs() -> tuple[DecoderSpec, ...]:
    """The registered decoders, by wire id."""
    return tuple(sorted(_loaded().values(), key=lambda s: s.wire_id))


def get(name: str) -> DecoderSpec:
    """The decoder called ``name``.

    Raises:
        ConfigError: no decoder has that name (the message lists those that do).
    """
    try:
        return _loaded()[name]
    except KeyError:
        raise ConfigError(f"unknown decoder {name!r}: use one of {', '.join(names())} (a plug-in decoder "
                          "registers itself when its module is imported: see RTDECODER_PLUGINS)") from None


def fallback() -> DecoderSpec:
    """The compiled decoder every deadline falls back to (``DecoderSpec.fallback``).

    Raises:
        ConfigError: none is registered.
    """
    spec = next((s for s in specs() if s.fallback), None)
    if spec is None:
        raise ConfigError("no registered decoder is the deadline's fallback (DecoderSpec.fallback)")
    return spec


def by_wire_id(wire_id: int) -> DecoderSpec | None:
    """The decoder with HELLO_REPLY id ``wire_id``, or None."""
    return next((s for s in _loaded().values() if s.wire_id == wire_id), None)
