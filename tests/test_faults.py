"""Loss, duplication and reordering on the way to the service (the emulator's ``--drop``,
``--duplicate``, ``--reorder``): every shot a fault reached is reported poisoned or lost and is
never answered; every other shot is decoded exactly as without faults."""

import numpy as np
import pytest

from rtdecoder.cli import ServiceProcess, _stream_argv
from rtdecoder.config import StreamConfig
from rtdecoder.emulator import EmulatorOptions, fault_plan, run_emulator


def test_fault_plan():
    rng = np.random.default_rng(1)
    order, affected = fault_plan(5, rng, 0, 0, 0)
    assert order.tolist() == [0, 1, 2, 3, 4] and not affected
    order, affected = fault_plan(5, rng, 1.0, 0, 0)
    assert len(order) == 0 and affected
    order, affected = fault_plan(4, rng, 0, 1.0, 0)
    assert order.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and affected
    seen = {tuple(fault_plan(3, np.random.default_rng(s), 0, 0, 0.5)[0].tolist()) for s in range(50)}
    assert (0, 1, 2) in seen and len(seen) > 1 and all(sorted(x) == [0, 1, 2] for x in seen)
    # a duplicate of the last datagram only: the shot's data arrived whole and in order
    for s in range(200):
        order, affected = fault_plan(3, np.random.default_rng(s), 0, 0.3, 0)
        assert affected == (order[:3].tolist() != [0, 1, 2])


@pytest.mark.parametrize("decoder", ["union_find", "matching"])
def test_faulty_network_never_yields_a_correction_from_bad_data(decoder):
    cfg = StreamConfig(id=3, distance=3, rounds=6, p=0.01, decoder=decoder, window=4, commit=2)
    with ServiceProcess(_stream_argv(cfg)) as svc:
        base = dict(host=svc.host, port=svc.port, shots=400, rounds_per_packet=2, cycle_us=0.0, timeout_s=0.05,
                    seed=99, progress=False)
        clean = run_emulator(cfg, EmulatorOptions(**base))
        faulty = run_emulator(cfg, EmulatorOptions(**base, drop=0.03, duplicate=0.03, reorder=0.03, fault_seed=5))
    assert clean.answered.all() and clean.lost == 0
    f = faulty.faults
    assert f["shots_affected"] > 20  # the rates above reach several percent of the shots
    assert f["affected_answered"] == 0, "a correction was sent for a shot with lost, repeated or reordered data"
    assert f["affected_poisoned"] + f["affected_lost"] == f["shots_affected"]
    assert f["unaffected_not_answered"] == 0
    ok = ~faulty.affected
    assert np.array_equal(faulty.predictions[ok], clean.predictions[ok])
    assert {"ROUND_GAP", "DUPLICATE"} <= set(faulty.error_statuses)
