"""CPU time per round of each built-in decoder through the service's own data path, the figures
``rtdecoder shard`` costs streams with (each decoder's ``DecoderSpec.cost_us``).

    .venv/bin/python bench/decode_cost.py              # d = 13, 60 shots of 5d rounds, windows 2d/d
    .venv/bin/python bench/decode_cost.py --distance 9 --shots 100

For each decoder, one stream (rotated surface-code Z memory, p = 0.001) in an ``Engine``; the same
stim-sampled shots go through ``Engine.decode_shots`` (ingest, windows, decode, commit: what a
worker does per shot, without the network), a few shots first to warm up. Prints µs per round and
per detector-round (detectors per round as the stream's layout counts them, which is what
``shard.stream_cost`` multiplies by), and each decoder's ratio to union-find.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distance", type=int, default=13)
    ap.add_argument("--shots", type=int, default=60)
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from rtdecoder.config import StreamConfig
    from rtdecoder.engine import Engine

    d = args.distance
    rows = []
    for dec in ("union_find", "matching", "matching_correlated"):
        e = Engine([StreamConfig(id=0, distance=d, rounds=5 * d, p=0.001, decoder=dec, window=2 * d, commit=d)])
        rt = e.streams[0]
        dets = rt.circuit.compile_detector_sampler(seed=1).sample(args.shots + 5).astype(np.uint8)
        e.decode_shots(0, dets[:5])
        t = time.perf_counter()
        e.decode_shots(0, dets[5:], rounds_per_packet=rt.layout.num_rounds)
        per_round = (time.perf_counter() - t) / args.shots / rt.layout.num_rounds * 1e6
        rows.append((dec, per_round, per_round / (rt.layout.num_detectors / rt.layout.num_rounds)))
    t = Table(title=f"CPU time per round through Engine.decode_shots, d={d}, {5 * d} rounds, windows {2 * d}/{d}, "
                    f"{args.shots} shots")
    for c in ("decoder", "µs per round", "µs per detector-round", "÷ union_find"):
        t.add_column(c, justify="right")
    for dec, r, pd in rows:
        t.add_row(dec, f"{r:.3f}", f"{pd:.5f}", f"{r / rows[0][1]:.2f}x")
    Console(width=120).print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
