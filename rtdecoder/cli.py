"""The ``rtdecoder`` command: ``serve``, ``emulate`` and ``demo``.

``rtdecoder demo`` with no arguments runs the main job end to end: the service and the controller
emulator on loopback, a distance-5 rotated surface-code Z memory (25 rounds, p = 0.001), printing
the latency table and the logical error rate next to offline PyMatching's on the same shots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rtdecoder.config import WINDOW_ALL, ConfigError, ServerConfig, StreamConfig, format_ids, parse_cpu_list
from rtdecoder.configfile import load_config


def _window(value: str) -> int:
    if value.strip().lower() == "all":
        return WINDOW_ALL
    try:
        w = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number of rounds nor 'all'") from None
    if w < 1:
        raise argparse.ArgumentTypeError("the window must be at least 1 round, or 'all'")
    return w


def _decoder_names() -> list[str]:
    from rtdecoder import decoders

    return list(decoders.names())


def _transport_names() -> list[str]:
    from rtdecoder import transport

    return [*transport.names(remote_only=True), "auto"]


STREAM_FLAGS = ("--stream-id", "--circuit", "--distance", "--rounds", "--p", "--decoder", "--window", "--commit",
                "--parallel-windows", "--erasure",
                "--allow", "--input", "--deadline-us")


def _add_stream_flags(p: argparse.ArgumentParser, role: str) -> None:
    """The stream flags, as far as they do something for ``role``: ``serve`` and ``demo`` all of
    them; ``emulate`` no ``--allow`` (a service's setting), and ``--decoder``, ``--window``,
    ``--commit`` only to check the service's; ``decode`` the circuit and the decoder."""
    g = p.add_argument_group("stream")
    if role != "decode":
        g.add_argument("--stream-id", type=int, default=0, help="stream id on the wire (default 0)")
    g.add_argument("--circuit", default="surface_code:rotated_memory_z",
                   help="stim generated circuit name, or a .stim file (default surface_code:rotated_memory_z)")
    g.add_argument("--distance", type=int, default=5, help="code distance (default 5)")
    g.add_argument("--rounds", type=int, default=None, help="syndrome rounds (default 5 * distance)")
    g.add_argument("--p", type=float, default=0.001, help="circuit-level noise strength (default 0.001)")
    g.add_argument("--erasure", type=float, default=0.0,
                   help="generated circuits: a heralded erasure with this probability after each noisy gate (the "
                        "erasure-conversion model), the heralds sent as detection events (default 0: none)")
    if role == "emulate":
        g.add_argument("--decoder", default=None, choices=_decoder_names(),
                       help="the decoder the service's stream should have (default: whichever it has; a "
                            "difference is reported)")
        g.add_argument("--window", type=_window, default=None,
                       help="the window W the service's stream should have (default: whichever it has)")
        g.add_argument("--commit", type=int, default=None,
                       help="the commit region C the service's stream should have (default: whichever it has)")
        g.add_argument("--dialect", default="native", choices=["native", "cuqr"],
                       help="the wire dialect: rtdecoder's own (default), or CUDA-Q QEC's real-time RPC (CUQR: "
                            "enqueue_syndromes/get_corrections over UDP; docs/cuqr-compat.md)")
        g.add_argument("--input", default=None, choices=["detection_events", "measurements"],
                       help="with --dialect cuqr, what the service's stream takes (default measurements); the "
                            "native dialect learns it from HELLO_REPLY")
        return
    default = "union_find" if role == "decode" else "matching"
    g.add_argument("--decoder", default=default, choices=_decoder_names(),
                   help=f"decoder (default {default}; plug-ins: RTDECODER_PLUGINS, see README.md, 'Plug-ins')")
    if role == "decode":
        g.add_argument("--parallel-windows", type=int, default=0, metavar="K",
                       help="decode each shot in parallel windows (the sandwich schedule) on K worker threads, "
                            "cores of --commit rounds and buffers of --window minus --commit (default 0: whole shots)")
        g.add_argument("--window", type=_window, default=None,
                       help="with --parallel-windows: window W in rounds (default 2 * distance)")
        g.add_argument("--commit", type=int, default=None, help="with --parallel-windows: C (default distance)")
        return
    g.add_argument("--window", type=_window, default=None, help="window W in rounds, or 'all' (default 2 * distance)")
    g.add_argument("--commit", type=int, default=None, help="commit region C in rounds (default distance)")
    g.add_argument("--allow", default=None,
                   help="controller addresses/subnets the stream accepts, comma-separated (default loopback: "
                        "127.0.0.0/8,::1/128)")
    g.add_argument("--input", default=None, choices=["detection_events", "measurements"],
                   help="what the controller sends: detection events (default; with demo --dialect cuqr: "
                        "measurements), or the circuit's raw measurement results, which the service turns into "
                        "detection events")
    if role == "demo":
        g.add_argument("--dialect", default="native", choices=["native", "cuqr"],
                       help="the emulator's wire dialect: rtdecoder's own (default), or CUDA-Q QEC's real-time RPC "
                            "(CUQR, as cudaqx main speaks it: reset_decoder, an enqueue_syndromes per round, "
                            "get_corrections; docs/cuqr-compat.md)")
    g.add_argument("--deadline-us", type=float, default=0.0,
                   help="with --decoder matching or matching_correlated (an escape decoder): a window that would be "
                        "decoded later than this many µs after its last round arrived is decoded by a faster decoder "
                        "instead (plain matching, then union-find), and counted (default 0: no deadline)")
    g.add_argument("--parallel-windows", type=int, default=1, metavar="K",
                   help="decode the stream's windows on K workers: the parallel-window schedule (cores of --commit "
                        "rounds, buffers of --window minus --commit), dealt to the owning worker and K-1 helper "
                        "threads; union_find (default 1: sliding windows on one worker)")


def _add_emulator_flags(p: argparse.ArgumentParser, shots: int) -> None:
    g = p.add_argument_group("emulator")
    g.add_argument("--shots", type=int, default=shots, help=f"shots to send (default {shots})")
    g.add_argument("--rounds-per-packet", type=int, default=1, help="rounds per SYNDROME packet (default 1)")
    g.add_argument("--cycle-us", type=float, default=1.0, help="time between rounds, µs (default 1.0)")
    g.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for a shot's correction (default 1)")
    g.add_argument("--seed", type=int, default=12345, help="stim sampling seed (default 12345)")
    g.add_argument("--json", metavar="PATH", help="write the report as JSON")
    g.add_argument("--plot", metavar="PATH", help="write a PNG of the latency distribution")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--drop", type=float, default=0.0, help="probability that a datagram is lost (default 0)")
    g.add_argument("--duplicate", type=float, default=0.0, help="probability that a datagram is sent twice (default 0)")
    g.add_argument("--reorder", type=float, default=0.0,
                   help="probability that a datagram is swapped with the next one (default 0)")
    g.add_argument("--fault-seed", type=int, default=7, help="seed of the fault draws (default 7)")
    g.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even when shots end in an error reply or are lost (by default such a run exits 1 "
                        "and names the likely cause)")


def _stream_from_args(a: argparse.Namespace) -> StreamConfig:
    allow = getattr(a, "allow", None)
    return StreamConfig(
        id=getattr(a, "stream_id", 0), circuit=a.circuit, distance=a.distance, rounds=a.rounds, p=a.p,
        decoder=a.decoder or "matching", window=getattr(a, "window", None), commit=getattr(a, "commit", None),
        input=getattr(a, "input", None) or "detection_events", deadline_us=getattr(a, "deadline_us", 0.0) or 0.0,
        parallel=(getattr(a, "parallel_windows", 1) or 1) if getattr(a, "command", None) in ("serve", "demo") else 1,
        erasure=getattr(a, "erasure", 0.0) or 0.0,
        **({"allow": tuple(x.strip() for x in allow.split(",") if x.strip())} if allow else {}),
    )


def _given(argv: list[str], flags) -> list[str]:
    """Which of ``flags`` appear on the command line ``argv``."""
    return [f for f in flags if any(t == f or t.startswith(f + "=") for t in argv)]


def _stream_argv(cfg: StreamConfig) -> list[str]:
    return ["--stream-id", str(cfg.id), "--circuit", cfg.circuit, "--distance", str(cfg.distance),
            "--rounds", str(cfg.rounds), "--p", repr(cfg.p), "--decoder", cfg.decoder,
            "--window", "all" if cfg.window == WINDOW_ALL else str(cfg.window)] + (
            ["--commit", str(cfg.commit)] if cfg.window != WINDOW_ALL else []) + ["--allow", ",".join(cfg.allow),
                                                                                   "--input", cfg.input] + (
            ["--deadline-us", repr(cfg.deadline_us)] if cfg.deadline_us > 0 else []) + (
            ["--parallel-windows", str(cfg.parallel)] if cfg.parallel > 1 else []) + (
            ["--erasure", repr(cfg.erasure)] if cfg.erasure > 0 else [])


def _cpus(value: str) -> tuple[int, ...]:
    """``--cpus``: ``config.parse_cpu_list``, with argparse's error."""
    try:
        return parse_cpu_list(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a CPU list like 2,3 or 2-5") from None


def cmd_serve(a: argparse.Namespace) -> int:
    from rtdecoder.server import serve

    over = {k: v for k, v in (("host", a.host), ("port", a.port), ("metrics_host", a.metrics_host),
                              ("metrics_port", a.metrics_port), ("cpus", a.cpus), ("busy_poll_us", a.busy_poll_us),
                              ("recv_batch", a.recv_batch), ("backend", a.backend),
                              ("error_replies_per_s", a.error_replies_per_s), ("error_burst", a.error_burst),
                              ("drain_s", a.drain_s), ("busy_batches", a.busy_batches), ("transport", a.transport),
                              ("max_stream_gib", a.max_stream_gib), ("xdp_interface", a.xdp_interface),
                              ("xdp_queues", a.xdp_queues), ("xdp_mode", a.xdp_mode), ("record_dir", a.record),
                              ("record_files", a.record_files), ("record_file_mb", a.record_file_mb))
            if v is not None}
    if a.config:
        cfg = load_config(a.config)
        if over:
            cfg = ServerConfig(**{**cfg.__dict__, **over})
        ignored = _given(a.argv, STREAM_FLAGS)
        if ignored:
            print(f"rtdecoder: warning: {', '.join(ignored)} ignored: the streams are those of --config {a.config}",
                  file=sys.stderr)
    else:
        cfg = ServerConfig(**{"port": 7700, "metrics_port": 9400, **over, "streams": (_stream_from_args(a),)})
    return serve(cfg, echo=a.echo, config_path=a.config, overrides=over)


def _emulator_options(a: argparse.Namespace, host: str, port: int, expect: dict | None = None):
    """The emulator's options from its flags (checked here, before any service is started).

    ``expect``: the service's stream's decoder, window and commit as the user asked for them."""
    from rtdecoder.emulator import EmulatorOptions

    if a.timeout <= 0:
        raise ConfigError("--timeout must be positive (seconds)")
    if a.shots < 1:
        raise ConfigError("--shots must be at least 1")
    if a.rounds_per_packet < 1:
        raise ConfigError("--rounds-per-packet must be at least 1")
    if a.cycle_us < 0:
        raise ConfigError("--cycle-us must not be negative")
    for name in ("drop", "duplicate", "reorder"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            raise ConfigError(f"--{name} {getattr(a, name)} must be a probability in [0, 1]")
    return EmulatorOptions(host=host, port=port, shots=a.shots, rounds_per_packet=a.rounds_per_packet,
                           cycle_us=a.cycle_us, timeout_s=a.timeout, seed=a.seed, progress=not a.no_progress,
                           drop=a.drop, duplicate=a.duplicate, reorder=a.reorder, fault_seed=a.fault_seed,
                           transport=getattr(a, "transport", "udp"), expect=expect or {},
                           dialect=getattr(a, "dialect", "native"))


def _write_outputs(report, a: argparse.Namespace) -> None:
    from rtdecoder.emulator import write_json, write_plot

    if a.json:
        write_json(report, a.json)
    if a.plot:
        write_plot(report, a.plot)


LIKELY_CAUSE = {
    "INTERNAL_ERROR": "the shots failed inside the service: most often the controller sends what the stream does "
                      "not take (the stream's input, --input, is measurements or detection_events) or another "
                      "circuit than the service's (--circuit, --distance, --rounds)",
    "BAD_REQUEST": "the service could not parse the requests, or the observables differ: run both with the same "
                   "circuit",
    "INVALID_DECODER": "the service has no such stream (--stream-id), or it is a parallel-window stream, which CUQR "
                       "does not reach",
    "NOT_READY": "the stream was being (re)built, or get_corrections came before the shot's last bits",
    "SYNDROMES_DROPPED": "the service was overloaded: a longer --cycle-us, or more cores for it",
    "BUSY": "the service was overloaded: a longer --cycle-us, or more cores for it",
    "UNKNOWN_STREAM": "the service has no such stream (--stream-id)",
    "BAD_PAYLOAD": "the packets do not match the stream: run both with the same circuit and --input",
    "BAD_ROUNDS": "the rounds do not match the stream: run both with the same circuit",
    "SHOT_ABANDONED": "a newer shot began before this one ended: a shorter --timeout than the service needs",
}


def _report(report, a: argparse.Namespace, **kw) -> int:
    """Print the report, write its files; 130 if the run was interrupted (Ctrl-C); 1 if any shot
    that no injected fault reached ended in an error reply or was lost (unless
    ``--allow-failures``), with the likely cause of each status recognised; else 0."""
    import numpy as np

    from rtdecoder.report import print_report

    print_report(report, **kw)
    _write_outputs(report, a)
    note = _slicing_note(report)
    if note:
        print(f"rtdecoder: {note}", file=sys.stderr)
    if report.interrupted:
        print(f"rtdecoder: interrupted after {report.shots} of {a.shots} shots: the figures are of those",
              file=sys.stderr)
        return 130
    answered = np.asarray(report.answered, bool)
    affected = np.asarray(report.affected, bool) if len(report.affected) == len(answered) else \
        np.zeros(len(answered), bool)
    failed = int(np.sum(~answered & ~affected))
    if failed and not getattr(a, "allow_failures", False):
        print(f"rtdecoder: {failed} of {report.shots} shots got no correction ({report.errors} error replies"
              f"{', ' + str(report.error_statuses) if report.error_statuses else ''}, {report.lost} lost)",
              file=sys.stderr)
        for status in report.error_statuses:
            if status in LIKELY_CAUSE:
                print(f"  {status}: {LIKELY_CAUSE[status]}", file=sys.stderr)
        if report.lost and not report.errors:
            print("  lost: no reply within --timeout: is the service still running, and is it this circuit's?",
                  file=sys.stderr)
        print("  (--allow-failures to exit 0 all the same)", file=sys.stderr)
        return 1
    return 0


def _spin_warning(spinners: int, who: str) -> str | None:
    """A warning when this host's free cores (its CPUs less the 1-minute load average) are fewer
    than the ``spinners`` busy-polling threads ``who`` run, else None: the round trips would then
    measure time slicing, not the service."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if cpus - load >= spinners - 0.25:
        return None
    return (f"warning: {who} busy-poll on {spinners} core(s), but this host has {cpus} CPU(s) with a load of "
            f"{load:.1f}: they will share cores, and the latencies will measure time slicing more than the service")


def _slicing_note(report) -> str | None:
    """A note when the round trip dwarfs the server's share of it (native dialect: the reply's
    stamps), as it does when the controller and the service share a core."""
    lat, srv = report.latency_us.get("p50", float("nan")), report.server_latency_us.get("p50", float("nan"))
    if report.dialect != "native" or not (lat == lat and srv == srv) or lat < 200 or lat < 20 * max(srv, 1.0):
        return None
    return (f"note: the round trip's p50 ({lat:,.1f} µs) is {lat / max(srv, 1.0):,.0f}x the server's share "
            f"({srv:,.1f} µs): the time is spent outside the service, most often waiting for a core (controller and "
            "service spinning on too few cores)")


def cmd_emulate(a: argparse.Namespace) -> int:
    from rtdecoder.emulator import run_emulator

    expect = {k: getattr(a, k) for k in ("decoder", "window", "commit") if getattr(a, k) is not None}
    opts = _emulator_options(a, a.host, a.port, expect)
    warn = _spin_warning(1, "the emulator's sender")
    if warn and a.host in ("127.0.0.1", "localhost", "::1"):
        print(f"rtdecoder: {warn} (with the service on this host, one more)", file=sys.stderr)
    if a.config:
        return _emulate_config(a, opts)
    cfg = _stream_from_args(a)
    if a.dialect == "cuqr":
        cfg = _cuqr_input(a, a.port, cfg)
    return _report(run_emulator(cfg, opts), a)


def _cuqr_input(a: argparse.Namespace, port: int, cfg: StreamConfig) -> StreamConfig:
    """``cfg`` with the input the service's stream takes (``--input``, checked against the
    service's HELLO_REPLY, or learnt from it; measurements if it does not answer HELLO)."""
    served = _served_input(a.host, port, cfg.id)
    if a.input and served and a.input != served:
        raise ConfigError(f"the service's stream {cfg.id} takes {served}, and --input {a.input} would fail every "
                          f"shot: drop --input (it is learnt from the service) or give --input {served}")
    return dataclasses.replace(cfg, input=a.input or served or "measurements")


def _emulate_config(a: argparse.Namespace, opts) -> int:
    """``emulate --config FILE``: every stream of a TOML or CUDA-Q YAML configuration in turn, each
    with its own circuit or matrices (a YAML decoder's shots are sampled from its DEM, and its
    measurements made to give those detection events through its D), at the file's port unless
    ``--port`` is given; one report per stream, ``--json`` a list of them; the exit status the
    worst of the streams'."""
    from rtdecoder.emulator import run_emulator

    server = load_config(a.config)
    given = _given(a.argv, ["--port"])
    port = a.port if "--port" in given else server.port
    reports, status = [], 0
    for cfg in server.streams:
        if a.dialect == "cuqr":
            cfg = _cuqr_input(a, port, cfg)
        print(f"rtdecoder emulate: stream {cfg.id} of {a.config}", file=sys.stderr)
        report = run_emulator(cfg, dataclasses.replace(opts, port=port))
        reports.append(report)
        status = max(status, _report(report, argparse.Namespace(**{**vars(a), "json": None, "plot": None})))
    if a.json:
        from rtdecoder.emulator import write_json_list

        write_json_list(reports, a.json)
    return status


def _served_input(host: str, port: int, stream_id: int) -> str | None:
    """What the service's stream takes (``"measurements"`` or ``"detection_events"``), asked by
    a HELLO of rtdecoder's own protocol on the same port; None when it does not answer one."""
    from rtdecoder import protocol as P
    from rtdecoder.emulator import Controller, EmulatorError

    try:
        c = Controller.connect("udp", host, port, stream_id)
    except OSError:
        return None
    try:
        info = c.hello(timeout_s=0.3, attempts=2)
    except (EmulatorError, OSError):
        return None
    finally:
        c.link.close()
    return "measurements" if info.input == P.INPUT_MEASUREMENTS else "detection_events"


class ServiceProcess:
    """``rtdecoder serve`` in a child process on free loopback ports (the demo's and the tests')."""

    def __init__(self, stream_argv: list[str], startup_timeout_s: float = 600.0, extra: list[str] | None = None,
                 prefix: list[str] | None = None):
        """``extra``: more flags (later ones win); ``prefix``: a command to run it under (``ip netns
        exec NAME``)."""
        self.log = tempfile.TemporaryFile(mode="w+")
        cmd = (prefix or []) + [sys.executable, "-m", "rtdecoder", "serve", "--port", "0", "--metrics-port", "0"] + \
            stream_argv + (extra or [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        end = time.monotonic() + startup_timeout_s
        line = ""
        try:
            while time.monotonic() < end:
                line = self.proc.stdout.readline()
                if line.startswith("{"):
                    break
                if self.proc.poll() is not None:
                    break
        except BaseException:  # Ctrl-C while it starts: leave no service behind
            self.stop()
            raise
        if not line.startswith("{"):
            self.stop()
            raise RuntimeError(f"rtdecoder serve did not start:\n{self.stderr()}")
        ready = json.loads(line)
        self.host, self.port, self.metrics_port = ready["host"], ready["port"], ready["metrics_port"]

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "ServiceProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cmd_demo(a: argparse.Namespace) -> int:
    from rich.console import Console

    from rtdecoder.emulator import run_emulator

    cfg = _stream_from_args(a)
    if a.dialect == "cuqr" and a.input is None:  # a CUDA-Q controller sends raw measurements
        cfg = dataclasses.replace(cfg, input="measurements")
    if a.dialect == "cuqr" and cfg.parallel > 1:
        raise ConfigError("--dialect cuqr serves sliding-window streams only: leave out --parallel-windows "
                          "(docs/cuqr-compat.md, 'Differences')")
    opts = _emulator_options(a, "", 0, {"decoder": cfg.decoder, "window": cfg.window, "commit": cfg.commit})
    console = Console(stderr=True)
    warn = _spin_warning(1 + max(cfg.parallel, 1), "the demo's service worker(s) and emulator")
    if warn:
        console.print(f"rtdecoder: {warn}", markup=False, highlight=False)
    try:
        with console.status("starting rtdecoder serve (building window graphs, compiling kernels)..."):
            service = ServiceProcess(_stream_argv(cfg), extra=["--backend", a.backend])
    except KeyboardInterrupt:
        print("rtdecoder: interrupted while the service was starting; nothing was measured", file=sys.stderr)
        return 130
    with service:
        console.print(f"service on udp {service.host}:{service.port}, metrics on "
                      f"http://127.0.0.1:{service.metrics_port}/metrics")
        for line in service.stderr().splitlines():  # what the service notes about the stream
            if "note:" in line or "warning:" in line:
                console.print(line.strip(), markup=False, highlight=False)
        report = run_emulator(cfg, dataclasses.replace(opts, host=service.host, port=service.port))
        try:
            metrics = service.scrape()
        except OSError:  # the service is gone (a Ctrl-C reaches it too): no metrics to show
            metrics = None
    url = f"http://127.0.0.1:{service.metrics_port}/metrics (served while the demo ran)"
    return _report(report, a, metrics_url=url if metrics else None, metrics_text=metrics)


def cmd_decode(a: argparse.Namespace) -> int:
    from rtdecoder import decoders
    from rtdecoder.gpu import choose_backend
    from rtdecoder.offline import decode_file, load_dem

    backend, why = choose_backend(a.backend) if decoders.get(a.decoder).gpu else \
        ("cpu", f"{a.decoder} runs on the cpu")
    print(f"rtdecoder: {why}", file=sys.stderr)
    circuit = herald_circuit = None
    if a.measurements:
        if a.dem or a.append_observables:
            raise ConfigError("--measurements takes the circuit from the stream flags (--circuit, --distance, "
                              "--rounds, --p) and its observables from the measurements: drop --dem and "
                              "--append-observables")
        from rtdecoder.dem import circuit_dem, make_circuit

        circuit = make_circuit(_stream_from_args(a))
        dem = circuit_dem(circuit)
    elif a.dem:
        dem = load_dem(a.dem, None)
    else:  # the stream flags' circuit: its DEM, and its heralds
        from rtdecoder.dem import circuit_dem, make_circuit

        herald_circuit = make_circuit(_stream_from_args(a))
        dem = circuit_dem(herald_circuit)
    if a.parallel_windows < 0:
        raise ConfigError(f"--parallel-windows {a.parallel_windows} must be a number of workers, or 0 for whole shots")
    if (a.window is not None or a.commit is not None) and not a.parallel_windows:
        raise ConfigError("--window and --commit are for --parallel-windows K; without it every shot is decoded whole")
    window = 2 * a.distance if a.window is None else a.window
    commit = a.distance if a.commit is None else a.commit
    if a.parallel_windows and window != WINDOW_ALL and not 1 <= commit < window:
        raise ConfigError(f"--commit {commit} must be at least 1 and less than --window {window}: the rounds between "
                          "cores are window - commit")
    from rich.console import Console

    with Console(stderr=True).status(f"decoding {a.input_path} with {a.decoder} (compiling on a first run)..."):
        summary = decode_file(a.input_path, a.output, dem, in_format=a.in_format, out_format=a.out_format,
                              append_observables=a.append_observables, decoder=a.decoder, backend=backend,
                              circuit=circuit, parallel=a.parallel_windows, window=window, commit=commit,
                              herald_circuit=herald_circuit, check_fit=not a.no_fit_check)
    print(f"rtdecoder: {summary.line()}", file=sys.stderr)
    if a.json:
        Path(a.json).write_text(json.dumps(summary.to_json(), indent=1) + "\n")
    return 0


def cmd_doctor(a: argparse.Namespace) -> int:
    from rtdecoder.doctor import print_report, run_checks

    findings = run_checks()
    if a.json:
        print(json.dumps([f.__dict__ for f in findings], indent=1))
    else:
        print_report(findings)
    return 0


def cmd_shard(a: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rtdecoder.shard import shard, write

    server, assignments, costs = shard(a.config, a.nodes)
    paths = write(server, assignments, a.out, kubernetes=a.kubernetes)
    hosts = [h.strip() for h in a.hosts.split(",")] if a.hosts else [f"node-{i}" for i in range(a.nodes)]
    if len(hosts) != a.nodes:
        raise ConfigError(f"--hosts names {len(hosts)} hosts for --nodes {a.nodes}")
    port = server.get("port", 7700)
    t = Table(title=f"{sum(len(x.ids) for x in assignments)} streams over {a.nodes} nodes, by estimated decode cost "
                    "(µs of CPU per round cycle)")
    for c in ("node", "streams", "helper threads", "est. µs per round", "config"):
        t.add_column(c, justify="right")
    for x in assignments:
        t.add_row(hosts[x.node], format_ids(x.ids), str(x.helpers), f"{x.cost_us:.2f}",
                  str(Path(a.out) / f"node-{x.node}.toml"))
    Console(width=150).print(t)
    print("controllers:")
    cfg_of = {s.id: s for s in load_config(a.config).streams}
    for x in assignments:
        for sid in x.ids:
            allow = ", ".join(cfg_of[sid].allow)
            print(f"  stream {sid} (controllers {allow}; {costs[sid][1]} detectors per round) -> {hosts[x.node]}:{port}")
    print(f"wrote {len(paths)} files to {a.out}")
    return 0


def cmd_replay(a: argparse.Namespace) -> int:
    from rtdecoder.replay import replay

    try:
        rep = replay(a.dir, a.host, a.port, paced=not a.fast, timeout_s=a.timeout,
                     progress=not a.no_progress and sys.stderr.isatty())
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for w in rep.warnings:
        print(f"rtdecoder: warning: {w}", file=sys.stderr)
    print(rep.line())
    if a.json:
        Path(a.json).write_text(json.dumps({"datagrams": rep.datagrams, "corrections_recorded": rep.corrections_recorded,
                                            "reproduced": rep.reproduced, "differ": len(rep.differ),
                                            "missing": rep.missing, "seconds": rep.seconds,
                                            "warnings": rep.warnings, "stopped": rep.stopped}, indent=1))
    for k in rep.differ[:10]:
        print(f"  differs: stream {k[0]} shot {k[1]} rounds {k[2]}..{k[2] + k[3] - 1}", file=sys.stderr)
    return 0 if rep.reproduced == rep.corrections_recorded and not rep.stopped else 1


def cmd_hello(a: argparse.Namespace) -> int:
    """HELLO to every stream of a configuration (or the ones given) at ``--host:--port``: 0 when each
    answers HELLO_REPLY within ``--timeout`` s (a readiness probe), 1 otherwise."""
    from rtdecoder.emulator import Controller, EmulatorError

    ids = [int(x) for x in a.stream.split(",")] if a.stream else [s.id for s in load_config(a.config).streams] \
        if a.config else [0]
    port = a.port if a.port else (load_config(a.config).port if a.config else 7700)
    for sid in ids:
        c = Controller.connect("udp", a.host, port, sid)
        try:
            c.hello(timeout_s=a.timeout, attempts=1)
        except (EmulatorError, OSError) as e:
            print(f"stream {sid} at {a.host}:{port}: {e}", file=sys.stderr)
            return 1
        finally:
            c.link.close()
    print(f"{len(ids)} stream(s) ready at {a.host}:{port}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rtdecoder import __version__

    ap = argparse.ArgumentParser(prog="rtdecoder", description="Real-time QEC decoder service.")
    ap.add_argument("--version", action="version", version=f"rtdecoder {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the decoding service")
    s.add_argument("--config", help="TOML config file: its [server] and [[streams]] (README.md, 'A config file for "
                                    "serve --config'); its streams replace the stream flags")
    s.add_argument("--host", default=None, help="UDP address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="UDP port (default 7700; 0 picks a free one)")
    s.add_argument("--metrics-host", default=None, help="metrics address (default 127.0.0.1)")
    s.add_argument("--metrics-port", type=int, default=None, help="metrics port (default 9400; 0 free; -1 off)")
    s.add_argument("--cpus", type=_cpus, default=None,
                   help="pin one worker to each of these CPUs, e.g. 2,3 (default: one worker, not pinned)")
    s.add_argument("--busy-poll-us", type=int, default=None, help="SO_BUSY_POLL to ask for, µs (default 50; 0 off)")
    s.add_argument("--recv-batch", type=int, default=None, help="most datagrams per recvmmsg (default 16)")
    s.add_argument("--backend", choices=["cpu", "gpu", "auto"], default=None,
                   help="decode union-find windows on the cpu, on the gpu (persistent kernels), or auto: "
                        "gpu where a usable GPU is (default cpu)")
    s.add_argument("--error-replies-per-s", type=int, default=None,
                   help="ERROR replies per second each source may get (default 1000; the rest are counted, not sent)")
    s.add_argument("--error-burst", type=int, default=None, help="ERROR replies a source may get at once (default 100)")
    s.add_argument("--transport", choices=_transport_names(), default=None,
                   help="udp, roce (RDMA over Converged Ethernet through pyverbs), xdp (AF_XDP kernel bypass on "
                        "--xdp-interface), or auto: roce where an RDMA device with an active port exists, else xdp "
                        "where an interface is given and AF_XDP works, else udp; the log says why (default auto)")
    s.add_argument("--xdp-interface", default=None, help="with --transport xdp: the network interface to serve")
    s.add_argument("--xdp-queues", type=_cpus, default=None,
                   help="with --transport xdp: its receive queues, one worker each, e.g. 0,1 (default 0)")
    s.add_argument("--xdp-mode", choices=["auto", "copy", "zerocopy"], default=None,
                   help="with --transport xdp: the sockets' mode (default auto: zero-copy where the driver has it)")
    s.add_argument("--busy-batches", type=int, default=None,
                   help="overload threshold: consecutive full receive batches before new shots get BUSY (default 4)")
    s.add_argument("--record", metavar="DIR", default=None,
                   help="record every datagram received and every reply sent (with their times) into DIR, for "
                        "rtdecoder replay DIR")
    s.add_argument("--record-files", type=int, default=None, help="with --record: files kept (default 16)")
    s.add_argument("--record-file-mb", type=int, default=None, help="with --record: MiB per file (default 64)")
    s.add_argument("--drain-s", type=float, default=None,
                   help="on SIGTERM or SIGINT (Ctrl-C), seconds to wait for the shots in flight to finish, then exit "
                        "0; a second signal stops at once (default 2)")
    s.add_argument("--max-stream-gib", type=float, default=None,
                   help="refuse a stream whose estimated build would take more memory than this, GiB (default 8)")
    s.add_argument("--echo", action="store_true",
                   help="send every datagram back unchanged and decode nothing (the transport floor)")
    _add_stream_flags(s, "serve")
    s.set_defaults(func=cmd_serve)
    e = sub.add_parser("emulate", help="run the controller emulator against a service")
    e.add_argument("--host", default="127.0.0.1", help="the service's address (default 127.0.0.1)")
    e.add_argument("--port", type=int, default=7700, help="the service's UDP port (default 7700)")
    e.add_argument("--transport", choices=_transport_names(), default="udp",
                   help="how to reach the service: udp, roce (RDMA writes after a TCP rendezvous on --port), or "
                        "auto (default udp)")
    e.add_argument("--config", default=None, metavar="FILE",
                   help="drive every stream of this configuration (TOML, or CUDA-Q's YAML, whose matrices give the "
                        "model to sample from) in turn, at its port unless --port is given; the stream flags are "
                        "then not used")
    _add_stream_flags(e, "emulate")
    _add_emulator_flags(e, 2000)
    e.set_defaults(func=cmd_emulate)
    x = sub.add_parser("decode", help="decode a file of recorded detection events (stim 01/b8) offline")
    x.add_argument("input_path", metavar="input", help="detection events, one shot per record")
    x.add_argument("output", help="where to write one prediction (the observable flips) per shot")
    x.add_argument("--in-format", choices=["01", "b8"], default="b8", help="input format (default b8)")
    x.add_argument("--out-format", choices=["01", "b8"], default="01", help="output format (default 01)")
    x.add_argument("--append-observables", action="store_true",
                   help="each input record ends with the observable flips: report the logical error rate")
    x.add_argument("--dem", help="the detector error model (.dem); default: the circuit of the stream flags")
    x.add_argument("--measurements", action="store_true",
                   help="the input holds raw measurement records of the circuit of the stream flags (stim's order), "
                        "converted with stim's m2d converter; the logical error rate is reported")
    x.add_argument("--backend", choices=["cpu", "gpu", "auto"], default="auto",
                   help="where union-find runs (default auto: gpu where a usable GPU is)")
    x.add_argument("--no-fit-check", action="store_true",
                   help="decode even when the shots' detection-event rates do not fit the DEM (by default such a "
                        "file, written for another circuit, is refused)")
    x.add_argument("--json", metavar="PATH",
                   help="write the summary as JSON: shots, µs per shot, logical error rate (with the true "
                        "observables), the fit check")
    _add_stream_flags(x, "decode")
    x.set_defaults(func=cmd_decode)
    sh = sub.add_parser("shard", help="split a configuration's streams over nodes by estimated decode cost; one "
                                      "config per node, and which controller talks to which node")
    sh.add_argument("config", help="the TOML configuration ([server] and [[streams]])")
    sh.add_argument("--nodes", type=int, required=True, help="nodes to spread the streams over")
    sh.add_argument("--out", default="shards", help="directory for node-<i>.toml (default ./shards)")
    sh.add_argument("--hosts", default=None, help="the nodes' names or addresses, comma-separated, for the listing")
    sh.add_argument("--kubernetes", action="store_true",
                    help="also write a ConfigMap per node (rtdecoder-shard-<i>) for deploy/kubernetes/rtdecoder.yaml")
    sh.set_defaults(func=cmd_shard)
    rp = sub.add_parser("replay", help="play a recording (serve --record DIR) back against a service and compare "
                                       "its corrections with the recorded ones")
    rp.add_argument("dir", help="the recording's directory")
    rp.add_argument("--host", default="127.0.0.1", help="the service's address (default 127.0.0.1)")
    rp.add_argument("--port", type=int, default=7700, help="the service's UDP port (default 7700)")
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")
    rp.add_argument("--fast", action="store_true", help="as fast as the datagrams go (default: the recorded pace)")
    rp.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the last corrections (default 5)")
    rp.add_argument("--json", metavar="PATH", help="write the comparison as JSON")
    rp.set_defaults(func=cmd_replay)
    he = sub.add_parser("hello", help="HELLO every stream of a service: exit 0 when all answer (a readiness probe)")
    he.add_argument("--host", default="127.0.0.1", help="the service's address (default 127.0.0.1)")
    he.add_argument("--port", type=int, default=0, help="the service's port (default: the config's, else 7700)")
    he.add_argument("--config", default=None, help="ask every stream of this configuration")
    he.add_argument("--stream", default=None, help="stream ids, comma-separated (default: the config's, else 0)")
    he.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each answer (default 1)")
    he.set_defaults(func=cmd_hello)
    dr = sub.add_parser("doctor", help="what this host offers (RDMA, GPU, cores, kernel settings) and what to tune")
    dr.add_argument("--json", action="store_true", help="print the findings as JSON")
    dr.set_defaults(func=cmd_doctor)
    d = sub.add_parser("demo", help="service and emulator on loopback, print the latency table")
    _add_stream_flags(d, "demo")
    _add_emulator_flags(d, 3000)
    d.add_argument("--backend", choices=["cpu", "gpu", "auto"], default="cpu",
                   help="the service's union-find backend (default cpu)")
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ConfigError as e:  # a plug-in module that cannot be imported
        print(f"rtdecoder: configuration error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"rtdecoder: configuration error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"rtdecoder: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # EmulatorError and a service that did not start
        print(f"rtdecoder: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rtdecoder: interrupted", file=sys.stderr)
        return 130
