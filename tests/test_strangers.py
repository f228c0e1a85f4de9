"""Sources: per-stream allow-lists (default loopback), no reply to strangers, and a per-source
budget of ERROR replies (docs/wire-protocol.md §6.3)."""

import socket

import pytest

from rtdecoder import protocol as P
from rtdecoder.cli import ServiceProcess, _stream_argv
from rtdecoder.config import ConfigError, ServerConfig, StreamConfig
from rtdecoder.engine import Engine
from rtdecoder.kernels import tables as T
from rtdecoder.worker import WorkerState

A, B = 1, 2


@pytest.fixture(scope="module")
def eng():
    return Engine([StreamConfig(id=A, distance=3, rounds=3, allow=("10.0.0.0/24", "fd00::/64")),
                   StreamConfig(id=B, distance=3, rounds=3)])


def hello(sid):
    return P.encode(P.Header(P.MsgType.HELLO, stream_id=sid))


def types_of(replies):
    return [P.MsgType(P.decode_header(r).msg_type).name for r in replies]


def test_each_stream_answers_only_its_sources(eng):
    before = eng.counters[T.REJECT_NOT_ALLOWED]
    assert types_of(eng.handle(hello(A), source="10.0.0.7")) == ["HELLO_REPLY"]
    assert types_of(eng.handle(hello(A), source="fd00::1234")) == ["HELLO_REPLY"]
    assert types_of(eng.handle(hello(B), source="127.0.0.1")) == ["HELLO_REPLY"]
    assert types_of(eng.handle(hello(B), source="::1")) == ["HELLO_REPLY"]
    assert eng.handle(hello(A), source="127.0.0.1") == []        # loopback is not in A's list
    assert eng.handle(hello(B), source="10.0.0.7") == []         # nor is A's subnet in B's
    assert eng.handle(hello(A), source="10.0.1.7") == []
    assert eng.counters[T.REJECT_NOT_ALLOWED] == before + 3


def test_a_stranger_gets_no_reply_at_all(eng):
    """A source in no list gets nothing back, whatever it sends: not even PONG or an error."""
    before = eng.counters.copy()
    for d in (P.encode(P.Header(P.MsgType.PING)), b"junk", hello(A), hello(99),
              P.encode(P.Header(P.MsgType.RESET, stream_id=B)),
              P.encode(P.Header(P.MsgType.SYNDROME, stream_id=B, shot_id=1, num_rounds=1), bytes(1))):
        assert eng.handle(d, source="192.168.7.7") == []
    after = eng.counters
    assert after[T.REJECT_NOT_ALLOWED] == before[T.REJECT_NOT_ALLOWED] + 6
    assert (after[:P.NUM_STATUS] == before[:P.NUM_STATUS]).all()  # nothing answered, nothing else counted


def test_a_stranger_cannot_reset_or_poison_a_stream(eng):
    lay = eng.streams[B].layout
    eng.handle(P.encode(P.Header(P.MsgType.RESET, stream_id=B)))
    first = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=B, shot_id=1, first_round=0, num_rounds=1),
                     bytes(lay.round_bytes))
    eng.handle(first)
    row = eng.st[B].copy()
    eng.handle(P.encode(P.Header(P.MsgType.RESET, stream_id=B)), source="10.0.0.7")
    eng.handle(first, source="10.0.0.7")  # a duplicate that would poison the shot
    assert (eng.st[B] == row).all()


def test_error_replies_are_rate_limited_per_source():
    e = Engine([StreamConfig(id=0, distance=3, rounds=3)])
    e.local = WorkerState(e, tx_slots=8, error_replies_per_s=10, error_burst=5)
    bad = b"\x00" * 40
    t0 = 10**12
    got = sum(len(e.handle(bad, rx_ns=t0, source="127.0.0.1", port=5000)) for _ in range(50))
    assert got == 5
    assert e.local.counters[T.CNT_ERRORS_SUPPRESSED] == 45
    assert e.local.counters[P.Status.BAD_MAGIC] == 50  # every datagram is still counted
    assert len(e.handle(bad, rx_ns=t0, source="127.0.0.1", port=5001)) == 1  # another source: its own budget
    assert len(e.handle(bad, rx_ns=t0 + 50_000_000, source="127.0.0.1", port=5000)) == 0  # 0.05 s: half a token
    assert len(e.handle(bad, rx_ns=t0 + 150_000_000, source="127.0.0.1", port=5000)) == 1  # refilled at 10/s
    ok = P.encode(P.Header(P.MsgType.PING))
    assert types_of(e.handle(ok, rx_ns=t0, source="127.0.0.1", port=5000)) == ["PONG"]  # only errors are limited


def test_allow_lists_are_validated():
    with pytest.raises(ConfigError, match="not an address or subnet"):
        StreamConfig(allow=("10.0.0.0/33",))
    with pytest.raises(ConfigError, match="non-empty list"):
        StreamConfig(allow=())
    assert StreamConfig().allow == ("127.0.0.0/8", "::1/128")
    assert ServerConfig(streams=(StreamConfig(),)).metrics_host == "127.0.0.1"  # metrics stay local by default


def test_service_ignores_a_stranger_on_the_wire():
    """Over real sockets: the service allows 127.0.0.1 only; a client bound to 127.0.0.2 gets no
    reply and is counted; 127.0.0.1 is answered."""
    cfg = StreamConfig(id=3, distance=3, rounds=3, allow=("127.0.0.1/32",))
    with ServiceProcess(_stream_argv(cfg)) as svc:
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.2", 0))
        stranger.settimeout(0.5)
        stranger.sendto(hello(3), (svc.host, svc.port))
        stranger.sendto(P.encode(P.Header(P.MsgType.PING)), (svc.host, svc.port))
        with pytest.raises(socket.timeout):
            stranger.recv(2048)
        friend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        friend.bind(("127.0.0.1", 0))
        friend.settimeout(5)
        friend.sendto(hello(3), (svc.host, svc.port))
        assert P.decode_header(friend.recv(2048)).msg_type == P.MsgType.HELLO_REPLY
        metrics = svc.scrape()
    assert 'rtdecoder_packets_rejected_total{reason="not_allowed"} 2.0' in metrics


def test_streams_with_the_same_list_share_its_rows():
    """The any-stream check reads each distinct subnet once, however many streams list it."""
    e = Engine([StreamConfig(id=i, distance=3, rounds=3) for i in range(4)]
               + [StreamConfig(id=9, distance=3, rounds=3, allow=("10.0.0.0/24",))])
    assert e.allow.shape == (3, 4)
    assert {tuple(e.st[i, T.C_ALLOW_BASE:T.C_ALLOW_N + 1]) for i in range(4)} == {(0, 2)}
    assert tuple(e.st[9, T.C_ALLOW_BASE:T.C_ALLOW_N + 1]) == (2, 1)
    assert types_of(e.handle(hello(9), source="10.0.0.3")) == ["HELLO_REPLY"]
    assert e.handle(hello(9)) == [] and types_of(e.handle(hello(3))) == ["HELLO_REPLY"]
