"""CUDA-Q QEC's decoder configuration (YAML) as rtdecoder streams: ``rtdecoder serve --config
decoders.yaml``.

A CUDA-Q configuration lists ``decoders``, each a detector error model given as sparse
matrices: ``H_sparse`` (detectors × error mechanisms), ``O_sparse`` (observables × error
mechanisms) and ``D_sparse`` (detectors × measurements: each detector is the XOR of the
measurements its row lists), one row after another, each row's column indices ended by ``-1``;
with the mechanisms' probabilities in ``error_rate_vec``. Each decoder becomes one stream whose id
is the decoder's ``id`` and whose controller sends raw measurements (``input =
"measurements"``), reachable by CUDA-Q's RPC (``rtdecoder.kernels.cuqr``) and by rtdecoder's
own protocol alike. Source of the format: NVIDIA/cudaqx main at ef991e97,
``libs/qec/include/cudaq/qec/realtime/decoding_config.h`` and ``libs/qec/lib/realtime/config.cpp``
(the keys, which are required, and the checks on the matrices), the decoders' parameter schemas
(``libs/qec/lib/decoders/plugins/pymatching/pymatching.cpp``,
``libs/qec/lib/decoders/sliding_window.cpp``) and
``libs/qec/tools/decoding-server/decoding_server_config.yaml`` (an example), and for
``dem_chunks`` ``libs/qec/include/cudaq/qec/extended_dem.h`` (``dem_stitch``, ``dem_close``) and
``libs/qec/include/cudaq/qec/dem_chunks_memory.h`` (``dem_chunks_to_d_sparse``);
docs/cuqr-compat.md gives the line ranges and what differs.

Decoder types:

- ``pymatching``: decoded with rtdecoder's ``matching`` decoder (PyMatching) on the whole shot,
  once its last measurement is in, as CUDA-Q's server does. ``merge_strategy`` (how mechanisms
  with the same detectors combine) is honoured.
- ``sliding_window``: rtdecoder's sliding windows with ``matching`` in each:
  ``num_syndromes_per_round`` detectors per round, ``window_size`` rounds per window,
  ``step_size`` rounds committed per window.

Every mechanism must flip one or two detectors (a graphlike model, as matching needs); a
mechanism that flips none is left out (no decoder can see it). A decoder may instead be given
as ``dem_chunks`` (phases of one round each, stitched at their seams, with ``num_rounds``;
``_chunk_stream``). Keys CUDA-Q defines that rtdecoder does not implement (other decoder
types, ``num_boundary_syndromes``, ``straddle_*``) are named in a ``ConfigError``, as are unknown
keys; ``transport``, ``dispatch`` and ``cuda_device_id`` (where CUDA-Q runs a decoder) are
accepted and have no effect: rtdecoder's ``--transport`` and ``--backend`` choose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import stim

from rtdecoder.config import MatrixModel, ServerConfig, StreamConfig
from rtdecoder.errors import ConfigError

MAX_DATAGRAM = 65507
"""The YAML streams' ``max_datagram``: a whole shot may be one round."""

_INT = {"type": "integer"}
_SPARSE = {"type": "array", "items": {"type": "integer", "minimum": -1}}
_PROBS = {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5}}
_PYMATCHING_ARGS = {
    "type": "object",
    "properties": {"error_rate_vec": _PROBS,
                   "merge_strategy": {"enum": ["smallest_weight", "smallest-weight", "independent", "disallow",
                                               "keep_original", "keep-original", "replace"]}},
    "additionalProperties": False,
}
_SLIDING_ARGS = {
    "type": "object",
    "properties": {"window_size": {"type": "integer", "minimum": 1}, "step_size": {"type": "integer", "minimum": 1},
                   "num_syndromes_per_round": {"type": "integer", "minimum": 1}, "error_rate_vec": _PROBS,
                   "inner_decoder_name": {"type": "string"}, "inner_decoder_params": {"type": "object"}},
    "required": ["num_syndromes_per_round", "window_size", "step_size"],
    "additionalProperties": False,
}
_NAMED = {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
          "required": ["from", "to"], "additionalProperties": False}
_CHUNK = {
    "type": "object",
    "properties": {
        "num_faults": {"type": "integer", "minimum": 0},
        "H_sparse": _SPARSE,
        "seam_specs": {"type": "array", "items": {
            "type": "object",
            "properties": {"name": {"type": "string"},
                           "spec": {"type": "object", "properties": {"H_sparse": _SPARSE, "O_sparse": _SPARSE},
                                    "additionalProperties": False}},
            "required": ["name", "spec"], "additionalProperties": False}},
        "O_sparse": _SPARSE,
        "error_rates": _PROBS,
    },
    "required": ["num_faults", "error_rates"],
    "additionalProperties": False,
}
_DEM_CHUNKS = {
    "type": "object",
    "properties": {
        "seam": _NAMED,
        "connections": {"type": "array", "items": _NAMED, "minItems": 1},
        "num_rounds": {"type": "integer", "minimum": 2},
        "phases": {"type": "array", "minItems": 1, "items": {
            "type": "object", "properties": {"name": {"type": "string"}, "spec": _CHUNK},
            "required": ["name", "spec"], "additionalProperties": False}},
    },
    "required": ["seam", "connections", "phases"],
    "additionalProperties": False,
}
SCHEMA = {
    "type": "object",
    "properties": {
        "decoders": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 0, "maximum": 65535},
                    "type": {"type": "string"},
                    "block_size": {"type": "integer", "minimum": 0},
                    "syndrome_size": {"type": "integer", "minimum": 0},
                    "H_sparse": _SPARSE, "O_sparse": _SPARSE, "D_sparse": _SPARSE,
                    "error_rate_vec": _PROBS,
                    "stim_dem_path": {"type": "string"},
                    "dem_chunks": _DEM_CHUNKS,
                    "decoder_custom_args": {"type": "object"},
                    "transport": {"enum": ["cpu_roce", "gpu_roce"]},
                    "dispatch": {"enum": ["host", "device_graph"]},
                    "cuda_device_id": _INT,
                },
                "required": ["id", "type"],
                "additionalProperties": False,
            },
        },
        "transport": {"type": "object"},
    },
    "required": ["decoders"],
    "additionalProperties": False,
}
"""The JSON Schema the YAML is checked against (jsonschema), before the matrices' own checks."""

NOT_IMPLEMENTED = {
    "num_boundary_syndromes": "sliding_window's num_boundary_syndromes is not implemented: every round must have "
                              "num_syndromes_per_round detectors",
    "straddle_start_round": "sliding_window's straddle_start_round is not implemented",
    "straddle_end_round": "sliding_window's straddle_end_round is not implemented",
}
TYPES = ("pymatching", "sliding_window")
MERGE = {"smallest_weight": "smallest", "smallest-weight": "smallest", "independent": "independent",
         "disallow": "disallow", "keep_original": "first", "keep-original": "first", "replace": "last"}


def sparse_rows(values: list[int], where: str) -> list[list[int]]:
    """Rows of a CUDA-Q sparse matrix: column indices, each row ended by -1 (a last row without
    its -1 is kept, as CUDA-Q does).

    >>> sparse_rows([0, -1, 1, 2, -1], "H_sparse")
    [[0], [1, 2]]
    """
    rows: list[list[int]] = []
    row: list[int] = []
    for v in values:
        if v == -1:
            rows.append(row)
            row = []
        elif v < -1:
            raise ConfigError(f"{where}: value {v} is out of range (a column index, or -1 to end a row)")
        else:
            row.append(int(v))
    if row:
        rows.append(row)
    return rows


def gf2_row(row: list[int]) -> list[int]:
    """A D row with repeated measurements cancelled (XOR), sorted."""
    odd: set[int] = set()
    for m in row:
        odd ^= {m}
    return sorted(odd)


def _declarations(detector_round: np.ndarray, num_observables: int) -> list[str]:
    """A DEM's declarations: detector ``j`` at coordinates ``(0, 0, detector_round[j])`` (its
    round, which ``rtdecoder.dem.detector_layout`` reads), and every observable."""
    lines = [f"detector(0, 0, {int(t)}) D{j}" for j, t in enumerate(detector_round)]
    return lines + [f"logical_observable L{k}" for k in range(num_observables)]


def _model_dem(h_rows, o_rows, priors, detector_round, merge: str, where: str) -> stim.DetectorErrorModel:
    """The DEM of H, O and the priors: one ``error`` per distinct detector set (merged per
    ``merge``), detectors with their rounds as coordinates, every observable declared."""
    nerr = len(priors)
    dets: list[list[int]] = [[] for _ in range(nerr)]
    obs: list[int] = [0] * nerr
    for j, row in enumerate(h_rows):
        for e in row:
            dets[e].append(j)
    for k, row in enumerate(o_rows):
        for e in row:
            obs[e] ^= 1 << k
    merged: dict[tuple[int, ...], tuple[float, int]] = {}
    for e in range(nerr):
        d = tuple(sorted(dets[e]))
        if not d:
            continue
        if len(d) > 2:
            raise ConfigError(f"{where}: error mechanism (column) {e} of H_sparse flips {len(d)} detectors "
                              f"{list(d)}; matching needs at most 2: decompose the model (stim's "
                              "detector_error_model(decompose_errors=True) and one column per component)")
        p, o = priors[e], obs[e]
        if d not in merged:
            merged[d] = (p, o)
            continue
        q, o2 = merged[d]
        if merge == "disallow":
            raise ConfigError(f"{where}: error mechanisms flip the same detectors {list(d)} and merge_strategy is "
                              "disallow")
        if merge == "independent":
            if o != o2:
                raise ConfigError(f"{where}: merge_strategy independent cannot merge mechanisms on detectors "
                                  f"{list(d)} that flip different observables")
            merged[d] = (p * (1 - q) + q * (1 - p), o)
        elif merge == "smallest" and p > q:
            merged[d] = (p, o)
        elif merge == "last":
            merged[d] = (p, o)
    lines = _declarations(detector_round, len(o_rows))
    for d, (p, o) in merged.items():
        targets = " ".join(f"D{j}" for j in d) + "".join(f" L{k}" for k in range(len(o_rows)) if o >> k & 1)
        lines.append(f"error({p!r}) {targets}")
    return stim.DetectorErrorModel("\n".join(lines))


def _at(e) -> str:
    """Where in the document a schema error is, as ``.decoders[0].type``."""
    return "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in e.absolute_path)


def _with_rounds(dem: stim.DetectorErrorModel, detector_round: np.ndarray) -> stim.DetectorErrorModel:
    """``dem``'s errors and observables (flattened) with detector ``j``'s coordinates
    ``(0, 0, detector_round[j])``: the rounds the stream is built with."""
    lines = _declarations(detector_round, dem.num_observables)
    lines += [str(inst) for inst in dem.flattened() if inst.type == "error"]
    return stim.DetectorErrorModel("\n".join(lines))


def _check(entry: dict, where: str) -> None:
    import jsonschema

    for key, why in NOT_IMPLEMENTED.items():
        args = entry.get("decoder_custom_args") or {}
        if key in entry or (isinstance(args, dict) and key in args):
            raise ConfigError(f"{where}: {why}")
    if entry.get("type") not in TYPES:
        raise ConfigError(f"{where}: decoder type {entry.get('type')!r} is not supported: rtdecoder decodes "
                          f"{' and '.join(TYPES)} configurations (with its matching decoder)")
    args_schema = _PYMATCHING_ARGS if entry["type"] == "pymatching" else _SLIDING_ARGS
    try:
        jsonschema.validate(entry.get("decoder_custom_args") or {}, args_schema)
    except jsonschema.ValidationError as e:
        raise ConfigError(f"{where}: decoder_custom_args{_at(e)}: {e.message}") from None


def decoder_stream(entry: dict, where: str, base: Path) -> StreamConfig:
    """The stream of one ``decoders`` entry (already checked against ``SCHEMA``).

    Raises:
        ConfigError: an unsupported type or key, matrices that disagree with ``syndrome_size``,
            ``block_size`` or each other, a non-graphlike mechanism, a missing ``error_rate_vec``.
    """
    _check(entry, where)
    args = entry.get("decoder_custom_args") or {}
    if "dem_chunks" in entry and not entry.get("H_sparse"):
        return _chunk_stream(entry, args, where)
    if "D_sparse" not in entry:
        raise ConfigError(f"{where}: D_sparse is required (the measurements each detector reads), or describe the "
                          "model with dem_chunks, which implies it")
    d_rows = [gf2_row(r) for r in sparse_rows(entry["D_sparse"], f"{where}: D_sparse")]
    if any(not r for r in d_rows):
        raise ConfigError(f"{where}: D_sparse has an empty row (a detector that reads no measurement)")
    nd = len(d_rows)
    if "syndrome_size" in entry and entry["syndrome_size"] != nd:
        raise ConfigError(f"{where}: D_sparse has {nd} rows but syndrome_size is {entry['syndrome_size']}")
    if entry["type"] == "sliding_window":
        per = args["num_syndromes_per_round"]
        if nd % per:
            raise ConfigError(f"{where}: {nd} detectors are not a whole number of rounds of "
                              f"num_syndromes_per_round = {per}")
        detector_round = np.arange(nd, dtype=np.int64) // per
        window, commit = args["window_size"], args["step_size"]
        if commit > window:
            raise ConfigError(f"{where}: step_size {commit} is longer than window_size {window}")
        if window < 2:
            raise ConfigError(f"{where}: window_size {window} is too short: rtdecoder's windows are at least 2 rounds")
    else:
        detector_round = np.zeros(nd, np.int64)
        window, commit = 0, 0
    if "stim_dem_path" in entry:
        for key in ("H_sparse", "O_sparse", "error_rate_vec"):
            if key in entry:
                raise ConfigError(f"{where}: stim_dem_path and {key} are two sources of one model: give one")
        path = Path(entry["stim_dem_path"])
        path = path if path.is_absolute() else base / path
        try:
            dem = stim.DetectorErrorModel(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{where}: stim_dem_path {str(path)!r}: {e}") from None
        if dem.num_detectors != nd:
            raise ConfigError(f"{where}: {path} has {dem.num_detectors} detectors but D_sparse has {nd} rows")
        # The stream's rounds: sliding_window's num_syndromes_per_round; for pymatching (one window)
        # the DEM's own time coordinates where every detector has one, else a single round.
        coords = dem.get_detector_coordinates()
        if entry["type"] == "pymatching" and all(coords.get(j) for j in range(nd)):
            from rtdecoder.dem import detector_layout

            detector_round = detector_layout(dem).det_round
        dem = _with_rounds(dem, detector_round)
    else:
        for key in ("H_sparse", "O_sparse", "block_size"):
            if key not in entry:
                raise ConfigError(f"{where}: {key} is required (or give the model as stim_dem_path)")
        nerr = entry["block_size"]
        priors = entry.get("error_rate_vec") or args.get("error_rate_vec")
        if priors is None:
            raise ConfigError(f"{where}: error_rate_vec is required: the probability of each of the {nerr} "
                              "error mechanisms (in decoder_custom_args, or beside H_sparse)")
        if len(priors) != nerr:
            raise ConfigError(f"{where}: error_rate_vec has {len(priors)} entries but block_size is {nerr}")
        h_rows = sparse_rows(entry["H_sparse"], f"{where}: H_sparse")
        o_rows = sparse_rows(entry["O_sparse"], f"{where}: O_sparse")
        if len(h_rows) != nd:
            raise ConfigError(f"{where}: H_sparse has {len(h_rows)} rows but D_sparse has {nd} (one per detector)")
        for name, rows in (("H_sparse", h_rows), ("O_sparse", o_rows)):
            bad = [c for r in rows for c in r if c >= nerr]
            if bad:
                raise ConfigError(f"{where}: {name} names column {bad[0]}, beyond block_size {nerr}")
        if not o_rows:
            raise ConfigError(f"{where}: O_sparse has no rows: the service answers observable flips, so it needs "
                              "at least one observable")
        if len(o_rows) > 64:
            raise ConfigError(f"{where}: {len(o_rows)} observables; rtdecoder supports at most 64")
        merge = MERGE[args.get("merge_strategy", "smallest_weight")]
        dem = _model_dem(h_rows, o_rows, [float(p) for p in priors], detector_round, merge, where)
    model = MatrixModel(where, dem, detector_round, tuple(tuple(r) for r in d_rows),
                        max(max(r) for r in d_rows) + 1)
    return StreamConfig(id=entry["id"], decoder="matching", window=window, commit=commit, input="measurements",
                        max_datagram=MAX_DATAGRAM, model=model)


def phase_sequence(chunks: dict, where: str) -> list[str]:
    """The phases of a ``dem_chunks`` spec in round order: its connections are a linear chain,
    at most one phase connected to itself (the repeating one), which then appears as often as
    ``num_rounds`` needs (``[init, bulk × (T - 2), final]`` for the standard three phases);
    without a self-connection the chain is the sequence."""
    names = [ph["name"] for ph in chunks["phases"]]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: dem_chunks.phases names a phase twice")
    nxt: dict[str, str] = {}
    loops = []
    for c in chunks["connections"]:
        a, b = c["from"], c["to"]
        for x in (a, b):
            if x not in names:
                raise ConfigError(f"{where}: dem_chunks.connections names phase {x!r}, which dem_chunks.phases "
                                  f"does not define ({', '.join(names)})")
        if a == b:
            loops.append(a)
        elif a in nxt:
            raise ConfigError(f"{where}: dem_chunks.connections: phase {a!r} leads to two phases; the phases must "
                              "form a chain")
        else:
            nxt[a] = b
    if len(loops) > 1:
        raise ConfigError(f"{where}: dem_chunks.connections: more than one phase repeats ({', '.join(loops)})")
    starts = [n for n in names if n not in nxt.values() and (n in nxt or n in loops or len(names) == 1)]
    if len(starts) != 1:
        raise ConfigError(f"{where}: dem_chunks.connections do not form one chain from a first phase")
    chain = [starts[0]]
    while chain[-1] in nxt:
        if nxt[chain[-1]] in chain:
            raise ConfigError(f"{where}: dem_chunks.connections go round in a cycle")
        chain.append(nxt[chain[-1]])
    if not loops:
        return chain
    if "num_rounds" not in chunks:
        raise ConfigError(f"{where}: dem_chunks has a repeating phase ({loops[0]!r}) but no num_rounds: rtdecoder "
                          "builds a stream's windows when it is configured, so give num_rounds (at least 2)")
    if loops[0] not in chain:
        raise ConfigError(f"{where}: the repeating phase {loops[0]!r} is not on the chain {' → '.join(chain)}")
    repeats = chunks["num_rounds"] - (len(chain) - 1)
    if repeats < 0:
        raise ConfigError(f"{where}: num_rounds {chunks['num_rounds']} is fewer than the {len(chain) - 1} phases "
                          "around the repeating one")
    i = chain.index(loops[0])
    return chain[:i] + [loops[0]] * repeats + chain[i + 1:]


def _chunk_bands(spec: dict, to_seam: str, from_seam: str, where: str) -> tuple[list, list, list, list]:
    """One phase's ``(to-seam rows, from-seam rows, observable rows, error rates)``: its
    ``H_sparse`` shorthand is both seams' rows; ``seam_specs`` give each seam its own."""
    n = spec["num_faults"]
    rates = [float(p) for p in spec["error_rates"]]
    if len(rates) != n:
        raise ConfigError(f"{where}: error_rates has {len(rates)} entries but num_faults is {n}")
    if ("H_sparse" in spec) == ("seam_specs" in spec):
        raise ConfigError(f"{where}: give H_sparse (the same rows for both seams) or seam_specs, one of them")
    if "H_sparse" in spec:
        rows = sparse_rows(spec["H_sparse"], f"{where}: H_sparse")
        to_rows, from_rows = rows, rows
    else:
        bands = {}
        for e in spec["seam_specs"]:
            if e["name"] not in (to_seam, from_seam):
                if e["spec"].get("H_sparse"):
                    raise ConfigError(f"{where}: seam {e['name']!r} is neither dem_chunks.seam's from ({from_seam!r}) "
                                      f"nor its to ({to_seam!r}): its rows would have nowhere to go")
                continue
            bands[e["name"]] = sparse_rows(e["spec"].get("H_sparse", []), f"{where}: seam {e['name']} H_sparse")
        to_rows, from_rows = bands.get(to_seam, []), bands.get(from_seam, [])
    obs = sparse_rows(spec.get("O_sparse", []), f"{where}: O_sparse")
    for name, rows in (("H_sparse", to_rows + from_rows), ("O_sparse", obs)):
        bad = [c for r in rows for c in r if c >= n]
        if bad:
            raise ConfigError(f"{where}: {name} names fault {bad[0]}, beyond num_faults {n}")
    return to_rows, from_rows, obs, rates


def _chunk_stream(entry: dict, args: dict, where: str) -> StreamConfig:
    """A decoder given as ``dem_chunks`` (one chunk per round, each a band of rows at the seam
    with the round before and one at the seam with the round after): the chunks stitched into
    one model (detector ``r·d + k`` is row ``k`` of the seam between rounds ``r − 1`` and ``r``,
    flipped by the faults of both chunks; round 0's are the first chunk's incoming seam, the last
    chunk's outgoing seam is dropped), and D the memory experiment's: detector ``r·d + k`` reads
    measurement ``k`` of rounds ``r − 1`` and ``r`` (round 0: of round 0 alone)."""
    for key in ("block_size", "syndrome_size", "O_sparse", "D_sparse", "error_rate_vec", "stim_dem_path"):
        if entry.get(key) or (key == "error_rate_vec" and args.get(key)):
            raise ConfigError(f"{where}: {key} must not be given with dem_chunks, which determines it: remove it, or "
                              "describe the whole experiment with H_sparse instead of dem_chunks")
    chunks = entry["dem_chunks"]
    from_seam, to_seam = chunks["seam"]["from"], chunks["seam"]["to"]
    specs = {ph["name"]: ph["spec"] for ph in chunks["phases"]}
    seq = phase_sequence(chunks, where)
    built = {name: _chunk_bands(specs[name], to_seam, from_seam, f"{where}: dem_chunks phase {name}")
             for name in set(seq)}
    nobs = {len(built[n][2]) for n in seq}
    if len(nobs) != 1:
        raise ConfigError(f"{where}: the dem_chunks phases have different numbers of observables ({sorted(nobs)})")
    (k,) = nobs
    if k == 0:
        raise ConfigError(f"{where}: the dem_chunks phases have no O_sparse rows: the service answers observable "
                          "flips, so it needs at least one observable")
    if k > 64:
        raise ConfigError(f"{where}: {k} observables; rtdecoder supports at most 64")
    d = len(built[seq[0]][0]) or len(built[seq[0]][1])
    if d == 0:
        raise ConfigError(f"{where}: the first dem_chunks phase has no seam rows: there are no detectors")
    for t, name in enumerate(seq):
        to_rows, from_rows = built[name][0], built[name][1]
        widths = [len(to_rows)] if t == 0 else [len(to_rows), len(built[seq[t - 1]][1])]
        if any(w != d for w in widths):
            raise ConfigError(f"{where}: dem_chunks seam widths differ (round {t}, phase {name!r}: {widths}, round 0: "
                              f"{d}); every seam of a memory experiment has the same rows")
    rounds = len(seq)
    h_rows: list[list[int]] = [[] for _ in range(rounds * d)]
    o_rows: list[list[int]] = [[] for _ in range(k)]
    priors: list[float] = []
    for t, name in enumerate(seq):
        to_rows, from_rows, obs, rates = built[name]
        base = len(priors)
        for j, row in enumerate(to_rows):
            h_rows[t * d + j] += [base + e for e in row]
        if t + 1 < rounds:
            for j, row in enumerate(from_rows):
                h_rows[(t + 1) * d + j] += [base + e for e in row]
        for j, row in enumerate(obs):
            o_rows[j] += [base + e for e in row]
        priors += rates
    h_rows = [gf2_row(r) for r in h_rows]  # a fault listed twice in a row cancels (GF(2))
    d_rows = [[j] if j < d else [j - d, j] for j in range(rounds * d)]
    detector_round = np.arange(rounds * d, dtype=np.int64) // d
    if entry["type"] == "sliding_window":
        per = args["num_syndromes_per_round"]
        if per != d:
            raise ConfigError(f"{where}: num_syndromes_per_round {per} differs from the dem_chunks seam width {d}")
        window, commit = args["window_size"], args["step_size"]
        if commit > window or window < 2:
            raise ConfigError(f"{where}: window_size {window} and step_size {commit}: need 2 <= window_size and "
                              "step_size <= window_size")
    else:
        window, commit = 0, 0
    merge = MERGE[args.get("merge_strategy", "smallest_weight")]
    dem = _model_dem(h_rows, o_rows, priors, detector_round, merge, where)
    model = MatrixModel(where, dem, detector_round, tuple(tuple(r) for r in d_rows), rounds * d)
    return StreamConfig(id=entry["id"], decoder="matching", window=window, commit=commit, input="measurements",
                        max_datagram=MAX_DATAGRAM, model=model)


def load_yaml(path: str | Path) -> ServerConfig:
    """A ``ServerConfig`` with one stream per decoder of CUDA-Q's YAML configuration at ``path``;
    the server's settings are rtdecoder's defaults (the command line changes them).

    Raises:
        ConfigError: the file is missing or not YAML, fails ``SCHEMA`` (naming the key), or a
            decoder entry is refused by ``decoder_stream``.
    """
    import jsonschema
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {e.start}): is it a YAML file?") from None
    except OSError as e:
        raise ConfigError(f"config file {p}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    try:
        jsonschema.validate(data, SCHEMA)
    except jsonschema.ValidationError as e:
        raise ConfigError(f"{p}: {_at(e).lstrip('.') or 'top level'}: {e.message}") from None
    streams = []
    for i, entry in enumerate(data["decoders"]):
        streams.append(decoder_stream(entry, f"{p} decoder {entry['id']}", p.parent))
    return ServerConfig(streams=tuple(streams))


def is_yaml(path: str | Path) -> bool:
    """Whether ``path`` names a YAML file (CUDA-Q's form) rather than TOML (rtdecoder's)."""
    return Path(path).suffix.lower() in (".yaml", ".yml")
