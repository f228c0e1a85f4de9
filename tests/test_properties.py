"""Property-based tests (hypothesis) of the datagram parser and the stream state machine
(docs/wire-protocol.md §2, §6), through ``Engine.handle``, the server's own code path.

1. Any bytes, and any header with any field values: no exception, every reply is a well-formed
   message of a reply type, the packet is counted, and no other stream's state changes.
2. A model of §6.2 driven by random sequences of in-order, gapped, repeated, stale and new-shot
   datagrams, RESETs and garbage: the service's shot state equals the model's after every step,
   and a final CORRECTION comes exactly when the model says the shot's rounds all arrived, once
   each and in order, with the same prediction as the shot decoded without faults.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rtdecoder import dataplane as D
from rtdecoder import protocol as P
from rtdecoder.config import StreamConfig
from rtdecoder.dem import make_circuit
from rtdecoder.engine import Engine
from rtdecoder.kernels import tables as T

A, B = 2, 5  # two streams; the datagrams target A (or garbage), B must never change
CFG_A = StreamConfig(id=A, distance=3, rounds=4, p=0.01, decoder="union_find", window=4, commit=2)
CFG_B = StreamConfig(id=B, distance=3, rounds=3, p=0.01, decoder="matching")
CFG_P = StreamConfig(id=A, distance=3, rounds=9, p=0.01, decoder="union_find", window=4, commit=2, parallel=2)
"""Stream A as a parallel stream (its windows on the worker and a helper thread)."""
REPLY_TYPES = {P.MsgType.ERROR, P.MsgType.PONG, P.MsgType.HELLO_REPLY, P.MsgType.RESET_ACK, P.MsgType.CORRECTION,
               P.MsgType.DESCRIBE_REPLY}
_ENGINE: list[Engine] = []


def engine() -> Engine:
    if not _ENGINE:
        e = Engine([CFG_A, CFG_B])
        e.local.rl[0, D.RL_RATE], e.local.rl[0, D.RL_BURST] = 10**7, 10**6  # every ERROR is sent
        _ENGINE.append(e)
    return _ENGINE[0]


_PARALLEL: list[Engine] = []


def parallel_engine() -> Engine:
    if not _PARALLEL:
        e = Engine([CFG_P, CFG_B])
        e.local.rl[0, D.RL_RATE], e.local.rl[0, D.RL_BURST] = 10**7, 10**6
        _PARALLEL.append(e)
    return _PARALLEL[0]


def check_replies(replies):
    for r in replies:
        h = P.decode_header(r)
        assert h.magic == P.MAGIC and h.msg_type in REPLY_TYPES and len(r) == P.HEADER_LEN + h.payload_len
        if h.msg_type == P.MsgType.ERROR:
            assert P.decode_error(r)[1] in set(P.Status) - {P.Status.OK}


def handle_and_check(e: Engine, datagram: bytes):
    before_b = e.st[B].copy()
    config = e.st[:, :T.S_HAS_SHOT].copy()
    packets = e.counters[T.CNT_PACKETS]
    replies = e.handle(datagram)
    check_replies(replies)
    assert e.counters[T.CNT_PACKETS] == packets + 1
    assert np.array_equal(e.st[B, T.S_HAS_SHOT:], before_b[T.S_HAS_SHOT:]), "another stream's state changed"
    assert np.array_equal(e.st[:, :T.S_HAS_SHOT], config), "a stream's configuration changed"
    return replies


def retarget(datagram: bytes) -> bytes:
    """Any datagram, with its stream id made A's when it names B."""
    b = bytearray(datagram)
    if len(b) >= 12 and int.from_bytes(b[10:12], "little") == B:
        b[10:12] = A.to_bytes(2, "little")
    return bytes(b)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=300))
def test_any_bytes(data):
    handle_and_check(engine(), retarget(data))


@st.composite
def headers(draw):
    e = engine()
    rb = e.streams[A].layout.round_bytes
    nr = draw(st.integers(0, 8))
    payload = draw(st.one_of(st.binary(min_size=nr * rb, max_size=nr * rb), st.binary(max_size=64)))
    h = P.Header(P.MsgType(draw(st.sampled_from(list(P.MsgType)))) if draw(st.booleans()) else P.MsgType.SYNDROME,
                 stream_id=draw(st.sampled_from([A, A, A, 0, 1, 65535])),
                 shot_id=draw(st.integers(0, 5)), first_round=draw(st.integers(0, 9)), num_rounds=nr)
    raw = bytearray(P.encode(h, payload))
    if draw(st.integers(0, 9)) == 0:  # now and then, one field corrupted
        at = draw(st.integers(0, P.HEADER_LEN - 1))
        raw[at] = draw(st.integers(0, 255))
    if draw(st.integers(0, 9)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers())
def test_any_header(datagram):
    handle_and_check(engine(), retarget(datagram))


class StreamModel(RuleBasedStateMachine):
    """§6.2 for stream A, against ``Engine.handle``."""

    cfg = CFG_A

    def make_engine(self) -> Engine:
        return engine()

    @initialize()
    def start(self):
        self.e = self.make_engine()
        self.e.handle(P.encode(P.Header(P.MsgType.RESET, stream_id=A)))
        lay = self.e.streams[A].layout
        self.nrounds, self.rb = lay.num_rounds, lay.round_bytes
        dets = make_circuit(self.cfg).compile_detector_sampler(seed=4).sample(8)
        self.packed = P.pack_rounds(dets, lay.round_offsets, lay.round_bytes)
        self.expected = Engine([self.cfg]).decode_shots(A, dets)  # each sample decoded without faults
        self.has_shot, self.shot, self.next, self.poisoned, self.done = False, 0, 0, False, False

    def send(self, shot, first, n):
        sample = shot % len(self.packed)
        body = self.packed[sample, first:first + n].tobytes()
        replies = handle_and_check(self.e, P.encode(P.Header(P.MsgType.SYNDROME, stream_id=A, shot_id=shot,
                                                              first_round=first, num_rounds=n), body))
        # the model
        if self.has_shot and shot < self.shot:
            want = "STALE_SHOT"
        else:
            if not self.has_shot or shot > self.shot:
                self.has_shot, self.shot, self.next, self.poisoned, self.done = True, shot, 0, False, False
            if self.poisoned:
                want = "SHOT_POISONED"
            elif self.done or first < self.next:
                want, self.poisoned = "DUPLICATE", True
            elif first > self.next:
                want, self.poisoned = "ROUND_GAP", True
            else:
                self.next = first + n
                self.done = self.next == self.nrounds
                want = "FINAL" if self.done else "OK"
        finals = [r for r in replies if P.decode_header(r).msg_type == P.MsgType.CORRECTION
                  and P.decode_header(r).flags & P.FLAG_FINAL]
        errors = [P.decode_error(r)[1].name for r in replies if P.decode_header(r).msg_type == P.MsgType.ERROR]
        if want == "FINAL":
            assert len(finals) == 1, replies
            c = P.decode_correction(finals[0], 1)
            assert np.array_equal(c.cumulative, self.expected[sample])
        else:
            assert not finals, f"a final correction for a shot the model calls {want}"
        if want not in ("OK", "FINAL"):
            assert want in errors, (want, errors)

    @rule(n=st.integers(1, 3))
    def in_order(self, n):
        if self.has_shot and not self.done:
            self.send(self.shot, self.next, min(n, self.nrounds - self.next))

    @rule(first=st.integers(0, 4), n=st.integers(1, 2))
    def any_round(self, first, n):
        if self.has_shot:
            self.send(self.shot, min(first, self.nrounds - 1), min(n, self.nrounds - min(first, self.nrounds - 1)))

    @rule(step=st.integers(1, 3))
    def new_shot(self, step):
        self.send(self.shot + step, 0, 1)

    @rule()
    def stale_shot(self):
        if self.shot > 0:
            self.send(self.shot - 1, 0, 1)

    @rule()
    def reset(self):
        self.e.handle(P.encode(P.Header(P.MsgType.RESET, stream_id=A)))
        self.has_shot, self.poisoned, self.done = False, False, False

    @rule(data=st.binary(max_size=80))
    def garbage(self, data):
        handle_and_check(self.e, retarget(data))
        # garbage may be a well-formed datagram for stream A: re-read the shot state from the service
        row = self.e.st[A]
        self.has_shot, self.shot = bool(row[T.S_HAS_SHOT]), int(row[T.S_SHOT])
        self.next, self.poisoned, self.done = int(row[T.S_NEXT_ROUND]), bool(row[T.S_POISONED]), bool(row[T.S_DONE])

    @invariant()
    def same_state(self):
        if not hasattr(self, "e"):
            return
        row = self.e.st[A]
        assert bool(row[T.S_HAS_SHOT]) == self.has_shot
        if self.has_shot:
            assert (int(row[T.S_SHOT]), int(row[T.S_NEXT_ROUND]), bool(row[T.S_POISONED]), bool(row[T.S_DONE])) == \
                (self.shot, self.next, self.poisoned, self.done)


StreamModel.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
test_stream_model = StreamModel.TestCase


class ParallelStreamModel(StreamModel):
    """The same model for stream A decoded in parallel windows, its helper thread running: the
    windows' results come back through the rings while shots are abandoned, poisoned and reset."""

    cfg = CFG_P

    def make_engine(self) -> Engine:
        e = parallel_engine()
        e.local.start_helpers()
        return e

    def teardown(self):
        if hasattr(self, "e"):
            self.e.local.stop_helpers()


ParallelStreamModel.TestCase.settings = settings(max_examples=80, stateful_step_count=30, deadline=None,
                                                 suppress_health_check=[HealthCheck.too_slow])
test_parallel_stream_model = ParallelStreamModel.TestCase


def test_model_sees_a_whole_shot():
    """The model's own check: a clean shot sent in order gets exactly one FINAL."""
    m = StreamModel()
    m.start()
    m.new_shot(1)
    while not m.done:
        m.in_order(2)
    assert m.done and not m.poisoned
