"""Soak under overload: a controller that sends faster than the decoder can go, for minutes.

    .venv/bin/python bench/soak.py                     # 180 s, d = 5, union_find, rounds sent as fast as possible
    .venv/bin/python bench/soak.py --seconds 30        # shorter
    .venv/bin/python bench/soak.py --decoder matching --cycle-us 0.5

``rtdecoder serve`` runs in a child process (its worker pinned to the last CPU); the controller
(``clients.drive_open_loop``, compiled, pinned to the first CPU) sends chunks of shots
back to back at ``--cycle-us`` per round (0: as fast as it can) without waiting for answers, so
the service falls behind and must shed load: it answers new shots BUSY while its socket holds a
backlog, and the kernel drops what overflows the socket's receive buffer. Every few seconds the
service's resident memory (``/proc/PID/status`` VmRSS) is sampled.

At the end every shot is accounted for: a final correction, an ERROR (BUSY, or the status that
poisoned it), or no answer (its ERROR was over the source's error-reply budget,
``rtdecoder_error_replies_suppressed_total``, or one of its datagrams was dropped by the kernel,
``rtdecoder_socket_drops_total``). Every final correction is checked against the same shot
decoded in process (``Engine.decode_shots``): the count of wrong corrections must be 0. Memory
must stay flat: the figure is the RSS growth from the first sample after warm-up to the last.
Writes ``soak.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/clients.py, also when loaded by path


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` (with ``labels``) in a Prometheus exposition, summed."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def soak(seconds: float, distance: int, rounds: int, decoder: str, cycle_us: float, rpp: int, chunk: int,
         busy_batches: int, timeout_s: float, log=print) -> dict:
    from rtdecoder import protocol as P
    from rtdecoder.cli import ServiceProcess, _stream_argv
    from rtdecoder.config import StreamConfig
    from clients import O_ERROR, O_FINAL, drive_open_loop, open_loop_packets

    from rtdecoder.emulator import Controller
    from rtdecoder.engine import Engine

    cpus = sorted(os.sched_getaffinity(0))
    cfg = StreamConfig(id=0, distance=distance, rounds=rounds, p=0.001, decoder=decoder)
    extra = ["--busy-batches", str(busy_batches)] + (["--cpus", str(cpus[-1])] if len(cpus) > 1 else [])
    reference = Engine([cfg])
    lay = reference.streams[0].layout
    sampler = reference.streams[0].circuit.compile_detector_sampler(seed=5)
    totals = {"shots": 0, "final": 0, "errors": 0, "lost": 0, "wrong": 0}
    sending = 0.0
    statuses: dict[str, int] = {}
    samples: list[tuple[float, int]] = []
    with ServiceProcess(_stream_argv(cfg), extra=extra) as svc:
        ctl = Controller.connect("udp", svc.host, svc.port, 0)
        ctl.hello()
        ctl.reset()
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[0]})
        rx = np.zeros(65536, np.uint8)
        t0 = time.monotonic()
        next_sample = 0.0
        first = 1
        try:
            while time.monotonic() - t0 < seconds:
                dets = sampler.sample(chunk)
                blocks = P.pack_rounds(dets, lay.round_offsets, lay.round_bytes)
                buf, off, length, ready = open_loop_packets(0, first, blocks, rpp)
                outcome = np.zeros(chunk, np.int64)
                status = np.zeros(chunk, np.int64)
                pred = np.zeros((chunk, lay.num_observables), np.uint8)
                _, send_ns = drive_open_loop(ctl.link.fileno(), buf, off, length, ready, int(cycle_us * 1000),
                                             int(timeout_s * 1e9), first, lay.num_observables, rx, outcome, status, pred)
                sending += send_ns / 1e9
                final = outcome == O_FINAL
                truth = reference.decode_shots(0, dets[final], rounds_per_packet=lay.num_rounds) if final.any() \
                    else pred[:0]
                totals["shots"] += chunk
                totals["final"] += int(final.sum())
                totals["errors"] += int(np.sum(outcome == O_ERROR))
                totals["lost"] += int(np.sum(outcome == 0))
                totals["wrong"] += int(np.sum(np.any(pred[final] != truth, axis=1)))
                for code in status[outcome == O_ERROR]:
                    name = P.Status(int(code)).name
                    statuses[name] = statuses.get(name, 0) + 1
                first += chunk
                now = time.monotonic() - t0
                if now >= next_sample:
                    samples.append((now, rss_kib(svc.proc.pid)))
                    next_sample = now + max(1.0, seconds / 40)
                    log(f"  {now:6.1f} s: {totals['shots']} shots, {totals['final']} final, {totals['errors']} errors, "
                        f"{totals['lost']} lost, RSS {samples[-1][1] / 1024:.1f} MiB")
            samples.append((time.monotonic() - t0, rss_kib(svc.proc.pid)))
            metrics = svc.scrape()
        finally:
            os.sched_setaffinity(0, set(cpus))
            ctl.close()
    elapsed = samples[-1][0]
    base = samples[min(1, len(samples) - 1)][1]
    return {**totals, "statuses": statuses, "seconds": elapsed,
            "driving_s": sending, "offered_rounds_per_s": totals["shots"] * lay.num_rounds / sending,
            "decoded_rounds_per_s": totals["final"] * lay.num_rounds / sending,
            "rss_kib_first": samples[0][1], "rss_kib_after_warmup": base, "rss_kib_last": samples[-1][1],
            "rss_kib_max": max(r for _, r in samples), "rss_growth_kib": samples[-1][1] - base,
            "rss_samples": samples, "server_busy": metric(metrics, "rtdecoder_packets_rejected_total", reason="busy"),
            "server_overloads": metric(metrics, "rtdecoder_overloads_total"),
            "kernel_drops": metric(metrics, "rtdecoder_socket_drops_total"),
            "errors_suppressed": metric(metrics, "rtdecoder_error_replies_suppressed_total"),
            "server_packets": metric(metrics, "rtdecoder_packets_received_total"),
            "distance": distance, "rounds": rounds, "decoder": decoder, "cycle_us": cycle_us,
            "rounds_per_packet": rpp}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--distance", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--decoder", default="union_find", choices=["union_find", "matching"])
    ap.add_argument("--cycle-us", type=float, default=0.0, help="µs per round sent (0: as fast as possible)")
    ap.add_argument("--rounds-per-packet", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=5000, help="shots sent back to back per chunk")
    ap.add_argument("--busy-batches", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=0.5, help="s to wait for a chunk's last answers")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    r = soak(args.seconds, args.distance, args.rounds, args.decoder, args.cycle_us, args.rounds_per_packet, args.chunk,
             args.busy_batches, args.timeout, log=console.print)
    t = Table(title=f"soak: {r['seconds']:.0f} s, d={r['distance']} rounds={r['rounds']} {r['decoder']}, "
                    f"{r['cycle_us']} µs/round offered, open loop")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for k, v in (("shots sent", r["shots"]), ("final corrections", r["final"]), ("error replies", r["errors"]),
                 ("  by status", r["statuses"]), ("no answer (ERROR over the source budget, or a datagram dropped)", r["lost"]),
                 ("accounted (final + error + lost = sent)", r["final"] + r["errors"] + r["lost"] == r["shots"]),
                 ("wrong corrections", r["wrong"]),
                 ("offered rounds/s (over the time spent sending)", f"{r['offered_rounds_per_s']:,.0f}"),
                 ("answered rounds/s (final corrections, same time base)", f"{r['decoded_rounds_per_s']:,.0f}"),
                 ("server: BUSY replies / overload episodes", f"{r['server_busy']:.0f} / {r['server_overloads']:.0f}"),
                 ("kernel drops (socket buffer full)", f"{r['kernel_drops']:.0f}"),
                 ("ERROR replies over the per-source budget (not sent)", f"{r['errors_suppressed']:.0f}"),
                 ("service RSS first / after warm-up / last / max (MiB)",
                  f"{r['rss_kib_first'] / 1024:.1f} / {r['rss_kib_after_warmup'] / 1024:.1f} / "
                  f"{r['rss_kib_last'] / 1024:.1f} / {r['rss_kib_max'] / 1024:.1f}"),
                 ("RSS growth after warm-up (KiB)", r["rss_growth_kib"])):
        t.add_row(k, str(v))
    console.print(t)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "soak", "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                            "python": sys.version.split()[0]}, **r,
           "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    (args.out / "soak.json").write_text(json.dumps(doc, indent=1))
    console.print(f"wrote {args.out / 'soak.json'}")
    ok = r["wrong"] == 0 and r["final"] + r["errors"] + r["lost"] == r["shots"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
