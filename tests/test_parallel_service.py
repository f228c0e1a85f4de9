"""Parallel windows in the service (``parallel = k``): a stream's windows dealt to its worker and
``k - 1`` helper threads over single-producer/single-consumer rings, corrections in round order,
answers equal to the offline parallel-window decoder's."""

import numpy as np
import pytest

from rtdecoder import protocol as P
from rtdecoder.cli import ServiceProcess, _stream_argv, main
from rtdecoder.config import ConfigError, StreamConfig
from rtdecoder.cuqr_client import get_corrections, parse_response
from rtdecoder.engine import Engine
from rtdecoder.kernels import tables as T
from rtdecoder.parallel import ParallelWindowDecoder

KW = dict(distance=3, rounds=20, p=0.01, decoder="union_find", window=4, commit=2)


@pytest.fixture(scope="module")
def engine():
    return Engine([StreamConfig(id=0, parallel=2, **KW), StreamConfig(id=1, parallel=3, **KW),
                   StreamConfig(id=2, **KW)])


def _shots(e, n, seed):
    circuit = e.streams[0].circuit
    dets, obs = circuit.compile_detector_sampler(seed=seed).sample(n, separate_observables=True)
    return dets.astype(np.uint8), obs


@pytest.mark.parametrize("rounds_per_packet", [1, 7, 21])
def test_the_answers_are_the_offline_parallel_decoders_with_helpers_running(engine, rounds_per_packet):
    dets, _ = _shots(engine, 300, 1)
    ref = ParallelWindowDecoder(engine.streams[0].dem, "union_find", 4, 2, 1).decode_shots(dets)
    before = engine.local.counters[T.CNT_PAR_HELPER]
    for sid in (0, 1):
        assert np.array_equal(engine.decode_shots(sid, dets, rounds_per_packet=rounds_per_packet), ref)
    assert engine.local.counters[T.CNT_PAR_HELPER] > before  # the helpers did their share
    assert not engine.local.helpers  # and were stopped after the call


def test_corrections_come_in_round_order_and_end_final(engine):
    """Without helpers (the in-process ``handle``) and per-round datagrams: the CORRECTIONs' commit
    regions tile the shot in order, the last one FINAL, the cumulative flips the XOR of the others."""
    dets, _ = _shots(engine, 20, 2)
    lay = engine.streams[0].layout
    packed = P.pack_rounds(dets, lay.round_offsets, lay.round_bytes)
    for s in range(len(dets)):
        regions, cum = [], 0
        for r in range(lay.num_rounds):
            pkt = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1000 + s, first_round=r, num_rounds=1),
                           packed[s, r].tobytes())
            for reply in engine.handle(pkt):
                c = P.decode_correction(reply, lay.num_observables)
                regions.append((c.header.first_round, c.header.num_rounds, c.final))
                cum ^= int(c.flips[0])
                assert int(c.cumulative[0]) == cum
        starts = [a for a, _, _ in regions]
        assert starts[0] == 0 and all(a + n == b for (a, n, _), b in zip(regions, starts[1:]))
        assert regions[-1][0] + regions[-1][1] == lay.num_rounds and regions[-1][2]
        assert not any(f for _, _, f in regions[:-1])


def test_a_shot_abandoned_midway_leaves_nothing_behind(engine):
    """A new shot begins while the old one has windows with a helper: the old results are dropped,
    the carries of its A windows cleared, and the next shots decode as offline."""
    dets, _ = _shots(engine, 60, 3)
    lay = engine.streams[0].layout
    packed = P.pack_rounds(dets, lay.round_offsets, lay.round_bytes)
    ref = ParallelWindowDecoder(engine.streams[0].dem, "union_find", 4, 2, 1).decode_shots(dets)
    engine.local.start_helpers()
    try:
        for s in range(0, len(dets), 3):  # every third shot: only its first 13 rounds, then the next shot
            half = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=5000 + s, first_round=0, num_rounds=13),
                            packed[s, :13].tobytes())
            engine.handle(half)
            for t in (s + 1, s + 2):
                if t >= len(dets):
                    break
                whole = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=5000 + t, first_round=0,
                                          num_rounds=lay.num_rounds), packed[t].tobytes())
                final = [P.decode_correction(r, 1) for r in engine.handle(whole)
                         if P.decode_header(r).msg_type == P.MsgType.CORRECTION]
                assert final and final[-1].final and int(final[-1].cumulative[0]) == int(ref[t, 0])
    finally:
        engine.local.stop_helpers()
    assert engine.st[0, T.S_PIN] == 0 and engine.st[0, T.S_PIN_ODD] == 0


def test_cuqr_does_not_name_a_parallel_stream(engine):
    r = parse_response(engine.handle(get_corrections(0, 1, 7))[0])
    assert r.status_name == "INVALID_DECODER"
    assert parse_response(engine.handle(get_corrections(2, 1, 8))[0]).status_name != "INVALID_DECODER"


def test_mistakes_are_named():
    with pytest.raises(ConfigError, match="longer than the commit"):
        StreamConfig(parallel=2, decoder="union_find", window=0)
    with pytest.raises(ConfigError, match="longer than the commit"):
        StreamConfig(parallel=2, decoder="union_find", window=4, commit=4)
    with pytest.raises(ConfigError, match="compiled decoders"):
        StreamConfig(parallel=2, decoder="matching")
    with pytest.raises(ConfigError, match="must be in 1..64"):
        StreamConfig(parallel=0, decoder="union_find")


def test_served_over_udp_with_a_helper():
    cfg = StreamConfig(id=0, parallel=2, distance=3, rounds=30, p=0.005, decoder="union_find", window=6, commit=3)
    with ServiceProcess(_stream_argv(cfg)) as svc:
        rc = main(["emulate", "--port", str(svc.port), "--distance", "3", "--rounds", "30", "--p", "0.005",
                   "--shots", "300", "--no-progress", "--cycle-us", "0", "--rounds-per-packet", "4"])
        text = svc.scrape()
    assert rc == 0
    helper = next(float(ln.split()[-1]) for ln in text.splitlines()
                  if ln.startswith('rtdecoder_parallel_windows_total{by="helper"}'))
    assert helper > 0


def test_a_reload_keeps_a_parallel_streams_shot_in_progress(tmp_path):
    """SIGHUP while a parallel stream's shot is half sent: the helpers stop with their jobs
    settled, the new engine adopts the stream's results and carries, and the shot ends as the
    offline decoder says."""
    import signal
    import socket
    import time

    kw = dict(distance=3, rounds=24, p=0.01, decoder="union_find", window=4, commit=2)

    def toml(extra):
        body = "[server]\nport = 0\nmetrics_port = 0\n\n[[streams]]\nid = 0\nparallel = 2\n"
        body += "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in kw.items())
        return body + extra

    path = tmp_path / "rt.toml"
    path.write_text(toml(""))
    e = Engine([StreamConfig(id=0, parallel=2, **kw)])
    dets = e.streams[0].circuit.compile_detector_sampler(seed=9).sample(1).astype(np.uint8)
    expected = ParallelWindowDecoder(e.streams[0].dem, "union_find", 4, 2, 1).decode_shots(dets)[0]
    lay = e.streams[0].layout
    blocks = P.pack_rounds(dets, lay.round_offsets, lay.round_bytes)[0]
    with ServiceProcess(["--config", str(path)]) as svc:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(10)
        c.connect((svc.host, svc.port))
        half = 13
        c.send(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1, first_round=0, num_rounds=half),
                        blocks[:half].tobytes()))
        time.sleep(0.3)
        path.write_text(toml("\n[[streams]]\nid = 1\ndistance = 3\nrounds = 3\ndecoder = \"union_find\"\n"))
        svc.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 120
        while "reloaded in" not in svc.stderr() and time.monotonic() < end:
            time.sleep(0.1)
        assert "reloaded in" in svc.stderr(), svc.stderr()[-2000:]
        c.send(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1, first_round=half,
                                 num_rounds=lay.num_rounds - half), blocks[half:].tobytes()))
        final = None
        while final is None:
            data = c.recv(4096)
            h = P.decode_header(data)
            assert h.msg_type == P.MsgType.CORRECTION, P.decode_error(data)
            corr = P.decode_correction(data, 1)
            if corr.final:
                final = corr
        assert np.array_equal(final.cumulative, expected)
