"""Overload: a controller that does not wait for the decoder. The service answers new shots
BUSY while it is behind, never sends a wrong correction, and every shot is accounted for."""

import importlib.util
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


def test_open_loop_overload_is_shed_and_accounted():
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    r = soak.soak(seconds=4, distance=3, rounds=3, decoder="matching", cycle_us=0.0, rpp=1, chunk=3000,
                  busy_batches=2, timeout_s=0.5, log=lambda *_: None)
    assert r["shots"] >= 3000
    assert r["final"] + r["errors"] + r["lost"] == r["shots"]
    assert r["wrong"] == 0, "a correction differs from the in-process decode of the same shot"
    assert r["final"] > 0
    assert r["server_busy"] > 0 and r["server_overloads"] > 0, "the service never shed load"
    assert r["statuses"].get("BUSY", 0) > 0
