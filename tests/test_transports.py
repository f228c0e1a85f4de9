"""One transport test suite, run against every transport this host offers (docs/wire-protocol.md
§1, §11): UDP always; the §11 ring protocol in memory (``MemoryLink``: the compiled ring loop
polling ready words that a thread writes the way a NIC would) always; AF_XDP on a veth pair
between two network namespaces made by the test (root, AF_XDP and BPF needed, else skipped with
the reason); RoCE through pyverbs only where an RDMA device with an active port exists, else
skipped with the reason."""

import contextlib
import os
import socket
import sys
import threading
import time

import numpy as np
import pytest

from rtdecoder.kernels import tables as T
from rtdecoder import protocol as P
from rtdecoder.config import LOOPBACK, StreamConfig
from rtdecoder.engine import Engine
from rtdecoder.ring import PinnedRing
from rtdecoder.transport import libc as L
from rtdecoder.transport import ring as RG
from rtdecoder.transport import roce as R
from rtdecoder.transport.libc import source_words
from rtdecoder.transport.udp import UdpTransport, serve_loop
from rtdecoder.worker import WorkerState

sys.path.insert(0, os.path.dirname(__file__))
import netns_fixture as N  # noqa: E402

PEERS = LOOPBACK + ("10.9.0.2/32", "fd09::2/128")
"""Where the channels' clients send from: loopback, or the controller's end of the veth pair
(``netns_fixture.veth_pair``)."""
CFG = StreamConfig(id=0, distance=3, rounds=6, p=0.01, decoder="union_find", window=4, commit=2, allow=PEERS)
FENCED = StreamConfig(id=5, distance=3, rounds=3, p=0.01, decoder="union_find", allow=("192.0.2.0/24",))
"""A stream whose controllers are elsewhere (RFC 5737's documentation range): no client here may
speak for it."""
DEADLINE = StreamConfig(id=12, distance=3, rounds=3, p=0.01, decoder="matching", window=0, deadline_us=1e6,
                        allow=PEERS)
"""An escape decoder with a deadline no window misses by time: only a backlog (BEHIND) makes its
windows fall back to union-find."""


class LoopThread:
    """A channel's service loop (``self.loop``, stopped by ``self.ctl[CTL_STOP]``) in a thread that
    the tests can pause, so that what arrives meanwhile waits as behind a busy worker."""

    def pause(self) -> None:
        """Stop the loop (what arrives meanwhile waits, as behind a busy worker)."""
        self.ctl[T.CTL_STOP] = 1
        self.thread.join(30)

    def resume(self) -> None:
        self.ctl[T.CTL_STOP] = 0
        self.thread = threading.Thread(target=self.loop)
        self.thread.start()


class UdpChannel(LoopThread):
    """``serve_loop`` on a loopback socket; the client is a plain UDP socket."""

    def __init__(self, engine):
        self.transport = UdpTransport("127.0.0.1", 0, busy_poll_us=0)
        self.ring = PinnedRing(8, 8192)
        self.rx = L.MessageBatch(8, 8192, buffers=self.ring.array)
        self.state = s = WorkerState(engine)
        self.ctl = s.ctl
        args = (self.transport.sock.fileno(), self.rx.hdr, self.rx.name, self.ring.array, 4, False, engine.tables,
                s.arrays, s.workspace, s.tx_arrays)
        self.ctl[T.CTL_STOP] = 1
        serve_loop(*args)  # compile (or load) before the clock starts
        self.loop = lambda: serve_loop(*args)
        self.batch = 4
        self.resume()
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.settimeout(10)
        self.client.connect(self.transport.address)

    def send(self, datagram: bytes) -> None:
        self.client.send(datagram)

    def recv(self) -> bytes:
        return self.client.recv(65536)

    def close(self) -> None:
        self.pause()
        self.client.close()
        self.transport.close()


def poll_reply(poll, where: str, timeout_s: float = 10.0) -> bytes:
    """Call ``poll()`` until it returns a message (not None); TimeoutError after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        m = poll()
        if m is not None:
            return m
    raise TimeoutError(f"no reply {where}")


class RingChannel(LoopThread):
    """``ring_serve_loop`` on a region the client writes into by the §11.3 rules (body, then the
    ready word), replies through ``MemoryLink`` into the client's region."""

    SLOTS, SLOT_BYTES, REPLY_SLOTS = 16, 8192, 64

    def __init__(self, engine):
        self.ring = np.zeros(self.SLOTS * self.SLOT_BYTES, np.uint8)
        self.peer = np.zeros(RG.HEADER_BYTES + self.REPLY_SLOTS * 256, np.uint8)
        self.state = s = WorkerState(engine, tx_slots=engine.max_windows + 4)
        s.poster = RG.MemoryLink(self.peer, self.REPLY_SLOTS, 256, s.tx.buf, s.tx.iov)
        self.start_loop(engine)
        self.writer = RG.RingWriter(self.SLOTS, self.SLOT_BYTES)
        self.reader = RG.RingReader(self.peer, self.REPLY_SLOTS, 256, RG.HEADER_BYTES)
        self.words = self.ring.view(np.int64)

    def start_loop(self, engine) -> None:
        """``ring_serve_loop`` over ``self.ring`` in a thread, compiled first."""
        s = self.state
        self.ctl = s.ctl
        self.rstate = np.zeros(4, np.int64)
        self.rstate[RG.RS_NEXT] = 1
        hi, lo = source_words("127.0.0.1")
        args = (self.ring, self.ring.view(np.int64), self.SLOTS, self.SLOT_BYTES, hi, lo, self.rstate,
                engine.tables, s.arrays, s.workspace, s.tx_arrays)
        self.ctl[T.CTL_STOP] = 1
        RG.ring_serve_loop(*args)  # compile (or load) before the clock starts
        self.loop = lambda: RG.ring_serve_loop(*args)
        self.batch = int(RG.ring_batch(self.SLOTS))
        self.resume()

    def send(self, datagram: bytes) -> None:
        n = len(datagram)
        if n > self.SLOT_BYTES - RG.READY_BYTES:  # a peer may announce any length: the service must refuse it
            self.writer.seq += 1
            off = ((self.writer.seq - 1) % self.SLOTS) * self.SLOT_BYTES
            self.ring[off:off + self.SLOT_BYTES - 8] = np.frombuffer(datagram[:self.SLOT_BYTES - 8], np.uint8)
            self.words[(off + self.SLOT_BYTES - 8) // 8] = RG.ready_word(n, self.writer.seq)
            return
        body, ready, word = self.writer.next(n)
        self.ring[body:body + n] = np.frombuffer(datagram, np.uint8)
        self.words[ready // 8] = word

    def recv(self) -> bytes:
        return poll_reply(self.reader.poll, "in the ring")

    def credit(self) -> int:
        return int(self.peer.view(np.int64)[RG.CREDIT_OFFSET // 8])

    def close(self) -> None:
        self.pause()
        self.state.poster = None


class RoceChannel(RingChannel):
    """The ring loop over a real RC queue pair: the service's ring registered with the NIC, a
    ``RoceController`` on the same port (RoCE loopback), rendezvous over a socket pair."""

    def __init__(self, engine):
        self.pinned = PinnedRing(self.SLOTS, self.SLOT_BYTES)
        self.ring = self.pinned.array.reshape(-1)
        self.state = s = WorkerState(engine, tx_slots=engine.max_windows + 4)
        link = R.RoceLink(self.ring, self.SLOTS, self.SLOT_BYTES, local=(s.tx.buf,))
        a, b = socket.socketpair()
        t = threading.Thread(target=lambda: setattr(t, "peer", R.rendezvous_accept(a, link.info())))
        t.start()
        self.client = R.RoceController("", 0, reply_slots=self.REPLY_SLOTS, sock=b)
        t.join()
        link.connect(t.peer)
        self.link = link
        s.poster = R.RoceReplyPoster(link, s.tx.buf, s.tx.iov)
        self.start_loop(engine)

    def send(self, datagram: bytes) -> None:
        while not self.client.send(datagram):
            pass

    def recv(self) -> bytes:
        return poll_reply(self.client.poll, "over RoCE")

    def close(self) -> None:
        super().close()
        self.client.close()
        self.link.close()


class XdpChannel(LoopThread):
    """``xdp_serve_loop`` (the AF_XDP transport's own ``XdpEndpoint``) on a socket bound to queue 0
    of ``va``, one end of a veth pair, in namespace ``a``, the redirect program attached in generic
    mode (veth has no zero-copy); the client a plain UDP socket in namespace ``b`` sending to
    10.9.0.1 over the pair."""

    PORT = 7711

    def __init__(self, engine):
        from rtdecoder.transport import xdp as XL
        from rtdecoder.transport import xdp_prog as XP
        from rtdecoder.transport import xsk as K

        self.stack = contextlib.ExitStack()
        try:
            a, b, ifindex = self.stack.enter_context(N.veth_pair())

            def setup():
                prog = XP.RedirectProgram(self.PORT, queues=1)
                self.stack.callback(prog.close)
                prog.attach(ifindex, "skb")
                sock = K.XskSocket(ifindex, 0, frames=256, ring=128, mode="copy", xskmap_fd=prog.map_fd)
                self.stack.callback(sock.close)
                return sock

            try:
                sock = N.in_ns(a, setup)
            except OSError as e:
                pytest.skip(f"AF_XDP is not available here: {e}")
            self.state = s = WorkerState(engine)
            self.ctl = s.ctl
            ep = XL.XdpEndpoint(sock, self.PORT, 16)
            self.ctl[T.CTL_STOP] = 1
            ep.loop(s, engine.tables)  # compile (or load) before the clock starts
            self.loop = lambda: ep.loop(s, engine.tables)
            self.batch = 16
            self.resume()
            self.stack.callback(lambda: self.pause())
            self.client = N.in_ns(b, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            self.stack.callback(self.client.close)
            self.client.settimeout(10)
            self.client.connect(("10.9.0.1", self.PORT))
        except BaseException:
            self.stack.close()
            raise

    def send(self, datagram: bytes) -> None:
        self.client.send(datagram)

    def recv(self) -> bytes:
        return self.client.recv(65536)

    def close(self) -> None:
        self.stack.close()


@pytest.fixture(params=["udp", "ring", "xdp", "roce"])
def channel(request):
    if request.param == "roce":
        st = R.probe()
        if not st.usable:
            pytest.skip(f"RoCE needs an RDMA device: {st.reason}")
    engine = Engine([CFG, FENCED, DEADLINE])
    ch = {"udp": UdpChannel, "ring": RingChannel, "xdp": XdpChannel, "roce": RoceChannel}[request.param](engine)
    ch.engine = engine
    yield ch
    ch.close()


def shot(engine, shot_id, events):
    lay = engine.streams[0].layout
    packed = P.pack_rounds(events[None, :], lay.round_offsets, lay.round_bytes)[0]
    return P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=shot_id, num_rounds=lay.num_rounds),
                    packed.tobytes())


def test_hello_and_ping(channel):
    channel.send(P.encode(P.Header(P.MsgType.HELLO, stream_id=0)))
    info = P.StreamInfo.unpack(channel.recv()[P.HEADER_LEN:])
    assert info.num_rounds == channel.engine.streams[0].layout.num_rounds
    channel.send(P.encode(P.Header(P.MsgType.PING, shot_id=77)))
    h = P.decode_header(channel.recv())
    assert h.msg_type == P.MsgType.PONG and h.shot_id == 77


def test_corrections_equal_the_in_process_path(channel):
    reference = Engine([CFG])
    dets = reference.streams[0].circuit.compile_detector_sampler(seed=2).sample(30)
    nwin = reference.streams[0].plan.num_windows
    for s, ev in enumerate(dets):
        channel.send(shot(channel.engine, s + 1, ev))
        got = [channel.recv() for _ in range(nwin)]
        want = reference.handle(shot(reference, s + 1, ev))
        strip = lambda r: r[:P.OFF_CONTROLLER_TS] + r[P.HEADER_LEN + 16:]  # noqa: E731 - times differ
        assert [strip(g) for g in got] == [strip(w) for w in want]


def test_bad_and_oversized_messages_get_their_status(channel):
    channel.send(b"\x00" * 40)
    assert P.decode_error(channel.recv())[1] == P.Status.BAD_MAGIC
    if isinstance(channel, RoceChannel):
        return  # an RDMA controller cannot write past a slot: RingWriter refuses it before the wire
    big = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1, num_rounds=1), bytes(9000))
    channel.send(big)
    assert P.decode_error(channel.recv())[1] == P.Status.TOO_LARGE
    if isinstance(channel, XdpChannel):  # it crossed the veth in fragments: the first one was answered
        from rtdecoder.kernels import frames as F
        assert channel.state.counters[T.CNT_FRAMES + F.TOO_LARGE] == 1


def marker(channel, shot_id: int) -> None:
    """Send a PING and take replies up to its PONG: every reply before it is returned."""
    channel.send(P.encode(P.Header(P.MsgType.PING, shot_id=shot_id)))
    before = []
    while True:
        r = channel.recv()
        h = P.decode_header(r)
        if h.msg_type == P.MsgType.PONG and h.shot_id == shot_id:
            return before
        before.append(r)


def test_a_ping_naming_a_stream_that_does_not_allow_the_sender_gets_no_reply(channel):
    """§6.3: no reply of any kind, PING included, and it is counted not_allowed."""
    channel.send(P.encode(P.Header(P.MsgType.PING, stream_id=FENCED.id, shot_id=1)))
    assert marker(channel, 2) == []
    channel.send(P.encode(P.Header(P.MsgType.PING, stream_id=4321, shot_id=3)))  # names no stream: answered
    assert P.decode_header(channel.recv()).shot_id == 3
    assert channel.state.counters[T.REJECT_NOT_ALLOWED] == 1


def test_reset_ack_echoes_the_reset_header(channel):
    """§4.7: every header field but msg_type and payload_len."""
    channel.send(P.encode(P.Header(P.MsgType.RESET, stream_id=0, shot_id=77, first_round=3, num_rounds=2, flags=4,
                                   controller_ts_ns=99)))
    h = P.decode_header(channel.recv())
    assert (h.msg_type, h.stream_id, h.shot_id, h.first_round, h.num_rounds, h.flags, h.controller_ts_ns,
            h.payload_len) == (P.MsgType.RESET_ACK, 0, 77, 3, 2, 4, 99, 0)


def test_control_messages_with_a_payload_are_bad_payload(channel):
    """§3, §7: only SYNDROME carries a payload; a long PING is not answered PONG."""
    for t in (P.MsgType.PING, P.MsgType.HELLO, P.MsgType.RESET, P.MsgType.DESCRIBE):
        channel.send(P.encode(P.Header(t, stream_id=0, shot_id=5), bytes(1000)))
        _, status, _, _ = P.decode_error(channel.recv())
        assert status == P.Status.BAD_PAYLOAD, t.name


def test_an_abandoned_shot_is_reported_only_when_nothing_else_answers(channel):
    """§6.2 rule 2: the new shot's datagram gets one kind of answer."""
    lay = channel.engine.streams[0].layout
    plan = channel.engine.streams[0].plan
    zero = np.zeros(lay.num_detectors, np.uint8)
    packed = P.pack_rounds(zero[None, :], lay.round_offsets, lay.round_bytes)[0]

    def part(shot_id, first, nr):
        return P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=shot_id, first_round=first, num_rounds=nr),
                        packed[first:first + nr].tobytes())

    one = int(plan.end[0]) - 1  # rounds that complete no window
    nwin = plan.num_windows
    # shot 1 left half done; shot 2 whole: its corrections are the answer, no SHOT_ABANDONED
    channel.send(part(1, 0, one))
    channel.send(shot(channel.engine, 2, zero))
    got = marker(channel, 100)
    assert [P.decode_header(g).msg_type for g in got] == [P.MsgType.CORRECTION] * nwin
    assert all(P.decode_header(g).shot_id == 2 for g in got)
    # shot 3 half done; shot 4 begins with a gap: ROUND_GAP about shot 4 only
    channel.send(part(3, 0, one))
    channel.send(part(4, 1, 1))
    (got,) = marker(channel, 101)
    h, status, _, _ = P.decode_error(got)
    assert (status, h.shot_id) == (P.Status.ROUND_GAP, 4)
    # shot 5 half done; shot 6 begins and completes no window: SHOT_ABANDONED about shot 5
    channel.send(part(5, 0, one))
    channel.send(part(6, 0, one))
    (got,) = marker(channel, 102)
    h, status, expected, _ = P.decode_error(got)
    assert (status, h.shot_id, expected) == (P.Status.SHOT_ABANDONED, 5, one)
    assert channel.state.counters[T.CNT_ABANDONED] == 3


def test_describe_gives_the_rounds_detectors_and_the_dem_fingerprint(channel):
    """§4.8, in pages of at most MAX_DESCRIBE_ROUNDS rounds; past the last round: BAD_ROUNDS."""
    rt = channel.engine.streams[0]
    counts = []
    while len(counts) < rt.layout.num_rounds:
        channel.send(P.encode(P.Header(P.MsgType.DESCRIBE, stream_id=0, first_round=len(counts), num_rounds=2)))
        d = P.decode_describe(channel.recv())
        assert d.first_round == len(counts) and 1 <= len(d.counts) <= 2
        assert d.fingerprint == P.dem_fingerprint(rt.dem)
        counts += d.counts
    assert counts == np.diff(rt.layout.round_offsets).tolist()
    channel.send(P.encode(P.Header(P.MsgType.DESCRIBE, stream_id=0, first_round=rt.layout.num_rounds)))
    assert P.decode_error(channel.recv())[1] == P.Status.BAD_ROUNDS


def test_ring_credit_reports_consumption():
    ch = RingChannel(Engine([CFG, FENCED]))
    try:
        for i in range(RingChannel.SLOTS):  # more than slots/4 messages: the credit word moves
            ch.send(P.encode(P.Header(P.MsgType.PING, shot_id=i)))
            ch.recv()
        assert ch.credit() == RingChannel.SLOTS
    finally:
        ch.close()


def test_rendezvous_messages_round_trip_and_are_checked():
    mine = R.RdvInfo(qp_num=0x123456, psn=0xABCDE, gid=bytes(range(16)), addr=0x7F0000001000, rkey=0xDEADBEEF,
                     slot_bytes=8192, slots=1024, mtu=5)
    assert R.RdvInfo.unpack(mine.pack()) == mine
    bad = bytearray(mine.pack())
    bad[0] ^= 1
    with pytest.raises(ValueError, match="magic"):
        R.RdvInfo.unpack(bytes(bad))
    with pytest.raises(ValueError, match="power of two"):
        R.RdvInfo.unpack(R.RdvInfo(1, 1, bytes(16), 0, 0, 8192, 1000, 5).pack())
    a, b = socket.socketpair()
    theirs = R.RdvInfo(7, 8, bytes(16), 4096, 9, 256, 64, 3)
    t = threading.Thread(target=lambda: setattr(t, "got", R.rendezvous_accept(a, theirs)))
    t.start()
    assert R.rendezvous_connect(b, mine) == theirs
    t.join()
    assert t.got == mine


def test_roce_probe_says_what_is_missing():
    st = R.probe()
    if st.usable:
        pytest.skip(f"this host has RoCE: {st.reason}")
    assert any(k in st.reason for k in ("no pyverbs", "no libibverbs", "no RDMA device", "no active RoCE port"))
    assert "install" in st.reason or "load" in st.reason or "bring" in st.reason


def test_transport_choice_names_what_is_missing():
    import subprocess
    import sys

    from rtdecoder import transport
    from rtdecoder.config import ConfigError

    st = R.probe()
    if st.usable:
        pytest.skip(f"this host has RoCE: {st.reason}")
    spec, why = transport.choose("auto")
    assert spec.name == "udp" and why.startswith("transport auto chose udp:") and f"not roce: {st.reason}" in why
    with pytest.raises(ConfigError, match="--transport roce: no"):
        transport.choose("roce")
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "serve", "--transport", "roce", "--distance", "3",
                        "--port", "0", "--metrics-port", "-1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "configuration error: --transport roce: no" in r.stderr
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "emulate", "--transport", "roce", "--distance", "3",
                        "--port", "9"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--transport roce: no" in r.stderr


def test_pyverbs_objects_build_where_pyverbs_exists():
    """Where pyverbs is installed (here: Debian's python3-pyverbs, for the system Python) the
    attributes and work requests ``RoceLink`` hands to the NIC are built by the real pyverbs,
    and the probe gets as far as the device list. No device is needed."""
    import os
    import subprocess

    system = "/usr/bin/python3.11"
    if not (os.path.exists(system) and os.path.isdir("/usr/lib/python3/dist-packages/pyverbs")):
        pytest.skip("pyverbs is not installed (Debian: apt-get install python3-pyverbs)")
    import site
    import sys

    dirs = [p for p in sys.path if p.endswith("site-packages")] + site.getsitepackages()
    code = f"""
import site
for p in {dirs!r}:
    site.addsitedir(p)
from rtdecoder.transport import roce
peer = roce.RdvInfo(0x1234, 7, bytes.fromhex('fe800000000000000000000000000001'), 4096, 99, 256, 64, 3)
a = roce.rts_attr(1, 5, 0, 11, peer, 0)
assert a.path_mtu == 3 and a.dest_qp_num == 0x1234 and a.rq_psn == 7 and a.sq_psn == 11
w = roce.write_wr(0x1000, 8, 5, 99, 0x2000, True, True)
st = roce.probe()
print(st.pyverbs, '|', st.reason)
"""
    r = subprocess.run([system, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("importable |")


def test_cuqr_requests_are_answered_on_every_transport(channel):
    """CUDA-Q's RPC reaches the same stream on every transport (docs/cuqr-compat.md): a shot's
    detection events enqueued in two requests, then get_corrections; the flips equal the
    native path's."""
    from rtdecoder import cuqr_client as C

    reference = Engine([CFG])
    dets = reference.streams[0].circuit.compile_detector_sampler(seed=5).sample(10).astype(np.uint8)
    want = reference.decode_shots(0, dets)
    channel.send(C.reset_decoder(0, 1))
    assert C.parse_response(channel.recv()).status == 0
    rid = 10
    for s, ev in enumerate(dets):
        half = len(ev) // 2
        for part in (ev[:half], ev[half:]):
            rid += 1
            channel.send(C.enqueue_syndromes(0, part, rid))
            r = C.parse_response(channel.recv())
            assert (r.status, r.request_id) == (0, rid)
        rid += 1
        channel.send(C.get_corrections(0, 1, rid, reset=True, ptp=12345))
        r = C.parse_response(channel.recv())
        assert (r.status, r.request_id, r.ptp_timestamp) == (0, rid, 12345)
        assert np.array_equal(r.bits(1), want[s]), s
    channel.send(C.get_corrections(7, 1, 99))
    assert C.parse_response(channel.recv()).status == 1  # INVALID_DECODER


def test_a_parallel_stream_on_every_transport(channel):
    """A stream with parallel windows (its windows on the worker and a helper thread, whose
    results the transport's loop polls and replies with): the same CORRECTIONs, in the same order,
    as the in-process path."""
    par = StreamConfig(id=0, distance=3, rounds=12, p=0.01, decoder="union_find", window=4, commit=2, parallel=2,
                       allow=PEERS)
    engine = Engine([par])
    ch = type(channel)(engine)
    reference = Engine([par])
    try:
        ch.state.start_helpers()
        dets = reference.streams[0].circuit.compile_detector_sampler(seed=3).sample(20)
        nwin = reference.streams[0].plan.num_windows
        strip = lambda r: r[:P.OFF_CONTROLLER_TS] + r[P.HEADER_LEN + 16:]  # noqa: E731 - times differ
        for s, ev in enumerate(dets):
            ch.send(shot(engine, s + 1, ev))
            got = [ch.recv() for _ in range(nwin)]
            want = reference.handle(shot(reference, s + 1, ev))
            assert [strip(g) for g in got] == [strip(w) for w in want]
        assert ch.state.counters[T.CNT_PAR_HELPER] > 0
    finally:
        ch.close()
        ch.state.stop_helpers()



def test_a_backlog_is_shed_with_busy_on_every_transport(channel):
    """The shared loop turn (``dataplane.turn_read``): datagrams that wait while the worker is
    busy (here: stopped) make full reads; after ``CTL_BUSY_BATCHES`` of them new shots are BUSY."""
    lay = channel.engine.streams[0].layout
    channel.pause()
    channel.ctl[T.CTL_BUSY_BATCHES] = 1
    k = 2 * channel.batch
    for i in range(k):  # each the first round of a new shot: it would begin a shot
        channel.send(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1000 + i, num_rounds=1),
                              bytes(lay.round_bytes)))
    before = int(channel.state.counters[T.CNT_OVERLOADED])
    channel.resume()
    channel.send(P.encode(P.Header(P.MsgType.PING, shot_id=4242)))  # answered after the backlog
    busy = 0
    while True:
        r = channel.recv()
        h = P.decode_header(r)
        if h.msg_type == P.MsgType.PONG and h.shot_id == 4242:
            break
        if h.msg_type == P.MsgType.ERROR and P.decode_error(r)[1] == P.Status.BUSY:
            busy += 1
    assert int(channel.state.counters[T.CNT_OVERLOADED]) > before
    assert busy >= channel.batch


def test_a_backlog_takes_the_deadline_fallback_on_every_transport(channel):
    """The same turn sets BEHIND on a full read: an escape decoder's windows decoded then go to
    union-find (``CNT_FALLBACK``), whichever transport brought them."""
    rt = channel.engine.streams[12]
    lay = rt.layout
    dets = rt.circuit.compile_detector_sampler(seed=3).sample(2 * channel.batch).astype(np.uint8)
    packed = P.pack_rounds(dets, lay.round_offsets, lay.round_bytes)
    channel.pause()
    channel.ctl[T.CTL_BUSY_BATCHES] = 1 << 30  # never shed here
    for i, p in enumerate(packed):
        channel.send(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=12, shot_id=2000 + i, num_rounds=lay.num_rounds),
                              p.tobytes()))
    channel.resume()
    for _ in range(len(packed)):
        assert P.decode_header(channel.recv()).msg_type == P.MsgType.CORRECTION
    wire = int(rt.spec.wire_id)
    assert int(channel.state.counters[T.CNT_FALLBACK + wire]) > 0
