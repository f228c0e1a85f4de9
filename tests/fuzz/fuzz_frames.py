"""Coverage-guided fuzzing (atheris/libFuzzer) of the AF_XDP frame kernels
(``rtdecoder.kernels.frames``): ``parse_udp`` on any frame, and ``write_reply`` on the frames
it accepts.

    .venv/bin/python tests/fuzz/fuzz_frames.py -max_total_time=900 tests/fuzz/corpus/frames

Each input is one Ethernet frame. ``parse_udp``'s Python (instrumented) and its compiled code must
return the same status and located fields; for a frame it accepts (``OK``, or ``TOO_LARGE`` for a
first fragment) the reply ``write_reply`` builds around a few payload bytes must itself parse
``OK`` as a datagram to the request's source port, with the payload where
``reply_payload_offset`` says. Any difference raises, and libFuzzer saves the input as a crash.
"""

from __future__ import annotations

import os
import sys
import types

import atheris
import numpy as np

from rtdecoder.kernels import frames as F

PORT = 7700
_f = F.parse_udp.py_func
parse_py = atheris.instrument_func(types.FunctionType(_f.__code__, _f.__globals__, "parse_udp_py", _f.__defaults__,
                                                      _f.__closure__))
FRAME = np.zeros(4096, np.uint8)
OUT_PY, OUT_C = np.zeros(F.NUM_F, np.int64), np.zeros(F.NUM_F, np.int64)
REPLY = np.zeros(4096, np.uint8)
CHECK = np.zeros(F.NUM_F, np.int64)


def TestOneInput(data: bytes) -> None:
    n = min(len(data), len(FRAME))
    FRAME[:] = 0
    FRAME[:n] = np.frombuffer(data[:n], np.uint8)
    OUT_PY[:] = 0
    OUT_C[:] = 0
    s_py = parse_py(FRAME, n, PORT, OUT_PY)
    s_c = F.parse_udp(FRAME, n, PORT, OUT_C)
    if s_py != s_c or not np.array_equal(OUT_PY, OUT_C):
        raise AssertionError(f"interpreted and compiled parse_udp differ ({s_py} / {s_c}) on {data.hex()}")
    if s_c not in (F.OK, F.TOO_LARGE):
        return
    l3, family = int(OUT_C[F.F_L3]), int(OUT_C[F.F_FAMILY])
    at = int(F.reply_payload_offset(l3, family))
    payload = b"reply"
    REPLY[:] = 0
    REPLY[at:at + len(payload)] = np.frombuffer(payload, np.uint8)
    size = int(F.write_reply(FRAME, l3, family, REPLY, len(payload)))
    src_port = int(OUT_C[F.F_SRC_PORT])
    status = F.parse_udp(REPLY, size, src_port, CHECK)
    if status != F.OK or CHECK[F.F_PAYLOAD_LEN] != len(payload) or \
            bytes(REPLY[CHECK[F.F_PAYLOAD]:CHECK[F.F_PAYLOAD] + len(payload)]) != payload:
        raise AssertionError(f"the reply to {data.hex()} does not parse ({status}): {bytes(REPLY[:size]).hex()}")


def seeds() -> list[bytes]:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import frame_fixture as X

    return [X.udp("10.1.0.2", "10.1.0.1", 40000, PORT, b"\x01" * 40),
            X.udp("fd00::2", "fd00::1", 40000, PORT, b"\x02" * 40),
            X.udp("10.1.0.2", "10.1.0.1", 40000, PORT, b"\x03" * 40, vlan=5),
            X.udp("10.1.0.2", "10.1.0.1", 40000, PORT, b"\x04" * 40, options=b"\x01" * 4),
            *X.udp_fragments("10.1.0.2", "10.1.0.1", 40000, PORT, b"\x05" * 3000)[:1],
            *X.udp_fragments("fd00::2", "fd00::1", 40000, PORT, b"\x06" * 3000)[:1]]


if __name__ == "__main__":
    from harness import main

    main(seeds, TestOneInput)
