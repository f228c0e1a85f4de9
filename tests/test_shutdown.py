"""SIGTERM: the service finishes the shots in flight, sends their final corrections, exits 0."""

import signal
import socket
import time

from rtdecoder import protocol as P
from rtdecoder.cli import ServiceProcess, _stream_argv
from rtdecoder.config import StreamConfig


def test_sigterm_finishes_the_shot_in_flight_then_exits_0():
    cfg = StreamConfig(id=0, distance=3, rounds=4, decoder="union_find")
    with ServiceProcess(_stream_argv(cfg), extra=["--drain-s", "20"]) as svc:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(10)
        c.connect((svc.host, svc.port))
        c.send(P.encode(P.Header(P.MsgType.HELLO, stream_id=0)))
        info = P.StreamInfo.unpack(c.recv(4096)[P.HEADER_LEN:])

        def rounds(first, n):
            return P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1, first_round=first, num_rounds=n),
                            bytes(n * info.round_bytes))
        c.send(rounds(0, 2))
        svc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert svc.proc.poll() is None, "the service left before the shot in flight was finished"
        c.send(rounds(2, info.num_rounds - 2))
        finals = []
        while not finals:
            r = c.recv(4096)
            h = P.decode_header(r)
            if h.msg_type == P.MsgType.CORRECTION and h.flags & P.FLAG_FINAL:
                finals.append(r)
        assert svc.proc.wait(timeout=20) == 0
    assert "draining" in svc.stderr() and "still in flight" not in svc.stderr()


def test_sigterm_with_nothing_in_flight_exits_at_once():
    cfg = StreamConfig(id=0, distance=3, rounds=3)
    with ServiceProcess(_stream_argv(cfg), extra=["--drain-s", "30"]) as svc:
        t0 = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(timeout=20) == 0
        assert time.monotonic() - t0 < 10


def test_drain_deadline_bounds_a_stuck_shot():
    cfg = StreamConfig(id=0, distance=3, rounds=4)
    with ServiceProcess(_stream_argv(cfg), extra=["--drain-s", "1"]) as svc:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(10)
        c.connect((svc.host, svc.port))
        c.send(P.encode(P.Header(P.MsgType.HELLO, stream_id=0)))
        rb = P.StreamInfo.unpack(c.recv(4096)[P.HEADER_LEN:]).round_bytes
        c.send(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1, first_round=0, num_rounds=1), bytes(rb)))
        time.sleep(0.2)
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(timeout=20) == 0
    assert "1 shots were still in flight" in svc.stderr()
