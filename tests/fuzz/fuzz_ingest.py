"""Coverage-guided fuzzing (atheris/libFuzzer) of the datagram parser and stream state machine.

    .venv/bin/python tests/fuzz/fuzz_ingest.py [libFuzzer flags] [corpus dirs]
    .venv/bin/python tests/fuzz/fuzz_ingest.py -max_total_time=600 /tmp/corpus   # ten minutes

numba compiles ``rtdecoder.kernels.ingest.ingest`` to machine code that atheris cannot see, so
the harness runs two copies of it on every input:

- the interpreted one (``ingest``'s Python, instrumented by ``atheris.instrument_func``; the small
  helpers it calls stay compiled), which gives libFuzzer its coverage of every branch of §2/§6;
- the compiled one, the server's, on a copy of the same tables.

Each input is split into datagrams (a 2-byte little-endian prefix before each: the length in its
low 14 bits, in its top bit whether the datagram comes from a stranger, 10.9.9.9, instead of
loopback, and in the next whether the worker is shedding load) sent in turn to a two-stream engine, so sequences of packets explore the state
machine, not single packets only. A stranger's datagram must change nothing and get no reply.
After each datagram the two copies must agree exactly (reply bytes, tables, counters, detection
events), the compiled server path (``Engine.handle``) must not raise, every reply must parse, and
the stream the datagram did not name must be unchanged. Any difference raises, and libFuzzer
saves the input as a crash.
"""

from __future__ import annotations

import types

import atheris
import numpy as np

from rtdecoder import protocol as P
from rtdecoder.config import StreamConfig
from rtdecoder.engine import Engine
from rtdecoder.kernels import ingest as KI
from rtdecoder.kernels import tables as T
from rtdecoder.transport.libc import source_words

A, B = 1, 4
ENGINE = Engine([StreamConfig(id=A, distance=3, rounds=3, p=0.01, decoder="union_find", window=2, commit=1),
                 StreamConfig(id=B, distance=3, rounds=2, p=0.01, decoder="matching")])
_py = KI.ingest.py_func
ingest_py = atheris.instrument_func(types.FunctionType(_py.__code__, _py.__globals__, "ingest_py", _py.__defaults__,
                                                       _py.__closure__))
TABLES = [ENGINE.st.copy(), ENGINE.offs, ENGINE.syn.copy(), np.zeros(T.NUM_COUNTERS, np.int64)]
COMPILED = [ENGINE.st.copy(), ENGINE.offs, ENGINE.syn.copy(), np.zeros(T.NUM_COUNTERS, np.int64)]
SLOT = np.zeros(ENGINE.slot_bytes, np.uint8)
TX_PY, TX_C = np.zeros(256, np.uint8), np.zeros(256, np.uint8)
OUT_PY, OUT_C = np.zeros(3, np.int64), np.zeros(3, np.int64)
LOOPBACK, STRANGER = source_words("127.0.0.1"), source_words("10.9.9.9")
REPLIES = {P.MsgType.ERROR, P.MsgType.PONG, P.MsgType.HELLO_REPLY, P.MsgType.RESET_ACK, P.MsgType.CORRECTION,
           P.MsgType.DESCRIBE_REPLY}


def datagrams(data: bytes):
    i = 0
    while i + 2 <= len(data):
        v = int.from_bytes(data[i:i + 2], "little")
        n = (v & 0x3FFF) % 1200
        yield data[i + 2:i + 2 + n], bool(v >> 15), (v >> 14) & 1
        i += 2 + n


def one(d: bytes, stranger: bool, shed: int) -> None:
    src = STRANGER if stranger else LOOPBACK
    SLOT[:] = 0
    SLOT[:min(len(d), len(SLOT))] = np.frombuffer(d, np.uint8)[:len(SLOT)]
    st_py, offs, syn_py, cnt_py = TABLES
    st_c, _, syn_c, cnt_c = COMPILED
    m = (ENGINE.moffs, ENGINE.meas, ENGINE.dptr, ENGINE.drec, ENGINE.dflip, ENGINE.dkept, ENGINE.dkptr,
         ENGINE.dshift)  # detection-event streams only
    ingest_py(SLOT, len(d), 123, st_py, offs, syn_py, ENGINE.keep, *m, cnt_py, TX_PY, OUT_PY, ENGINE.allow, *src, shed)
    KI.ingest(SLOT, len(d), 123, st_c, offs, syn_c, ENGINE.keep, *m, cnt_c, TX_C, OUT_C, ENGINE.allow, *src, shed)
    if not (np.array_equal(OUT_PY, OUT_C) and np.array_equal(st_py, st_c) and np.array_equal(syn_py, syn_c)
            and np.array_equal(cnt_py, cnt_c) and np.array_equal(TX_PY[:OUT_PY[0]], TX_C[:OUT_C[0]])):
        raise AssertionError(f"interpreted and compiled ingest differ on {d.hex()}")
    named = int.from_bytes(d[10:12], "little") if len(d) >= 12 else -1
    other = B if named != B else A
    before = ENGINE.st[other].copy()
    named_before = ENGINE.st[A if other == B else B].copy()
    replies = ENGINE.handle(d, source="10.9.9.9" if stranger else "127.0.0.1")
    if stranger and (replies or not np.array_equal(ENGINE.st[A if other == B else B], named_before)):
        raise AssertionError(f"a stranger's datagram was answered or changed a stream: {d.hex()}")
    for r in replies:
        h = P.decode_header(r)
        if h.magic != P.MAGIC or h.msg_type not in REPLIES or len(r) != P.HEADER_LEN + h.payload_len:
            raise AssertionError(f"malformed reply {r.hex()} to {d.hex()}")
    if not np.array_equal(ENGINE.st[other], before):
        raise AssertionError(f"stream {other} changed on a datagram for stream {named}: {d.hex()}")


def TestOneInput(data: bytes) -> None:
    for d, stranger, shed in datagrams(data):
        one(d, stranger, shed)


def seeds() -> list[bytes]:
    """Valid datagrams of every type, each framed as one input, for a starting corpus."""
    lay = ENGINE.streams[A].layout
    out = [P.encode(P.Header(P.MsgType.PING)), P.encode(P.Header(P.MsgType.HELLO, stream_id=A)),
           P.encode(P.Header(P.MsgType.RESET, stream_id=A))]
    shot = b""
    for r in range(lay.num_rounds):
        pkt = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=A, shot_id=1, first_round=r, num_rounds=1),
                       bytes(lay.round_bytes))
        shot += len(pkt).to_bytes(2, "little") + pkt
    return [len(p).to_bytes(2, "little") + p for p in out] + [shot]


if __name__ == "__main__":
    from harness import main

    main(seeds, TestOneInput)
