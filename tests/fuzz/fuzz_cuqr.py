"""Coverage-guided fuzzing (atheris/libFuzzer) of the CUQR dialect: ``rtdecoder.dataplane.process_cuqr``.

    .venv/bin/python tests/fuzz/fuzz_cuqr.py [libFuzzer flags] [corpus dirs]
    .venv/bin/python tests/fuzz/fuzz_cuqr.py -max_total_time=3600 tests/fuzz/corpus/cuqr   # an hour

As in ``fuzz_ingest.py``, numba's machine code is invisible to atheris, so every request runs
through two engines built alike: one calls ``process_cuqr``'s Python (instrumented; the compiled
helpers it calls, the native data path included, stay compiled), the other the compiled
function the server runs. After each request both must have queued the same replies and hold
the same stream table, enqueued bits and counters; every reply must be a CUQS response of at most
``24 + result_len`` bytes echoing the request's id, with a status of CUDA-Q's enum; a stranger's
request must get no reply. Any difference raises and libFuzzer saves the input as a crash.

An input is a sequence of requests, each behind a 2-byte little-endian prefix: its length in the
low 12 bits, in bit 15 whether it comes from a stranger (10.9.9.9) rather than loopback, in bit
14 whether the worker sheds load, in bits 12-13 which function id it names (``enqueue_syndromes``,
``get_corrections``, ``reset_decoder``, or the bytes' own); the CUQR magic is put in front.
"""

from __future__ import annotations

import struct
import types

import atheris
import numpy as np

from rtdecoder import dataplane as D
from rtdecoder.config import StreamConfig
from rtdecoder.engine import Engine
from rtdecoder.kernels import cuqr as CQ
from rtdecoder.transport.libc import source_words

KW = dict(distance=3, rounds=3, p=0.01, window=2, commit=1)
STREAMS = [StreamConfig(id=0, decoder="union_find", input="measurements", **KW),
           StreamConfig(id=1, decoder="matching", **KW)]
PY, C = Engine(STREAMS), Engine(STREAMS)
_f = D.process_cuqr.py_func
cuqr_py = atheris.instrument_func(types.FunctionType(_f.__code__, _f.__globals__, "process_cuqr_py", _f.__defaults__,
                                                     _f.__closure__))
LOOPBACK, STRANGER = source_words("127.0.0.1"), source_words("10.9.9.9")
FUNCTIONS = (CQ.FN_ENQUEUE_SYNDROMES, CQ.FN_GET_CORRECTIONS, CQ.FN_RESET_DECODER)
HEADER = struct.Struct("<IIIIQ")


def requests(data: bytes):
    i = 0
    while i + 2 <= len(data):
        v = int.from_bytes(data[i:i + 2], "little")
        n = v & 0x0FFF
        body = data[i + 2:i + 2 + n]
        fn = (v >> 12) & 3
        head = struct.pack("<I", CQ.MAGIC_REQUEST)
        if fn < 3:
            head += struct.pack("<I", FUNCTIONS[fn])
            body = body[4:] if len(body) >= 4 else body
        yield head + body, bool(v >> 15), (v >> 14) & 1
        i += 2 + n


def _run(func, e: Engine, d: bytes, src, shed: int) -> list[bytes]:
    buf = np.zeros(e.slot_bytes, np.uint8)
    buf[:min(len(d), e.slot_bytes)] = np.frombuffer(d, np.uint8)[:e.slot_bytes]
    loc = e.local
    func(buf, len(d), 7, 0, 0, src[0], src[1], 1, shed, D.FLUSH_NONE, e.tables, loc.arrays, loc.workspace,
         loc.tx_arrays)
    return loc.replies()


def one(d: bytes, stranger: bool, shed: int) -> None:
    src = STRANGER if stranger else LOOPBACK
    rp = _run(cuqr_py, PY, d, src, shed)
    rc = _run(D.process_cuqr, C, d, src, shed)
    if rp != rc or not np.array_equal(PY.st, C.st) or not np.array_equal(PY.tables.cqbits, C.tables.cqbits) \
            or not np.array_equal(PY.local.counters, C.local.counters):
        raise AssertionError(f"interpreted and compiled process_cuqr differ on {d.hex()}")
    if stranger and rc:
        raise AssertionError(f"a stranger's request was answered: {d.hex()}")
    for r in rc:
        if len(r) < 24:
            raise AssertionError(f"short reply {r.hex()} to {d.hex()}")
        magic, status, result_len, rid, ptp = HEADER.unpack_from(r)
        if magic != CQ.MAGIC_RESPONSE or not 0 <= status <= 6 or len(r) != 24 + result_len \
                or r[12:24] != (d + bytes(24))[12:24]:
            raise AssertionError(f"malformed reply {r.hex()} to {d.hex()}")


def TestOneInput(data: bytes) -> None:
    for d, stranger, shed in requests(data):
        one(d, stranger, shed)


def _frame(msg: bytes, fn: int | None) -> bytes:
    """A request as an input entry: its bytes past the magic (and past the function id when
    ``fn`` picks one), behind the 2-byte prefix."""
    body = msg[4:]
    code = 3 if fn is None else fn
    return (len(body) | (code << 12)).to_bytes(2, "little") + body


def seeds() -> list[bytes]:
    """A whole shot on each stream, and each function's request alone, for a starting corpus."""
    def req(fn, args, rid=1):
        return HEADER.pack(CQ.MAGIC_REQUEST, fn, len(args), rid, 0) + args

    rt = PY.streams[0]
    c = rt.circuit
    meas = c.compile_sampler(seed=1).sample(1)[0].astype(np.uint8)
    bits = np.packbits(meas, bitorder="little").tobytes()
    shot = _frame(req(CQ.FN_RESET_DECODER, struct.pack("<q", 0)), 2)
    shot += _frame(req(CQ.FN_ENQUEUE_SYNDROMES, struct.pack("<qqqq", 0, 0, 0, len(meas)) + bits), 0)
    shot += _frame(req(CQ.FN_GET_CORRECTIONS, struct.pack("<qqB", 0, 1, 1)), 1)
    one_each = [_frame(req(CQ.FN_ENQUEUE_SYNDROMES, struct.pack("<qqqq", 1, 0, 0, 9) + b"\xff\x01"), 0),
                _frame(req(CQ.FN_GET_CORRECTIONS, struct.pack("<qqB", 1, 1, 0)), 1),
                _frame(req(CQ.FN_RESET_DECODER, struct.pack("<q", 1)), 2),
                _frame(req(0x12345678, struct.pack("<q", 0)), None)]
    return [shot] + one_each


if __name__ == "__main__":
    from harness import main

    main(seeds, TestOneInput)
