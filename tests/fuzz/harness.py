"""What every fuzz harness in this folder shares: its command line.

``python fuzz_NAME.py --write-seeds DIR`` writes the harness's seed inputs into ``DIR``; any other
arguments go to libFuzzer (``-max_total_time=…``, corpus folders, a crash file to re-run)."""

from __future__ import annotations

import pathlib
import sys


def main(seeds, test_one_input) -> None:
    """Write ``seeds()`` (``--write-seeds DIR``), or fuzz ``test_one_input`` with atheris."""
    if "--write-seeds" in sys.argv:
        out = pathlib.Path(sys.argv[sys.argv.index("--write-seeds") + 1])
        out.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(seeds()):
            (out / f"seed{i}").write_bytes(s)
        return
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
