"""SIGHUP: the config file is read again; streams added or changed are (re)built, streams that did
not change keep serving, with their shot in progress, and a bad file changes nothing."""

import signal
import socket
import time

import numpy as np

from rtdecoder import protocol as P
from rtdecoder.cli import ServiceProcess
from rtdecoder.config import ServerConfig, StreamConfig
from rtdecoder.dem import make_circuit
from rtdecoder.engine import Engine
from rtdecoder.server import Server


def toml(streams):
    body = "[server]\nport = 0\nmetrics_port = 0\n"
    for sid, d, rounds in streams:
        body += f"\n[[streams]]\nid = {sid}\ndistance = {d}\nrounds = {rounds}\np = 0.01\ndecoder = \"union_find\"\n"
    return body


def wait_for(svc, text, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in svc.stderr():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the service's log:\n{svc.stderr()[-3000:]}")


def ask(c, datagram):
    c.send(datagram)
    return c.recv(4096)


def test_sighup_reload_keeps_unchanged_streams_and_their_shots(tmp_path):
    path = tmp_path / "rt.toml"
    path.write_text(toml([(0, 3, 4), (1, 3, 3), (3, 3, 3)]))
    cfg0 = StreamConfig(id=0, distance=3, rounds=4, p=0.01, decoder="union_find")
    dets = make_circuit(cfg0).compile_detector_sampler(seed=8).sample(1)
    expected = Engine([cfg0]).decode_shots(0, dets)[0]
    layout = Engine([cfg0]).streams[0].layout
    blocks = P.pack_rounds(dets, layout.round_offsets, layout.round_bytes)[0]
    with ServiceProcess(["--config", str(path)]) as svc:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(10)
        c.connect((svc.host, svc.port))
        half = layout.num_rounds // 2
        c.send(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1, first_round=0, num_rounds=half),
                        blocks[:half].tobytes()))
        time.sleep(0.2)
        path.write_text(toml([(0, 3, 4), (1, 5, 5), (2, 3, 2)]))  # 0 same, 1 changed, 2 added, 3 removed
        svc.proc.send_signal(signal.SIGHUP)
        wait_for(svc, "reloaded in")
        # stream 0's shot goes on where it was
        c.send(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1, first_round=half,
                                 num_rounds=layout.num_rounds - half), blocks[half:].tobytes()))
        final = None
        while final is None:
            r = c.recv(4096)
            h = P.decode_header(r)
            assert h.msg_type == P.MsgType.CORRECTION, P.decode_error(r)
            if h.flags & P.FLAG_FINAL:
                final = P.decode_correction(r, layout.num_observables)
        assert np.array_equal(final.cumulative, expected)
        info1 = P.StreamInfo.unpack(ask(c, P.encode(P.Header(P.MsgType.HELLO, stream_id=1)))[P.HEADER_LEN:])
        assert info1.num_rounds == 6  # d = 5, 5 rounds: 5 + the final data block
        info2 = P.StreamInfo.unpack(ask(c, P.encode(P.Header(P.MsgType.HELLO, stream_id=2)))[P.HEADER_LEN:])
        assert info2.num_rounds == 3
        assert P.decode_error(ask(c, P.encode(P.Header(P.MsgType.HELLO, stream_id=3))))[1] == P.Status.UNKNOWN_STREAM
        # a broken file: nothing changes, and the log says why
        path.write_text("[server]\nport = 0\n[[streams]]\nid = 1\ndistance = 1\n")
        svc.proc.send_signal(signal.SIGHUP)
        wait_for(svc, "config not reloaded, the running one stays")
        info1 = P.StreamInfo.unpack(ask(c, P.encode(P.Header(P.MsgType.HELLO, stream_id=1)))[P.HEADER_LEN:])
        assert info1.num_rounds == 6


def test_streams_being_reconfigured_answer_not_ready(monkeypatch):
    """While a changed stream's tables are built it answers NOT_READY; the others serve."""
    import rtdecoder.engine as S

    cfg = ServerConfig(port=0, metrics_port=-1, streams=(StreamConfig(id=0, distance=3, rounds=3),
                                                         StreamConfig(id=1, distance=3, rounds=3)))
    server = Server(cfg, log=open("/dev/null", "w"))
    seen = {}
    real_build = S.build_stream

    def build_and_look(c, *args, **kw):
        e = server.engine
        lay = e.streams[0].layout
        pkt = lambda sid: P.encode(P.Header(P.MsgType.SYNDROME, stream_id=sid, shot_id=1, num_rounds=1),  # noqa: E731
                                   bytes(lay.round_bytes))
        seen["changed"] = P.decode_error(e.handle(pkt(1))[0])[1]
        seen["unchanged"] = [P.decode_header(r).msg_type for r in e.handle(pkt(0))]
        return real_build(c, *args, **kw)

    monkeypatch.setattr(S, "build_stream", build_and_look)
    try:
        new = ServerConfig(port=0, metrics_port=-1, streams=(StreamConfig(id=0, distance=3, rounds=3),
                                                             StreamConfig(id=1, distance=3, rounds=4)))
        assert server.reload(new)
    finally:
        server.close()
    assert seen["changed"] == P.Status.NOT_READY
    assert P.MsgType.ERROR not in seen["unchanged"]
    assert server.engine.streams[1].layout.num_rounds == 5


def test_a_reload_that_changes_p_changes_the_dem_fingerprint_though_hello_reply_does_not():
    """HELLO_REPLY gives the framing only; DESCRIBE's fingerprint tells the controller that the
    stream it drives now decodes another DEM (docs/wire-protocol.md §4.8)."""
    def cfg(p):
        return ServerConfig(port=0, metrics_port=-1, streams=(StreamConfig(id=0, distance=3, rounds=3, p=p),))

    server = Server(cfg(0.001), log=open("/dev/null", "w"))
    try:
        hello = P.encode(P.Header(P.MsgType.HELLO, stream_id=0))
        describe = P.encode(P.Header(P.MsgType.DESCRIBE, stream_id=0))
        before = server.engine.handle(hello), P.decode_describe(server.engine.handle(describe)[0])
        assert server.reload(cfg(0.002))
        after = server.engine.handle(hello), P.decode_describe(server.engine.handle(describe)[0])
    finally:
        server.close()
    assert before[0] == after[0]
    assert before[1].counts == after[1].counts and before[1].fingerprint != after[1].fingerprint
