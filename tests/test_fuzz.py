"""Short, bounded runs of the coverage-guided fuzzers (``tests/fuzz/fuzz_*.py``) in CI, one per input
surface: native datagrams (``ingest``), CUQR requests (``cuqr``), AF_XDP frames (``frames``),
TOML/YAML configurations (``config``) and the b8/01 shot readers (``readers``). Each starts from
its seeds and the corpus kept in ``tests/fuzz/corpus/<name>`` (longer campaigns grew it), and
every input a campaign found to crash, kept in ``tests/fuzz/crashes/<name>-*``, is run again.
A run passes when libFuzzer ends normally, by its run count or its time limit (a slow machine
does fewer runs), with no crash."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"

RUNS = {"ingest": (30000, 60, 40), "cuqr": (20000, 60, 50), "frames": (100000, 30, 40), "config": (3000, 60, 100),
        "readers": (5000, 60, 60)}
"""Per harness: libFuzzer's ``-runs``, ``-max_total_time`` (s), and the least coverage to reach."""


def finished(log: str) -> bool:
    """Whether libFuzzer ended normally: all its runs done (``Done N runs``), or stopped by its
    time limit (a status line whose event is ``DONE``, which libFuzzer separates by a tab)."""
    return re.search(r"Done \d+ runs", log) is not None or re.search(r"^#\d+\s+DONE\s", log, re.M) is not None


def test_a_time_limited_fuzz_run_counts_as_finished():
    assert finished("#17091\tDONE   cov: 71 ft: 130 corp: 12/1021b exec/s: 284 rss: 412Mb\n")
    assert finished("Done 30000 runs in 41 second(s)\n")
    assert not finished("#4096\tpulse  cov: 71 ft: 130\n==123== ERROR: libFuzzer: deadly signal\n")


def test_every_harness_has_a_bounded_run():
    assert {p.stem[len("fuzz_"):] for p in FUZZ.glob("fuzz_*.py")} == set(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_fuzz_bounded_run(name, tmp_path):
    pytest.importorskip("atheris")
    harness = FUZZ / f"fuzz_{name}.py"
    runs, seconds, least = RUNS[name]
    corpus = tmp_path / "corpus"
    kept = FUZZ / "corpus" / name
    if kept.is_dir():
        shutil.copytree(kept, corpus)
    subprocess.run([sys.executable, str(harness), "--write-seeds", str(corpus)], check=True, timeout=600,
                   capture_output=True)
    r = subprocess.run([sys.executable, str(harness), f"-runs={runs}", f"-max_total_time={seconds}", "-seed=1",
                        "-timeout=60", f"-artifact_prefix={tmp_path}/", str(corpus)], capture_output=True, text=True,
                       timeout=900)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert finished(log), log[-2000:]
    last = [ln for ln in log.splitlines() if "cov:" in ln][-1]
    cov = int(last.split("cov:")[1].split()[0])
    assert cov >= least, f"the {name} harness reached only {cov} coverage edges: {last}"
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))


@pytest.mark.parametrize("crash", sorted(p.name for p in (FUZZ / "crashes").glob("*")))
def test_every_crash_a_campaign_found_is_fixed(crash):
    pytest.importorskip("atheris")
    name = crash.split("-")[0]
    r = subprocess.run([sys.executable, str(FUZZ / f"fuzz_{name}.py"), str(FUZZ / "crashes" / crash)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
