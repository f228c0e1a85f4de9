"""``deadline_us``: a window its escape decoder would finish past the stream's deadline is decoded
by the compiled union-find instead, and counted (``rtdecoder_deadline_fallbacks_total``)."""

import numpy as np
import pytest
from prometheus_client import generate_latest

from rtdecoder.cli import ServiceProcess, _stream_argv, main
from rtdecoder.config import ConfigError, StreamConfig
from rtdecoder.configfile import load_config
from rtdecoder.engine import Engine
from rtdecoder.kernels import tables as T
from rtdecoder.metrics import make_registry

KW = dict(distance=3, rounds=9, p=0.01, window=4, commit=2)


def test_past_the_deadline_union_find_answers_and_is_counted():
    e = Engine([StreamConfig(id=0, decoder="matching", deadline_us=0.001, **KW),
                StreamConfig(id=1, decoder="union_find", **KW),
                StreamConfig(id=2, decoder="matching", deadline_us=1e6, **KW),
                StreamConfig(id=3, decoder="matching", **KW)])
    assert e.st[0, T.C_DEADLINE] == 1 and e.st[3, T.C_DEADLINE] == 0
    dets = e.streams[0].circuit.compile_detector_sampler(seed=3).sample(200).astype(np.uint8)
    windows = e.streams[0].plan.num_windows * len(dets)
    tight = e.decode_shots(0, dets)  # 1 ns: every window is past it
    assert e.local.counters[T.CNT_FALLBACK + 0] == windows
    assert np.array_equal(tight, e.decode_shots(1, dets))  # union-find's answers, window by window
    loose = e.decode_shots(2, dets)  # 1 s: none is
    assert e.local.counters[T.CNT_FALLBACK + 0] == windows
    assert np.array_equal(loose, e.decode_shots(3, dets))  # matching's
    assert not np.array_equal(tight, loose)  # the two decoders differ on these shots
    text = generate_latest(make_registry(e, [])).decode()
    assert f'rtdecoder_deadline_fallbacks_total{{from="matching",to="union_find"}} {float(windows)}' in text


def test_the_deadline_follows_the_escapes_own_time():
    """Between the two: a deadline a little over the matching decoder's time per window lets most
    windows through and sends the slow ones to union-find."""
    e = Engine([StreamConfig(id=0, decoder="matching", deadline_us=200.0, **KW)])
    dets = e.streams[0].circuit.compile_detector_sampler(seed=4).sample(100).astype(np.uint8)
    e.decode_shots(0, dets)
    est = e.st[0, T.S_ESCAPE_NS]
    assert 0 < est < 200_000  # a running estimate of the escape's time per window, ns
    assert e.local.counters[T.CNT_FALLBACK] < e.streams[0].plan.num_windows * len(dets)


def test_deadline_mistakes(tmp_path):
    with pytest.raises(ConfigError, match="deadline_us is for decoders called through the escape"):
        StreamConfig(decoder="union_find", deadline_us=5)
    with pytest.raises(ConfigError, match="must be in 0..1000000"):
        StreamConfig(decoder="matching", deadline_us=-1)
    p = tmp_path / "s.toml"
    p.write_text("[[streams]]\nid = 4\ndistance = 3\ndecoder = \"matching\"\ndeadline_us = 12.5\n")
    assert load_config(p).streams[0].deadline_us == 12.5


def test_serve_takes_the_flag(tmp_path):
    cfg = StreamConfig(decoder="matching", deadline_us=0.001, **KW)
    with ServiceProcess(_stream_argv(cfg)) as svc:
        rc = main(["emulate", "--port", str(svc.port), "--distance", "3", "--rounds", "9", "--p", "0.01",
                   "--shots", "50", "--no-progress", "--cycle-us", "0"])
        text = svc.scrape()
    assert rc == 0
    line = next(ln for ln in text.splitlines() if ln.startswith("rtdecoder_deadline_fallbacks_total{"))
    assert float(line.split()[-1]) > 0, line


def test_behind_the_socket_every_window_falls_back():
    """When the datagrams came in a full receive batch (``CTL_BEHIND``, written by the UDP loop),
    their receive times understate their wait: a stream with a deadline, however loose, decodes
    with union-find."""
    e = Engine([StreamConfig(id=0, decoder="matching", deadline_us=1e6, **KW),
                StreamConfig(id=1, decoder="union_find", **KW), StreamConfig(id=3, decoder="matching", **KW)])
    dets = e.streams[0].circuit.compile_detector_sampler(seed=6).sample(100).astype(np.uint8)
    e.local.ctl[T.CTL_BEHIND] = 1
    try:
        behind = e.decode_shots(0, dets)
        plain = e.decode_shots(3, dets)  # no deadline: matching regardless
    finally:
        e.local.ctl[T.CTL_BEHIND] = 0
    assert np.array_equal(behind, e.decode_shots(1, dets))
    assert e.local.counters[T.CNT_FALLBACK] == e.streams[0].plan.num_windows * len(dets)
    assert np.array_equal(plain, e.decode_shots(0, dets))  # caught up: matching again
