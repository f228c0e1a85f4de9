"""Streaming tail latency (the NV-Fusion experiment) and sustained round rate, on loopback.

    .venv/bin/python bench/streaming.py                # d = 5, 7, 13 x rounds 100, 1000, 10000
    .venv/bin/python bench/streaming.py --quick        # d = 5, rounds 100 and 1000, 100 shots
    .venv/bin/python bench/streaming.py --distances 13 --rounds 1000 --deadline-us 150 --no-throughput

The experiment of the CUDA-Q QEC user guide, "Bounding Real-Time Decode Latency With NV-Fusion":
rotated surface-code Z memory, circuit noise p = 0.001, d in {5, 7, 13}, rounds in {100, 1000,
10000}; rounds are measured 1 µs apart and sent ``--rounds-per-packet`` (k) at a time, as a
controller batches them; 1,000 timed shots after 20 warm-up shots. *Streaming tail latency* is
the time from the last round sent to the shot's final observable correction received.

Decoders, side by side in one run (the same stim samples for all):

- sliding-window ``union_find`` and sliding-window ``matching`` through ``rtdecoder serve``
  (one child process per (d, rounds) serving both as two streams, its worker pinned with
  ``--cpus`` to the last CPU, the controller, ``rtdecoder.emulator.drive_shot``, compiled and
  pinned to the first); windows of
  ``W = w*d`` rounds committing ``C = c*d`` (``--window-commit w,c``, default 5,4: the buffer is
  d rounds, as in the 2d/d default, and each round is decoded 1.25 times instead of twice);
- *monolithic PyMatching*: the whole shot decoded after its last round, ``Matching.decode`` on
  the full DEM, timed in this process around the call alone (no transport), so its figure is a
  lower bound on what any service built on it would show.

With ``--deadline-us T``, a third stream: sliding-window ``matching`` (or ``--deadline-decoder``)
with ``deadline_us = T`` (a window it would finish more than T µs after its last round arrived
is decoded by a faster decoder instead), in the same turns; its p99 against its own p50 (the target: at most 2x at
d = 13 over 1,000-round shots) and the number of windows that fell back are printed.

Beneath them, the *transport floor* of the same run: ``rtdecoder serve --echo`` (the same
compiled receive/send loop on the same CPU, every datagram sent straight back, nothing checked or
decoded) driven by the same controller with the same pacing; its tail is last datagram sent →
that datagram's echo received. It is what a decoder taking no time would show on this machine:
the loopback's cost and every stall of either CPU that falls at the end of a shot. The echo
answers every datagram (1,000 per 10,000-round shot at k = 10) where the service answers once
per window, so the controller receives more replies against the floor than against a decoder.
The two decoders and the floor take turns of 50 shots (``run_interleaved``; the echo service
runs beside the decoding one on the same CPU, the one not in turn held stopped), so that the
machine's spells of noise fall on all three alike.

Beside them, the published NV-Fusion p99 (84 CPU threads; CUDA-Q QEC user guide) and the
targets of the hot-path issue: union_find's p99 at 10,000 rounds below NV-Fusion's and at least
25x below monolithic PyMatching's, on one core.

Throughput (``--no-throughput`` skips it; ``--no-latency`` runs it alone): for each decoder and d, a bisection on the round
period finds the highest round rate at which the backlog does not grow over a shot of
``--throughput-rounds`` rounds: each correction's lag (arrival minus the send time of the
packet that completed its window) in the last fifth of the shot may not exceed the lag in the
first fifth by more than 20 µs + 50%, in two of three shots. Where the controller itself cannot
send at the rate (sending a shot took over 10% longer than planned), the result is marked
controller-limited.

Machine jitter, measured in the same run as the baseline these tails are read against: a
compiled loop that only reads the clock spins on each CPU at once for ``--jitter-s`` seconds
and records every gap over 50 µs (time the loop did not run: host preemption of the vCPU,
interrupts, kernel threads). From the rate of gaps over 100 µs it prints the share of shots of
each length expected to contain one (on either CPU). A shot whose controller sent any packet
more than 50 µs after its deadline was stalled on the controller's side; the table gives the
p99 over all shots and over the shots whose controller kept time.

Writes ``streaming.json`` and ``streaming.png`` (tail latency against rounds, one line per
decoder and distance, log-log, as in the guide) to ``--out`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rtdecoder.kernels.clock import monotonic_ns

# NV-Fusion streaming tail latency p99 at 10,000 rounds, rotated Z memory, p = 0.001, 84 CPU threads
# (CUDA-Q QEC user guide). The guide gives the two ends of the range.
NV_FUSION_P99_US = {5: 67.0, 13: 1280.0}
MONOLITHIC_PYMATCHING_P99_US = {5: 2130.0, 13: 28000.0}
TARGET_VS_MONOLITHIC = 25.0
ALL_CPUS = sorted(os.sched_getaffinity(0))
DEADLINE = "matching+deadline"
FLOOR = "floor (echo)"
BLOCK = 50  # shots per turn when the decoders and the floor take turns (run_interleaved)


LATE_NS = 50_000  # a controller that sent a packet later than this after its deadline was stalled


def pin(cpu: int | None) -> None:
    os.sched_setaffinity(0, {cpu} if cpu is not None else set(ALL_CPUS))


def config_file(d: int, rounds: int, w: int, c: int, cpus: list[int], deadline_us: float = 0.0,
                deadline_decoder: str = "matching", parallel: int = 1) -> str:
    """The service's streams: 0 union_find, 1 matching, and with ``deadline_us`` 2
    ``deadline_decoder`` with that deadline (its windows past it decoded by a faster decoder)."""
    body = f"[server]\nport = 0\nmetrics_port = 0\ncpus = {cpus}\n"
    streams = [(0, "union_find", 0.0), (1, "matching", 0.0)] + (
        [(2, deadline_decoder, deadline_us)] if deadline_us else [])
    for sid, dec, dl in streams:
        body += (f"\n[[streams]]\nid = {sid}\ndistance = {d}\nrounds = {rounds}\np = 0.001\ndecoder = \"{dec}\"\n"
                 f"window = {w * d}\ncommit = {c * d}\n" + (f"deadline_us = {dl}\n" if dl else "")
                 + (f"parallel = {parallel}\n" if sid == 0 and parallel > 1 else ""))
    f = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    f.write(body)
    f.close()
    return f.name


class Stream:
    """The controller's side of one stream of a running service."""

    def __init__(self, host: str, port: int, sid: int, layout, rpp: int, cycle_us: float, echo: bool = False):
        from rtdecoder.emulator import Controller, ShotDriver

        self.ctl = Controller.connect("udp", host, port, sid)
        if not echo:  # an echo answers HELLO with HELLO: nothing to ask of it
            self.ctl.hello()
            self.ctl.reset()
        self.driver = ShotDriver(self.ctl, layout, rpp, cycle_us, timeout_s=2.0)
        self.layout = layout
        self.shot = 0
        self.pred = np.zeros(layout.num_observables, np.uint8)

    def run(self, packed_shot: np.ndarray) -> tuple[float, np.ndarray]:
        from rtdecoder.emulator import R_FINAL, R_FINAL_RECEIVED, R_LAST_SENT

        self.shot += 1
        res = self.driver.run(self.shot, packed_shot, self.pred)
        if not res[R_FINAL]:
            return float("nan"), self.pred
        return (res[R_FINAL_RECEIVED] - res[R_LAST_SENT]) / 1000.0, self.pred

    def lateness_ns(self) -> int:
        """How far past its deadline the controller sent its latest packet in the last shot (ns)."""
        from rtdecoder.emulator import R_SHOT_START

        drv = self.driver
        npk = -(-self.layout.num_rounds // drv.rpp)
        ready = np.minimum(np.arange(1, npk + 1) * drv.rpp, self.layout.num_rounds)
        due = drv.res[R_SHOT_START] + ready * drv.cycle_ns
        return int(np.max(drv.sent_time[:npk] - due))

    def set_cycle(self, cycle_us: float) -> None:
        self.driver.cycle_ns = int(round(cycle_us * 1000))

    def close(self) -> None:
        self.ctl.close()


def backlog_grows(drv, rounds: int, window: int, rpp: int, gap: int = 0) -> tuple[bool, float, float]:
    """(grows, early lag µs, late lag µs) from the corrections of the last shot driven. A
    correction's lag is from the datagram holding the last round its window needs: ``first +
    window`` for sliding windows and for a parallel stream's cores; ``first + gap + window`` for a
    parallel stream's gaps (``gap = W - C``: decodable once the next core's window is; they are
    the odd corrections)."""
    from rtdecoder.emulator import R_CORRECTIONS

    n = int(min(drv.res[R_CORRECTIONS], len(drv.corr_round)))
    if n < 10:
        return True, float("nan"), float("nan")
    first = drv.corr_round[:n]
    extra = np.zeros(n, np.int64)
    if gap:
        extra[1::2] = gap
    end = np.minimum(first + window + extra, rounds)
    end[-1] = rounds
    pkt = (end - 1) // rpp
    lag = (drv.corr_time[:n] - drv.sent_time[pkt]) / 1000.0
    k = max(2, n // 5)
    early, late = float(np.median(lag[:k])), float(np.median(lag[-k:]))
    return late > early * 1.5 + 20.0, early, late


def sustained_rate(stream: Stream, packed: np.ndarray, rounds: int, window: int, rpp: int, gap: int = 0) -> dict:
    """Bisect the round period (µs) for the highest rate without a growing backlog. A shot
    where the controller took over 10% longer than planned to send it cannot tell, and counts
    as failing; if the last failing probe failed so, the result is controller-limited."""
    from rtdecoder.emulator import R_LAST_SENT, R_SHOT_START

    lo, hi = 0.02, 20.0  # periods: lo assumed too fast, hi assumed sustainable
    lo_limited = True
    for _ in range(14):
        mid = (lo * hi) ** 0.5
        stream.set_cycle(mid)
        slow = grew = 0
        for s in range(3):  # a probe fails when two of its three shots do (one hiccup of the VM does not count)
            stream.run(packed[s % len(packed)])
            res = stream.driver.res
            if res[R_LAST_SENT] - res[R_SHOT_START] > 1.1 * rounds * mid * 1000:
                slow += 1
            elif backlog_grows(stream.driver, rounds, window, rpp, gap)[0]:
                grew += 1
        ok, limited = slow + grew < 2, slow >= 2
        if ok:
            hi = mid
        else:
            lo, lo_limited = mid, limited
        if hi / lo < 1.05:
            break
    return {"period_us": hi, "rounds_per_s": 1e6 / hi, "controller_limited": lo_limited}


def run_interleaved(path: str, layout, packed: np.ndarray, obs: np.ndarray, args, client_cpu: int | None
                    ) -> dict[str, tuple[np.ndarray, np.ndarray, int | None, dict]]:
    """Drive ``packed`` (uint8 ``(warmup + shots, rounds, round_bytes)``) through union_find,
    matching and the transport floor, in turns of ``BLOCK`` shots each, so that the three meet
    the same spells of machine noise. Two services run side by side, their workers pinned to the
    same CPU: ``rtdecoder serve`` (both decoders, streams 0 and 1) and ``rtdecoder serve --echo``;
    the one not in turn is held stopped (SIGSTOP) so that it takes no CPU time.

    Returns, per name: tail latencies (µs, float ``(shots,)``, NaN for a lost shot), whether the
    controller sent late (bool ``(shots,)``), logical errors (None for the floor), and ERROR replies
    by status name.
    """
    import signal

    from rtdecoder import protocol as P
    from rtdecoder.cli import ServiceProcess

    n = len(packed)
    svc = ServiceProcess(["--config", path])
    try:
        echo = ServiceProcess(["--config", path, "--echo"])
    except BaseException:
        svc.stop()
        raise
    echo.proc.send_signal(signal.SIGSTOP)
    active = svc
    streams: dict[str, tuple] = {}
    out = {}
    try:
        rpp, cyc = args.rounds_per_packet, args.cycle_us
        streams["union_find"] = (svc, Stream(svc.host, svc.port, 0, layout, rpp, cyc))
        streams["matching"] = (svc, Stream(svc.host, svc.port, 1, layout, rpp, cyc))
        if args.deadline_us:
            streams[DEADLINE] = (svc, Stream(svc.host, svc.port, 2, layout, rpp, cyc))
        streams[FLOOR] = (echo, Stream(echo.host, echo.port, 0, layout, rpp, cyc, echo=True))
        lat = {k: np.full(args.shots, np.nan) for k in streams}
        late = {k: np.zeros(args.shots, bool) for k in streams}
        wrong = dict.fromkeys(streams, 0)
        pin(client_cpu)
        for b0 in range(0, n, BLOCK):
            for name, (owner, stream) in streams.items():
                if owner is not active:
                    active.proc.send_signal(signal.SIGSTOP)
                    owner.proc.send_signal(signal.SIGCONT)
                    active = owner
                for s in range(b0, min(n, b0 + BLOCK)):
                    t, pred = stream.run(packed[s])
                    if s >= args.warmup:
                        lat[name][s - args.warmup] = t
                        late[name][s - args.warmup] = stream.lateness_ns() > LATE_NS
                        wrong[name] += int(np.any(pred != obs[s]))
        for name, (_, stream) in streams.items():
            errs = {P.Status(i).name: int(k) for i, k in enumerate(stream.driver.errs) if k}
            out[name] = (lat[name], late[name], None if name == FLOOR else wrong[name], errs)
        if args.deadline_us:
            if active is not svc:
                active.proc.send_signal(signal.SIGSTOP)
                svc.proc.send_signal(signal.SIGCONT)
                active = svc
            text = svc.scrape()
            head = f'rtdecoder_deadline_fallbacks_total{{from="{args.deadline_decoder}",to="'
            out["fallbacks"] = {ln[len(head):].split('"')[0]: int(float(ln.split()[-1]))
                                for ln in text.splitlines() if ln.startswith(head)}
    finally:
        pin(None)
        for _, stream in streams.values():
            stream.close()
        for p in (echo, svc):
            p.proc.send_signal(signal.SIGCONT)
            p.stop()
    return out


def _spin_gaps(duration_ns: int, out: np.ndarray) -> int:
    """Spin reading the clock for ``duration_ns``; record (start, length) ns of every gap over
    50 µs into ``out``; return the number of gaps. Compiled by ``machine_jitter``."""
    t0 = monotonic_ns()
    prev = t0
    k = 0
    while prev - t0 < duration_ns:
        now = monotonic_ns()
        if now - prev > 50_000 and k < out.shape[0]:
            out[k, 0] = prev - t0
            out[k, 1] = now - prev
            k += 1
        prev = now
    return k


def machine_jitter(seconds: float, cpus: list[int]) -> dict:
    """Gaps in a clock-reading spin loop run on every CPU in ``cpus`` at once (threads, no GIL)."""
    import threading

    from numba import njit

    spin = njit(nogil=True, cache=True)(_spin_gaps)
    spin(1000, np.zeros((1, 2), np.int64))
    outs = {c: np.zeros((1_000_000, 2), np.int64) for c in cpus}
    counts = {}

    def run(c):
        os.sched_setaffinity(0, {c})
        counts[c] = spin(int(seconds * 1e9), outs[c])

    threads = [threading.Thread(target=run, args=(c,)) for c in cpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_cpu = {}
    for c in cpus:
        g = outs[c][:counts[c], 1] / 1000.0
        per_cpu[c] = {"gaps_over_100us_per_s": float(np.sum(g > 100) / seconds),
                      "gaps_over_1ms_per_s": float(np.sum(g > 1000) / seconds),
                      "max_gap_us": float(g.max()) if len(g) else 0.0,
                      "lost_fraction": float(g.sum() / (seconds * 1e6))}
    rate = sum(v["gaps_over_100us_per_s"] for v in per_cpu.values())
    return {"seconds": seconds, "cpus": per_cpu, "gaps_over_100us_per_s_any_cpu": rate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distances", type=int, nargs="+", default=[5, 7, 13])
    ap.add_argument("--rounds", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--shots", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds-per-packet", type=int, default=10)
    ap.add_argument("--cycle-us", type=float, default=1.0)
    ap.add_argument("--window-commit", default="5,4", help="W and C in multiples of d (default 5,4)")
    ap.add_argument("--throughput-rounds", type=int, default=2000)
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-latency", action="store_true", help="skip the tail-latency runs (throughput and jitter only)")
    ap.add_argument("--jitter-s", type=float, default=20.0, help="seconds of the machine-jitter baseline (0: skip)")
    ap.add_argument("--parallel-windows", type=int, default=1, metavar="K",
                    help="serve the union_find stream with parallel = K (its windows on the worker and K-1 helper "
                         "threads, which run on the CPUs the worker does not; default 1)")
    ap.add_argument("--deadline-decoder", default="matching", choices=["matching", "matching_correlated"],
                    help="the decoder of the stream with --deadline-us (default matching)")
    ap.add_argument("--deadline-us", type=float, default=0.0,
                    help="also serve matching with this deadline_us (a third stream; windows past it decoded by "
                         "union-find) and report its tail and fallbacks (default 0: not run)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    if args.quick:
        args.distances, args.rounds, args.shots, args.warmup = [5], [100, 1000], 100, 5
        args.throughput_rounds = 1000
        args.jitter_s = min(args.jitter_s, 5.0)
    w, c = (int(x) for x in args.window_commit.split(","))
    import pymatching
    from rich.console import Console

    from rtdecoder import protocol as P
    from rtdecoder.config import StreamConfig
    from rtdecoder.dem import detector_layout, make_circuit
    from rtdecoder.windows import window_schedule

    console = Console(width=170)
    client_cpu = ALL_CPUS[0] if len(ALL_CPUS) > 1 else None
    server_cpus = [ALL_CPUS[-1]] if len(ALL_CPUS) > 1 else []
    console.print(f"controller on CPU {client_cpu}, service worker on CPU {server_cpus}; k = {args.rounds_per_packet} "
                  f"rounds per packet, {args.cycle_us} µs per round, windows {w}d/{c}d")
    rows, rates, jitter = [], [], None
    if args.jitter_s > 0:
        with console.status(f"machine jitter: spinning on CPUs {ALL_CPUS} for {args.jitter_s:.0f} s"):
            jitter = machine_jitter(args.jitter_s, ALL_CPUS)
        for cpu, v in jitter["cpus"].items():
            console.print(f"machine jitter, CPU {cpu}: {v['gaps_over_100us_per_s']:.1f} gaps > 100 µs per s, "
                          f"{v['gaps_over_1ms_per_s']:.1f} > 1 ms per s, longest {v['max_gap_us']:.0f} µs, "
                          f"{100 * v['lost_fraction']:.2f}% of the time lost")
    for d in ([] if args.no_latency else args.distances):
        for rounds in args.rounds:
            t_build = time.perf_counter()
            cfg = StreamConfig(id=0, distance=d, rounds=rounds, p=0.001)
            circuit = make_circuit(cfg)
            layout = detector_layout(circuit)
            n = args.shots + args.warmup
            sampler = circuit.compile_detector_sampler(seed=1000 * d + rounds)
            matching = pymatching.Matching.from_detector_error_model(circuit.detector_error_model(decompose_errors=True))
            packed = np.zeros((n, layout.num_rounds, layout.round_bytes), np.uint8)
            obs = np.zeros((n, layout.num_observables), bool)
            mono = np.zeros(args.shots)
            mono_pred = np.zeros((args.shots, layout.num_observables), np.uint8)
            chunk = max(1, 50_000_000 // layout.num_detectors)
            with console.status(f"d={d} rounds={rounds}: sampling, monolithic PyMatching"):
                for c0 in range(0, n, chunk):
                    c1 = min(n, c0 + chunk)
                    dets, obs[c0:c1] = sampler.sample(c1 - c0, separate_observables=True)
                    packed[c0:c1] = P.pack_rounds(dets, layout.round_offsets, layout.round_bytes)
                    for s in range(c0, c1):
                        t0 = time.perf_counter_ns()
                        pred = matching.decode(dets[s - c0])
                        t1 = time.perf_counter_ns()
                        if s >= args.warmup:
                            mono[s - args.warmup] = (t1 - t0) / 1000.0
                            mono_pred[s - args.warmup] = pred
            del dets, matching
            results = {"monolithic PyMatching": mono}
            lates = {"monolithic PyMatching": np.zeros(args.shots, bool)}
            errors = {"monolithic PyMatching": int(np.sum(np.any(mono_pred != obs[args.warmup:], axis=1)))}
            replies: dict[str, dict[str, int]] = {"monolithic PyMatching": {}}
            path = config_file(d, rounds, w, c, server_cpus, args.deadline_us, args.deadline_decoder,
                               args.parallel_windows)
            console.print(f"d={d} rounds={rounds}: shots sampled and decoded by monolithic PyMatching in "
                          f"{time.perf_counter() - t_build:.0f} s")
            with console.status(f"d={d} rounds={rounds}: union_find, matching and the floor, in turns of {BLOCK} shots"):
                got = run_interleaved(path, layout, packed, obs, args, client_cpu)
            fallbacks = got.pop("fallbacks", None)
            for name, (lat, late, wrong, errs) in got.items():
                results[name], lates[name], errors[name], replies[name] = lat, late, wrong, errs
            os.unlink(path)
            for name, lat in results.items():
                fin = np.isfinite(lat)
                ok, on_time = lat[fin], lat[fin & ~lates[name]]
                rows.append({"distance": d, "rounds": rounds, "decoder": name, "shots": int(len(ok)),
                             "lost": int(np.sum(~fin)), "logical_errors": errors[name] if name != FLOOR else None,
                             "p50_us": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
                             "p99_us": float(np.percentile(ok, 99)) if len(ok) else float("nan"),
                             "controller_late_shots": int(np.sum(fin & lates[name])),
                             "p99_controller_on_time_us": float(np.percentile(on_time, 99)) if len(on_time) else float("nan"),
                             "error_replies": replies[name], "latencies_us": ok.tolist()})
                if np.sum(~fin):  # what became of a lost shot: an ERROR status, or none (no reply in time)
                    console.print(f"d={d} rounds={rounds} {name}: {int(np.sum(~fin))} shot(s) lost; ERROR replies "
                                  f"by status: {replies[name] or 'none'}")
            console.print(" ".join(f"{r['decoder']}: p50 {r['p50_us']:.1f} p99 {r['p99_us']:.1f} µs;"
                                   for r in rows if r["distance"] == d and r["rounds"] == rounds))
            if fallbacks is not None:
                r = next(r for r in rows if r["distance"] == d and r["rounds"] == rounds and r["decoder"] == DEADLINE)
                windows = (args.shots + args.warmup) * len(window_schedule(layout.num_rounds, w * d, c * d)[0])
                r["fallbacks"], r["windows"] = fallbacks, windows
                ratio = r["p99_us"] / r["p50_us"]
                fell = ", ".join(f"{n:,} to {to}" for to, n in fallbacks.items())
                console.print(f"target: d={d} rounds={rounds} {args.deadline_decoder} with deadline_us "
                              f"{args.deadline_us:g}: p99 "
                              f"{r['p99_us']:.1f} µs is {ratio:.2f}x its p50 {r['p50_us']:.1f} µs (at most 2x) -> "
                              f"{'MET' if ratio <= 2 else 'MISSED'}; of {windows:,} windows {fell} fell back; "
                              f"logical errors {r['logical_errors']} (matching without it: "
                              f"{next(x['logical_errors'] for x in rows if x['distance'] == d and x['rounds'] == rounds and x['decoder'] == 'matching')})")
    if not args.no_throughput:
        rates = throughput(args, w, c, client_cpu, server_cpus, console)
    report(rows, rates, jitter, args, w, c, console)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "streaming", "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                 "python": sys.version.split()[0]},
           "parameters": {"distances": args.distances, "rounds": args.rounds, "shots": args.shots, "warmup": args.warmup,
                          "rounds_per_packet": args.rounds_per_packet, "cycle_us": args.cycle_us,
                          "window_d": w, "commit_d": c, "p": 0.001, "circuit": "surface_code:rotated_memory_z"},
           "nv_fusion_p99_us": NV_FUSION_P99_US, "published_monolithic_pymatching_p99_us": MONOLITHIC_PYMATCHING_P99_US,
           "machine_jitter": jitter, "results": rows, "throughput": rates, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    (args.out / "streaming.json").write_text(json.dumps(doc, indent=1))
    if rows:
        plot(rows, args.out / "streaming.png")
    console.print(f"wrote {args.out / 'streaming.json'}" + (f", {args.out / 'streaming.png'}" if rows else ""))
    return 0


def throughput(args, w: int, c: int, client_cpu, server_cpus, console) -> list[dict]:
    from rtdecoder import protocol as P
    from rtdecoder.cli import ServiceProcess
    from rtdecoder.config import StreamConfig
    from rtdecoder.dem import detector_layout, make_circuit

    rates = []
    rounds = args.throughput_rounds
    for d in args.distances:
        cfg = StreamConfig(id=0, distance=d, rounds=rounds, p=0.001)
        circuit = make_circuit(cfg)
        layout = detector_layout(circuit)
        dets = circuit.compile_detector_sampler(seed=7 * d).sample(3)
        packed = P.pack_rounds(dets, layout.round_offsets, layout.round_bytes)
        path = config_file(d, rounds, w, c, server_cpus, parallel=args.parallel_windows)
        with console.status(f"throughput d={d}: starting rtdecoder serve"):
            svc = ServiceProcess(["--config", path])
        with svc:
            uf = "union_find" if args.parallel_windows <= 1 else f"union_find, parallel {args.parallel_windows}"
            for sid, name in ((0, uf), (1, "matching")):
                stream = Stream(svc.host, svc.port, sid, layout, args.rounds_per_packet, 1.0)
                pin(client_cpu)
                try:
                    with console.status(f"throughput d={d} {name}: bisecting the round period"):
                        gap = (w - c) * d if sid == 0 and args.parallel_windows > 1 else 0
                        r = sustained_rate(stream, packed, layout.num_rounds, w * d, args.rounds_per_packet, gap)
                finally:
                    pin(None)
                    stream.close()
                shared = sid == 0 and args.parallel_windows > 1 and \
                    len(ALL_CPUS) < len(server_cpus) + args.parallel_windows - 1 + (client_cpu is not None)
                rates.append({"decoder": name, "distance": d, "rounds": rounds, "helpers_share_cpus": shared, **r})
                if shared:
                    console.print(f"throughput d={d} {name}: NOT MEANINGFUL here: {len(ALL_CPUS)} CPUs for the "
                                  f"controller, {len(server_cpus)} worker(s) and {args.parallel_windows - 1} "
                                  "helper(s): a helper shares the spinning controller's CPU and answers a scheduler "
                                  "time slice late, early and late alike, so the bisection sees no backlog grow")
                console.print(f"throughput d={d} {name}: {r['rounds_per_s'] / 1e6:.3f} M rounds/s "
                              f"({r['period_us']:.3f} µs per round){' (controller-limited)' if r['controller_limited'] else ''}")
        os.unlink(path)
    return rates


def report(rows: list[dict], rates: list[dict], jitter: dict | None, args, w: int, c: int, console) -> None:
    from rich.table import Table

    t = Table(title=f"streaming tail latency (µs), last round sent → final correction received; rotated Z memory, "
                    f"p=0.001, {args.cycle_us} µs/round, k={args.rounds_per_packet}, windows {w}d/{c}d")
    for col in ("d", "rounds", "decoder", "shots", "lost", "logical errors", "p50", "p99", "p99 − floor p99",
                "controller late", "p99, controller on time", "NV-Fusion p99 (84 thr.)", "monolithic PM p99 / this p99",
                "shots with a machine gap (expected)"):
        t.add_column(col, justify="right")
    for r in rows:
        mono = next(x for x in rows if x["distance"] == r["distance"] and x["rounds"] == r["rounds"]
                    and x["decoder"] == "monolithic PyMatching")
        nv = NV_FUSION_P99_US.get(r["distance"]) if r["rounds"] == 10000 else None
        floor = _floor_of(rows, r)
        t.add_row(str(r["distance"]), str(r["rounds"]), r["decoder"], str(r["shots"]), str(r["lost"]),
                  "-" if r["logical_errors"] is None else str(r["logical_errors"]), f"{r['p50_us']:.1f}",
                  f"{r['p99_us']:.1f}",
                  f"{r['p99_us'] - floor['p99_us']:+.1f}" if floor and r["decoder"] not in (FLOOR, "monolithic PyMatching")
                  else "-",
                  str(r["controller_late_shots"]),
                  f"{r['p99_controller_on_time_us']:.1f}", f"{nv:.0f}" if nv else "-",
                  f"{mono['p99_us'] / r['p99_us']:.1f}x", expected_hit(jitter, r["rounds"] * args.cycle_us))
    if rows:
        console.print(t)
    if rates:
        tt = Table(title=f"sustained round rate on one core (no growing backlog), {args.throughput_rounds}-round shots, "
                         f"k={args.rounds_per_packet}")
        for col in ("d", "decoder", "rounds/s", "µs per round", "note"):
            tt.add_column(col, justify="right")
        for r in rates:
            tt.add_row(str(r["distance"]), r["decoder"], f"{r['rounds_per_s']:,.0f}", f"{r['period_us']:.3f}",
                       "controller-limited (a lower bound)" if r["controller_limited"] else "")
        console.print(tt)
    for r in rows:
        if r["decoder"] != "union_find" or r["rounds"] != 10000:
            continue
        mono = next(x for x in rows if x["distance"] == r["distance"] and x["rounds"] == 10000
                    and x["decoder"] == "monolithic PyMatching")
        ratio = mono["p99_us"] / r["p99_us"]
        nv = NV_FUSION_P99_US.get(r["distance"])
        floor = _floor_of(rows, r)
        if nv is not None:
            note = ""
            if floor:
                note = (f" (transport floor p99 in the same run: {floor['p99_us']:.1f} µs, controller on time "
                        f"{floor['p99_controller_on_time_us']:.1f} µs")
                note += ("; the floor itself misses the target: in this run the machine, not a decoder, sets it)"
                         if floor["p99_us"] >= nv else ")")
            console.print(f"target: d={r['distance']} union_find p99 {r['p99_us']:.1f} µs below NV-Fusion's {nv:.0f} µs: "
                          f"{'MET' if r['p99_us'] < nv else 'MISSED'}{note}")
        note = ""
        if floor:
            best = mono["p99_us"] / floor["p99_us"]
            note = f" (the transport floor's own ratio: {best:.1f}x" + \
                ("; short of the target: in this run the machine, not a decoder, sets it)" if best < TARGET_VS_MONOLITHIC else ")")
        console.print(f"target: d={r['distance']} union_find p99 at least {TARGET_VS_MONOLITHIC:.0f}x below monolithic "
                      f"PyMatching ({mono['p99_us']:.0f} µs): {ratio:.1f}x {'MET' if ratio >= TARGET_VS_MONOLITHIC else 'MISSED'}"
                      f"{note}")
    for r in rates:
        if r["distance"] == 5 and r["decoder"] == "union_find":
            console.print(f"target: d=5 union_find sustains 1 round/µs on one core: {r['rounds_per_s'] / 1e6:.2f} M rounds/s "
                          f"{'MET' if r['rounds_per_s'] >= 1e6 else 'MISSED'}")


def _floor_of(rows: list[dict], r: dict) -> dict | None:
    """The transport floor's row for ``r``'s distance and rounds (None when it was not run)."""
    return next((x for x in rows if x["distance"] == r["distance"] and x["rounds"] == r["rounds"]
                 and x["decoder"] == FLOOR), None)


def expected_hit(jitter: dict | None, shot_us: float) -> str:
    """The share of shots of ``shot_us`` expected to contain a gap over 100 µs on some CPU
    (Poisson, at the measured rate): the floor under any p-quantile above 1 - that share."""
    if not jitter:
        return "-"
    return f"{100 * (1 - np.exp(-jitter['gaps_over_100us_per_s_any_cpu'] * shot_us * 1e-6)):.1f}%"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120, sharey=True)
    styles = {"union_find": "-o", "matching": "--s", DEADLINE: "--x", "monolithic PyMatching": ":^", FLOOR: "-."}
    for ax, q in zip(axes, ("p50_us", "p99_us")):
        for (dec, style) in styles.items():
            for d in sorted({r["distance"] for r in rows}):
                pts = sorted((r["rounds"], r[q]) for r in rows if r["decoder"] == dec and r["distance"] == d)
                if pts:
                    ax.plot(*zip(*pts), style, label=f"{dec} d={d}")
        if q == "p99_us":
            for d, v in NV_FUSION_P99_US.items():
                ax.plot([10000], [v], "k*", markersize=10)
                ax.annotate(f"NV-Fusion d={d}", (10000, v), textcoords="offset points", xytext=(-60, 6), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rounds")
        ax.set_title(f"streaming tail latency {q[:3]}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("last round sent → correction received (µs)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
