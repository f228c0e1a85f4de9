"""CUDA-Q QEC's decoder configuration (YAML) as rtdecoder streams: ``rtdecoder serve --config
decoders.yaml``.

A CUDA-Q configuration lists ``decoders``, each a detector error model given as sparse
matrices: ``H_sparse`` (detectors × error mechanisms), ``O_sparse`` (observables × error
mechanisms) and ``D_sparse`` (detectors × measurements: each detector is the XOR of the
measurements its row lists), one row after another, each row's column indices ended by ``-1``;
with the mechanisms' probabilities in ``error_rate_vec``. Each decoder becomes one stream whose id
is the decoder's ``id`` and whose controller sends raw measurements (``input =
"measurements"``), reachable by CUDA-Q's RPC (``rtdecoder.kernels.cuqr``) and by rtdecoder's
own protocol alike. Source of the format: NVIDIA/cudaqx,
``libs/qec/include/cudaq/qec/realtime/decoding_config.h`` and ``libs/qec/lib/realtime/config.cpp``
(the keys, which are required, and the checks on the matrices) and
``libs/qec/tools/decoding-server/decoding_server_config.yaml`` (an example); docs/cuqr-compat.md
gives the line ranges and what differs.

Decoder types:

- ``pymatching``: decoded with rtdecoder's ``matching`` decoder (PyMatching) on the whole shot,
  once its last measurement is in, as CUDA-Q's server does. ``merge_strategy`` (how mechanisms
  with the same detectors combine) is honoured.
- ``sliding_window``: rtdecoder's sliding windows with ``matching`` in each:
  ``num_syndromes_per_round`` detectors per round, ``window_size`` rounds per window,
  ``step_size`` rounds committed per window.

Every mechanism must flip one or two detectors (a graphlike model, as matching needs); a
mechanism that flips none is left out (no decoder can see it). Keys CUDA-Q defines that
rtdecoder does not implement (other decoder types, ``dem_chunks``, ``num_boundary_syndromes``,
``straddle_*``) are named in a ``ConfigError``, as are unknown keys; ``transport``,
``dispatch`` and ``cuda_device_id`` (where CUDA-Q runs a decoder) are accepted and have no
effect: rtdecoder's ``--transport`` and ``--backend`` choose.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import stim

from rtdecoder.config import ConfigError, ServerConfig, StreamConfig

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
                    "decoder_custom_args": {"type": "object"},
                    "transport": {"enum": ["cpu_roce", "gpu_roce"]},
                    "dispatch": {"enum": ["host", "device_graph"]},
                    "cuda_device_id": _INT,
                },
                "required": ["id", "type", "D_sparse"],
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
    "dem_chunks": "dem_chunks (init/bulk/final phases) is not implemented: expand it in CUDA-Q "
                  "(cudaq_qec.dem_close_all and dem_chunks_to_d_sparse) and give H_sparse, O_sparse, D_sparse and "
                  "error_rate_vec, or give stim_dem_path",
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


@dataclass(frozen=True, eq=False)
class MatrixModel:
    """A stream's model given as matrices rather than a circuit (``StreamConfig.model``).

    Attributes:
        source: where it came from, for messages (``"decoders.yaml decoder 3"``).
        dem: the detector error model, graphlike, every detector with coordinates ``(0, 0, t)``,
            ``t`` its round.
        detector_round: int64 ``(num_detectors,)``, non-decreasing.
        d_rows: each detector's measurements (absolute indices within a shot, canonical: no
            repeats).
        num_measurements: measurements per shot (one more than the largest index in D).
    """

    source: str
    dem: stim.DetectorErrorModel
    detector_round: np.ndarray
    d_rows: tuple[tuple[int, ...], ...]
    num_measurements: int

    @property
    def digest(self) -> str:
        """SHA-256 of what the stream is built from (DEM, rounds, D): equal models, equal digests.
        A reload (SIGHUP) keeps the streams whose models did not change."""
        d = self.__dict__.get("_digest")
        if d is None:
            h = hashlib.sha256(str(self.dem).encode())
            h.update(np.ascontiguousarray(self.detector_round, np.int64).tobytes())
            h.update(repr((self.d_rows, self.num_measurements)).encode())
            d = h.hexdigest()
            object.__setattr__(self, "_digest", d)
        return d

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MatrixModel) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    @property
    def num_detectors(self) -> int:
        return len(self.d_rows)

    @property
    def num_rounds(self) -> int:
        return int(self.detector_round[-1]) + 1 if len(self.detector_round) else 1


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
    lines = [f"detector(0, 0, {int(t)}) D{j}" for j, t in enumerate(detector_round)]
    lines += [f"logical_observable L{k}" for k in range(len(o_rows))]
    for d, (p, o) in merged.items():
        targets = " ".join(f"D{j}" for j in d) + "".join(f" L{k}" for k in range(len(o_rows)) if o >> k & 1)
        lines.append(f"error({p!r}) {targets}")
    return stim.DetectorErrorModel("\n".join(lines))


def _at(e) -> str:
    """Where in the document a schema error is, as ``.decoders[0].type``."""
    return "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in e.absolute_path)


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
        from rtdecoder.dem import detector_layout

        detector_round = detector_layout(dem).det_round if entry["type"] == "pymatching" else detector_round
        if entry["type"] == "pymatching":
            window = 0
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
    model = MatrixModel(f"{where}", dem, detector_round, tuple(tuple(r) for r in d_rows),
                        max(max(r) for r in d_rows) + 1)
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
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if isinstance(data, dict):
        for i, entry in enumerate(data.get("decoders") or []):
            if isinstance(entry, dict):
                for key, why in NOT_IMPLEMENTED.items():
                    if key in entry:
                        raise ConfigError(f"{p}: decoders[{i}]: {why}")
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
