"""What a new user meets first (issue: no hang, no false success): replay against nothing or
against another service, ``decode`` on data of another code, ``emulate`` whose shots all fail,
sizes at the spec's limits, metrics before the streams are ready."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rtdecoder.cli import ServiceProcess

sys.path.insert(0, str(Path(__file__).resolve().parent))

D3 = ["--distance", "3", "--rounds", "3"]


def run(*argv, timeout=600):
    return subprocess.run([sys.executable, "-m", "rtdecoder", *argv], capture_output=True, text=True,
                          timeout=timeout)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    rec = tmp_path_factory.mktemp("rec") / "rec"
    with ServiceProcess(D3 + ["--decoder", "union_find"], extra=["--record", str(rec), "--metrics-port", "-1"]) as svc:
        r = run("emulate", "--port", str(svc.port), *D3, "--shots", "50", "--no-progress", "--cycle-us", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((rec / "meta.json").read_text())
    assert meta["stream_info"]["0"]["decoder"] == "union_find"
    return rec


def test_replay_with_nothing_listening_says_so_instead_of_waiting(recording):
    r = run("replay", str(recording), "--port", str(free_udp_port()), "--timeout", "30", timeout=120)
    assert r.returncode == 1
    assert "no HELLO_REPLY" in r.stderr and "rtdecoder serve" in r.stderr, r.stderr[-2000:]


def test_replay_against_another_decoder_warns_and_names_the_difference(recording, tmp_path):
    with ServiceProcess(D3 + ["--decoder", "matching"], extra=["--metrics-port", "-1"]) as svc:
        r = run("replay", str(recording), "--port", str(svc.port), "--fast", "--json", str(tmp_path / "r.json"))
    out = json.loads((tmp_path / "r.json").read_text())
    assert "decoder matching where the recording had union_find" in r.stderr, r.stderr[-2000:]
    assert any("decoder" in w for w in out["warnings"])
    assert "differs from the recorded one" in r.stdout


def test_replay_against_the_same_service_has_no_warning(recording, tmp_path):
    with ServiceProcess(D3 + ["--decoder", "union_find"], extra=["--metrics-port", "-1"]) as svc:
        r = run("replay", str(recording), "--port", str(svc.port), "--fast", "--json", str(tmp_path / "r.json"))
    out = json.loads((tmp_path / "r.json").read_text())
    assert r.returncode == 0 and out["warnings"] == [] and out["reproduced"] == out["corrections_recorded"] > 0, \
        r.stdout + r.stderr[-2000:]


def _write_detections(path, distance, shots, p=0.001, rounds=None, obs=False):
    import stim

    c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=distance, rounds=rounds or 5 * distance,
                               after_clifford_depolarization=p, before_round_data_depolarization=p,
                               before_measure_flip_probability=p, after_reset_flip_probability=p)
    dets, flips = c.compile_detector_sampler(seed=5).sample(shots, separate_observables=True)
    import numpy as np

    data = np.concatenate([dets, flips], axis=1) if obs else dets
    stim.write_shot_data_file(data=data, path=str(path), format="b8", num_measurements=0,
                              num_detectors=data.shape[1], num_observables=0)
    return c


def test_decode_refuses_shots_of_another_code_that_happen_to_divide(tmp_path):
    _write_detections(tmp_path / "d5.b8", 5, 2000)
    r = run("decode", str(tmp_path / "d5.b8"), str(tmp_path / "out.01"), "--distance", "3", "--backend", "cpu")
    assert r.returncode == 2 and "do not fit the DEM" in r.stderr, r.stderr[-2000:]
    assert "10000 shots" in r.stderr and "--no-fit-check" in r.stderr
    r = run("decode", str(tmp_path / "d5.b8"), str(tmp_path / "out.01"), "--distance", "3", "--backend", "cpu",
            "--no-fit-check")
    assert r.returncode == 0


def test_decode_takes_its_own_shots_and_writes_json(tmp_path):
    _write_detections(tmp_path / "d3.b8", 3, 3000, p=0.003, obs=True)
    r = run("decode", str(tmp_path / "d3.b8"), str(tmp_path / "out.01"), "--distance", "3", "--p", "0.003",
            "--append-observables", "--backend", "cpu", "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["shots"] == 3000 and s["us_per_shot"] > 0 and 0 <= s["logical_error_rate"] < 0.2
    assert s["fit"]["p_value"] > 1e-6 and "install the NVIDIA driver" not in r.stderr


def test_decode_notes_noise_stronger_than_the_dem(tmp_path):
    _write_detections(tmp_path / "d3.b8", 3, 3000, p=0.006)
    r = run("decode", str(tmp_path / "d3.b8"), str(tmp_path / "out.01"), "--distance", "3", "--p", "0.001",
            "--backend", "cpu")
    assert r.returncode == 0 and "as frequent as the DEM's" in r.stderr, r.stderr[-2000:]


def test_emulate_exits_non_zero_when_shots_fail_and_names_the_cause(tmp_path):
    with ServiceProcess(D3 + ["--decoder", "union_find", "--input", "measurements"],
                        extra=["--metrics-port", "-1"]) as svc:
        wrong = run("emulate", "--dialect", "cuqr", "--input", "detection_events", "--port", str(svc.port), *D3,
                    "--shots", "20", "--no-progress")
        learnt = run("emulate", "--dialect", "cuqr", "--port", str(svc.port), *D3, "--shots", "20", "--no-progress")
        bad = run("emulate", "--port", str(svc.port), "--stream-id", "9", *D3, "--shots", "5", "--no-progress",
                  "--timeout", "0.2")
    assert wrong.returncode == 2 and "takes measurements" in wrong.stderr, wrong.stderr[-2000:]
    assert learnt.returncode == 0, learnt.stderr[-2000:]
    assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr[-2000:]


def test_a_failed_run_names_the_likely_cause(capsys, monkeypatch):
    import argparse

    import numpy as np

    from rtdecoder.cli import _report
    from rtdecoder.emulator import Report

    nan = float("nan")
    r = Report("c", 3, 4, 0.001, "matching", 0, 0, 1, 1.0, 3, {}, {}, 0.0, nan, nan, nan, nan, 0, 0, 3,
               {"INTERNAL_ERROR": 3}, answered=np.zeros(3, bool), affected=np.zeros(3, bool))
    a = argparse.Namespace(shots=3, json=None, plot=None, allow_failures=False)
    import rtdecoder.report as R

    monkeypatch.setattr(R, "print_report", lambda *x, **k: None)
    assert _report(r, a) == 1
    err = capsys.readouterr().err
    assert "3 of 3 shots got no correction" in err and "what the stream does not take" in err
    assert _report(r, argparse.Namespace(shots=3, json=None, plot=None, allow_failures=True)) == 0


def test_metrics_answer_503_until_the_streams_are_ready():
    import urllib.error
    import urllib.request

    from prometheus_client import CollectorRegistry, Counter

    from rtdecoder.metrics import serve_http

    registry = CollectorRegistry()
    Counter("rtdecoder_example_total", "an example", registry=registry).inc()
    ready = [False]
    httpd = serve_http(0, "127.0.0.1", registry, lambda: ready[0])
    base = f"http://127.0.0.1:{httpd.server_port}"

    def get(path):
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    try:
        assert get("/metrics")[0] == 503 and get("/readyz")[0] == 503
        assert get("/healthz")[0] == 200
        ready[0] = True
        status, body = get("/metrics")
        assert status == 200 and "rtdecoder_example_total 1.0" in body
        assert get("/readyz")[0] == 200
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("size, status", [(4096, "BAD_PAYLOAD"), (4097, "TOO_LARGE"), (5040, "TOO_LARGE"),
                                          (8192, "TOO_LARGE"), (9000, "TOO_LARGE")])
def test_control_messages_past_max_datagram_are_too_large_as_the_spec_says(size, status, served_d3):
    from rtdecoder import protocol as P

    msg_type = P.MsgType.PING if size == 5040 else P.MsgType.HELLO
    body = bytes(size - P.HEADER_LEN)
    datagram = P.encode(P.Header(msg_type, stream_id=0), body)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.connect((served_d3.host, served_d3.port))
        s.send(datagram)
        reply = s.recv(65536)
    _, got, _, _ = P.decode_error(reply)
    assert got.name == status


@pytest.fixture(scope="module")
def served_d3():
    with ServiceProcess(D3 + ["--decoder", "union_find"], extra=["--metrics-port", "-1"]) as svc:
        yield svc


def test_a_busy_host_is_warned_of_and_a_sliced_round_trip_is_named(monkeypatch):
    import os

    from rtdecoder.cli import _slicing_note, _spin_warning
    from rtdecoder.emulator import Report

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    assert "time slicing" in _spin_warning(2, "the demo")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert _spin_warning(2, "the demo") is None
    nan = float("nan")

    def report(lat, srv):
        return Report("c", 3, 4, 0.001, "matching", 0, 0, 1, 1.0, 3, {"p50": lat}, {"p50": srv}, 0.0, nan, nan, nan,
                      nan, 0, 0, 0)

    assert "outside the service" in _slicing_note(report(11700.0, 9.0))
    assert _slicing_note(report(15.0, 9.0)) is None


def test_the_report_says_erasure_and_that_the_reference_ignores_heralds():
    import io

    from rich.console import Console

    from rtdecoder.emulator import Report
    from rtdecoder.report import print_report

    keys = {k: 1.0 for k in ("p50", "p90", "p99", "p999", "max")}
    r = Report("surface_code:rotated_memory_z", 5, 26, 0.0025, "union_find", 10, 5, 1, 1.0, 100, keys, keys, 0.0,
               0.01, 0.001, 0.05, 0.002, 4, 0, 0, erasure=0.0025)
    out = io.StringIO()
    print_report(r, console=Console(file=out, width=300))
    text = out.getvalue()
    assert "erasure=0.0025" in text and "heralds not used" in text and "cannot see them" in text
    assert r.to_json()["erasure"] == 0.0025


README_YAML = """decoders:
  - id: 0
    type: pymatching
    block_size: 3
    syndrome_size: 3
    H_sparse: [0, -1, 1, -1, 2, -1]
    O_sparse: [0, -1, 1, -1, 2, -1]
    D_sparse: [0, -1, 1, -1, 2, -1]
    decoder_custom_args:
      error_rate_vec: [0.1, 0.1, 0.1]
      merge_strategy: smallest_weight
"""


def test_the_readmes_yaml_can_be_served_and_driven_in_both_dialects(tmp_path):
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert README_YAML.replace("    type: pymatching\n", "") in re.sub(r" +#[^\n]*", "", readme).replace(
        "    type: pymatching\n", "")  # the README's example, comments aside
    path = tmp_path / "decoders.yaml"
    path.write_text(README_YAML)
    with ServiceProcess(["--config", str(path)], extra=["--metrics-port", "-1"]) as svc:
        out = {}
        for dialect in ("native", "cuqr"):
            out[dialect] = tmp_path / f"{dialect}.json"
            r = run("emulate", "--config", str(path), "--port", str(svc.port), "--dialect", dialect, "--shots", "300",
                    "--no-progress", "--cycle-us", "0", "--json", str(out[dialect]))
            assert r.returncode == 0, r.stderr[-3000:]
    for dialect, p in out.items():
        (rep,) = json.loads(p.read_text())
        assert rep["shots"] == 300 and rep["lost"] == 0 and rep["errors"] == 0, (dialect, rep)
        assert rep["disagreements_with_reference"] == 0 and rep["logical_error_rate"] == 0  # each error seen alone


def test_emulate_config_drives_every_stream_of_a_toml_file(tmp_path):
    path = tmp_path / "streams.toml"
    path.write_text("""[server]
port = 0

[[streams]]
id = 1
distance = 3
rounds = 3
decoder = "union_find"

[[streams]]
id = 2
distance = 3
rounds = 4
decoder = "matching"
input = "measurements"
""")
    with ServiceProcess(["--config", str(path)], extra=["--metrics-port", "-1"]) as svc:
        r = run("emulate", "--config", str(path), "--port", str(svc.port), "--shots", "100", "--no-progress",
                "--cycle-us", "0", "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr[-3000:]
    reps = json.loads((tmp_path / "r.json").read_text())
    assert [x["rounds"] for x in reps] == [4, 5] and all(x["lost"] == 0 and x["errors"] == 0 for x in reps)


def test_measurements_made_for_a_matrix_model_give_back_its_detection_events(tmp_path):
    import numpy as np
    import stim

    import cudaq_fixture as F
    from rtdecoder.configfile import load_config
    from rtdecoder.shots import ShotSource, gf2_right_inverse

    c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=3, after_clifford_depolarization=0.01,
                               before_measure_flip_probability=0.01)
    path = tmp_path / "d.yaml"
    path.write_text(F.yaml_text(c, decoder_id=0))
    (cfg,) = load_config(str(path)).streams
    sent, dets, _ = ShotSource(cfg, 5, True).sample(64)
    back = np.zeros_like(dets)
    for j, row in enumerate(cfg.model.d_rows):
        back[:, j] = np.bitwise_xor.reduce(sent[:, list(row)], axis=1)
    assert np.array_equal(back, dets) and dets.any()  # D · measurements = the sampled events
    rows = [(0, 1), (1, 2), (0, 2)]  # dependent: the third is the sum of the others
    with pytest.raises(Exception, match="not independent"):
        gf2_right_inverse(rows, 3)
    r = gf2_right_inverse([(0, 1), (1, 2)], 3)
    d = np.array([[1, 1, 0], [0, 1, 1]], np.uint8)
    assert np.array_equal((d @ r) % 2, np.eye(2, dtype=np.uint8))


def test_every_flag_of_replay_and_hello_has_help_and_drain_names_sigint():
    import re

    for cmd in ("replay", "hello"):
        text = run(cmd, "--help").stdout
        for flag in ("--host", "--port"):
            line = re.search(rf"^\s+{flag} \S+\s*(.*)$", text, re.M)
            assert line and line.group(1).strip(), f"{cmd} {flag} has no help:\n{text}"
    serve = " ".join(run("serve", "--help").stdout.split())
    assert "SIGTERM or SIGINT" in serve and "--allow-failures" in " ".join(run("emulate", "--help").stdout.split())
