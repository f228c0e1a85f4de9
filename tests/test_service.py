"""End to end over loopback: ``rtdecoder serve`` in a child process, the controller emulator in
this one."""

import json
import subprocess
import sys

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rtdecoder import decoders
from rtdecoder.cli import ServiceProcess, _stream_argv
from rtdecoder.config import StreamConfig
from rtdecoder.emulator import EmulatorOptions, run_emulator
from rtdecoder.engine import Engine

CONFIGS = {name: StreamConfig(id=4, distance=3, rounds=9, p=0.01, decoder=name) for name in ("matching", "union_find")}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def decoder_service(request):
    cfg = CONFIGS[request.param]
    with ServiceProcess(_stream_argv(cfg)) as s:
        yield cfg, s
    assert s.proc.returncode == 0, s.stderr()  # SIGTERM stops it cleanly


def test_every_shot_gets_the_in_process_decoders_correction(decoder_service):
    cfg, service = decoder_service
    opts = EmulatorOptions(host=service.host, port=service.port, shots=300, rounds_per_packet=2, cycle_us=1.0,
                           timeout_s=2.0, seed=5, progress=False)
    report = run_emulator(cfg, opts)
    assert report.lost == 0 and report.errors == 0
    assert report.answered.all()
    rt = Engine([cfg]).streams[cfg.id]
    dets, _ = rt.circuit.compile_detector_sampler(seed=5).sample(300, separate_observables=True)
    in_process = Engine([cfg]).decode_shots(cfg.id, dets, rounds_per_packet=2)
    assert np.array_equal(report.predictions, in_process)
    assert report.logical_error_rate > 0  # p=1% at d=3: the shots have logical errors to get right
    assert all(v > 0 for v in report.latency_us.values())


def test_metrics_endpoint_exports_histograms_and_counters(decoder_service):
    """Runs after the end-to-end test on the same service, so its histograms have counts."""
    import socket

    cfg, service = decoder_service

    from rtdecoder import protocol as P

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # one bad datagram, answered and counted
        s.settimeout(5)
        s.sendto(b"XXXX" + P.encode(P.Header(P.MsgType.PING))[4:], (service.host, service.port))
        assert P.decode_error(s.recv(256))[1] == P.Status.BAD_MAGIC
    text = service.scrape()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("rtdecoder_server_latency_seconds", "rtdecoder_decode_seconds", "rtdecoder_packets_received",
                 "rtdecoder_packets_rejected", "rtdecoder_shots_decoded", "rtdecoder_build_info"):
        assert name in families, name
    lat = families["rtdecoder_server_latency_seconds"]
    assert lat.type == "histogram"
    les = [s.labels["le"] for s in lat.samples if s.name.endswith("_bucket")]
    assert les[0] == "1e-06" and "0.01" in les and les[-1] == "+Inf"
    count = next(s.value for s in lat.samples if s.name.endswith("_count"))
    assert count > 0
    dec = {s.labels["decoder"]: s.value for s in families["rtdecoder_decode_seconds"].samples
           if s.name.endswith("_count")}
    assert set(dec) == set(decoders.names())  # one series per registered decoder
    assert dec[cfg.decoder] > 0 and sum(dec.values()) == dec[cfg.decoder]
    rejected = {s.labels["reason"]: s.value for s in families["rtdecoder_packets_rejected"].samples}
    assert {"round_gap", "duplicate", "bad_magic", "too_large"} <= set(rejected)
    assert rejected["bad_magic"] == 1


def test_demo_prints_the_table_and_writes_the_documented_json(tmp_path):
    out = tmp_path / "demo.json"
    png = tmp_path / "demo.png"
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "demo", "--distance", "3", "--shots", "200",
                        "--no-progress", "--json", str(out), "--plot", str(png)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "logical error rate" in r.stdout and "p99" in r.stdout
    report = json.loads(out.read_text())
    for key in ("latency_us", "shots", "rounds", "distance", "decoder", "logical_error_rate",
                "reference_logical_error_rate", "lost", "errors", "throughput_rounds_per_s"):
        assert key in report, key
    assert set(report["latency_us"]) == {"p50", "p90", "p99", "p999", "max"}
    assert report["shots"] == 200 and report["distance"] == 3 and report["lost"] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serve_with_a_bad_config_exits_with_the_fix(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[[streams]]\nid = 1\nwindoww = 4\n")
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "serve", "--config", str(f)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "unknown key 'windoww'" in r.stderr


def test_console_script_runs_outside_the_checkout(tmp_path):
    """The installed ``rtdecoder`` command imports the package without the checkout on sys.path,
    and a bad stream is reported as a configuration error that names the fix."""
    from pathlib import Path

    script = Path(sys.executable).parent / "rtdecoder"
    r = subprocess.run([str(script), "serve", "--circuit", "surface_code:nonsense", "--metrics-port", "-1"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "configuration error" in r.stderr and "Known names include" in r.stderr
