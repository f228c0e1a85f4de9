"""The GPU backend: batch and persistent union-find against the CPU kernel, backend choice,
offline decoding, and the service with ``--backend gpu``.

Runs on the GPU where there is one and otherwise under numba's CUDA simulator (``conftest.py``
sets ``NUMBA_ENABLE_CUDASIM=1``). The simulator runs the kernels' Python, with the CPU kernel
for ``decode`` itself; ``test_kernels_compile_for_the_device`` compiles the real device code to
PTX with libNVVM wherever the CUDA toolkit is installed, GPU or not.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import stim

from rtdecoder import gpu
from rtdecoder.config import ConfigError, StreamConfig
from rtdecoder.dem import make_circuit
from rtdecoder.engine import Engine, build_stream
from rtdecoder.kernels import union_find as uf

pytestmark = pytest.mark.skipif(not gpu.probe().usable, reason=f"no GPU and no simulator: {gpu.probe().reason}")

# windows per distance: thousands in all (d = 3..9), fewer where each is larger
PARITY = {3: 1500, 5: 1000, 7: 600, 9: 400}


def _windows(d: int, count: int, seed: int):
    """Sliding-window graphs of a d-round-window plan and ``count`` stim-sampled windows on them:
    (uf tables, emask, graph of each window, offset of each, events back to back)."""
    cfg = StreamConfig(id=0, distance=d, rounds=3 * d, p=0.004, decoder="union_find", window=2 * d, commit=d)
    rt = build_stream(cfg)
    plan, lay = rt.plan, rt.layout
    graphs = rt.decoder.graphs
    base = np.zeros((len(graphs), 6), np.int64)
    ptrs, slots, eus, evs, masks = [], [], [], [], []
    pb = sb = eb = 0
    for g, ((ptr, slot, eu, ev), wg) in enumerate(zip(graphs, plan.graphs)):
        base[g] = (pb, len(ptr) - 1, sb, len(slot), eb, len(eu))
        ptrs.append(ptr), slots.append(slot), eus.append(eu), evs.append(ev), masks.append(wg.edge_obs.view(np.int64))
        pb, sb, eb = pb + len(ptr), sb + len(slot), eb + len(eu)
    shots = -(-count // plan.num_windows)
    dets = rt.circuit.compile_detector_sampler(seed=seed).sample(shots).astype(np.uint8) & rt.keep  # as ingest leaves them
    win_graph, win_off, chunks = [], [], []
    off = 0
    for s in range(shots):
        for k in range(plan.num_windows):
            a, b = lay.round_offsets[plan.start[k]], lay.round_offsets[plan.end[k]]
            win_graph.append(int(plan.graph[k]))
            win_off.append(off)
            chunks.append(dets[s, a:b])
            off += b - a
    tables = (base, np.concatenate(ptrs), np.concatenate(slots), np.concatenate(eus), np.concatenate(evs))
    sizes = (max(len(p) - 1 for p in ptrs), max(len(e) for e in eus), max(uf.max_length(g) for g in graphs))
    return tables, np.concatenate(masks), sizes, graphs, np.array(win_graph), np.array(win_off), np.concatenate(chunks)


@pytest.mark.parametrize("d", sorted(PARITY))
def test_batch_corrections_are_the_cpu_kernels(d):
    tables, emask, sizes, graphs, wg, wo, events = _windows(d, PARITY[d], seed=d)
    bd = gpu.BatchDecoder(*tables, emask, *sizes, threads=8)
    cap = 2 * sizes[0] + 1
    counts, obs, chosen = bd.decode(wg, wo, events, chosen_cap=cap)
    ws = uf.Workspace(*sizes).arrays()
    base = tables[0]
    for w in range(len(wg)):
        g = wg[w]
        nn = base[g, 1]
        ev = events[wo[w]:wo[w] + nn]
        n = uf.decode(*graphs[g], ev, *uf.NO_HERALDS, *ws)
        assert counts[w] == n, f"d={d} window {w}: {counts[w]} edges on the device, {n} on the CPU"
        assert np.array_equal(chosen[w, :n], ws[-1][:n]), f"d={d} window {w}: different edges"
        eb = base[g, 4]
        assert obs[w] == np.bitwise_xor.reduce(emask[eb + ws[-1][:n]]) if n else obs[w] == 0
        # the correction explains the syndrome: each node's event parity equals its chosen-edge count
        eu, ev_ = graphs[g][2], graphs[g][3]
        hit = np.zeros(nn, np.int64)
        np.add.at(hit, eu[chosen[w, :n]], 1)
        inner = ev_[chosen[w, :n]]
        np.add.at(hit, inner[inner >= 0], 1)
        assert np.array_equal(hit % 2, ev.astype(np.int64)), f"d={d} window {w}: the correction misses events"
    assert len(wg) >= PARITY[d]


def test_whole_shot_predictions_and_logical_error_rate_match_cpu(tmp_path):
    from rtdecoder.offline import decode_file, write_example

    circuit = make_circuit(StreamConfig(distance=5, rounds=5, p=0.004))
    dem = circuit.detector_error_model(decompose_errors=True)
    write_example(tmp_path / "dets.b8", dem, circuit, 3000, "b8", seed=11)
    cpu = decode_file(tmp_path / "dets.b8", tmp_path / "cpu.01", dem, append_observables=True, backend="cpu")
    dev = decode_file(tmp_path / "dets.b8", tmp_path / "gpu.01", dem, append_observables=True, backend="gpu")
    assert (tmp_path / "cpu.01").read_bytes() == (tmp_path / "gpu.01").read_bytes()
    assert cpu.logical_errors == dev.logical_errors and cpu.failed == dev.failed == 0
    assert 0 < cpu.logical_errors < 300  # p = 0.004, d = 5: a few percent at most


def test_offline_formats_round_trip(tmp_path):
    """b8 in, b8 and 01 out: the same predictions, and the same as PyMatching's format."""
    from rtdecoder.offline import decode_file, write_example

    circuit = make_circuit(StreamConfig(distance=3, rounds=3, p=0.01))
    dem = circuit.detector_error_model(decompose_errors=True)
    write_example(tmp_path / "d.01", dem, circuit, 500, "01", seed=3)
    decode_file(tmp_path / "d.01", tmp_path / "p.b8", dem, in_format="01", out_format="b8", append_observables=True)
    decode_file(tmp_path / "d.01", tmp_path / "p.01", dem, in_format="01", out_format="01", append_observables=True)
    a = stim.read_shot_data_file(path=str(tmp_path / "p.b8"), format="b8", num_observables=1)
    b = stim.read_shot_data_file(path=str(tmp_path / "p.01"), format="01", num_observables=1)
    assert a.shape == (500, 1) and np.array_equal(a, b)
    with pytest.raises(ConfigError, match="cannot read"):
        (tmp_path / "bad.01").write_text("0101\n")
        decode_file(tmp_path / "bad.01", tmp_path / "x.01", dem, in_format="01")


def _gpu_engine(cfgs, slots=2):
    e = Engine(cfgs, host_alloc=gpu.mapped_zeros)
    pd = gpu.PersistentDecoder(e, slots=slots)
    pd.start()
    e.attach_gpu(pd)
    return e, pd


def test_persistent_decoder_answers_as_the_cpu_does():
    """Stream 2 has heralded erasures: the device erases the same edges as the CPU."""
    cfgs = [StreamConfig(id=0, distance=3, rounds=9, p=0.01, decoder="union_find", window=6, commit=3),
            StreamConfig(id=1, distance=5, rounds=5, p=0.005, decoder="union_find"),
            StreamConfig(id=2, distance=3, rounds=6, p=0.004, erasure=0.006, decoder="union_find", window=4, commit=2)]
    ref = Engine(cfgs)
    e, pd = _gpu_engine(cfgs)
    try:
        for c in cfgs:
            dets = make_circuit(c).compile_detector_sampler(seed=c.id).sample(40)
            assert np.array_equal(e.decode_shots(c.id, dets, rounds_per_packet=2),
                                  ref.decode_shots(c.id, dets, rounds_per_packet=2))
        assert pd.res[0] > 40  # slot 0 answered every window (warm-up included)
    finally:
        pd.stop()
    assert not any(t.is_alive() for t in pd._threads)


def test_a_silent_device_poisons_the_shot_instead_of_hanging():
    """A persistent decoder that never answers (here: never started): the window waits
    ``slots.TIMEOUT_NS``, the shot gets INTERNAL, and nothing is committed."""
    from rtdecoder import protocol as P
    from rtdecoder.worker import WorkerState

    cfg = StreamConfig(id=0, distance=3, rounds=3, p=0.01, decoder="union_find")
    e = Engine([cfg], host_alloc=gpu.mapped_zeros)
    pd = gpu.PersistentDecoder(e, slots=1)
    e.local = WorkerState(e, tx_slots=8, gpu_slot=pd.slot_arrays(0))
    lay = e.streams[0].layout
    pkt = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1, first_round=0, num_rounds=lay.num_rounds),
                   bytes(lay.num_rounds * lay.round_bytes))
    replies = e.handle(pkt)
    assert P.decode_header(replies[-1]).msg_type == P.MsgType.ERROR
    assert P.decode_error(replies[-1])[1] == P.Status.INTERNAL


def test_persistent_decoder_needs_mapped_syn():
    with pytest.raises(ValueError, match="mapped memory"):
        gpu.PersistentDecoder(Engine([StreamConfig(distance=3, rounds=3, decoder="union_find")]), slots=1)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def test_backend_choice_says_what_is_missing():
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this host has a GPU driver")
    r = _run("""
        from rtdecoder.gpu import choose_backend, probe
        from rtdecoder.config import ConfigError
        print(choose_backend("auto")[0]); print(choose_backend("cpu")[0])
        try:
            choose_backend("gpu")
        except ConfigError as e:
            print("ERR", e)
        """, NUMBA_ENABLE_CUDASIM="0")
    lines = r.stdout.splitlines()
    assert lines[:2] == ["cpu", "cpu"], r.stderr
    assert lines[2].startswith("ERR --backend gpu: no CUDA driver") and "--backend cpu" in lines[2]
    assert gpu.choose_backend("auto")[0] == "cpu"  # the simulator is never chosen by auto
    with pytest.raises(ConfigError, match="unknown backend"):
        gpu.choose_backend("tpu")


def test_serve_refuses_gpu_without_one():
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this host has a GPU driver")
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "serve", "--backend", "gpu", "--port", "0",
                        "--metrics-port", "-1", "--distance", "3"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"})
    assert r.returncode == 2
    assert "configuration error: --backend gpu: no CUDA driver" in r.stderr


def test_service_with_the_gpu_backend_decodes_like_the_cpu():
    """``rtdecoder demo --backend gpu``: service (persistent kernels, under the simulator here)
    and emulator on loopback; every shot answered, the emulator's cross-check passes."""
    r = subprocess.run([sys.executable, "-m", "rtdecoder", "demo", "--backend", "gpu", "--distance", "3",
                        "--rounds", "6", "--decoder", "union_find", "--shots", "60", "--no-progress",
                        "--rounds-per-packet", "3", "--timeout", "5"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rtdecoder_shots_decoded_total 60.0" in r.stdout


NVVM_CHECK = """
    import glob, os, sys
    from numba import cuda, types
    import numba.cuda.dispatcher as disp
    class Device:  # compile_ptx needs no GPU, but device functions ask for the current one's cc
        compute_capability = (9, 0)
    disp.get_current_device = lambda: Device()
    from rtdecoder.kernels import uf_cuda as G
    a = lambda t, nd: types.Array(t, nd, "A")
    i64, i32, u8 = types.int64, types.int32, types.uint8
    from numba.np.numpy_support import from_dtype
    from rtdecoder.kernels import union_find as uf
    ws = [a(from_dtype(w.dtype), w.ndim + 1) for w in uf.Workspace(4, 4, 8).arrays()]  # a row per thread
    batch = [a(i64, 2), a(i64, 1), a(i64, 1), a(i32, 1), a(i32, 1), a(i64, 1), a(i64, 1), a(i64, 1), a(u8, 1)] \\
        + ws + [a(i64, 1), a(i64, 1), a(i64, 2)]
    ptx, _ = cuda.compile_ptx(G.batch_kernel.py_func, tuple(batch), cc=(9, 0))
    print("batch", ptx.count("ld.global"))
    pers = [a(i64, 1), a(i64, 1), a(i64, 1), a(u8, 1), a(i64, 2), a(i64, 1), a(i64, 1), a(i32, 1), a(i32, 1),
            a(i64, 2), a(i32, 1), a(i64, 1), a(i32, 1), a(u8, 2)] + ws + [a(i64, 2), a(i64, 1)]
    ptx, _ = cuda.compile_ptx(G.persistent_kernel.py_func, tuple(pers), cc=(9, 0))
    print("persistent", ptx.count("membar.sys"))
"""


def _cuda_home():
    for d in [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda", *sorted(os.listdir("/usr/local"), reverse=True)]:
        path = d if d.startswith("/") else os.path.join("/usr/local", d)
        if d and os.path.isdir(os.path.join(path, "nvvm")):
            return path
    return None


def test_kernels_compile_for_the_device():
    """The real device path (the CPU kernel compiled by numba for CUDA, sm_90) compiles to PTX,
    and the persistent kernel's polls are system-scope fences."""
    home = _cuda_home()
    if home is None:
        pytest.skip("no CUDA toolkit (libNVVM) on this machine: the kernels cannot be compiled to PTX here")
    r = _run(NVVM_CHECK, NUMBA_ENABLE_CUDASIM="0", CUDA_HOME=home)
    assert r.returncode == 0, r.stderr[-3000:]
    out = dict(line.split() for line in r.stdout.splitlines())
    assert int(out["batch"]) > 0 and int(out["persistent"]) >= 3
