"""A short, bounded run of the coverage-guided fuzzer (``tests/fuzz/fuzz_ingest.py``) in CI:
no input may crash the parser or state machine, make the interpreted and compiled ``ingest``
differ, or touch a stream the datagram did not name."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "fuzz" / "fuzz_ingest.py"


def finished(log: str) -> bool:
    """Whether libFuzzer ended normally: all its runs done (``Done N runs``), or stopped by its
    time limit (a status line whose event is ``DONE``, which libFuzzer separates by a tab)."""
    return re.search(r"Done \d+ runs", log) is not None or re.search(r"^#\d+\s+DONE\s", log, re.M) is not None


def test_a_time_limited_fuzz_run_counts_as_finished():
    assert finished("#17091\tDONE   cov: 71 ft: 130 corp: 12/1021b exec/s: 284 rss: 412Mb\n")
    assert finished("Done 30000 runs in 41 second(s)\n")
    assert not finished("#4096\tpulse  cov: 71 ft: 130\n==123== ERROR: libFuzzer: deadly signal\n")


def test_fuzz_ingest_bounded_run(tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(HARNESS), "--write-seeds", str(corpus)], check=True, timeout=600)
    r = subprocess.run([sys.executable, str(HARNESS), "-runs=30000", "-max_total_time=60", "-seed=1",
                        f"-artifact_prefix={tmp_path}/", str(corpus)], capture_output=True, text=True, timeout=900)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert finished(log), log[-2000:]
    last = [ln for ln in log.splitlines() if "cov:" in ln][-1]
    cov = int(last.split("cov:")[1].split()[0])
    assert cov >= 40, f"the harness reached only {cov} coverage edges: {last}"
    assert not list(tmp_path.glob("crash-*"))
