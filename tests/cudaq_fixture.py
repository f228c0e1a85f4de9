"""CUDA-Q QEC decoder configurations made from stim circuits, for the CUQR tests and benchmark.

Written from CUDA-Q's documented format (sparse rows ended by -1; docs/cuqr-compat.md) and kept
apart from ``rtdecoder.cudaq_config``, which reads them: the matrices here come from stim alone.
"""

from __future__ import annotations

import numpy as np
import stim


def detector_measurements(circuit: stim.Circuit) -> list[list[int]]:
    """Each detector's measurements (absolute indices, XOR-cancelled), from the flattened circuit."""
    rows: list[list[int]] = []
    count = 0
    for inst in circuit.flattened():
        if inst.name == "DETECTOR":
            odd: set[int] = set()
            for t in inst.targets_copy():
                odd ^= {count + t.value}
            rows.append(sorted(odd))
        else:
            count += inst.num_measurements
    return rows


def columns(circuit: stim.Circuit) -> dict[tuple[tuple[int, ...], int], float]:
    """Graphlike error mechanisms: each component of each decomposed DEM error, as (detectors,
    observable mask) → probability, equal keys combined as independent."""
    cols: dict[tuple[tuple[int, ...], int], float] = {}
    for inst in circuit.detector_error_model(decompose_errors=True).flattened():
        if inst.type != "error":
            continue
        p = inst.args_copy()[0]
        dets: list[int] = []
        obs = 0
        parts = []
        for t in inst.targets_copy() + [stim.target_separator()]:
            if t.is_separator():
                parts.append((tuple(sorted(dets)), obs))
                dets, obs = [], 0
            elif t.is_relative_detector_id():
                dets.append(t.val)
            else:
                obs ^= 1 << t.val
        for key in parts:
            if key[0]:
                q = cols.get(key, 0.0)
                cols[key] = p * (1 - q) + q * (1 - p)
    return cols


def sparse(rows: list[list[int]]) -> list[int]:
    out: list[int] = []
    for r in rows:
        out += list(r) + [-1]
    return out


def matrices(circuit: stim.Circuit):
    """``(H rows, O rows, D rows, priors)`` of the circuit."""
    cols = columns(circuit)
    keys = list(cols)
    h = [[] for _ in range(circuit.num_detectors)]
    o = [[] for _ in range(circuit.num_observables)]
    for e, (dets, obs) in enumerate(keys):
        for j in dets:
            h[j].append(e)
        for k in range(circuit.num_observables):
            if obs >> k & 1:
                o[k].append(e)
    return h, o, detector_measurements(circuit), [cols[k] for k in keys]


def yaml_text(circuit: stim.Circuit, decoder_id: int = 0, per_round: int | None = None, window: int = 0,
              step: int = 0) -> str:
    """A one-decoder configuration of the circuit's matrices: ``pymatching``, or
    ``sliding_window`` when ``per_round`` is given."""
    h, o, d, p = matrices(circuit)
    if per_round is None:
        return flat_yaml(h, o, d, p, decoder_id, extra=["merge_strategy: smallest_weight"])
    return flat_yaml(h, o, d, p, decoder_id, kind="sliding_window",
                     extra=[f"num_syndromes_per_round: {per_round}", f"window_size: {window}",
                            f"step_size: {step}", "inner_decoder_name: single_error_lut"])


def reference_predictions(circuit: stim.Circuit, measurements: np.ndarray) -> np.ndarray:
    """Offline PyMatching on the same matrices (``check_matrix_predictions``), detectors computed
    as D·m mod 2: uint8 ``(shots, observables)``."""
    h, o, d, p = matrices(circuit)
    dets = np.zeros((len(measurements), len(d)), np.uint8)
    for j, row in enumerate(d):
        dets[:, j] = np.bitwise_xor.reduce(measurements[:, row], axis=1)
    return check_matrix_predictions(h, o, p, dets)


# --- dem_chunks: a phenomenological repetition code, one chunk per round -----------------------

def repetition_chunk(n: int, p_data: float, p_meas: float) -> dict:
    """One round of an ``n``-qubit repetition code (``n - 1`` checks) as a CUDA-Q chunk spec in
    the per-seam form: faults ``0 .. n-1`` flip data qubit ``i`` (checks ``i - 1`` and ``i`` of
    this round's detectors: the incoming seam), faults ``n .. 2n-2`` flip check ``k``'s
    measurement (this round's detector and the next round's: both seams); data qubit 0 is the
    observable."""
    d = n - 1
    to_rows = [[] for _ in range(d)]
    from_rows = [[] for _ in range(d)]
    for i in range(n):
        for k in (i - 1, i):
            if 0 <= k < d:
                to_rows[k].append(i)
    for k in range(d):
        to_rows[k].append(n + k)
        from_rows[k].append(n + k)
    return {"num_faults": n + d,
            "seam_specs": [{"name": "prev_round", "spec": {"H_sparse": sparse(to_rows)}},
                           {"name": "next_round", "spec": {"H_sparse": sparse(from_rows)}}],
            "O_sparse": [0, -1], "error_rates": [p_data] * n + [p_meas] * d}


def chunked_yaml(n: int, rounds: int, p_data: float, p_meas: float, decoder_id: int = 0) -> str:
    """A ``dem_chunks`` configuration: phases init, bulk (repeating), final, all the same chunk."""
    import json

    chunk = repetition_chunk(n, p_data, p_meas)
    doc = {"decoders": [{"id": decoder_id, "type": "pymatching", "dem_chunks": {
        "seam": {"from": "next_round", "to": "prev_round"},
        "connections": [{"from": "init", "to": "bulk"}, {"from": "bulk", "to": "bulk"},
                        {"from": "bulk", "to": "final"}],
        "num_rounds": rounds,
        "phases": [{"name": name, "spec": chunk} for name in ("init", "bulk", "final")]}}]}
    return json.dumps(doc)  # JSON is YAML


def chunked_matrices(n: int, rounds: int, p_data: float, p_meas: float):
    """The same model flat, stitched here by hand: ``(H rows, O rows, D rows, priors)``; detector
    ``r·d + k`` compares check ``k``'s measurements of rounds ``r - 1`` and ``r``."""
    d = n - 1
    h = [[] for _ in range(rounds * d)]
    o = [[]]
    priors: list[float] = []
    for t in range(rounds):
        base = len(priors)
        for i in range(n):  # data flips in round t: this round's detectors
            for k in (i - 1, i):
                if 0 <= k < d:
                    h[t * d + k].append(base + i)
        for k in range(d):  # check k misread in round t: this round's and the next's
            h[t * d + k].append(base + n + k)
            if t + 1 < rounds:
                h[(t + 1) * d + k].append(base + n + k)
        o[0].append(base)
        priors += [p_data] * n + [p_meas] * d
    dr = [[j] if j < d else [j - d, j] for j in range(rounds * d)]
    return h, o, dr, priors


def flat_yaml(h, o, d, priors, decoder_id: int = 0, kind: str = "pymatching", extra: list[str] = ()) -> str:
    """A one-decoder configuration of H, O, D (rows of indices) and the priors; ``extra``: more
    ``decoder_custom_args`` lines."""
    lines = ["decoders:", f"  - id: {decoder_id}", f"    type: {kind}", f"    block_size: {len(priors)}",
             f"    syndrome_size: {len(h)}", f"    H_sparse: {sparse(h)}", f"    O_sparse: {sparse(o)}",
             f"    D_sparse: {sparse(d)}", "    decoder_custom_args:",
             f"      error_rate_vec: {[float(x) for x in priors]}"] + [f"      {x}" for x in extra]
    return "\n".join(lines) + "\n"


def sample_chunked(h, o, priors, rounds: int, d: int, shots: int, seed: int):
    """Faults drawn with their probabilities: ``(measurements, detection events, observable
    flips)``, uint8; the measurements are those whose D gives the detection events."""
    rng = np.random.default_rng(seed)
    e = (rng.random((shots, len(priors))) < np.asarray(priors)).astype(np.uint8)
    H = np.zeros((len(h), len(priors)), np.uint8)
    for j, row in enumerate(h):
        H[j, row] = 1
    O = np.zeros((len(o), len(priors)), np.uint8)
    for j, row in enumerate(o):
        O[j, row] = 1
    dets = (e @ H.T) % 2
    obs = (e @ O.T) % 2
    meas = np.bitwise_xor.accumulate(dets.reshape(shots, rounds, d), axis=1).reshape(shots, -1)
    return meas.astype(np.uint8), dets.astype(np.uint8), obs.astype(np.uint8)


def check_matrix_predictions(h, o, priors, dets) -> np.ndarray:
    """PyMatching's ``Matching.from_check_matrix`` on H, O and the priors (weights
    ``log((1 - p) / p)``, smallest-weight merging) decoding ``dets``."""
    import pymatching
    from scipy.sparse import csc_matrix

    n = len(priors)

    def mat(rows):
        r = [i for i, row in enumerate(rows) for _ in row]
        c = [x for row in rows for x in row]
        return csc_matrix((np.ones(len(c), np.uint8), (r, c)), shape=(len(rows), n))

    p = np.asarray(priors)
    m = pymatching.Matching.from_check_matrix(mat(h), weights=np.log((1 - p) / p), faults_matrix=mat(o),
                                              merge_strategy="smallest-weight")
    return m.decode_batch(dets).astype(np.uint8)
