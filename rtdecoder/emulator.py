"""``rtdecoder emulate``: a quantum-controller emulator that speaks the wire protocol.

It samples detection events and the true observable flips of a stream's circuit with stim,
sends each shot round by round (``rounds_per_packet`` rounds per SYNDROME packet) paced at the
cycle time, receives the corrections, and reports:

- per-shot round-trip latency, last round sent → final correction received, in µs
  (p50/p90/p99/p99.9/max), and the server's own share (its receive → send stamps);
- throughput in rounds per second;
- the logical error rate of the service's predictions against stim's true observables, and that
  of offline PyMatching (``decode_batch`` on the whole DEM) on the very same shots;
- lost shots (no final correction within the timeout) and error replies.

Pacing (DESIGN.md): round ``r`` of a shot is measured at ``t0 + (r + 1) * cycle``; a packet is
sent when its last round has been measured, against absolute deadlines, so a late send is caught
up on rather than pushing every later round back. A shot's correction is awaited before the next
shot starts, so that shots do not queue behind each other and each latency is one shot's own.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pymatching

from rtdecoder import protocol as P
from rtdecoder.config import StreamConfig
from rtdecoder.dem import detector_layout, make_circuit

HEADER_DTYPE = np.dtype([
    ("magic", "<u4"), ("version", "u1"), ("msg_type", "u1"), ("flags", "<u2"), ("header_len", "<u2"),
    ("stream_id", "<u2"), ("first_round", "<u4"), ("shot_id", "<u8"), ("num_rounds", "<u4"),
    ("payload_len", "<u4"), ("controller_ts_ns", "<u8"),
])
assert HEADER_DTYPE.itemsize == P.HEADER_LEN


class EmulatorError(RuntimeError):
    """The emulator cannot run: no server answered, or the server's stream does not match."""


@dataclass
class EmulatorOptions:
    """How the emulator drives the service.

    Attributes:
        host, port: the service's UDP address.
        shots: shots to send.
        rounds_per_packet: rounds framed into one SYNDROME packet.
        cycle_us: time between rounds, µs (0: send as fast as possible).
        timeout_s: how long to wait for a shot's final correction before counting it lost.
        seed: stim sampler seed (None: random).
        progress: show a progress bar on standard error.
    """

    host: str = "127.0.0.1"
    port: int = 7700
    shots: int = 2000
    rounds_per_packet: int = 1
    cycle_us: float = 1.0
    timeout_s: float = 1.0
    seed: int | None = 12345
    progress: bool = True


@dataclass
class Report:
    """What ``rtdecoder emulate`` and ``rtdecoder demo`` report; ``to_json`` gives the README's keys."""

    circuit: str
    distance: int
    rounds: int
    p: float
    decoder: str
    window: int
    commit: int
    rounds_per_packet: int
    cycle_us: float
    shots: int
    latency_us: dict[str, float]
    server_latency_us: dict[str, float]
    throughput_rounds_per_s: float
    logical_error_rate: float
    logical_error_rate_stderr: float
    reference_logical_error_rate: float
    reference_logical_error_rate_stderr: float
    disagreements_with_reference: int
    lost: int
    errors: int
    error_statuses: dict[str, int] = field(default_factory=dict)
    latencies_us: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    answered: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("latencies_us", "predictions", "answered"):
            d.pop(k)
        return d


def percentiles(values_us: np.ndarray) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max of ``values_us`` (µs); NaN when empty."""
    if len(values_us) == 0:
        return {k: math.nan for k in ("p50", "p90", "p99", "p999", "max")}
    q = np.percentile(values_us, [50, 90, 99, 99.9])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "p999": float(q[3]),
            "max": float(np.max(values_us))}


def _rate(errors: int, shots: int) -> tuple[float, float]:
    if shots == 0:
        return math.nan, math.nan
    r = errors / shots
    return r, math.sqrt(max(r * (1 - r), 1.0 / shots) / shots)


class Controller:
    """The controller side of one stream's conversation with the service."""

    def __init__(self, host: str, port: int, stream_id: int):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.connect((host, port))
        self.sock.setblocking(False)
        self.stream_id = stream_id
        self.rx = bytearray(65536)
        self.rxv = memoryview(self.rx)

    def recv(self) -> memoryview | None:
        try:
            n = self.sock.recv_into(self.rx)
        except (BlockingIOError, ConnectionRefusedError):
            return None
        return self.rxv[:n]

    def request(self, msg_type: P.MsgType, want: P.MsgType, timeout_s: float, attempts: int = 1) -> memoryview:
        """Send a control message and wait for its reply (retrying ``attempts`` times)."""
        msg = P.encode(P.Header(msg_type, stream_id=self.stream_id))
        for _ in range(attempts):
            try:
                self.sock.send(msg)
            except ConnectionRefusedError:
                pass
            end = time.perf_counter() + timeout_s
            while time.perf_counter() < end:
                r = self.recv()
                if r is None:
                    continue
                h = P.decode_header(r)
                if h.msg_type == want:
                    return r
                if h.msg_type == P.MsgType.ERROR:
                    _, status, _, _ = P.decode_error(r)
                    raise EmulatorError(f"the service answered {msg_type.name} with {status.name}")
        raise EmulatorError(f"no {want.name} from the service within {timeout_s * attempts:.1f} s")

    def hello(self, timeout_s: float = 0.5, attempts: int = 10) -> P.StreamInfo:
        r = self.request(P.MsgType.HELLO, P.MsgType.HELLO_REPLY, timeout_s, attempts)
        return P.StreamInfo.unpack(r[P.HEADER_LEN:])

    def reset(self, timeout_s: float = 1.0) -> None:
        self.request(P.MsgType.RESET, P.MsgType.RESET_ACK, timeout_s, 3)

    def close(self) -> None:
        self.sock.close()


def shot_packets(stream_id: int, shot_id: int, blocks: np.ndarray, rounds_per_packet: int) -> tuple[np.ndarray, list[memoryview], list[int]]:
    """The SYNDROME packets of one shot.

    Args:
        blocks: uint8 ``(num_rounds, round_bytes)``, the shot's round blocks (§5).

    Returns:
        ``(headers, views, ready_round)``: the structured header array (its ``controller_ts_ns``
        is set at send time), one memoryview per packet, and for each packet the number of
        rounds measured before it can go (its last round + 1).
    """
    nrounds, rbytes = blocks.shape
    firsts = np.arange(0, nrounds, rounds_per_packet)
    counts = np.minimum(rounds_per_packet, nrounds - firsts)
    sizes = P.HEADER_LEN + counts * rbytes
    starts = np.concatenate([[0], np.cumsum(sizes)])
    buf = np.zeros(int(starts[-1]), np.uint8)
    headers = np.zeros(len(firsts), HEADER_DTYPE)
    headers["magic"] = P.MAGIC
    headers["version"] = P.VERSION
    headers["msg_type"] = int(P.MsgType.SYNDROME)
    headers["header_len"] = P.HEADER_LEN
    headers["stream_id"] = stream_id
    headers["first_round"] = firsts
    headers["shot_id"] = shot_id
    headers["num_rounds"] = counts
    headers["payload_len"] = counts * rbytes
    hb = headers.view(np.uint8).reshape(len(firsts), P.HEADER_LEN)
    for i, (f, c) in enumerate(zip(firsts.tolist(), counts.tolist())):
        s = int(starts[i])
        buf[s:s + P.HEADER_LEN] = hb[i]
        buf[s + P.HEADER_LEN:s + int(sizes[i])] = blocks[f:f + c].reshape(-1)
    mv = memoryview(buf)
    views = [mv[int(starts[i]):int(starts[i + 1])] for i in range(len(firsts))]
    return buf, views, (firsts + counts).tolist()


def run_emulator(cfg: StreamConfig, opts: EmulatorOptions) -> Report:
    """Drive the service at ``opts.host:opts.port`` with ``opts.shots`` shots of stream ``cfg``.

    Raises:
        EmulatorError: the service does not answer HELLO, or its stream differs from ``cfg``.
    """
    circuit = make_circuit(cfg)
    layout = detector_layout(circuit)
    sampler = circuit.compile_detector_sampler(seed=opts.seed)
    dets, obs = sampler.sample(opts.shots, separate_observables=True)
    dem = circuit.detector_error_model(decompose_errors=True)
    reference = pymatching.Matching.from_detector_error_model(dem).decode_batch(dets)

    ctl = Controller(opts.host, opts.port, cfg.id)
    try:
        info = ctl.hello()
        mine = (layout.num_detectors, layout.num_rounds, layout.num_observables, layout.round_bytes)
        theirs = (info.num_detectors, info.num_rounds, info.num_observables, info.round_bytes)
        if mine != theirs:
            raise EmulatorError(
                f"stream {cfg.id} on the service has (detectors, rounds, observables, round bytes) = {theirs}, "
                f"the emulator's circuit has {mine}: run both with the same --circuit/--distance/--rounds")
        if P.HEADER_LEN + opts.rounds_per_packet * info.round_bytes > info.max_datagram:
            raise EmulatorError(f"--rounds-per-packet {opts.rounds_per_packet} makes datagrams larger than "
                                f"the service's {info.max_datagram}-byte limit")
        ctl.reset()
        return _drive(cfg, opts, ctl, info, layout, dets, obs, reference)
    finally:
        ctl.close()


def _drive(cfg, opts, ctl, info, layout, dets, obs, reference) -> Report:
    packed = P.pack_rounds(dets, layout.round_offsets, layout.round_bytes)
    nobs = layout.num_observables
    nshots = len(dets)
    preds = np.zeros((nshots, nobs), np.uint8)
    answered = np.zeros(nshots, bool)
    errored = np.zeros(nshots, bool)
    latency = np.full(nshots, np.nan)
    server = np.full(nshots, np.nan)
    errors = 0
    statuses: dict[str, int] = {}
    cycle_ns = int(round(opts.cycle_us * 1000))
    timeout_ns = int(opts.timeout_s * 1e9)
    clock = time.perf_counter_ns
    sock_send = ctl.sock.send
    pack_ts = struct.Struct("<Q").pack_into
    recv = ctl.recv

    progress = None
    if opts.progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("[bold]emulating[/] d={task.fields[d]} {task.fields[dec]}"), BarColumn(),
                            MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        task = progress.add_task("shots", total=nshots, d=cfg.distance, dec=cfg.decoder)
        progress.start()
    t_begin = clock()
    try:
        for s in range(nshots):
            shot_id = s + 1
            buf, views, ready = shot_packets(cfg.id, shot_id, packed[s], opts.rounds_per_packet)
            ts_offsets = (np.cumsum([0] + [len(v) for v in views[:-1]]) + P.OFF_CONTROLLER_TS).tolist()
            final = False
            poisoned = False
            t0 = clock()
            t_last = t0
            for i, v in enumerate(views):
                deadline = t0 + ready[i] * cycle_ns
                while True:
                    now = clock()
                    if now >= deadline:
                        break
                    r = recv()
                    if r is not None:
                        final, poisoned, errors = _on_reply(r, shot_id, nobs, preds[s], now, errors, statuses, server, s, final, poisoned)
                t_last = clock()
                pack_ts(buf, ts_offsets[i], t_last)
                try:
                    sock_send(v)
                except (ConnectionRefusedError, BlockingIOError):
                    pass
            end = t_last + timeout_ns
            while not (final or poisoned):
                r = recv()
                now = clock()
                if r is not None:
                    final, poisoned, errors = _on_reply(r, shot_id, nobs, preds[s], now, errors, statuses, server, s, final, poisoned)
                    if final:
                        latency[s] = (now - t_last) / 1000.0
                elif now > end:
                    break
            answered[s] = final
            errored[s] = poisoned and not final
            if progress is not None and (s % 16 == 15 or s == nshots - 1):
                progress.update(task, completed=s + 1)
        t_end = clock()
    finally:
        if progress is not None:
            progress.stop()

    lat = latency[answered]
    errs = int(np.sum(np.any(preds[answered] != obs[answered], axis=1)))
    ref_errs = int(np.sum(np.any(reference != obs, axis=1)))
    ler, ler_se = _rate(errs, int(answered.sum()))
    rler, rler_se = _rate(ref_errs, nshots)
    disagree = int(np.sum(np.any(preds[answered] != reference[answered], axis=1)))
    lost = int(np.sum(~answered & ~errored))
    elapsed = max(t_end - t_begin, 1) / 1e9
    return Report(
        circuit=cfg.circuit, distance=cfg.distance, rounds=layout.num_rounds, p=cfg.p, decoder=cfg.decoder,
        window=cfg.window, commit=cfg.commit, rounds_per_packet=opts.rounds_per_packet, cycle_us=opts.cycle_us,
        shots=nshots, latency_us=percentiles(lat), server_latency_us=percentiles(server[answered]),
        throughput_rounds_per_s=nshots * layout.num_rounds / elapsed,
        logical_error_rate=ler, logical_error_rate_stderr=ler_se,
        reference_logical_error_rate=rler, reference_logical_error_rate_stderr=rler_se,
        disagreements_with_reference=disagree, lost=lost, errors=errors, error_statuses=statuses,
        latencies_us=lat, predictions=preds, answered=answered,
    )


def _on_reply(r, shot_id, nobs, pred_row, now, errors, statuses, server, s, final, poisoned):
    h = P.decode_header(r)
    if h.msg_type == P.MsgType.CORRECTION:
        if h.shot_id != shot_id:
            return final, poisoned, errors
        c = P.decode_correction(r, nobs)
        if c.final:
            pred_row[:] = c.cumulative
            server[s] = (c.server_tx_ns - c.server_rx_ns) / 1000.0
            return True, poisoned, errors
        return final, poisoned, errors
    if h.msg_type == P.MsgType.ERROR:
        _, status, _, _ = P.decode_error(r)
        statuses[status.name] = statuses.get(status.name, 0) + 1
        return final, poisoned or h.shot_id == shot_id, errors + 1
    return final, poisoned, errors


def write_json(report: Report, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report.to_json(), f, indent=2, allow_nan=True)
        f.write("\n")


def write_plot(report: Report, path: str) -> None:
    """A PNG histogram of the per-shot round-trip latency on a log axis, percentiles marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = report.latencies_us
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if len(lat):
        lo, hi = max(np.min(lat), 0.1), max(np.max(lat), 1.0)
        bins = np.logspace(np.log10(lo * 0.9), np.log10(hi * 1.1), 60)
        ax.hist(lat, bins=bins, color="#4c72b0")
        for name, style in (("p50", "-"), ("p99", "--"), ("p999", ":")):
            x = report.latency_us[name]
            ax.axvline(x, color="k", linestyle=style, linewidth=1, label=f"{name} {x:.1f} µs")
        ax.legend()
    ax.set_xscale("log")
    ax.set_xlabel("round trip, last round sent → final correction received (µs)")
    ax.set_ylabel("shots")
    ax.set_title(f"{report.circuit} d={report.distance} rounds={report.rounds} p={report.p} {report.decoder}, "
                 f"{report.shots} shots", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
