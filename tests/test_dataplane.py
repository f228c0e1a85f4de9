"""The compiled data plane in process: ``serve_loop`` on a real loopback socket in a thread,
stream steering across a worker group, per-stage timestamps, the escape, and the
metrics that read them. Each loop runs only while its test sends, then is stopped."""

import socket
import threading

import numba
import numpy as np
import pytest
from prometheus_client import generate_latest

from rtdecoder import dataplane as D
from rtdecoder import protocol as P
from rtdecoder.config import ConfigError, ServerConfig, StreamConfig
from rtdecoder.engine import Engine
from rtdecoder.kernels import histogram as KH
from rtdecoder.kernels import ingest as KI
from rtdecoder.kernels import window as KW
from rtdecoder.kernels import tables as T
from rtdecoder.kernels import wire as W
from rtdecoder.metrics import make_registry
from rtdecoder.ring import PinnedRing
from rtdecoder.server import Server
from rtdecoder.transport import libc as L
from rtdecoder.transport.ring import ring_serve_loop
from rtdecoder.transport.udp import UdpTransport, serve_loop
from rtdecoder.worker import CACHE_LINE, WorkerState, control_words


class Loop:
    """``serve_loop`` for one engine on a fresh socket, in a thread, until ``stop``."""

    def __init__(self, engine, slot_bytes=8192, tx_slots=64, echo=False, backlog=(), busy_batches=4):
        self.engine = engine
        self.transport = UdpTransport("127.0.0.1", 0, busy_poll_us=0)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.settimeout(10)
        self.client.connect(self.transport.address)
        for datagram in backlog:  # queued before the loop starts: its first recvmmsg takes them together
            self.client.send(datagram)
        self.ring = PinnedRing(8, slot_bytes)
        self.rx = L.MessageBatch(8, slot_bytes, buffers=self.ring.array)
        self.state = WorkerState(engine, tx_slots=tx_slots)
        self.ctl = self.state.ctl
        self.ctl[T.CTL_BUSY_BATCHES] = busy_batches
        self.handled = None
        s = self.state
        args = (self.transport.sock.fileno(), self.rx.hdr, self.rx.name, self.ring.array, 4, echo, engine.tables,
                s.arrays, s.workspace, s.tx_arrays)
        self.thread = threading.Thread(target=lambda: setattr(self, "handled", serve_loop(*args)))
        self.thread.start()

    def ask(self, datagram: bytes, replies: int = 1) -> list[bytes]:
        self.client.send(datagram)
        return [self.client.recv(65536) for _ in range(replies)]

    def stop(self) -> int:
        self.ctl[T.CTL_STOP] = 1
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        self.client.close()
        self.transport.close()
        return self.handled


@pytest.fixture
def uf_engine():  # a fresh engine per test: shot ids restart at 1
    return Engine([StreamConfig(id=0, distance=3, rounds=6, p=0.01, decoder="union_find", window=4, commit=2)])


def shot_datagram(engine, sid, shot_id, events, first=0, nr=None):
    lay = engine.streams[sid].layout
    packed = P.pack_rounds(events[None, :], lay.round_offsets, lay.round_bytes)[0]
    nr = lay.num_rounds - first if nr is None else nr
    return P.encode(P.Header(P.MsgType.SYNDROME, stream_id=sid, shot_id=shot_id, first_round=first, num_rounds=nr),
                    packed[first:first + nr].tobytes())


def test_compiled_loop_answers_like_the_in_process_path_and_stops_on_its_stop_word(uf_engine):
    rt = uf_engine.streams[0]
    dets = rt.circuit.compile_detector_sampler(seed=3).sample(40)
    reference = Engine([rt.cfg])
    loop = Loop(uf_engine)
    try:
        nwin = rt.plan.num_windows
        for s, ev in enumerate(dets):
            got = loop.ask(shot_datagram(uf_engine, 0, s + 1, ev), replies=nwin)
            want = reference.handle(shot_datagram(reference, 0, s + 1, ev))
            assert len(got) == len(want) == nwin
            for g, w in zip(got, want):  # identical but for the server's time stamps
                assert g[:P.OFF_CORR_RX] == w[:P.OFF_CORR_RX] and g[P.OFF_CORR_FLIPS:] == w[P.OFF_CORR_FLIPS:]
        bad = loop.ask(b"short")[0]
        assert P.decode_error(bad)[1] == P.Status.MALFORMED
    finally:
        handled = loop.stop()
    assert handled == len(dets) + 1
    c = loop.state.counters
    assert c[T.CNT_SHOTS] == len(dets) and c[P.Status.MALFORMED] == 1


def test_stage_timestamps_are_ordered_and_counted_per_window(uf_engine):
    loop = Loop(uf_engine)
    try:
        n = uf_engine.streams[0].layout.num_detectors
        for s in range(5):
            loop.ask(shot_datagram(uf_engine, 0, s + 1, np.zeros(n, np.uint8)), replies=uf_engine.streams[0].plan.num_windows)
    finally:
        loop.stop()
    st = loop.state
    windows = 5 * uf_engine.streams[0].plan.num_windows
    assert st.tmeta[T.M_NEXT] == windows == st.tmeta[T.M_PENDING]
    t = st.trace[:windows]
    assert np.all(t[:, T.TR_RECEIVED] <= t[:, T.TR_CHECKED]) and np.all(t[:, T.TR_CHECKED] <= t[:, T.TR_DECODED])
    assert np.all(t[:, T.TR_DECODED] <= t[:, T.TR_SENT]) and np.all(t[:, T.TR_RECEIVED] > 0)
    counts = st.hist[:, KH.NUM_BUCKETS]
    assert counts[T.HIST_CHECK] == 5  # once per datagram
    assert counts[T.HIST_STAGE_DECODE] == counts[T.HIST_SEND] == counts[T.HIST_SERVER] == windows
    assert counts[T.HIST_DECODE + uf_engine.streams[0].spec.wire_id] == windows and counts[T.HIST_ESCAPE] == 0
    text = generate_latest(make_registry(uf_engine, [st])).decode()
    assert f'rtdecoder_stage_seconds_count{{stage="send"}} {float(windows)}' in text
    assert 'rtdecoder_stage_recent_seconds{quantile="0.99",stage="decode"}' in text
    assert "rtdecoder_receive_batches_total 5.0" in text  # one recvmmsg per datagram: each waited for its replies


def test_a_full_transmit_batch_is_sent_before_the_datagram_is_done(uf_engine):
    """One datagram completing more windows than the transmit batch holds: all go, in order."""
    eng = Engine([StreamConfig(id=0, distance=3, rounds=20, p=0.01, decoder="union_find", window=2, commit=1)])
    loop = Loop(eng, tx_slots=3)
    try:
        nwin = eng.streams[0].plan.num_windows
        assert nwin > 3
        got = loop.ask(shot_datagram(eng, 0, 1, np.zeros(eng.streams[0].layout.num_detectors, np.uint8)), replies=nwin)
    finally:
        loop.stop()
    firsts = [P.decode_header(g).first_round for g in got]
    assert firsts == sorted(firsts) and len(set(firsts)) == nwin
    assert P.decode_correction(got[-1], 1).final


def test_a_backlog_is_answered_with_one_send_per_batch_but_a_shots_end_leaves_at_once(uf_engine):
    """Three datagrams taken by one recvmmsg: shot 1's two halves, then shot 2's first half.
    Shot 1's replies leave together as soon as its FINAL correction is decoded, before shot 2's
    datagram is handled; shot 2's leave when the batch is done."""
    rt = uf_engine.streams[0]
    n, nr = rt.layout.num_detectors, rt.layout.num_rounds
    half = int(rt.plan.end[0])  # the first window's last round: the first half completes it
    zero = np.zeros(n, np.uint8)
    backlog = [shot_datagram(uf_engine, 0, 1, zero, 0, half), shot_datagram(uf_engine, 0, 1, zero, half, nr - half),
               shot_datagram(uf_engine, 0, 2, zero, 0, half)]
    nwin = rt.plan.num_windows
    loop = Loop(uf_engine, backlog=backlog)
    try:
        got = [loop.client.recv(65536) for _ in range(nwin + 1)]
    finally:
        loop.stop()
    assert [P.decode_header(g).shot_id for g in got] == [1] * nwin + [2]
    assert P.decode_correction(got[nwin - 1], 1).final
    st = loop.state
    assert st.counters[T.CNT_BATCHES] == 1
    t = st.trace[:nwin + 1]
    assert len(set(t[:nwin, T.TR_SENT])) == 1  # shot 1: one sendmmsg, right after its final window
    assert t[nwin, T.TR_SENT] > t[0, T.TR_SENT]  # shot 2's reply: a second one, at the batch's end
    assert t[nwin, T.TR_DECODED] > t[0, T.TR_SENT]


def test_a_datagram_longer_than_its_ring_slot_is_answered_too_large(uf_engine):
    loop = Loop(uf_engine, slot_bytes=64)
    try:
        big = P.encode(P.Header(P.MsgType.PING), bytes(100))
        reply = loop.ask(big)[0]
    finally:
        loop.stop()
    assert P.decode_error(reply)[1] == P.Status.TOO_LARGE


def test_a_shot_after_a_backlog_is_not_shed_wherever_the_ring_position_stands(uf_engine):
    """Overload is a socket that holds a whole batch, read after read; once it is empty, a new
    shot is served. The loop reads 4 at a time into 8 slots: a backlog of 7 PINGs leaves the
    ring at slot 7, where a read of the 1 slot left would come back "full" if it asked for less
    than a batch, and with a threshold of one full batch the next shot would be answered BUSY."""
    ping = P.encode(P.Header(P.MsgType.PING, stream_id=0))
    loop = Loop(uf_engine, backlog=[ping] * 7, busy_batches=1)
    try:
        for _ in range(7):
            assert P.decode_header(loop.client.recv(65536)).msg_type == P.MsgType.PONG
        n = uf_engine.streams[0].layout.num_detectors
        first = loop.ask(shot_datagram(uf_engine, 0, 1, np.zeros(n, np.uint8)))[0]
        assert P.decode_header(first).msg_type == P.MsgType.CORRECTION, P.decode_error(first)[1].name
        rest = [loop.client.recv(65536) for _ in range(uf_engine.streams[0].plan.num_windows - 1)]
    finally:
        loop.stop()
    assert all(P.decode_header(g).msg_type == P.MsgType.CORRECTION for g in rest)
    assert loop.state.counters[P.Status.BUSY] == 0
    assert loop.state.counters[T.CNT_OVERLOADED] >= 1  # the backlog's first read did count as overload


def test_echo_mode_sends_every_datagram_back_unchanged(uf_engine):
    loop = Loop(uf_engine, echo=True)
    try:
        for payload in (b"x", bytes(range(200)), b"RTDQ" + bytes(60), bytes(3000)):  # longer than a reply buffer
            assert loop.ask(payload) == [payload]
    finally:
        loop.stop()
    assert loop.state.counters[T.CNT_PACKETS] == 0  # nothing was checked or decoded


def test_a_paced_shot_against_the_echo_ends_with_the_echo_of_its_last_datagram(uf_engine):
    """The streaming benchmark's transport floor: ``ShotDriver`` against ``serve --echo``."""
    from rtdecoder import emulator as E

    lay = uf_engine.streams[0].layout
    loop = Loop(uf_engine, echo=True)
    ctl = E.Controller.connect("udp", *loop.transport.address, 0)
    try:
        drv = E.ShotDriver(ctl, lay, 2, 1.0, timeout_s=5.0)
        packed = P.pack_rounds(np.ones((1, lay.num_detectors), np.uint8), lay.round_offsets, lay.round_bytes)[0]
        res = drv.run(7, packed, np.zeros(lay.num_observables, np.uint8)).copy()
    finally:
        ctl.close()
        loop.stop()
    assert res[E.R_FINAL] == 1 and res[E.R_CORRECTIONS] == 0
    assert res[E.R_FINAL_RECEIVED] > res[E.R_LAST_SENT] > 0
    assert loop.handled == -(-lay.num_rounds // 2)

    # only the echo of the datagram stamped last_ts counts, and none before the last is sent
    rx = np.zeros(256, np.uint8)
    hdr = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=7, first_round=0, num_rounds=1,
                            controller_ts_ns=1234))
    rx[:len(hdr)] = np.frombuffer(hdr, np.uint8)
    scratch = (np.zeros(4, np.int64), np.zeros(4, np.int64), np.zeros(P.NUM_STATUS, np.int64))
    for shot, last_ts, final in ((7, 0, 0), (7, 999, 0), (8, 1234, 0), (7, 1234, 1)):
        res = np.zeros(E.NUM_R, np.int64)
        E._on_reply(rx, len(hdr), shot, 1, 5678, res, np.zeros(1, np.uint8), *scratch, last_ts,
                    np.zeros(E.NUM_RP, np.int64))
        assert (res[E.R_FINAL], res[E.R_FINAL_RECEIVED]) == (final, 5678 * final)


def test_matching_windows_leave_compiled_code_through_the_counted_escape():
    eng = Engine([StreamConfig(id=0, distance=3, rounds=6, p=0.01, decoder="matching", window=4, commit=2)])
    loop = Loop(eng)
    try:
        n = eng.streams[0].layout.num_detectors
        ev = np.zeros(n, np.uint8)
        ev[[1, 2]] = 1
        got = loop.ask(shot_datagram(eng, 0, 1, ev), replies=eng.streams[0].plan.num_windows)
    finally:
        loop.stop()
    assert all(P.decode_header(g).msg_type == P.MsgType.CORRECTION for g in got)
    assert loop.state.hist[T.HIST_ESCAPE, KH.NUM_BUCKETS] == eng.streams[0].plan.num_windows


def test_streams_are_steered_to_the_socket_of_the_worker_that_owns_them():
    t = UdpTransport("127.0.0.1", 0, workers=3, busy_poll_us=0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for sid in range(9):
                c.sendto(P.encode(P.Header(P.MsgType.PING, stream_id=sid)), t.address)
            c.sendto(b"tiny", t.address)  # too short for a stream id: worker 0
        got = {i: [] for i in range(3)}
        for i, s in enumerate(t.socks):
            s.settimeout(5)
            want = 3 + (i == 0)
            for _ in range(want):
                d = s.recv(100)
                got[i].append(P.decode_header(d).stream_id if len(d) >= P.HEADER_LEN else -1)
    finally:
        t.close()
    assert got == {0: [0, 3, 6, -1], 1: [1, 4, 7], 2: [2, 5, 8]}


def test_server_refuses_cpus_it_may_not_use_and_names_the_allowed_ones():
    import os

    bad = max(os.sched_getaffinity(0)) + 1000
    with pytest.raises(ConfigError, match="not available"):
        Server(ServerConfig(port=0, metrics_port=-1, cpus=(bad,), streams=(StreamConfig(distance=3, rounds=3),)))
    with pytest.raises(ConfigError, match="twice"):
        ServerConfig(cpus=(0, 0), streams=(StreamConfig(distance=3, rounds=3),))


def test_control_words_sit_on_a_cache_line_of_their_own():
    for _ in range(20):
        ctl = control_words()
        assert ctl.ctypes.data % CACHE_LINE == 0 and ctl.nbytes == CACHE_LINE
        assert ctl[T.CTL_STOP] == 0 and ctl[T.CTL_DRAIN] == 0 and ctl[T.CTL_WORKERS] == 1


def test_cpu_lists_parse_like_taskset():
    from rtdecoder.cli import _cpus

    assert _cpus("2,3") == (2, 3) and _cpus("2-5") == (2, 3, 4, 5) and _cpus("0,4-6") == (0, 4, 5, 6)


def test_the_compiled_data_path_takes_no_reference_counts(uf_engine):
    """Every function a datagram passes through is compiled with numba's runtime off, and the
    machine code of the datagram handler calls no reference-counting (or allocating) function of
    the runtime."""
    from rtdecoder.kernels import union_find as uf

    path = [serve_loop, ring_serve_loop, D.process_datagram, D.flush, D.queue_reply, D._decode_gpu,
            D.take_error_token, W.encode_header, KI.ingest, KW.next_window, KW.commit_window, W.write_error, KH.observe, uf.decode]
    for fn in path:
        assert fn.targetoptions.get("_nrt") is False, fn.__name__
    uf_engine.handle(shot_datagram(uf_engine, 0, 1, np.zeros(uf_engine.streams[0].layout.num_detectors, np.uint8)))
    sig = D.process_datagram.signatures[0]
    # numba cannot show the code of a function it loaded from its cache: compile a fresh copy
    opts = {k: v for k, v in D.process_datagram.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(**opts)(D.process_datagram.py_func)
    fresh.compile(sig)
    ir = fresh.inspect_llvm(sig)
    assert "define" in ir and "ingest" in ir  # the handler's own code, calling the checks
    calls = [line for line in ir.splitlines() if "call" in line and "NRT_" in line]
    assert not calls, calls[:3]


def test_backlog_counts_the_rounds_received_and_not_committed():
    """``rtdecoder_stream_backlog_rounds``: window 4, commit 2 over 10 round blocks, one round per
    datagram: the backlog grows to the window, drops by the commit region at each window, and is 0
    once the shot is done."""
    from rtdecoder.metrics import stream_backlog

    cfg = StreamConfig(id=2, distance=3, rounds=9, p=0.01, decoder="union_find", window=4, commit=2)
    e = Engine([cfg])
    lay = e.streams[2].layout
    dets = e.streams[2].circuit.compile_detector_sampler(seed=1).sample(1)
    packed = P.pack_rounds(dets, lay.round_offsets, lay.round_bytes)[0]
    seen = []
    for r in range(lay.num_rounds):
        e.handle(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=2, shot_id=1, first_round=r, num_rounds=1),
                          packed[r].tobytes()))
        seen.append(stream_backlog(e.st, e.win, 2))
    assert seen == [1, 2, 3, 2, 3, 2, 3, 2, 3, 0]
    text = generate_latest(make_registry(e, [])).decode()
    assert 'rtdecoder_stream_backlog_rounds{stream="2"} 0.0' in text


def test_stream_table_columns_are_configuration_then_state():
    """Every ``C_*`` column comes before ``S_HAS_SHOT`` and every ``S_*`` from it on, each index
    once: the code that clears or copies a stream's state takes ``st[:, S_HAS_SHOT:]``."""
    cols = {k: v for k, v in vars(T).items() if k[:2] in ("C_", "S_") and isinstance(v, int)}
    assert sorted(cols.values()) == list(range(T.NUM_COLS))
    assert all(v < T.S_HAS_SHOT for k, v in cols.items() if k.startswith("C_"))
    assert all(v >= T.S_HAS_SHOT for k, v in cols.items() if k.startswith("S_"))
