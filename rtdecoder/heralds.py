"""Heralded errors (erasures, leakage): the events that tell the decoder where an error happened.

A *herald* is the measurement record that stim's ``HERALDED_ERASE(p)`` and
``HERALDED_PAULI_CHANNEL_1(pI, pX, pY, pZ)`` write for each target (1: the error happened, with
the Pauli drawn from the instruction's distribution; stim's gate reference). rtdecoder carries a
herald as a *herald detector*: a ``DETECTOR`` on that record alone, declared right after the
instruction with the round's time coordinate. Herald detectors are ordinary detectors on the wire
(their bits ride in the SYNDROME blocks of their round, docs/wire-protocol.md §5.2), in a DEM
(stim writes each heralded mechanism as ``error(q) H ^ A`` with ``H`` the herald detector and
``A`` what the Pauli flips) and in the detector layout, so nothing new is needed to send them,
to sample them or to turn measurements into them.

What the decoders make of them (``HeraldMap``): given that herald detector ``H`` fired, the
graphlike components ``A`` that share a DEM error with ``H`` have the conditional probability
``P(A | H) = Σ q(H ^ A ...) / Σ q(H ...)`` (one half for each Pauli component of an erasure).

- Union-find erases them: edges whose conditional probability is at least ``ERASE_AT`` grow
  first, complete before any other (Delfosse and Zémor, arXiv:1703.01517), in the same kernel
  (``rtdecoder.kernels.union_find.decode``'s ``hidx, hptr, hedge``: ``kernel_arrays``); the
  herald detectors themselves are not defects.
- Correlated matching reweights them: PyMatching's two-pass correlated matching
  (``enable_correlations``) matches each fired herald detector to the boundary through its own
  component in the first pass, then sets the weights of the components correlated with it from
  their conditional probabilities for the second pass, per shot, undoing them after. That is
  PyMatching's per-shot reweighting; plain ``matching`` sees the herald detectors as isolated
  nodes and gains nothing from them.

``with_erasure(circuit, rate)`` adds heralded erasures to one of stim's generated memory circuits
(after each noisy gate), with their herald detectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import stim

from rtdecoder.errors import ConfigError

HERALDED = ("HERALDED_ERASE", "HERALDED_PAULI_CHANNEL_1")
ERASE_AT = 0.25
"""Union-find erases an edge whose conditional probability, given a herald, is at least this
(an erasure's components: one half). Lower ones keep their lengths: union-find's graph has fixed
edge lengths, so a partial reweighting has no place in it."""


def _data_qubits(flat: list[stim.CircuitInstruction]) -> list[int]:
    """The qubits of the circuit's last measurement instruction (a memory experiment's data)."""
    for inst in reversed(flat):
        if stim.gate_data(inst.name).produces_measurements and inst.name != "MPAD":
            return [t.value for t in inst.targets_copy() if t.is_qubit_target]
    raise ConfigError("the circuit measures nothing: no data qubits to erase")


def _records(inst: stim.CircuitInstruction) -> int:
    """Measurement records one (flattened) instruction writes."""
    if not stim.gate_data(inst.name).produces_measurements:
        return 0
    return stim.Circuit(str(inst)).num_measurements


def with_erasure(circuit: stim.Circuit, rate: float, everywhere: bool = True) -> stim.Circuit:
    """``circuit`` with ``HERALDED_ERASE(rate)`` where its gates' noise is, and a herald detector for
    each target (coordinates: the qubit's, then the round's time: one after the last detector
    declared before it, 0 before any).

    Where: after every two-qubit gate's ``DEPOLARIZE2`` (``after_clifford_depolarization``), on
    both qubits, and after every ``DEPOLARIZE1``: the erasure-conversion model, in which a
    fraction of each gate's errors is heralded (Wu, Kolkowitz, Puri and Thompson,
    arXiv:2201.03540). With ``everywhere`` false, only the data qubits' ``DEPOLARIZE1`` at the
    start of each round (``before_round_data_depolarization``, right after a ``TICK``). Works on
    the flattened circuit (``REPEAT`` blocks unrolled), rewriting every ``rec[-k]`` lookback for
    the records the heralds add.

    Raises:
        ConfigError: ``rate`` outside ``(0, 1)``, or no place found (a circuit without stim's
            generated noise: no ``DEPOLARIZE2``, nor, with ``everywhere`` false, a round start).
    """
    if not 0.0 < rate < 1.0:
        raise ConfigError(f"erasure rate {rate} must be in (0, 1)")
    flat = list(circuit.flattened())
    data = set(_data_qubits(flat))
    coords = circuit.get_final_qubit_coordinates()
    out = stim.Circuit()
    new_of_old: list[int] = []  # old absolute record index -> new
    n_new = 0
    last_t = None  # the time coordinate of the last detector declared (flattened: absolute)
    inserted = 0
    prev = None
    for inst in flat:
        name = inst.name
        if name in ("DETECTOR", "OBSERVABLE_INCLUDE"):
            n_old = len(new_of_old)
            targets = []
            for t in inst.targets_copy():
                if t.is_measurement_record_target:
                    k = n_new - new_of_old[n_old + t.value]
                    targets.append(stim.target_rec(-k))
                else:
                    targets.append(t)
            out.append(name, targets, inst.gate_args_copy())
            if name == "DETECTOR" and inst.gate_args_copy():
                last_t = inst.gate_args_copy()[-1]
        else:
            out.append(inst)
            for _ in range(_records(inst)):
                new_of_old.append(n_new)
                n_new += 1
        qs = [t.value for t in inst.targets_copy() if t.is_qubit_target] if name in ("DEPOLARIZE1", "DEPOLARIZE2") \
            else []
        if qs and (name == "DEPOLARIZE2" or everywhere or (prev == "TICK" and set(qs) <= data)):
            out.append("HERALDED_ERASE", qs, [rate])
            for i, q in enumerate(qs):
                xy = list(coords.get(q, [0.0, 0.0]))[:2]
                out.append("DETECTOR", [stim.target_rec(-(len(qs) - i))], xy + [0.0 if last_t is None else last_t + 1])
            n_new += len(qs)
            inserted += 1
        prev = name
    if inserted == 0:
        raise ConfigError("no round start found to erase at: with_erasure takes stim's generated memory circuits "
                          "(with before_round_data_depolarization > 0); put HERALDED_ERASE and its DETECTORs in "
                          "your own circuit instead")
    return out


def herald_detectors(circuit: stim.Circuit) -> np.ndarray:
    """bool ``(num_detectors,)``: the detectors that are heralds (every record they name was
    written by a ``HERALDED_*`` instruction)."""
    out = np.zeros(circuit.num_detectors, bool)
    kinds: list[bool] = []  # per measurement record: written by a heralded instruction
    d = 0
    for inst in circuit.flattened():
        name = inst.name
        if name == "DETECTOR":
            recs = [t.value for t in inst.targets_copy() if t.is_measurement_record_target]
            out[d] = bool(recs) and all(kinds[len(kinds) + r] for r in recs)
            d += 1
        else:
            kinds += [name in HERALDED] * _records(inst)
    return out


@dataclass
class HeraldMap:
    """For one window graph: which of its edges each herald detector's event makes likely.

    Attributes:
        is_herald: uint8 ``(num_nodes,)``, 1 at herald detectors.
        ptr: int64 ``(num_nodes + 1,)``; node ``h``'s correlated edges are
            ``edge[ptr[h]:ptr[h + 1]]`` with conditional probabilities ``prob[...]``.
        edge: int32, edge indices of the window graph (``rtdecoder.windows.WindowGraph``).
        prob: float64, ``P(edge | herald)``.
        erase_ptr, erase_edge: the same restricted to ``prob >= ERASE_AT`` (union-find's
            erasures), int64 / int32.
    """

    is_herald: np.ndarray
    ptr: np.ndarray
    edge: np.ndarray
    prob: np.ndarray
    erase_ptr: np.ndarray
    erase_edge: np.ndarray

    @property
    def any(self) -> bool:
        return bool(self.is_herald.any())


def herald_map(graph, u: np.ndarray, v: np.ndarray, p: np.ndarray, err: np.ndarray, is_herald: np.ndarray) -> HeraldMap:
    """The ``HeraldMap`` of a window graph from its components. A conditional probability above
    1/2 (a Pauli channel whose herald makes a flip more likely than not) is taken as 1/2: a
    negative weight has no place in either decoder.

    Args:
        graph: the ``WindowGraph`` (its ``num_nodes`` and ``edge_key``/``edge_keys``).
        u, v: int64 ``(k,)``, each component's nodes in the window (``v == -1``: boundary).
        p: float64 ``(k,)``, the probability of the DEM error each component came from.
        err: int64 ``(k,)``, that error's index (components of one error share it).
        is_herald: bool ``(num_nodes,)``.
    """
    n = graph.num_nodes
    lists: list[dict[int, float]] = [dict() for _ in range(n)]
    total = np.zeros(n)
    # the errors holding a herald's own component (H alone, to the boundary)
    own = (v < 0) & (u >= 0)
    herald_of_err: dict[int, int] = {}
    for i in np.flatnonzero(own):
        h = int(u[i])
        if is_herald[h]:
            herald_of_err[int(err[i])] = h
    seen: set[int] = set()
    for i in range(len(u)):
        e = int(err[i])
        h = herald_of_err.get(e)
        if h is None:
            continue
        if e not in seen:
            seen.add(e)
            total[h] += p[i]
        if v[i] < 0 and u[i] == h:
            continue
        key = graph.edge_key(np.array([u[i]]), np.array([v[i]]))[0]
        j = int(np.searchsorted(graph.edge_keys, key))
        if j < len(graph.edge_keys) and graph.edge_keys[j] == key:
            lists[h][j] = lists[h].get(j, 0.0) + float(p[i])
    ptr = np.zeros(n + 1, np.int64)
    eptr = np.zeros(n + 1, np.int64)
    edges, probs, erase = [], [], []
    for h in range(n):
        for j, q in sorted(lists[h].items()):
            c = min(q / total[h], 0.5) if total[h] > 0 else 0.0
            edges.append(j)
            probs.append(c)
            if c >= ERASE_AT:
                erase.append(j)
        ptr[h + 1] = len(edges)
        eptr[h + 1] = len(erase)
    return HeraldMap(is_herald.astype(np.uint8), ptr, np.asarray(edges, np.int32), np.asarray(probs, np.float64),
                     eptr, np.asarray(erase, np.int32))


def kernel_arrays(hm: HeraldMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union-find's ``hidx, hptr, hedge`` (``rtdecoder.kernels.union_find.decode``) from a
    ``HeraldMap``: herald ``i`` is the ``i``-th herald detector of the graph, its erased edges
    those with a conditional probability of at least ``ERASE_AT``."""
    hnode = np.flatnonzero(hm.is_herald)
    hidx = np.full(len(hm.is_herald), -1, np.int32)
    hidx[hnode] = np.arange(len(hnode), dtype=np.int32)
    hptr = np.zeros(len(hnode) + 1, np.int64)
    hptr[1:] = np.cumsum(hm.erase_ptr[hnode + 1] - hm.erase_ptr[hnode])
    hedge = np.concatenate([hm.erase_edge[hm.erase_ptr[h]:hm.erase_ptr[h + 1]] for h in hnode] or
                           [np.zeros(0, np.int32)]).astype(np.int32)
    return (hidx if len(hnode) else hidx[:0]), hptr, (hedge if len(hedge) else np.zeros(1, np.int32))
