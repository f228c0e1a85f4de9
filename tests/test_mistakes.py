"""What a careless user does by mistake gets a clear message with the fix and the right exit code,
never a traceback or a silently wrong result."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from rtdecoder.cli import ServiceProcess, _stream_argv
from rtdecoder.config import ServerConfig, StreamConfig
from rtdecoder.configfile import load_config
from rtdecoder.dem import make_circuit
from rtdecoder.engine import Engine

RT = [sys.executable, "-m", "rtdecoder"]


def run(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(RT + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


def one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    for w in words:
        assert w in r.stderr, (w, r.stderr[-2000:])


def shots_flowing(metrics_url: str, stderr_path, proc, timeout: float = 120) -> None:
    """Wait until the service has decoded a shot (its metrics say so)."""
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
            line = next(ln for ln in text.splitlines() if ln.startswith("rtdecoder_shots_decoded_total"))
            if float(line.split()[-1]) > 0:
                return
        except (OSError, StopIteration):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no shot decoded:\n{open(stderr_path).read()[-3000:]}")


# --- Ctrl-C -------------------------------------------------------------------------------------
def test_ctrl_c_during_emulate_prints_what_was_measured_writes_the_json_and_exits_130(tmp_path):
    cfg = StreamConfig(distance=3, rounds=3, decoder="union_find")
    out, err = tmp_path / "out.json", tmp_path / "err.txt"
    with ServiceProcess(_stream_argv(cfg)) as svc:
        with open(err, "w") as e:
            proc = subprocess.Popen(RT + ["emulate", "--distance", "3", "--rounds", "3", "--port", str(svc.port),
                                          "--shots", "10000000", "--cycle-us", "20", "--json", str(out)],
                                    stdout=subprocess.PIPE, stderr=e, text=True)
            shots_flowing(f"http://127.0.0.1:{svc.metrics_port}/metrics", err, proc)
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            stdout, _ = proc.communicate(timeout=120)
    stderr = err.read_text()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted after" in stderr
    assert "round trip" in stdout and "interrupted" in stdout
    report = json.loads(out.read_text())
    assert report["interrupted"] is True and 0 < report["shots"] < 10_000_000
    assert report["lost"] == 0 and report["disagreements_with_reference"] == 0


def test_ctrl_c_during_demo_reaches_service_and_emulator_alike_and_exits_130(tmp_path):
    """A terminal's Ctrl-C goes to the whole process group: the demo and its service."""
    err = tmp_path / "err.txt"
    with open(err, "w") as e:
        proc = subprocess.Popen(RT + ["demo", "--distance", "3", "--rounds", "3", "--decoder", "union_find",
                                      "--shots", "10000000", "--cycle-us", "20", "--json", str(tmp_path / "d.json")],
                                stdout=subprocess.PIPE, stderr=e, text=True, start_new_session=True)
        try:
            end = time.monotonic() + 120
            while "metrics on http" not in err.read_text() and time.monotonic() < end and proc.poll() is None:
                time.sleep(0.1)
            url = re.search(r"metrics on (http://\S+/metrics)", err.read_text()).group(1)
            shots_flowing(url, err, proc)
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGINT)
            stdout, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    stderr = err.read_text()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted" in stdout
    assert json.loads((tmp_path / "d.json").read_text())["interrupted"] is True


# --- rtdecoder decode ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def d5_file(tmp_path_factory):
    """A d = 5 b8 file of 5,000 shots with observables, and the DEMs of d = 5 and d = 3."""
    from rtdecoder.offline import write_example

    tmp = tmp_path_factory.mktemp("decode")
    dems = {}
    for d in (3, 5):
        c = make_circuit(StreamConfig(distance=d, rounds=5 * d, p=0.001))
        dems[d] = c.detector_error_model(decompose_errors=True)
        dems[d].to_file(tmp / f"d{d}.dem")
    c5 = make_circuit(StreamConfig(distance=5, rounds=25, p=0.001))
    write_example(tmp / "d5.b8", dems[5], c5, 5000, "b8")
    return tmp, dems


def test_decode_into_a_folder_that_does_not_exist_is_one_line_exit_2(d5_file):
    tmp, _ = d5_file
    r = run("decode", tmp / "d5.b8", tmp / "no" / "such" / "out.01", "--dem", tmp / "d5.dem", "--append-observables")
    one_line_error(r, 2, "the folder", "does not exist")


def test_decode_refuses_a_dem_of_another_size_and_names_both_widths(d5_file, tmp_path):
    """The DEM of d = 3 on a d = 5 file: by the padding bits of each record, or, where the sizes do
    not divide, by the file's size; either way nothing is decoded."""
    tmp, dems = d5_file
    w5, w3 = dems[5].num_detectors + 1, dems[3].num_detectors + 1
    raw = np.fromfile(tmp / "d5.b8", np.uint8)
    rec5, rec3 = (w5 + 7) // 8, (w3 + 7) // 8
    shots = rec3 * 40  # a whole number of d = 3 records as well
    even = tmp_path / "even.b8"
    raw[:shots * rec5].tofile(even)
    r = run("decode", even, tmp_path / "out.01", "--dem", tmp / "d3.dem", "--append-observables")
    one_line_error(r, 2, f"= {w3} bits per shot", "written for another number of detectors")
    assert not (tmp_path / "out.01").exists()
    odd = tmp_path / "odd.b8"
    raw[:rec5 * 7].tofile(odd)  # 7 records of d = 5: not a whole number of d = 3 records
    if (rec5 * 7) % rec3:
        r = run("decode", odd, tmp_path / "out.01", "--dem", tmp / "d3.dem", "--append-observables")
        one_line_error(r, 2, f"{rec5 * 7} bytes", f"{rec3}-byte b8 records")
    r = run("decode", even, tmp_path / "good.01", "--dem", tmp / "d5.dem", "--append-observables")
    assert r.returncode == 0 and f"decoded {shots} shots" in r.stderr


# --- stream cost ----------------------------------------------------------------------------------
def test_a_stream_too_large_to_build_is_refused_at_once_with_the_estimate_and_the_flag():
    r = run("serve", "--distance", "101", "--port", "0", "--metrics-port", "-1", timeout=120)
    one_line_error(r, 2, "stream 0", "GiB", "--max-stream-gib")


def test_large_streams_are_built_behind_a_progress_display(monkeypatch, capsys):
    import rtdecoder.engine as E

    monkeypatch.setattr(E, "PROGRESS_BYTES", 0)  # every stream counts as large
    import io

    log = io.StringIO()
    Engine([StreamConfig(distance=3, rounds=3)], log=log)
    shown = capsys.readouterr().err + log.getvalue()
    for stage in ("detector error model", "window graphs", "matching decoder"):
        assert stage in shown, shown


# --- emulate against another stream ---------------------------------------------------------------
def test_emulate_says_what_differs_from_the_service_and_reports_the_services_values(capsys):
    from rtdecoder.emulator import EmulatorOptions, run_emulator

    served = StreamConfig(distance=3, rounds=3, p=0.002, decoder="union_find", window=4, commit=2)
    mine = StreamConfig(distance=3, rounds=3, p=0.001, decoder="matching")
    with ServiceProcess(_stream_argv(served)) as svc:
        report = run_emulator(mine, EmulatorOptions(host=svc.host, port=svc.port, shots=20, progress=False,
                                                    expect={"decoder": "matching", "window": 6}))
    err = capsys.readouterr().err
    assert "decoder union_find (asked for: matching)" in err and "window 4 (asked for: 6)" in err
    assert "DEM fingerprints differ" in err
    assert (report.decoder, report.window, report.commit) == ("union_find", 4, 2)


def test_emulate_without_a_service_asks_whether_one_runs():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, so nothing answers and nothing else takes it
        r = run("emulate", "--distance", "3", "--port", port, "--shots", "5", "--no-progress")
    one_line_error(r, 1, f"is `rtdecoder serve` running on 127.0.0.1:{port}")


# --- ports in use ---------------------------------------------------------------------------------
def test_a_udp_port_in_use_is_reported_before_any_stream_is_built_and_names_the_flag():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        r = run("serve", "--distance", "3", "--port", s.getsockname()[1], "--metrics-port", "-1")
    one_line_error(r, 1, "Address already in use", "--port")
    assert "streams built" not in r.stderr


def test_a_metrics_port_in_use_names_the_port_and_the_flag():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run("serve", "--distance", "3", "--port", "0", "--metrics-port", port)
    one_line_error(r, 1, f"127.0.0.1:{port}", "--metrics-port")
    assert "streams built" not in r.stderr


# --- defaults and flags that would be ignored ---------------------------------------------------
def test_a_config_stream_without_rounds_gets_five_times_its_distance(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[[streams]]\nid = 0\ndistance = 7\n")
    assert load_config(path).streams[0].rounds == 35 == StreamConfig(distance=7).rounds


def test_stream_flags_beside_config_are_a_warning(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[server]\nport = 0\nmetrics_port = -1\n[[streams]]\nid = 0\ndistance = 3\nrounds = 2\n")
    with ServiceProcess(["--config", str(path), "--distance", "9"], extra=[]) as svc:
        pass
    assert "warning: --distance ignored: the streams are those of --config" in svc.stderr()


def test_a_window_that_covers_the_shot_is_said_so():
    lines = Engine([StreamConfig(distance=3, rounds=5, window=20)]).describe()
    assert any("window 20 covers the whole shot (6 round blocks)" in ln for ln in lines), lines
    r = run("demo", "--distance", "3", "--rounds", "5", "--window", "20", "--shots", "20", "--no-progress")
    assert r.returncode == 0 and "window 20 covers the whole shot (6 round blocks)" in r.stderr, r.stderr[-2000:]


def test_emulator_flags_are_checked_before_the_demo_starts_a_service():
    for flag, value, words in (("--shots", 0, "--shots"), ("--drop", 2, "--drop 2.0"), ("--cycle-us", -1, "--cycle-us")):
        r = run("demo", "--distance", "3", flag, value, timeout=60)
        one_line_error(r, 2, words)
        assert "service on udp" not in r.stderr


# --- help, version, README -------------------------------------------------------------------------
def test_version_and_helps_say_only_what_is_true():
    from rtdecoder import __version__

    assert run("--version").stdout.strip() == f"rtdecoder {__version__}"
    decode = run("decode", "--help").stdout
    assert "default union_find" in decode
    assert not any(f in decode for f in ("--allow", "--stream-id"))
    assert "with --parallel-windows: window W" in " ".join(decode.split())  # decode's windows are parallel ones
    emulate = run("emulate", "--help").stdout
    assert not re.search(r"--allow\b(?!-)", emulate)  # a service's allow-list (--allow-failures is the emulator's)
    serve = run("serve", "--help").stdout
    assert "README.md" in serve and "rtdecoder.config" not in serve


def test_the_readme_config_example_runs_on_this_machine(root, tmp_path):
    text = (root / "README.md").read_text()
    toml = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    path = tmp_path / "readme.toml"
    path.write_text(toml)
    cfg = load_config(path)
    assert max(cfg.cpus) < os.cpu_count()
    from rtdecoder.server import Server

    server = Server(ServerConfig(**{**cfg.__dict__, "port": 0, "metrics_port": -1}), log=open(os.devnull, "w"))
    try:
        assert server.engine.streams[1].cfg.rounds == 15
    finally:
        server.close()


def test_the_readme_tour_says_how_to_reach_the_command(root):
    text = (root / "README.md").read_text()
    tour = text[text.index("## A short tour"):]
    assert ".venv/bin/activate" in tour[:600] or ".venv/bin/rtdecoder" in tour[:600]


# --- many like streams --------------------------------------------------------------------------------
def test_like_streams_share_their_graphs_and_tables_and_log_in_one_line():
    cfgs = [StreamConfig(id=i, distance=3, rounds=9, decoder=dec) for i, dec in
            [(i, "union_find") for i in range(200)] + [(200, "matching"), (201, "matching")]]
    e = Engine(cfgs)
    uf, m = e.streams[0], e.streams[200]
    assert all(e.streams[i].plan is uf.plan and e.streams[i].decoder is uf.decoder for i in range(200))
    assert e.streams[201].plan is m.plan and m.plan is not uf.plan
    assert len(e.win) == uf.plan.num_windows + m.plan.num_windows  # one window table per plan
    assert len(e.syn) == 202 * uf.layout.num_detectors  # detection events: one row per stream
    lines = e.describe()
    assert len(lines) == 2 and lines[0].startswith("200 streams (0-199)") and "2 streams (200-201)" in lines[1]
    dets = make_circuit(cfgs[0]).compile_detector_sampler(seed=5).sample(50)
    alone = Engine([StreamConfig(id=0, distance=3, rounds=9, decoder="union_find")]).decode_shots(0, dets)
    for sid in (0, 137, 199):
        assert np.array_equal(e.decode_shots(sid, dets), alone)
    ref = Engine([StreamConfig(id=0, distance=3, rounds=9, decoder="matching")]).decode_shots(0, dets)
    assert np.array_equal(e.decode_shots(201, dets), ref)
