"""Coverage-guided fuzzing (atheris/libFuzzer) of ``rtdecoder decode``'s readers of stim's shot
formats (``b8`` and ``01``) through ``rtdecoder.offline.decode_file``.

    .venv/bin/python tests/fuzz/fuzz_readers.py -max_total_time=900 tests/fuzz/corpus/readers

An input's first byte picks the format (bit 0: ``01``, else ``b8``), whether each record ends with
the observables (bit 1) and whether the fit check runs (bit 2); the rest is the file, decoded
against a small repetition-code DEM. Whatever the file holds, ``decode_file`` must decode it or
raise ``ConfigError`` with a message; any other exception is a crash, and libFuzzer saves the
input.
"""

from __future__ import annotations

import os
import tempfile

import atheris
import stim

with atheris.instrument_imports(include=["rtdecoder.offline"]):
    from rtdecoder.config import ConfigError
    from rtdecoder.offline import decode_file

CIRCUIT = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2, after_clifford_depolarization=0.05)
DEM = CIRCUIT.detector_error_model(decompose_errors=True)
DIR = tempfile.mkdtemp(prefix="rtdecoder-fuzz-readers-")
IN, OUT = os.path.join(DIR, "in"), os.path.join(DIR, "out")


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    flags = data[0]
    with open(IN, "wb") as f:
        f.write(data[1:])
    try:
        decode_file(IN, OUT, DEM, in_format="01" if flags & 1 else "b8", out_format="01",
                    append_observables=bool(flags & 2), decoder="union_find", check_fit=bool(flags & 4))
    except ConfigError as e:
        if not str(e):
            raise AssertionError("a ConfigError without a message") from None


def seeds() -> list[bytes]:
    import numpy as np

    dets, obs = CIRCUIT.compile_detector_sampler(seed=1).sample(20, separate_observables=True)
    both = np.concatenate([dets, obs], axis=1)
    out = []
    for flags, data in ((0, dets), (2, both), (6, both)):
        for fmt, bit in (("b8", 0), ("01", 1)):
            path = os.path.join(DIR, "seed")
            stim.write_shot_data_file(data=data, path=path, format=fmt, num_measurements=0,
                                      num_detectors=data.shape[1], num_observables=0)
            out.append(bytes([flags | bit]) + open(path, "rb").read())
    return out


if __name__ == "__main__":
    from harness import main

    main(seeds, TestOneInput)
