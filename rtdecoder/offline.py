"""``rtdecoder decode``: decode recorded detection events offline, on the CPU or the GPU.

Input: a file of detection events in one of stim's result formats (``01``: one line of ``0``/``1``
per shot; ``b8``: each shot's bits packed little-endian into bytes, padded to a whole byte; see
stim's "Result formats" reference), ``num_detectors`` bits per shot, optionally followed by the
``num_observables`` observable flips (``--append-observables``, as ``stim detect
--append_observables`` writes them). Output: one prediction per shot, ``num_observables`` bits,
in either format. Files are read and written with ``stim.read_shot_data_file`` and
``stim.write_shot_data_file``.

Each shot is decoded whole (one window spanning every round) on the graph of the DEM (``--dem``,
or the circuit of the stream flags) by any registered decoder (``rtdecoder.decoders``): through
its ``decode_batch`` fast path where it has one (union-find on the CPU or the GPU,
``rtdecoder.gpu.BatchDecoder``; PyMatching's ``decode_batch`` for matching), else shot by shot
through its compiled decoder's ``decode_window``. As in the service, the events of detectors that
cannot change an observable (``rtdecoder.dem.observable_detectors``) are dropped first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import stim

from rtdecoder.config import WINDOW_ALL, ConfigError, StreamConfig

FORMATS = ("01", "b8")


@dataclass
class DecodeSummary:
    shots: int
    num_detectors: int
    num_observables: int
    decoder: str
    backend: str
    seconds: float
    failed: int
    """Shots for which no correction explains the events (predicted all-zero)."""
    logical_errors: int | None
    """Shots whose prediction differs from the recorded observables (when they were given)."""
    fit: FitResult | None = None
    """The shots' fit to the DEM (``fit_check``), None when not checked."""

    def to_json(self) -> dict:
        """The summary as ``decode --json`` writes it: shots, detectors, observables, decoder,
        backend, seconds, µs per shot, failed shots, logical errors and rate (when the true
        observables were given), and the fit check."""
        d = {"shots": self.shots, "num_detectors": self.num_detectors, "num_observables": self.num_observables,
             "decoder": self.decoder, "backend": self.backend, "seconds": self.seconds,
             "us_per_shot": 1e6 * self.seconds / self.shots if self.shots else float("nan"), "failed": self.failed,
             "logical_errors": self.logical_errors,
             "logical_error_rate": self.logical_errors / self.shots if self.logical_errors is not None and self.shots
             else None}
        if self.fit is not None:
            d["fit"] = {"g": self.fit.g, "dof": self.fit.dof, "p_value": self.fit.p_value, "shots": self.fit.shots,
                        "scale": self.fit.scale}
        return d

    def line(self) -> str:
        rate = self.shots / self.seconds if self.seconds > 0 else float("inf")
        s = (f"decoded {self.shots} shots ({self.num_detectors} detectors, {self.num_observables} observables) "
             f"with {self.decoder} on the {self.backend} in {self.seconds:.3f} s ({rate:,.0f} shots/s)")
        if self.failed:
            s += f"; {self.failed} shots had no correction (predicted zero)"
        if self.logical_errors is not None:
            s += f"; logical errors {self.logical_errors}/{self.shots} = {self.logical_errors / max(self.shots, 1):.3e}"
        if self.fit is not None and self.fit.shots and not 0.67 <= self.fit.scale <= 1.5:
            s += (f"; note: the detection events are {self.fit.scale:.2f}x as frequent as the DEM's, so the data's "
                  "noise differs from the DEM's")
        return s


def load_dem(dem_path: str | None, cfg: StreamConfig | None) -> stim.DetectorErrorModel:
    """The DEM from ``dem_path``, or from ``cfg``'s circuit (``decompose_errors=True``).

    Raises:
        ConfigError: the file is missing or is not a DEM.
    """
    if dem_path:
        try:
            return stim.DetectorErrorModel.from_file(dem_path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--dem {dem_path}: {e}") from None
    from rtdecoder.dem import circuit_dem, make_circuit

    return circuit_dem(make_circuit(cfg))


def whole_shot_stream(dem: stim.DetectorErrorModel, decoder: str, circuit: stim.Circuit | None = None):
    """A stream (``rtdecoder.engine.StreamRuntime``) decoding ``dem`` in one window spanning every
    round: its ``plan.graphs[0]`` is the graph, its ``keep`` the detectors whose events count.
    With ``circuit`` (``dem``'s), its herald detectors are used (``rtdecoder.heralds``)."""
    from rtdecoder.engine import stream_for_dem

    return stream_for_dem(StreamConfig(id=0, decoder=decoder, window=WINDOW_ALL), dem, circuit)


FIT_SHOTS = 10_000
"""Shots (the first ones) whose detection-event rates ``fit_check`` compares with the DEM."""
FIT_P_VALUE = 1e-6
"""Below this p-value the shots do not fit the DEM."""


@dataclass(frozen=True)
class FitResult:
    """``fit_check``'s result: the G statistic (likelihood ratio) and its degrees of freedom,
    the p-value, the shots used, and ``scale``: the events' overall rate over the DEM's."""

    g: float
    dof: int
    p_value: float
    shots: int
    scale: float

    @property
    def fits(self) -> bool:
        return self.p_value >= FIT_P_VALUE


def detector_marginals(dem: stim.DetectorErrorModel) -> np.ndarray:
    """float64 ``(num_detectors,)``: each detector's probability of a detection event under the
    DEM's independent error mechanisms, ``(1 - prod(1 - 2 p_e)) / 2`` over the mechanisms that
    flip it."""
    q = np.ones(dem.num_detectors)
    for inst in dem.flattened():
        if inst.type != "error":
            continue
        p = inst.args_copy()[0]
        for t in inst.targets_copy():
            if t.is_relative_detector_id():
                q[t.val] *= 1 - 2 * p
    return (1 - q) / 2


def fit_check(events: np.ndarray, dem: stim.DetectorErrorModel, max_shots: int = FIT_SHOTS) -> FitResult:
    """Whether detection events could come from ``dem``: a likelihood-ratio (G) test of each
    detector's event count over the first ``max_shots`` shots against the DEM's marginals scaled
    by one factor (the events' overall rate over the DEM's), chi-square with ``num_detectors - 1``
    degrees of freedom (``scipy.stats.chi2``). The scale absorbs a different noise strength; what
    the test catches is a pattern of rates that is not the DEM's, such as records of another code
    read with this DEM's width.

    Args:
        events: uint8/bool ``(shots, num_detectors)``.
    """
    from scipy.stats import chi2

    ev = events[:max_shots]
    n, m = ev.shape
    k = ev.sum(axis=0, dtype=np.float64)
    p = detector_marginals(dem)
    scale = float(k.sum() / (n * p.sum())) if n and p.sum() > 0 else 1.0
    e = n * np.clip(p * scale, 1e-12, 0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(k > 0, k * np.log(k / e), 0.0)
        t2 = np.where(n - k > 0, (n - k) * np.log((n - k) / (n - e)), 0.0)
    g = float(2 * (t1 + t2).sum())
    dof = max(m - 1, 1)
    return FitResult(g, dof, float(chi2.sf(g, dof)) if n else 1.0, n, scale)


def decode_file(in_path: str, out_path: str, dem: stim.DetectorErrorModel, *, in_format: str = "b8",
                out_format: str = "01", append_observables: bool = False, decoder: str = "union_find",
                backend: str = "cpu", chunk: int = 65536, circuit: stim.Circuit | None = None,
                parallel: int = 0, window: int = 0, commit: int = 0,
                herald_circuit: stim.Circuit | None = None, check_fit: bool = True) -> DecodeSummary:
    """Decode every shot of ``in_path`` and write the predictions to ``out_path``.

    With ``circuit``, ``in_path`` holds that circuit's raw measurement records (stim's
    measurement order, ``circuit.num_measurements`` bits per shot), turned into detection events
    and true observable flips by stim's ``Circuit.compile_m2d_converter``; the logical error rate
    is then always reported.

    With ``herald_circuit`` (or ``circuit``): ``dem``'s circuit, whose herald detectors
    (``rtdecoder.heralds``) union-find then erases with, on the CPU (the GPU batch kernel takes no
    heralds); correlated matching uses them from the DEM alone.

    With ``parallel = k >= 1``, shots are decoded in parallel windows of ``window`` rounds
    committing ``commit`` (``rtdecoder.parallel.ParallelWindowDecoder``) by ``k`` workers, on the
    CPU; else whole.

    Raises:
        ConfigError: an unknown format; an output folder that does not exist; an input that is
            not a whole number of records of the DEM's width (``num_detectors``, plus
            ``num_observables`` with ``append_observables``), or a ``b8`` input whose records
            have bits set past that width (it was written for another DEM). The message names
            both widths. With ``check_fit``, also shots whose detection-event rates do not fit the
            DEM (``fit_check``): the message names the file's shape and the DEM's.
    """
    for f in (in_format, out_format):
        if f not in FORMATS:
            raise ConfigError(f"format {f!r} is not one of {', '.join(FORMATS)}")
    folder = Path(out_path).resolve().parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write the predictions to {out_path}: the folder {folder} does not exist")
    nd, no = dem.num_detectors, dem.num_observables
    if circuit is not None:
        append_observables = False
        width = circuit.num_measurements
        what = f"circuit's {width} measurements per shot"
    else:
        width = nd + (no if append_observables else 0)
        what = (f"{nd} detectors" + (f" + {no} observables" if append_observables else "")
                + f" = {width} bits per shot")
    if in_format == "b8":
        check_b8_records(in_path, width, what)
    try:
        data = stim.read_shot_data_file(path=str(in_path), format=in_format, num_measurements=0,
                                        num_detectors=width, num_observables=0)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{in_path}: cannot read {in_format} shots of the DEM's {what}: {e}") from None
    truth = data[:, nd:] if append_observables else None
    if circuit is not None:
        data, truth = circuit.compile_m2d_converter().convert(measurements=data, separate_observables=True)
    fit = fit_check(data[:, :nd], dem) if check_fit and nd else None
    if fit is not None and not fit.fits:
        raise ConfigError(
            f"{in_path}: {len(data)} shots of {width} bits ({what}) do not fit the DEM "
            f"({nd} detectors, {no} observables): the detection-event rates of the first {fit.shots} shots "
            f"differ from the DEM's pattern (G = {fit.g:.0f} on {fit.dof} degrees of freedom, p = {fit.p_value:.1e}), "
            "as records of another circuit read with this DEM's width do. Give the DEM (--dem, or the stream flags) "
            "of the circuit that wrote the file, or --no-fit-check to decode anyway")
    if parallel:
        from rtdecoder.parallel import ParallelWindowDecoder

        pw = ParallelWindowDecoder(dem, decoder, window, commit, parallel)
        events = np.ascontiguousarray(data[:, :nd], np.uint8)
        t0 = time.perf_counter()
        preds = pw.decode_shots(events).astype(bool)
        seconds = time.perf_counter() - t0
        how = f"cpu, {parallel} parallel-window worker{'s' if parallel > 1 else ''}"
        return _finish(preds, out_path, out_format, truth, decoder, how, seconds, 0, nd, no, fit)
    rt = whole_shot_stream(dem, decoder, herald_circuit if herald_circuit is not None else circuit)
    graph = rt.plan.graphs[0]
    if rt.num_heralds and backend == "gpu" and rt.spec.gpu:
        backend = "cpu"  # the GPU batch kernel takes no heralds
    events = np.ascontiguousarray(data[:, :nd], np.uint8) & rt.keep
    t0 = time.perf_counter()
    if rt.spec.decode_batch is not None:
        obs, bad = rt.spec.decode_batch(graph, events, backend, chunk)
    else:
        obs, bad = _decode_each(rt.decoder, graph, events)
    failed = int(np.sum(bad))
    obs[bad] = 0
    preds = ((obs[:, None] >> np.arange(no, dtype=np.int64)) & 1).astype(bool)
    seconds = time.perf_counter() - t0
    return _finish(preds, out_path, out_format, truth, decoder, "gpu" if backend == "gpu" else "cpu", seconds, failed,
                   nd, no, fit)


def _finish(preds, out_path, out_format, truth, decoder, backend, seconds, failed, nd, no, fit=None) -> DecodeSummary:
    """Write the predictions and sum up."""
    try:
        stim.write_shot_data_file(data=preds, path=str(out_path), format=out_format, num_measurements=0,
                                  num_detectors=0, num_observables=no)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot write the predictions to {out_path}: {e}") from None
    errors = int(np.sum(np.any(preds != truth, axis=1))) if truth is not None else None
    return DecodeSummary(len(preds), nd, no, decoder, backend, seconds, failed, errors, fit)


def check_b8_records(path: str, width: int, what: str) -> None:
    """Check that the ``b8`` file ``path`` holds whole records of ``width`` bits (each
    ``ceil(width / 8)`` bytes) whose padding bits, past bit ``width`` of each record, are all zero.
    A file written for a DEM with another detector count breaks one or the other unless both
    widths fill the same whole bytes; stim's reader checks neither.

    Raises:
        ConfigError: naming the file's size, the record size and ``what`` (the DEM's width).
    """
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    rec = (width + 7) // 8
    if rec == 0 or len(raw) % rec:
        raise ConfigError(f"{path} holds {len(raw)} bytes, not a whole number of {rec}-byte b8 records for the "
                          f"DEM's {what}: give the DEM (--dem, or the stream flags) of the circuit that wrote it")
    if width % 8:
        last = raw.reshape(-1, rec)[:, -1] >> (width % 8)
        bad = int(np.count_nonzero(last))
        if bad:
            raise ConfigError(f"{path}: {bad} of {len(last)} records have bits set past bit {width}, so the file "
                              f"was written for another number of detectors than the DEM's {what}: give the DEM "
                              "(--dem, or the stream flags) of the circuit that wrote it")


def _decode_each(compiled, graph, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every shot through ``compiled.decode_window`` on the whole-shot graph: int64 observable
    masks, and which shots had no correction."""
    emask = graph.edge_obs.view(np.int64)
    obs = np.zeros(len(events), np.int64)
    bad = np.zeros(len(events), bool)
    for s, row in enumerate(events):
        try:
            chosen, n = compiled.decode_window(0, row)
        except ValueError:
            bad[s] = True
            continue
        obs[s] = np.bitwise_xor.reduce(emask[chosen[:n]]) if n else 0
    return obs, bad


def write_example(path: Path, dem: stim.DetectorErrorModel, circuit: stim.Circuit, shots: int, fmt: str,
                  seed: int = 1) -> None:
    """Sample ``shots`` shots of ``circuit`` and write their detection events followed by the
    observable flips (for tests and benchmarks)."""
    dets, obs = circuit.compile_detector_sampler(seed=seed).sample(shots, separate_observables=True)
    stim.write_shot_data_file(data=np.concatenate([dets, obs], axis=1), path=str(path), format=fmt,
                              num_measurements=0, num_detectors=dem.num_detectors + dem.num_observables,
                              num_observables=0)
