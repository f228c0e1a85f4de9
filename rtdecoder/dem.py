"""Circuits, detector error models and the detector → round map.

A stream's circuit is turned, once, into its detector error model (DEM, stim's
``Circuit.detector_error_model(decompose_errors=True)``), a *layout* that says which detectors
belong to which round, and the DEM's graphlike *components* as flat arrays (one row per edge-like
piece of an error: one or two detectors and the observables it flips). The window graphs of
``rtdecoder.windows`` are cut from these arrays.

Rounds come from detector coordinates (docs/wire-protocol.md §5): stim's generated circuits give every detector
``(x, y, t)`` coordinates, and the detectors of round ``r`` are those with ``t == r``; the final
data-qubit measurement forms the last block. rtdecoder numbers the distinct time coordinates
``0 .. num_rounds - 1`` and requires detectors to be listed in non-decreasing round order, so that
each round's detectors form one contiguous index range ``round_offsets[r] <= j < round_offsets[r + 1]``.

Which detectors can matter (``observable_detectors``): a reply carries only observable flips
(docs/wire-protocol.md §4.4), so a connected part of the DEM's graph that holds no edge flipping an
observable can never change one; its detection events are dropped at ingest and no decoder works
on them (for a surface-code Z memory, the X-stabiliser half of the detectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import stim
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from rtdecoder.config import StreamConfig
from rtdecoder.errors import ConfigError

MAX_OBSERVABLES = 64
"""Observable flips travel as one uint64 mask on the hot path."""


def make_circuit(cfg: StreamConfig) -> stim.Circuit:
    """The stim circuit of a stream.

    Generated circuits use stim's standard circuit-level noise with every strength equal to
    ``cfg.p``: ``after_clifford_depolarization``, ``before_round_data_depolarization``,
    ``before_measure_flip_probability`` and ``after_reset_flip_probability``; with
    ``cfg.erasure``, heralded erasures with their herald detectors (``rtdecoder.heralds``).

    Raises:
        ConfigError: stim does not know the circuit name, or the file does not parse.
    """
    if cfg.is_generated:
        try:
            c = stim.Circuit.generated(
                cfg.circuit,
                distance=cfg.distance,
                rounds=cfg.rounds,
                after_clifford_depolarization=cfg.p,
                before_round_data_depolarization=cfg.p,
                before_measure_flip_probability=cfg.p,
                after_reset_flip_probability=cfg.p,
            )
        except ValueError as e:
            raise ConfigError(
                f"stream {cfg.id}: stim cannot generate {cfg.circuit!r} (d={cfg.distance}, rounds={cfg.rounds}): {e}. "
                "Known names include surface_code:rotated_memory_z, surface_code:rotated_memory_x, "
                "repetition_code:memory"
            ) from None
        if cfg.erasure > 0:
            from rtdecoder.heralds import with_erasure

            c = with_erasure(c, cfg.erasure)
        return c
    try:
        with open(cfg.circuit) as f:
            return stim.Circuit(f.read())
    except (OSError, ValueError) as e:
        raise ConfigError(f"stream {cfg.id}: cannot read circuit file {cfg.circuit!r}: {e}") from None


def circuit_dem(circuit: stim.Circuit) -> stim.DetectorErrorModel:
    """The circuit's DEM as every stream uses it: graphlike components (``decompose_errors``), and
    heralded and disjoint channels (``HERALDED_ERASE``, ``HERALDED_PAULI_CHANNEL_1``,
    ``PAULI_CHANNEL_1``) taken as independent errors (``approximate_disjoint_errors``; a circuit
    without them gets the same DEM either way)."""
    return circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)


@dataclass(frozen=True)
class DetectorLayout:
    """Which detectors belong to which round.

    Attributes:
        num_detectors: detectors per shot.
        num_observables: logical observables per shot (at most 64).
        round_offsets: int64 array of shape ``(num_rounds + 1,)``; round ``r`` holds detectors
            ``round_offsets[r] .. round_offsets[r + 1] - 1``.
        round_bytes: bytes of one round block on the wire (§5):
            ``ceil(max detectors in a round / 8)``.
    """

    num_detectors: int
    num_observables: int
    round_offsets: np.ndarray
    round_bytes: int

    @property
    def num_rounds(self) -> int:
        """Round blocks per shot, the final data-measurement block included."""
        return len(self.round_offsets) - 1

    @property
    def det_round(self) -> np.ndarray:
        """int64 array of shape ``(num_detectors,)``: the round of each detector."""
        return np.repeat(np.arange(self.num_rounds, dtype=np.int64), np.diff(self.round_offsets))


def detector_layout(circuit: stim.Circuit | stim.DetectorErrorModel) -> DetectorLayout:
    """Derive the round layout from the detector time coordinates of a circuit or its DEM.

    Raises:
        ConfigError: a detector has no time coordinate, detectors are not in round order, or the
            circuit has more than 64 observables.
    """
    n = circuit.num_detectors
    if n == 0:
        raise ConfigError("the circuit has no detectors: there is nothing to decode")
    if circuit.num_observables > MAX_OBSERVABLES:
        raise ConfigError(f"the circuit has {circuit.num_observables} observables; rtdecoder supports at most {MAX_OBSERVABLES}")
    coords = circuit.get_detector_coordinates()
    t = np.empty(n, dtype=np.float64)
    for j in range(n):
        c = coords.get(j, [])
        if len(c) == 0:
            raise ConfigError(
                f"detector D{j} has no coordinates: rtdecoder takes a detector's round from its last "
                "coordinate; give every DETECTOR (x, y, t) coordinates"
            )
        t[j] = c[-1]
    if np.any(np.diff(t) < 0):
        bad = int(np.argmax(np.diff(t) < 0)) + 1
        raise ConfigError(
            f"detector D{bad} (t={t[bad]}) comes after a detector of a later round (t={t[bad - 1]}): "
            "list the detectors of each round before those of the next"
        )
    _, first, counts = np.unique(t, return_index=True, return_counts=True)
    offsets = np.concatenate([first, [n]]).astype(np.int64)
    round_bytes = int((counts.max() + 7) // 8)
    return DetectorLayout(n, circuit.num_observables, offsets, round_bytes)


@dataclass(frozen=True)
class Components:
    """The graphlike components of a DEM, one row each, in DEM order.

    An error ``error(p) D1 D2 ^ D3 L0`` has two components, ``(p, D1, D2, 0)`` and
    ``(p, D3, -1, 1)``; matching treats each as an independent edge with the error's probability.

    Attributes:
        prob: float64 ``(k,)``.
        d0: int64 ``(k,)``, the lower detector index.
        d1: int64 ``(k,)``, the higher detector index, or -1 for an edge to the boundary.
        obs: uint64 ``(k,)``, bit ``i`` set when the component flips observable ``i``.
        err: int64 ``(k,)``, which error instruction the component belongs to: components of one
            ``error(p) ... ^ ...`` share a value, unique within one ``DemComponents.in_range``
            (correlated matching puts them back together, ``rtdecoder.windows``).
    """

    prob: np.ndarray
    d0: np.ndarray
    d1: np.ndarray
    obs: np.ndarray
    err: np.ndarray

    def take(self, rows: np.ndarray) -> "Components":
        """The components selected by ``rows`` (a boolean mask or indices), in their order."""
        return Components(self.prob[rows], self.d0[rows], self.d1[rows], self.obs[rows], self.err[rows])


def _parse_errors(inst: stim.DemInstruction, base: int, out: list[list]) -> None:
    p = inst.args_copy()[0]
    err = out[5][0]
    out[5][0] += 1
    dets: list[int] = []
    mask = 0
    for tgt in inst.targets_copy() + [stim.target_separator()]:
        if tgt.is_separator():
            if len(dets) > 2:
                raise ConfigError(
                    f"an error of the DEM flips {len(dets)} detectors in one component ({inst}): "
                    "the DEM must be decomposed into graphlike components (decompose_errors=True)"
                )
            if dets:
                dets.sort()
                out[0].append(p)
                out[1].append(dets[0] + base)
                out[2].append(dets[1] + base if len(dets) == 2 else -1)
                out[3].append(mask)
                out[4].append(err)
            dets = []
            mask = 0
        elif tgt.is_relative_detector_id():
            dets.append(tgt.val)
        elif tgt.is_logical_observable_id():
            mask ^= 1 << tgt.val


def _rows() -> list[list]:
    """Parsing state: prob, d0, d1, obs, err of each component, and ``[errors parsed]``."""
    return [[], [], [], [], [], [0]]


def _components(rows: list[list]) -> Components:
    return Components(np.asarray(rows[0], np.float64), np.asarray(rows[1], np.int64),
                      np.asarray(rows[2], np.int64), np.asarray(rows[3], np.uint64), np.asarray(rows[4], np.int64))


@dataclass(frozen=True)
class _Segment:
    """``count`` repetitions of ``comps``, repetition ``i`` shifted by ``base + i * shift`` detectors;
    ``errors`` error instructions in one repetition (``comps.err`` counts them from 0)."""

    comps: Components
    errors: int
    base: int
    shift: int
    count: int
    lo: int  # smallest d0 of one repetition (relative)
    hi: int  # largest d0 of one repetition (relative)


class DemComponents:
    """The graphlike components of a DEM, without flattening its ``repeat`` blocks.

    An error ``error(p) D1 D2 ^ D3 L0`` has two components, ``(p, D1, D2, 0)`` and
    ``(p, D3, -1, 1)``; matching treats each as an independent edge with the error's
    probability. A stim-generated memory experiment's DEM repeats one block of rounds; the block
    is parsed once and ``in_range`` materialises only the repetitions a detector range needs, so
    a stream of 10,000 rounds costs about what one of a few windows does.

    Raises:
        ConfigError: a component flips more than two detectors (the DEM was not decomposed into
            graphlike pieces; build it with ``decompose_errors=True``).
    """

    def __init__(self, dem: stim.DetectorErrorModel):
        self.segments: list[_Segment] = []
        self._walk(dem, 0)
        inner = [sg.comps.d1 - sg.comps.d0 for sg in self.segments]
        self.max_span = int(max((x[x > 0].max() for x in inner if (x > 0).any()), default=0))
        """The largest ``d1 - d0`` of a two-detector component."""

    def _walk(self, block: stim.DetectorErrorModel, base: int) -> int:
        rows = _rows()
        for inst in block:
            if isinstance(inst, stim.DemRepeatBlock):
                self._add(rows, 0, 0, 1)
                rows = _rows()
                body = inst.body_copy()
                if any(isinstance(x, stim.DemRepeatBlock) for x in body):
                    for _ in range(inst.repeat_count):
                        base = self._walk(body, base)
                    continue
                inner = _rows()
                shift = 0
                for x in body:
                    if x.type == "error":
                        _parse_errors(x, shift, inner)
                    elif x.type == "shift_detectors":
                        shift += int(x.targets_copy()[0])
                self._add(inner, base, shift, inst.repeat_count)
                base += shift * inst.repeat_count
            elif inst.type == "error":
                _parse_errors(inst, base, rows)
            elif inst.type == "shift_detectors":
                base += int(inst.targets_copy()[0])
        self._add(rows, 0, 0, 1)
        return base

    def _add(self, rows: list[list], base: int, shift: int, count: int) -> None:
        if rows[0]:
            c = _components(rows)
            self.segments.append(_Segment(c, rows[5][0], base, shift, count, int(c.d0.min()), int(c.d0.max())))

    def in_range(self, a: int, b: int) -> Components:
        """The components whose lower detector ``d0`` lies in ``[a, b)``, in DEM order."""
        parts: list[Components] = []
        first_err = 0
        for sg in self.segments:
            c = sg.comps
            if sg.count == 1:
                lo_i = hi_i = 0
            else:
                lo_i = max(0, -(-(a - sg.base - sg.hi) // sg.shift)) if sg.shift else 0
                hi_i = min(sg.count - 1, (b - 1 - sg.base - sg.lo) // sg.shift) if sg.shift else sg.count - 1
                if hi_i < lo_i:
                    continue
            reps = hi_i - lo_i + 1
            off = np.repeat(sg.base + sg.shift * np.arange(lo_i, hi_i + 1, dtype=np.int64), len(c.d0))
            d0 = np.tile(c.d0, reps) + off
            d1 = np.tile(c.d1, reps)
            d1 = np.where(d1 >= 0, d1 + off, -1)
            err = np.tile(c.err, reps) + np.repeat(first_err + sg.errors * np.arange(reps, dtype=np.int64), len(c.d0))
            first_err += sg.errors * reps
            keep = (d0 >= a) & (d0 < b)
            parts.append(Components(np.tile(c.prob, reps)[keep], d0[keep], d1[keep], np.tile(c.obs, reps)[keep],
                                    err[keep]))
        if not parts:
            return _components(_rows())
        return Components(*(np.concatenate([getattr(x, f) for x in parts]) for f in ("prob", "d0", "d1", "obs", "err")))


def dem_components(dem: stim.DetectorErrorModel) -> DemComponents:
    """``DemComponents(dem)``: the DEM's graphlike components, indexed by detector range.

    Components that flip no detector (undetectable errors) are dropped: no decoder can see them.
    """
    return DemComponents(dem)


def observable_detectors(comps: DemComponents, num_detectors: int) -> np.ndarray:
    """Which detectors lie in a connected part of the DEM's graph that can flip an observable.

    Nodes are detectors and edges the DEM's two-detector components (edges to the boundary join
    nothing). A detector is kept when its connected part holds a component, of one or two
    detectors, that flips at least one observable; the others' events cannot change any
    observable under any decoder that corrects each connected part on its own (matching and
    union-find both do), and carries between windows stay within a part, so dropping them
    changes no reply. Repeat blocks are expanded as distinct edges (duplicates merged per block
    first): d = 13 with 10,000 rounds, 1.68 M detectors, takes about two seconds.

    Returns:
        uint8 ``(num_detectors,)``: 1 = keep the detector's events, 0 = drop them.
    """
    us, vs, marked = [], [], []
    for sg in comps.segments:
        c = sg.comps
        inner = c.d1 >= 0
        pairs = np.unique(np.stack([c.d0[inner], c.d1[inner]], axis=1), axis=0)
        flipping = np.unique(c.d0[c.obs != 0])  # a detector of each component with an observable
        shifts = sg.base + sg.shift * np.arange(sg.count, dtype=np.int64)
        us.append((pairs[:, 0][None, :] + shifts[:, None]).ravel())
        vs.append((pairs[:, 1][None, :] + shifts[:, None]).ravel())
        marked.append((flipping[None, :] + shifts[:, None]).ravel())
    n = max(num_detectors, 1)
    u = np.concatenate(us) if us else np.zeros(0, np.int64)
    v = np.concatenate(vs) if vs else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(u), np.int8), (u.astype(np.int32), v.astype(np.int32))), shape=(n, n))
    _, label = connected_components(graph.tocsr(), directed=False)
    can_flip = np.zeros(label.max() + 1, bool)  # per connected part
    for m in marked:
        can_flip[label[m]] = True
    return can_flip[label][:num_detectors].astype(np.uint8)


@dataclass(frozen=True)
class MeasurementLayout:
    """How a stream's raw measurement records become its detection events (the controller sends
    measurements, ``StreamConfig.input = "measurements"``).

    Measurement round ``r`` (block ``r`` on the wire) holds measurements
    ``meas_offsets[r] .. meas_offsets[r + 1] - 1`` in the circuit's measurement order: those made
    after the last DETECTOR of an earlier round is declared, up to the last DETECTOR of round ``r``
    (in stim's generated circuits: the ancilla measurements of round ``r``); the last round takes
    every measurement left (the data qubits'). When block ``r`` has
    arrived every detector of round ``r`` can be computed, and is: the XOR of its measurements
    (``det_ptr``/``det_rec``: detector ``j`` reads ``det_rec[det_ptr[j]:det_ptr[j + 1]]``,
    absolute measurement indices) and of the same measurements of the circuit's noiseless
    reference sample (``det_flip``), as stim's ``Circuit.compile_m2d_converter`` does.

    Attributes:
        num_measurements: measurements per shot.
        meas_offsets: int64 ``(num_rounds + 1,)``.
        round_bytes: ``ceil(max measurements in a round / 8)``, a block's size on the wire.
        det_ptr: int64 ``(num_detectors + 1,)``; det_rec: int64; det_flip: uint8 ``(num_detectors,)``.
        kept: int64, the detectors whose events can change an observable (``keep``), in order;
            those of round ``r`` are ``kept[kept_ptr[r]:kept_ptr[r + 1]]``: only they are computed.
        round_shift: int64 ``(num_rounds,)``: ``P > 0`` where round ``r`` has as many detectors as
            its block has measurements and detector ``k`` of the round is measurement ``k`` of the
            block XOR the measurement ``P`` before it, with no reference flip (the bulk rounds of
            a memory experiment: each ancilla against its last round); then the round's detectors
            are computed eight at a time. 0 elsewhere.
    """

    num_measurements: int
    meas_offsets: np.ndarray
    round_bytes: int
    det_ptr: np.ndarray
    det_rec: np.ndarray
    det_flip: np.ndarray
    kept: np.ndarray
    kept_ptr: np.ndarray
    round_shift: np.ndarray


def measurement_layout(circuit: stim.Circuit, layout: DetectorLayout, keep: np.ndarray | None = None
                       ) -> MeasurementLayout:
    """The measurement rounds and detector definitions of ``circuit`` (its DETECTOR instructions'
    ``rec[-k]`` targets, REPEAT blocks walked without flattening the circuit). A detector reads
    only measurements made before it is declared, so each is computable once its block arrives.
    ``keep``: uint8 per detector, those to compute (``observable_detectors``; default all)."""
    recs: list[list[int]] = []
    declared: list[int] = []  # measurements made when each detector is declared
    count = 0

    def walk(block: stim.Circuit) -> None:
        nonlocal count
        for inst in block:
            if isinstance(inst, stim.CircuitRepeatBlock):
                body = inst.body_copy()
                for _ in range(inst.repeat_count):
                    walk(body)
            elif inst.name == "DETECTOR":
                recs.append([count + t.value for t in inst.targets_copy()])
                declared.append(count)
            else:
                count += inst.num_measurements

    walk(circuit)
    ref = np.asarray(circuit.reference_sample(), np.uint8)
    det_flip = np.asarray([np.bitwise_xor.reduce(ref[r]) if r else 0 for r in recs], np.uint8)
    return _layout_from_rows(recs, count, det_flip, layout, keep, declared)


def measurement_layout_from_rows(rows, num_measurements: int, layout: DetectorLayout,
                                 keep: np.ndarray | None = None) -> MeasurementLayout:
    """The measurement layout of detectors given as rows of measurement indices (a CUDA-Q ``D``
    matrix: detector ``j`` is the XOR of measurements ``rows[j]``, with no reference flip). Block
    ``r`` ends at the last measurement a detector of rounds ``0 .. r`` reads; the last block takes
    the rest."""
    rows = [list(r) for r in rows]
    declared = [max(r) + 1 if r else 0 for r in rows]
    return _layout_from_rows(rows, num_measurements, np.zeros(len(rows), np.uint8), layout, keep, declared)


def _layout_from_rows(recs, nm: int, det_flip: np.ndarray, layout: DetectorLayout, keep, declared) -> MeasurementLayout:
    nd = layout.num_detectors
    det_ptr = np.zeros(nd + 1, np.int64)
    det_ptr[1:] = np.cumsum([len(r) for r in recs])
    det_rec = np.asarray([m for r in recs for m in r], np.int64)
    nr = layout.num_rounds
    ends = np.zeros(nr + 1, np.int64)
    for r in range(nr):
        a, b = layout.round_offsets[r], layout.round_offsets[r + 1]
        ends[r + 1] = max(ends[r], max(declared[a:b]) if b > a else 0)
    ends[nr] = nm
    keep = np.ones(nd, np.uint8) if keep is None else keep
    kept = np.flatnonzero(keep).astype(np.int64)
    kept_ptr = np.searchsorted(kept, layout.round_offsets).astype(np.int64)
    shift = np.zeros(nr, np.int64)
    for r in range(nr):
        a, b = int(layout.round_offsets[r]), int(layout.round_offsets[r + 1])
        m0 = int(ends[r])
        if b - a != int(ends[r + 1]) - m0 or b == a or det_ptr[a + 1] - det_ptr[a] != 2:
            continue
        lo, hi = sorted(det_rec[det_ptr[a]:det_ptr[a + 1]])
        p = hi - lo
        if hi != m0 or p <= 0 or m0 - p < 0:
            continue
        k = np.arange(b - a)
        if np.all(np.diff(det_ptr[a:b + 1]) == 2) and not det_flip[a:b].any():
            pairs = np.sort(det_rec[det_ptr[a]:det_ptr[b]].reshape(-1, 2), axis=1)
            if np.array_equal(pairs[:, 1], m0 + k) and np.array_equal(pairs[:, 0], m0 + k - p):
                shift[r] = p
    return MeasurementLayout(nm, ends, max(1, (int(np.diff(ends).max()) + 7) // 8), det_ptr, det_rec, det_flip, kept,
                             kept_ptr, shift)
