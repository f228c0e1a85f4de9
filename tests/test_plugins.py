"""Decoders and transports are plug-ins: a toy decoder registered from outside the package
(``tests/plugins/rtd_toy_decoder.py``) is selectable in a config file and on the command line,
decodes through the service, ``rtdecoder decode`` and sinter, and has its own id in HELLO_REPLY;
unknown names are errors everywhere; the in-process ``memory`` transport serves through the
registry; and engines replaced by reloads are freed."""

import gc
import importlib
import os
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

from rtdecoder import decoders
from rtdecoder import protocol as P
from rtdecoder import transport
from rtdecoder.config import ConfigError, ServerConfig, StreamConfig
from rtdecoder.configfile import load_config
from rtdecoder.engine import Engine

PLUGINS = Path(__file__).resolve().parent / "plugins"
CFG = dict(distance=3, rounds=4, p=0.01, window=4, commit=2)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    mod = importlib.import_module("rtd_toy_decoder")
    decoders.register(mod.SPEC)  # again, if an earlier test removed it
    yield mod
    decoders.unregister("toy")
    sys.modules.pop("rtd_toy_decoder", None)


def test_unknown_decoder_and_transport_names_are_errors_that_list_the_known_ones():
    with pytest.raises(ConfigError, match="unknown decoder 'nope'.*matching, union_find"):
        StreamConfig(decoder="nope")
    with pytest.raises(ConfigError, match="unknown transport 'carrier_pigeon'.*udp"):
        ServerConfig(transport="carrier_pigeon", streams=(StreamConfig(distance=3, rounds=3),))
    with pytest.raises(ConfigError, match="unknown decoder"):
        decoders.get("nope")


def test_registrations_with_a_taken_name_or_wire_id_are_refused(toy):
    spec = decoders.get("toy")
    with pytest.raises(ValueError, match="wire id 1 is taken by 'union_find'"):
        decoders.register(decoders.DecoderSpec(name="toy2", wire_id=1, description=spec.description))
    with pytest.raises(ValueError, match="only a compiled decoder"):
        decoders.DecoderSpec(name="toy3", wire_id=12, description=spec.description, gpu=True)
    with pytest.raises(ValueError, match="already registered"):
        decoders.register(decoders.DecoderSpec(name="matching", wire_id=13, description=spec.description))


def test_a_toy_decoder_plugs_into_config_cli_engine_decode_and_sinter(toy, tmp_path):
    from rtdecoder.cli import build_parser, main
    from rtdecoder.offline import write_example
    from rtdecoder.sinter import decoders as sinter_decoders

    # config file and command line
    path = tmp_path / "s.toml"
    path.write_text('[server]\nport = 0\n[[streams]]\nid = 0\ndistance = 3\nrounds = 4\ndecoder = "toy"\n')
    assert load_config(path).streams[0].decoder == "toy"
    assert build_parser().parse_args(["serve", "--decoder", "toy"]).decoder == "toy"
    assert "toy" in decoders.names() and decoders.by_wire_id(9).name == "toy"

    # the service's own path, in process: HELLO_REPLY names the toy's wire id; it decodes
    e_toy = Engine([StreamConfig(id=0, decoder="toy", **CFG)])
    e_ref = Engine([StreamConfig(id=0, decoder="matching", **CFG)])
    hello = e_toy.handle(P.encode(P.Header(P.MsgType.HELLO, stream_id=0)))[0]
    assert P.StreamInfo.unpack(hello[P.HEADER_LEN:]).decoder == 9
    circuit = e_toy.streams[0].circuit
    dets = circuit.compile_detector_sampler(seed=3).sample(200)
    before = toy.CALLS[0]
    got = e_toy.decode_shots(0, dets)
    assert toy.CALLS[0] - before == 200 * e_toy.streams[0].plan.num_windows
    assert np.array_equal(got, e_ref.decode_shots(0, dets))

    # rtdecoder decode: no fast path, so shot by shot through decode_window
    dem = circuit.detector_error_model(decompose_errors=True)
    dem_path = tmp_path / "d.dem"
    dem.to_file(dem_path)
    write_example(tmp_path / "in.b8", dem, circuit, 300, "b8", seed=4)
    before = toy.CALLS[0]
    for name in ("toy", "matching"):
        assert main(["decode", str(tmp_path / "in.b8"), str(tmp_path / f"{name}.01"), "--dem", str(dem_path),
                     "--decoder", name, "--append-observables"]) == 0
    assert toy.CALLS[0] - before == 300
    assert (tmp_path / "toy.01").read_text() == (tmp_path / "matching.01").read_text()

    # sinter: every registered decoder is a custom decoder
    desc = sinter_decoders()["rtdecoder_toy"]
    packed = np.packbits(dets, axis=1, bitorder="little")
    compiled = desc.compile_decoder_for_dem(dem=dem)  # its engine's warm-up decodes one all-zero shot
    before = toy.CALLS[0]
    preds = compiled.decode_shots_bit_packed(bit_packed_detection_event_data=packed)
    assert toy.CALLS[0] - before == 200
    assert np.array_equal(np.unpackbits(preds, axis=1, bitorder="little")[:, :1], e_ref.decode_shots(0, dets))


def test_a_plugin_named_in_the_environment_serves_through_the_real_service(toy, monkeypatch):
    """``rtdecoder serve`` in a child process loads the toy from RTDECODER_PLUGINS; the emulator
    sees its wire id, every prediction equals offline PyMatching's, and the service's metrics
    count the toy's windows."""
    from rtdecoder.cli import ServiceProcess, _stream_argv
    from rtdecoder.emulator import EmulatorOptions, run_emulator

    monkeypatch.setenv("RTDECODER_PLUGINS", "rtd_toy_decoder")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]))
    cfg = StreamConfig(id=0, decoder="toy", **{**CFG, "window": 0})  # whole shots: offline PyMatching's answers
    with ServiceProcess(_stream_argv(cfg)) as svc:
        report = run_emulator(cfg, EmulatorOptions(host=svc.host, port=svc.port, shots=150, progress=False,
                                                   timeout_s=5.0))
        metrics = svc.scrape()
    assert report.lost == 0 and report.errors == 0
    assert report.disagreements_with_reference == 0
    line = next(ln for ln in metrics.splitlines() if ln.startswith('rtdecoder_decode_seconds_count{decoder="toy"}'))
    assert float(line.split()[-1]) >= 150


def test_an_unimportable_plugin_is_a_configuration_error_that_names_it():
    import subprocess

    r = subprocess.run([sys.executable, "-m", "rtdecoder", "serve", "--distance", "3", "--port", "0"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "RTDECODER_PLUGINS": "no_such_plugin_module"})
    assert r.returncode == 2
    assert "plug-in module 'no_such_plugin_module'" in r.stderr and "RTDECODER_PLUGINS" in r.stderr


def test_the_memory_transport_serves_the_emulator_through_the_registry():
    """A transport is found by name: the server opens ``memory`` in this process and the
    emulator's controller attaches to it by port, with no code that names either."""
    import threading

    from rtdecoder.emulator import EmulatorOptions, run_emulator
    from rtdecoder.server import Server

    assert "memory" in transport.names() and "memory" not in transport.names(remote_only=True)
    cfg = StreamConfig(id=0, decoder="union_find", **CFG)
    server = Server(ServerConfig(port=0, metrics_port=-1, transport="memory", streams=(cfg,)),
                    log=open(os.devnull, "w"))
    assert server.transport_name == "memory"
    runner = threading.Thread(target=server.run)
    runner.start()
    try:
        report = run_emulator(cfg, EmulatorOptions(host="memory", port=server.address[1], shots=60,
                                                   progress=False, transport="memory", timeout_s=5.0))
    finally:
        server.stop()
        runner.join(30)
        server.close()
    assert report.lost == 0 and report.errors == 0 and report.disagreements_with_reference == 0


def test_engines_replaced_by_reloads_are_freed():
    """Every ``WorkerState`` is registered for the escapes under a weak reference: 50 reloads
    leave only the running engine (and at most one the collector has not reached yet)."""
    from rtdecoder.server import Server

    def cfg(rounds):
        return ServerConfig(port=0, metrics_port=-1, streams=(StreamConfig(id=0, distance=3, rounds=rounds,
                                                                           decoder="matching"),))

    server = Server(cfg(3), log=open(os.devnull, "w"))
    refs = [weakref.ref(server.engine)]
    try:
        for i in range(50):
            assert server.reload(cfg(3 + (i % 2) + 1))
            refs.append(weakref.ref(server.engine))
    finally:
        server.close()
    gc.collect()
    alive = [r for r in refs if r() is not None]
    assert alive == [refs[-1]], f"{len(alive)} of 51 engines still alive"


def test_decoder_roles_are_fields_of_the_spec_not_names_in_the_service():
    """Cost, herald use and the fallback role live in ``DecoderSpec``: the service's modules name
    no decoder."""
    import re
    from pathlib import Path

    from rtdecoder import decoders
    from rtdecoder.shard import decoder_cost_us

    root = Path(__file__).resolve().parent.parent / "rtdecoder"
    for name in ("shard.py", "metrics.py", "dataplane.py", "engine.py"):
        text = (root / name).read_text()
        assert not re.search(r"[\"'](union_find|matching|matching_correlated)[\"']", text), name
    assert decoders.fallback().name == "union_find"
    assert all(decoder_cost_us(s.name) > 0 for s in decoders.specs())
    with pytest.raises(ValueError, match="already the deadline's fallback"):
        decoders.register(decoders.DecoderSpec(name="second_fallback", wire_id=30, description=object,
                                               call="compiled", fallback=True))
    with pytest.raises(ValueError, match="only a compiled decoder"):
        decoders.DecoderSpec(name="x", wire_id=31, description=object, call="escape", fallback=True)
