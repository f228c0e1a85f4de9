"""Operations: the alert rules (``promtool``), the Grafana dashboard's queries against a live
``/metrics``, and a real Prometheus server scraping ``rtdecoder serve`` while the emulator drives it.

Prometheus comes from Debian's ``prometheus`` package (``prometheus`` and ``promtool``). Where it is
not installed, the tests install it with ``apt-get`` when they run as root (as CI does), and are
skipped with the reason where that is not possible."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "rtdecoder.json"
BUCKETS_S = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, float("inf"))


@pytest.fixture(scope="module")
def prometheus():
    """Paths of ``prometheus`` and ``promtool``, installed from Debian's package if need be."""
    def found():
        return shutil.which("prometheus"), shutil.which("promtool")

    if not all(found()):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("Prometheus is not installed and cannot be here (apt-get install prometheus, as root)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
        if subprocess.run(cmd, capture_output=True, env=env, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=900)
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if r.returncode != 0:
                pytest.skip(f"apt-get install prometheus failed: {r.stderr[-300:]}")
    prom, tool = found()
    if not (prom and tool):
        pytest.skip("the prometheus package did not provide prometheus and promtool")
    return prom, tool


def test_the_rules_check_and_their_unit_tests_pass(prometheus):
    _, promtool = prometheus
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([promtool, "test", "rules", "rules.test.yml"], capture_output=True, text=True, timeout=120,
                       cwd=RULES.parent)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def _rule_exprs() -> tuple[list[str], set[str]]:
    exprs, recorded = [], set()
    text = RULES.read_text()
    for m in re.finditer(r"^\s+- record: (\S+)", text, re.M):
        recorded.add(m.group(1))
    for m in re.finditer(r"^\s+expr: (.*(?:\n\s{10,}\S.*)*)", text, re.M):
        exprs.append(" ".join(m.group(1).split()))
    return exprs, recorded


def _names(expr: str) -> set[str]:
    return set(re.findall(r"\b(rtdecoder_[a-z0-9_]+)", expr))


@pytest.fixture(scope="module")
def service():
    """``rtdecoder serve`` (d = 3, whole-shot windows: one correction per shot) with metrics."""
    from rtdecoder.cli import ServiceProcess

    with ServiceProcess(["--distance", "3", "--rounds", "3", "--decoder", "union_find", "--window", "all"]) as svc:
        yield svc


def _emulate(svc, shots: int, out: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "emulate", "--port", str(svc.port), "--distance", "3",
                        "--rounds", "3", "--shots", str(shots), "--no-progress", "--cycle-us", "0", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text())


def test_every_metric_the_dashboard_and_the_rules_query_is_exported(service):
    body = service.scrape()
    exported = {ln.split("{")[0].split(" ")[0] for ln in body.splitlines() if ln and not ln.startswith("#")}
    rule_exprs, recorded = _rule_exprs()
    exprs = _dashboard_exprs() + rule_exprs
    assert len(exprs) > 20
    missing = {n for e in exprs for n in _names(e)} - exported
    assert not missing, f"queried but not exported: {sorted(missing)}"
    for e in rule_exprs:  # recording rules the alerts read are defined
        assert set(re.findall(r"\b(rtdecoder:[a-z0-9_:]+)", e)) <= recorded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(base: str, expr: str) -> list:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", (expr, doc)
    return doc["data"]["result"]


def test_a_real_prometheus_scrapes_the_service_and_its_queries_agree_with_the_emulator(prometheus, service,
                                                                                       tmp_path):
    """Prometheus (its own binary, a generated config, a free port) scrapes the service every
    second. histogram_quantile over the µs buckets lands in the bucket that holds the emulator's
    own p50 of the server's time (whole-shot windows: one correction per shot, so both count the
    same windows); the corrections counter and its rate match the shots sent; every query of the
    dashboard and of the rules parses and runs."""
    prom, _ = prometheus
    svc = service
    port = _free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                   f"rule_files:\n  - {RULES}\n"
                   "scrape_configs:\n  - job_name: rtdecoder\n    static_configs:\n"
                   f"      - targets: ['127.0.0.1:{svc.metrics_port}']\n")
    proc = subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        def wait_for(expr: str, ok) -> list:
            end = time.monotonic() + 60
            got: list = []
            while time.monotonic() < end:
                try:
                    got = _query(base, expr)
                except OSError:  # not listening yet
                    got = []
                if got and ok(float(got[0]["value"][1])):
                    return got
                time.sleep(0.5)
            raise AssertionError(f"{expr}: {got}")

        before = float(wait_for("rtdecoder_shots_decoded_total", lambda v: True)[0]["value"][1])  # scraped once
        report = _emulate(svc, 2000, tmp_path / "report.json")
        shots = report["shots"]
        wait_for("rtdecoder_shots_decoded_total", lambda v: v == before + shots)
        (corr,) = _query(base, "max_over_time(rtdecoder_corrections_sent_total[5m]) "
                               "- min_over_time(rtdecoder_corrections_sent_total[5m])")
        assert float(corr["value"][1]) == shots
        (rate,) = _query(base, "rate(rtdecoder_corrections_sent_total[1m])")
        assert float(rate["value"][1]) > 0
        assert before == 0  # the histogram then holds the emulator's windows only
        (q,) = _query(base, "histogram_quantile(0.5, rtdecoder_server_latency_seconds_bucket)")
        estimate = float(q["value"][1])
        emu_p50 = report["server_latency_us"]["p50"] * 1e-6
        lo = max((b for b in (0.0,) + BUCKETS_S if b < estimate), default=0.0)
        hi = min(b for b in BUCKETS_S if b >= estimate)
        assert lo <= emu_p50 <= hi, (estimate, emu_p50, lo, hi)
        for expr in _dashboard_exprs() + _rule_exprs()[0]:
            _query(base, expr.replace("$__rate_interval", "1m").replace("$instance", ".*"))
        rules = json.loads(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10).read())["data"]["groups"]
        assert {g["name"] for g in rules} == {"rtdecoder.latency", "rtdecoder.alerts"}
        assert all(r["health"] != "err" for g in rules for r in g["rules"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_recorded_demo_replays_to_the_same_corrections(tmp_path):
    """``serve --record DIR`` while the emulator sends 2,000 shots (d = 5, 25 rounds, windows
    10/5: six corrections a shot), then ``rtdecoder replay DIR`` against a fresh service at the
    recorded pace: every recorded correction comes back the same."""
    from rtdecoder.cli import ServiceProcess
    from rtdecoder.kernels import record as KR
    from rtdecoder.record import read_records

    rec = tmp_path / "rec"
    stream = ["--distance", "5", "--decoder", "union_find"]
    svc = ServiceProcess(stream, extra=["--record", str(rec), "--metrics-port", "-1"])
    with svc:
        log = svc.stderr()
        report = _emulate_d5(svc, 2000, tmp_path / "emu.json")
    assert svc.proc.returncode == 0 and "recording every datagram" in log
    entries = read_records(rec)
    rx = [e for e in entries if e.kind == KR.KIND_RX]
    assert len(rx) >= 2000 * 26  # every round of every shot, HELLO and the like besides
    assert report["shots"] == 2000 and report["lost"] == 0
    with ServiceProcess(stream, extra=["--metrics-port", "-1"]) as fresh:
        r = subprocess.run([sys.executable, "-m", "rtdecoder", "replay", str(rec), "--port", str(fresh.port),
                            "--json", str(tmp_path / "replay.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    out = json.loads((tmp_path / "replay.json").read_text())
    assert out["corrections_recorded"] == out["reproduced"] >= 2000 and out["differ"] == out["missing"] == 0
    with ServiceProcess(stream, extra=["--metrics-port", "-1"]) as fresh:  # and as fast as it goes
        r = subprocess.run([sys.executable, "-m", "rtdecoder", "replay", str(rec), "--port", str(fresh.port), "--fast"],
                           capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "(100.00 %), 0 differ, 0 missing" in r.stdout, r.stdout + r.stderr[-2000:]
    bad = tmp_path / "not-a-recording"
    bad.mkdir()
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "replay", str(bad)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "not an rtdecoder recording" in r.stderr


def _emulate_d5(svc, shots: int, out: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "emulate", "--port", str(svc.port), "--distance", "5",
                        "--shots", str(shots), "--no-progress", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text())
