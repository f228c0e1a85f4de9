"""Coverage-guided fuzzing (atheris/libFuzzer) of the configuration readers: rtdecoder's TOML
(``rtdecoder.config.load_config``) and CUDA-Q's YAML (``rtdecoder.cudaq_config.load_yaml``).

    .venv/bin/python tests/fuzz/fuzz_config.py -max_total_time=900 tests/fuzz/corpus/config

An input's first byte picks the reader (even: TOML, odd: YAML); the rest is the file. Whatever
the file holds, the reader must return a configuration or raise ``ConfigError`` (with a
message): any other exception is a crash, and libFuzzer saves the input.
"""

from __future__ import annotations

import os
import tempfile

import atheris

with atheris.instrument_imports(include=["rtdecoder.config", "rtdecoder.cudaq_config"]):
    from rtdecoder.config import ConfigError
    from rtdecoder.configfile import load_config
    from rtdecoder.cudaq_config import load_yaml

DIR = tempfile.mkdtemp(prefix="rtdecoder-fuzz-config-")
PATHS = (os.path.join(DIR, "c.toml"), os.path.join(DIR, "c.yaml"))


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    yaml = data[0] & 1
    path = PATHS[yaml]
    with open(path, "wb") as f:
        f.write(data[1:])
    try:
        (load_yaml if yaml else load_config)(path)
    except ConfigError as e:
        if not str(e):
            raise AssertionError("a ConfigError without a message") from None


def seeds() -> list[bytes]:
    toml = b"""[server]
host = "127.0.0.1"
port = 7700

[[streams]]
id = 0
distance = 3
rounds = 3
decoder = "union_find"
window = 4
commit = 2
"""
    yaml = b"""decoders:
  - id: 0
    type: pymatching
    block_size: 3
    syndrome_size: 3
    H_sparse: [0, -1, 1, -1, 2, -1]
    O_sparse: [0, -1, 1, -1, 2, -1]
    D_sparse: [0, -1, 1, -1, 2, -1]
    decoder_custom_args:
      error_rate_vec: [0.1, 0.1, 0.1]
      merge_strategy: smallest_weight
"""
    sw = b"""decoders:
  - id: 2
    type: sliding_window
    block_size: 2
    syndrome_size: 2
    H_sparse: [0, -1, 0, 1, -1]
    O_sparse: [1, -1]
    D_sparse: [0, -1, 0, 1, -1]
    decoder_custom_args:
      window_size: 2
      step_size: 1
      num_syndromes_per_round: 1
      error_rate_vec: [0.01, 0.01]
      inner_decoder_name: single_error_lut
"""
    return [b"\x00" + toml, b"\x01" + yaml, b"\x01" + sw]


if __name__ == "__main__":
    from harness import main

    main(seeds, TestOneInput)
