"""The GPU backend: what the host offers, batch decoding, and the persistent decoder.

``numba.cuda`` is imported only inside these functions, never when ``rtdecoder`` is imported.
The kernels are ``rtdecoder.kernels.uf_cuda`` (the CPU union-find kernel compiled for the
device, so GPU and CPU corrections are identical).

- ``probe()`` says whether a usable GPU is here, and if not, what is missing.
- ``choose_backend("cpu" | "gpu" | "auto")`` applies it: ``auto`` takes a real GPU (never the
  simulator) and says why it chose what it chose; ``gpu`` without one raises ``ConfigError``
  naming what is missing.
- ``BatchDecoder``: many windows (of one graph or many) in one launch, for throughput and for
  ``rtdecoder decode`` of recorded detection events.
- ``PersistentDecoder``: a resident kernel, a block per slot, that polls mapped host memory for
  windows; ``rtdecoder serve --backend gpu`` gives each worker a slot (no launch per window).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from rtdecoder.backends import BACKENDS
from rtdecoder.errors import ConfigError
from rtdecoder.kernels import slots as S


@dataclass(frozen=True)
class GpuStatus:
    """``usable``: kernels can run; ``simulator``: they would run in numba's CUDA simulator;
    ``device``: the device's name; ``reason``: what is missing (or what was found)."""

    usable: bool
    simulator: bool
    device: str
    reason: str


def probe() -> GpuStatus:
    """What this host offers for the GPU backend (no exception; the answer says what is missing)."""
    try:
        import numba
        from numba import cuda
    except Exception as e:  # noqa: BLE001 - any import failure means the same thing here
        return GpuStatus(False, False, "", f"numba.cuda cannot be imported ({e}); pip install 'rtdecoder[gpu]'")
    if numba.config.ENABLE_CUDASIM:
        return GpuStatus(True, True, "numba CUDA simulator",
                         "NUMBA_ENABLE_CUDASIM=1: kernels run in numba's CUDA simulator (correct, not fast)")
    try:
        from numba.cuda.cudadrv.driver import driver

        count = driver.get_device_count()
    except Exception as e:  # noqa: BLE001 - CudaSupportError and friends, by message
        msg = " ".join(str(e).split())
        detail = "" if "cannot be found" in msg else f" ({msg})"
        return GpuStatus(False, False, "", f"no CUDA driver: libcuda.so could not be loaded{detail}; "
                                           "install the NVIDIA driver, or run with --backend cpu")
    if count == 0:
        return GpuStatus(False, False, "", "the CUDA driver is loaded but reports no device "
                                           "(check CUDA_VISIBLE_DEVICES and nvidia-smi)")
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as e:  # noqa: BLE001
        return GpuStatus(False, False, "", f"libNVVM (the CUDA compiler library numba needs) was not found ({e}); "
                                           "install the CUDA toolkit or nvidia-cuda-nvcc and set CUDA_HOME")
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        if not dev.CAN_MAP_HOST_MEMORY:
            return GpuStatus(False, False, name, f"{name} cannot map host memory (needed for the persistent decoder)")
    except Exception as e:  # noqa: BLE001
        return GpuStatus(False, False, "", f"the CUDA device could not be opened ({e})")
    return GpuStatus(True, False, name, f"{name}, compute capability {dev.compute_capability}")


def choose_backend(name: str) -> tuple[str, str]:
    """``(backend, why)`` for ``--backend name``.

    Raises:
        ConfigError: ``name`` is not one of ``BACKENDS``, or it is ``gpu`` and no usable GPU
            (or the simulator) is here; the message says what is missing.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "cpu":
        return "cpu", "backend cpu (asked for)"
    st = probe()
    if name == "gpu":
        if not st.usable:
            raise ConfigError(f"--backend gpu: {st.reason}")
        return "gpu", f"backend gpu: {st.reason}"
    if st.usable and not st.simulator:
        return "gpu", f"backend auto chose gpu: {st.reason}"
    why = "only numba's CUDA simulator is here" if st.simulator else "no usable GPU on this host"
    return "cpu", f"backend auto chose cpu ({why})"


def mapped_zeros(shape, dtype) -> tuple[object, np.ndarray]:
    """Page-locked host memory mapped into the device's address space, zeroed: ``(device
    handle for kernels, numpy view for the host)``; both address the same bytes."""
    from numba import cuda

    arr = cuda.mapped_array(shape, dtype=dtype)
    view = np.asarray(arr)
    view[...] = 0
    return arr, view


class BatchDecoder:
    """Union-find on many windows per launch (``uf_cuda.batch_kernel``).

    Args:
        uf_base, uf_ptr, uf_slot, uf_eu, uf_ev: the graphs (``rtdecoder.engine.Engine``'s layout).
        emask: int64, each edge's observable mask, in ``uf_eu`` order.
        max_nodes, max_edges, max_length: the largest graph's sizes (the workspace's).
        threads: workspace rows, the most windows decoded at once (default: as many as fit in
            ``memory_fraction`` of the device's free memory, at most 65,536).
    """

    def __init__(self, uf_base, uf_ptr, uf_slot, uf_eu, uf_ev, emask, max_nodes: int, max_edges: int,
                 max_length: int, threads: int | None = None, memory_fraction: float = 0.5):
        from numba import cuda

        from rtdecoder.kernels import uf_cuda as G

        self._cuda, self._G = cuda, G
        self.graph = tuple(cuda.to_device(np.ascontiguousarray(a)) for a in
                           (np.asarray(uf_base, np.int64), np.asarray(uf_ptr, np.int64), np.asarray(uf_slot, np.int64),
                            np.asarray(uf_eu, np.int32), np.asarray(uf_ev, np.int32), np.asarray(emask, np.int64)))
        row = G.workspace_bytes(max_nodes, max_edges, max_length)
        if threads is None:
            try:
                free = cuda.current_context().get_memory_info()[0]
            except Exception:  # noqa: BLE001 - the simulator has no memory info
                free = 1 << 30
            threads = int(max(1, min(65536, memory_fraction * free // row)))
        self.threads = threads
        self.block = 64 if threads >= 64 else threads
        self.threads = -(-threads // self.block) * self.block
        self.workspace = G.device_workspace(self.threads, max_nodes, max_edges, max_length)

    @classmethod
    def for_graph(cls, graph: tuple, emask: np.ndarray, **kw) -> "BatchDecoder":
        """One graph (``union_find.build_graph``'s ``(ptr, slot, eu, ev)``) as graph 0."""
        from rtdecoder.kernels import union_find as uf

        ptr, slot, eu, ev = graph
        n, m = len(ptr) - 1, len(eu)
        base = np.array([[0, n, 0, len(slot), 0, m]], np.int64)
        return cls(base, ptr, slot, eu, ev, emask, n, m, uf.max_length(graph), **kw)

    def decode(self, win_graph: np.ndarray, win_events: np.ndarray, events: np.ndarray,
               chosen_cap: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode windows in one launch.

        Args:
            win_graph: int64 ``(W,)``, each window's graph.
            win_events: int64 ``(W,)``, offset of each window's first event in ``events``.
            events: uint8 (0/1), the windows' detection events back to back.
            chosen_cap: chosen edges kept per window (0: only the observable masks).

        Returns:
            ``(counts, obs, chosen)``: int64 ``(W,)`` edges chosen (-1: no correction explains
            the events), int64 ``(W,)`` XOR of the chosen edges' observable masks (bit ``i`` =
            observable ``i``), int64 ``(W, chosen_cap)`` the first chosen edges.
        """
        cuda = self._cuda
        w = len(win_graph)
        counts = cuda.device_array(w, np.int64)
        obs = cuda.device_array(w, np.int64)
        chosen = cuda.device_array((w, chosen_cap), np.int64)
        grid = max(1, min(self.threads, -(-w // self.block) * self.block) // self.block)
        self._G.batch_kernel[grid, self.block](*self.graph, cuda.to_device(np.asarray(win_graph, np.int64)),
                                               cuda.to_device(np.asarray(win_events, np.int64)),
                                               cuda.to_device(np.ascontiguousarray(events, np.uint8)),
                                               *self.workspace, counts, obs, chosen)
        return counts.copy_to_host(), obs.copy_to_host(), chosen.copy_to_host()


class PersistentDecoder:
    """Resident union-find kernels over an engine's mapped ``syn`` (``Engine(host_alloc=...)``).

    ``slots`` slots served by one resident launch (one block per slot on a GPU); slot ``i``'s
    request, result and chosen-edge rows are ``slot_arrays(i)`` (numpy views of mapped memory,
    for ``rtdecoder.dataplane``). ``start()`` launches, ``stop()`` sets the stop word and waits.
    """

    def __init__(self, engine, slots: int):
        from numba import cuda

        from rtdecoder.kernels import uf_cuda as G

        self._cuda, self._G = cuda, G
        self.engine = engine
        self.slots = slots
        if not hasattr(engine, "syn_device"):
            raise ValueError("the engine's syn is not in mapped memory: build it with Engine(host_alloc=mapped_zeros)")
        self.graph = tuple(cuda.to_device(np.ascontiguousarray(a)) for a in
                           (engine.uf_base, engine.uf_ptr, engine.uf_slot, engine.uf_eu, engine.uf_ev, engine.uf_hbase,
                            engine.uf_hidx, engine.uf_hptr, engine.uf_hedge))
        self._ctl, self.ctl = mapped_zeros(S.WORDS, np.int64)
        self._req, self.req = mapped_zeros(slots * S.WORDS, np.int64)
        self._res, self.res = mapped_zeros(slots * S.WORDS, np.int64)
        self._chosen, self.chosen = mapped_zeros((slots, 2 * engine.uf_max_nodes + 1), np.int64)
        self.evbuf = cuda.device_array((slots, engine.uf_max_nodes), np.uint8)
        self.workspace = G.device_workspace(slots, engine.uf_max_nodes, engine.uf_max_edges, engine.uf_max_length)
        self.last = cuda.to_device(np.zeros(slots, np.int64))
        import numba

        self.simulator = bool(numba.config.ENABLE_CUDASIM)
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def slot_arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Slot ``i``'s request words, result words and chosen-edge row (int64 views)."""
        w = S.WORDS
        return self.req[i * w:(i + 1) * w], self.res[i * w:(i + 1) * w], self.chosen[i]

    def _serve(self) -> None:
        try:
            grid = 1 if self.simulator else self.slots
            self._G.persistent_kernel[grid, self._G.PERSISTENT_THREADS, self._stream](
                self._ctl, self._req, self._res, self.engine.syn_device, *self.graph, self.evbuf,
                *self.workspace, self._chosen, self.last)
            self._stream.synchronize()
        except BaseException as e:  # noqa: BLE001 - reported by stop() and by the service's log
            self.errors.append(e)

    def start(self) -> None:
        """Launch the resident kernel (on a stream of its own, from a thread that then waits for it)."""
        self.ctl[S.CTL_STOP] = 0
        self._stream = self._cuda.stream()
        t = threading.Thread(target=self._serve, name="rtdecoder-gpu", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Set the stop word and wait for the kernels to return.

        Raises:
            RuntimeError: a kernel failed (its error is chained) or did not return in time.
        """
        self.ctl[S.CTL_STOP] = 1
        for t in self._threads:
            t.join(timeout_s)
        alive = [t.name for t in self._threads if t.is_alive()]
        self._threads = []
        if self.errors:
            raise RuntimeError(f"the persistent GPU decoder failed: {self.errors[0]}") from self.errors[0]
        if alive:
            raise RuntimeError(f"persistent GPU kernels did not stop within {timeout_s} s: {', '.join(alive)}")

