"""What turning raw measurements into detection events costs in the compiled path.

For a rotated surface-code Z memory at each distance, the same sampled shots go through the
compiled ``ingest`` (``rtdecoder.kernels.ingest``) one round per datagram, twice, interleaved in
blocks: as detection events (the baseline) and as measurement records that ``ingest`` converts
(docs/wire-protocol.md §5.1). The figure is the time ``ingest`` takes per round (ns, CLOCK_MONOTONIC
around each call, compiled), and the difference, which is what the conversion adds. Decoding is
not run: windows are left undecoded, so only ``ingest`` is timed.

    .venv/bin/python bench/measurements.py            # d = 5, 9, 13
    .venv/bin/python bench/measurements.py --quick    # d = 5

Writes ``measurements.json`` to ``--out`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from numba import njit

from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.kernels.ingest import ingest


@njit(cache=True)
def _time_ingest(dgrams, lengths, st, offs, syn, keep, moffs, meas, dptr, drec, dflip, dkept, dkptr, dshift, counters,
                 tx, out, allow, hi, lo, times):
    for i in range(dgrams.shape[0]):
        t0 = monotonic_ns()
        ingest(dgrams[i], lengths[i], t0, st, offs, syn, keep, moffs, meas, dptr, drec, dflip, dkept, dkptr, dshift,
               counters, tx, out, allow, hi, lo, 0)
        times[i] = monotonic_ns() - t0


def datagrams(engine, sid: int, data: np.ndarray, first_shot: int) -> tuple[np.ndarray, np.ndarray]:
    from rtdecoder import protocol as P

    rt = engine.streams[sid]
    offsets = rt.mlayout.meas_offsets if rt.mlayout is not None else rt.layout.round_offsets
    packed = P.pack_rounds(data, offsets, rt.round_bytes)
    nr = rt.layout.num_rounds
    out = np.zeros((len(data) * nr, engine.slot_bytes), np.uint8)
    lengths = np.zeros(len(out), np.int64)
    for s in range(len(data)):
        for r in range(nr):
            d = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=sid, shot_id=first_shot + s, first_round=r,
                                  num_rounds=1), packed[s, r].tobytes())
            out[s * nr + r, :len(d)] = np.frombuffer(d, np.uint8)
            lengths[s * nr + r] = len(d)
    return out, lengths


def measure(d: int, shots: int, blocks: int) -> dict:
    from rtdecoder.config import StreamConfig
    from rtdecoder.engine import Engine
    from rtdecoder.transport.libc import source_words

    kw = dict(distance=d, rounds=5 * d, p=0.001, decoder="union_find")
    e = Engine([StreamConfig(id=0, **kw), StreamConfig(id=1, input="measurements", **kw)])
    c = e.streams[1].circuit
    meas = c.compile_sampler(seed=d).sample(shots)
    dets = c.compile_m2d_converter().convert(measurements=meas, separate_observables=False)
    hi, lo = source_words("127.0.0.1")
    nr = e.streams[0].layout.num_rounds
    res = {"events": [], "measurements": []}
    shot = 1
    for b in range(blocks):
        for name, sid, data in (("events", 0, dets), ("measurements", 1, meas)):
            g, n = datagrams(e, sid, data, shot)
            times = np.zeros(len(g), np.int64)
            _time_ingest(g, n, e.st, e.offs, e.syn, e.keep, e.moffs, e.meas, e.dptr, e.drec, e.dflip, e.dkept, e.dkptr,
                         e.dshift, e.counters, np.zeros(256, np.uint8), np.zeros(3, np.int64), e.allow, hi, lo, times)
            if b > 0:  # the first block warms up
                res[name].append(times)
        shot += shots
    ev, me = np.concatenate(res["events"]), np.concatenate(res["measurements"])
    return {"d": d, "rounds_per_shot": nr, "datagrams": int(len(ev)),
            "events_ns": {"p50": float(np.median(ev)), "p99": float(np.percentile(ev, 99))},
            "measurements_ns": {"p50": float(np.median(me)), "p99": float(np.percentile(me, 99))},
            "conversion_p50_ns": float(np.median(me) - np.median(ev))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distances", type=int, nargs="+", default=[5, 9, 13])
    ap.add_argument("--shots", type=int, default=200)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args()
    if a.quick:
        a.distances, a.blocks = [5], 3
    rows = [measure(d, a.shots, a.blocks) for d in a.distances]
    from rich.console import Console
    from rich.table import Table

    t = Table(title="ingest per round (one round per datagram), ns: detection events vs measurements converted")
    for col in ("d", "datagrams", "events p50", "events p99", "measurements p50", "measurements p99", "added p50"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["d"]), f"{r['datagrams']:,}", f"{r['events_ns']['p50']:.0f}", f"{r['events_ns']['p99']:.0f}",
                  f"{r['measurements_ns']['p50']:.0f}", f"{r['measurements_ns']['p99']:.0f}",
                  f"{r['conversion_p50_ns']:+.0f}")
    Console().print(t)
    for r in rows:
        if r["d"] == 13:
            ok = r["conversion_p50_ns"] <= 200
            print(f"target: the conversion adds <= 0.2 us per round at d=13 (p50): {r['conversion_p50_ns']:+.0f} ns "
                  f"-> {'MET' if ok else 'MISSED'}")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "measurements.json").write_text(json.dumps({"rows": rows, "machine": platform.platform(),
                                                         "when": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
    print(f"wrote {a.out / 'measurements.json'}")


if __name__ == "__main__":
    main()
