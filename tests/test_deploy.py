"""``rtdecoder doctor`` and the deployment files."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_doctor_reports_every_area_and_what_serve_would_choose():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}  # the real probe, not the tests' simulator
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "doctor", "--json"], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    findings = json.loads(r.stdout)
    areas = {f["area"] for f in findings}
    for must in ("pyverbs", "libibverbs", "gpu", "cpus", "isolated cores", "busy poll sysctls", "hugepages",
                 "clock source", "/dev/cpu_dma_latency", "locked memory limit", "serve --transport auto",
                 "serve --backend auto"):
        assert must in areas, must
    assert all(f["status"] in ("ok", "warn", "info") for f in findings)
    assert all(f["advice"] for f in findings if f["status"] == "warn"), "every warning says what to do"
    t = next(f for f in findings if f["area"] == "serve --transport auto")
    assert t["found"].startswith(("udp: transport auto chose udp", "roce: transport auto chose roce"))


def test_doctor_table_prints():
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "doctor"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "rtdecoder doctor" in r.stdout and "serve --transport auto" in r.stdout


def test_tune_host_script_dry_run_changes_nothing():
    script = ROOT / "deploy" / "tune-host.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    r = subprocess.run(["bash", str(script), "--cpus", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "busy_read=50" in r.stdout and "isolcpus=managed_irq,domain,1" in r.stdout
    assert "dry run: nothing changed" in r.stdout
    bad = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--cpus is required" in bad.stderr


def test_systemd_unit_and_container_file_point_at_real_commands():
    unit = (ROOT / "deploy" / "rtdecoder.service").read_text()
    assert "ExecStart=/opt/rtdecoder/venv/bin/rtdecoder serve --config" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "LimitMEMLOCK=infinity" in unit
    sections = [ln for ln in unit.splitlines() if ln.startswith("[")]
    assert sections == ["[Unit]", "[Service]", "[Install]"]
    cf = (ROOT / "deploy" / "Containerfile").read_text()
    assert cf.startswith("#") and "FROM python:3.11" in cf and 'ENTRYPOINT ["/opt/rtdecoder/venv/bin/rtdecoder"]' in cf
    assert (ROOT / "deploy" / "TUNING.md").read_text().count("tune-host.sh") >= 3
