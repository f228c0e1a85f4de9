"""Every benchmark in ``bench/`` runs here at tiny sizes (seconds each), so that a change that
breaks one fails the suite. They measure nothing here: only that each runs to its end, prints
its table and writes its results."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

SMOKE = {
    "decoders": ["--distances", "3", "--ps", "0.003", "--bases", "Z", "--max-shots", "500", "--task-seconds", "2",
                 "--timing-windows", "50", "--jobs", "1"],
    "decode_cost": ["--distance", "3", "--shots", "4"],
    "erasure": ["--distances", "3", "--fractions", "0", "0.5", "--shots", "300", "--timing-distance", "3",
                "--timing-shots", "5"],
    "gpu": ["--simulate"],
    "latency": ["--distances", "3", "--shots", "200", "--warmup", "20", "--blocks", "1"],
    "latency-dialects": ["--dialects", "--distances", "3", "--shots", "100", "--warmup", "10", "--blocks", "1"],
    "measurements": ["--distances", "3", "--shots", "20", "--blocks", "2"],
    "streaming": ["--distances", "3", "--rounds", "20", "--shots", "20", "--warmup", "2", "--throughput-rounds", "50",
                  "--jitter-s", "1"],
    "throughput": ["--distances", "3", "--rounds", "30", "--shots", "2", "--repeats", "1", "--ler-distances", "3",
                   "--ler-p", "0.003", "--max-shots", "300", "--max-errors", "10", "--task-seconds", "2"],
}
"""Tiny arguments per benchmark run (``NAME`` or ``NAME-mode``: ``bench/NAME.py``; ``soak.py`` has its
own bounded run in tests/test_overload.py)."""

OUT = {"decode_cost"}
"""Benchmarks without ``--out`` (they write to bench/results/)."""


def test_every_benchmark_has_a_smoke_run():
    benches = {p.stem for p in BENCH.glob("*.py")} - {"clients", "soak"}
    runs = {name.split("-")[0] for name in SMOKE}
    assert benches == runs, benches ^ runs


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_the_benchmark_runs_at_tiny_sizes(name, tmp_path):
    argv = [sys.executable, str(BENCH / f"{name.split('-')[0]}.py"), *SMOKE[name]]
    if name not in OUT:
        argv += ["--out", str(tmp_path)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    if name not in OUT:
        assert list(tmp_path.glob("*.json")), f"{name} wrote no results: {(r.stdout + r.stderr)[-2000:]}"
