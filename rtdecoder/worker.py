"""A data-plane worker: its preallocated arrays (``WorkerState``) and its thread (``Worker``),
generic over the transport whose compiled loop it runs.

A transport (``rtdecoder.transport``) gives each worker an *endpoint*: an object with
``serve(worker)`` (the thread's body: run the transport's compiled loop through
``Worker.run_loop`` until stopped, taking sessions if the transport has them) and
``warm_up(worker)`` (compile, or load from numba's cache, that loop before the service says it
is ready). Everything else (pinning, stop, drain, the pause of a reload, rebinding to a new
engine) is the same for every transport and lives here.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from rtdecoder import dataplane as D
from rtdecoder.kernels import parallel as KP
from rtdecoder.kernels import record as KR
from rtdecoder.kernels import union_find as uf
from rtdecoder.kernels.histogram import NUM_BUCKETS
from rtdecoder.kernels.tables import (
    CTL_BUSY_BATCHES, CTL_DRAIN, CTL_HELPERS, CTL_STOP, CTL_WORKERS, NUM_COUNTERS, NUM_CTL, NUM_HIST_ROWS, NUM_OUT,
    TR_WIDTH, TRACE_LEN, TxArrays, WorkerArrays)
from rtdecoder.transport import libc as L

CACHE_LINE = 64


def control_words() -> np.ndarray:
    """int64 ``(NUM_CTL,)`` control words (``rtdecoder.kernels.tables.CTL_*``) on a cache line of
    their own.

    The loop reads the stop word on every iteration; if it shared a cache line with memory that
    another thread writes, each of those writes would evict the line from the worker's core.
    """
    buf = np.zeros(2 * CACHE_LINE // 8, np.int64)
    first = (-buf.ctypes.data % CACHE_LINE) // 8
    ctl = buf[first:first + NUM_CTL]
    ctl[CTL_WORKERS] = 1
    ctl[CTL_BUSY_BATCHES] = 4
    return ctl


class WorkerState:
    """One worker's preallocated arrays: counters, histograms, trace ring, control words, transmit
    batch and union-find workspace.

    Args:
        engine: the ``rtdecoder.engine.Engine`` it serves.
        tx_slots: replies the transmit batch holds.
        gpu_slot: ``(request words, result words, chosen row)`` of a ``PersistentDecoder`` slot
            (``PersistentDecoder.slot_arrays``) to decode ``CALL_COMPILED`` windows on the GPU;
            default: the CPU.
        error_replies_per_s, error_burst: the per-source ERROR reply budget.

    Attributes:
        arrays: ``rtdecoder.kernels.tables.WorkerArrays`` for compiled code; tx_arrays:
            ``TxArrays``; workspace: the union-find kernel's scratch arrays.
        poster: for ring transports, what posts the queued replies (``dataplane.post_replies``).
    """

    def __init__(self, engine, tx_slots: int = 64, gpu_slot: tuple | None = None,
                 error_replies_per_s: int = 1000, error_burst: int = 100):
        self.engine = engine
        self.wid = D.register_state(self)
        self.counters = np.zeros(NUM_COUNTERS, np.int64)
        self.hist = np.zeros((NUM_HIST_ROWS, NUM_BUCKETS + 2), np.int64)
        self.out = np.zeros(NUM_OUT, np.int64)
        self.trace = np.zeros((TRACE_LEN, TR_WIDTH), np.int64)
        self.tmeta = np.zeros(2, np.int64)
        self.escape_chosen = np.zeros(engine.max_edges + 1, np.int64)
        self.escape = np.zeros(1, np.int64)
        self.ctl = control_words()
        self.tx = L.MessageBatch(tx_slots, D.TX_BYTES)
        self.txflag = np.zeros(tx_slots, np.int64)
        self.txq = np.zeros(1, np.int64)
        self._ws_size = (engine.uf_max_nodes, engine.uf_max_edges, engine.uf_max_length)
        self.workspace = uf.Workspace(*self._ws_size).arrays()
        self.poster = None
        self.rl = np.zeros((D.RL_SLOTS + 1, 6), np.int64)
        self.rl[0, D.RL_RATE] = error_replies_per_s
        self.rl[0, D.RL_BURST] = error_burst
        none = np.zeros(0, np.int64)
        self.gpu_slot = gpu_slot if gpu_slot is not None else (none, none, none)
        self.tx_arrays = TxArrays(self.tx.buf, self.tx.hdr, self.tx.iov, self.txflag, self.txq)
        self._cuqr_scratch(engine)
        self._parallel_rings(engine)
        self.rec = np.zeros(8, np.uint8)
        self.recw = np.zeros(KR.REC_WORDS, np.int64)
        self._pack()

    def enable_recording(self, ring_bytes: int) -> None:
        """Give the worker a record ring of ``ring_bytes`` (a power of two) and turn recording on
        (``rtdecoder.kernels.record``; ``rtdecoder.record.Recorder`` drains it). Only while the
        worker's loop is not running."""
        if ring_bytes & (ring_bytes - 1) or ring_bytes < 4096:
            raise ValueError(f"record ring of {ring_bytes} bytes: a power of two of at least 4096")
        self.rec = np.zeros(ring_bytes, np.uint8)
        self.recw = np.zeros(KR.REC_WORDS, np.int64)
        self.recw[KR.REC_ON] = 1
        self._pack()

    def _parallel_rings(self, engine) -> None:
        """A job ring and a result ring per helper of the engine's most parallel stream
        (``rtdecoder.kernels.parallel``), and the worker's scratch for B windows' events."""
        h = max(engine.max_helpers, 0)
        if getattr(self, "pjobs", None) is None or self.pjobs.shape[0] < h:
            self.pjobs = np.zeros((h, KP.RING, KP.RW), np.int64)
            self.pres_ring = np.zeros((h, KP.RING, KP.RW), np.int64)
            self.pidx = np.zeros((h, KP.IDX_WORDS), np.int64)
        if getattr(self, "pscratch", None) is None or len(self.pscratch) < engine.max_nodes:
            self.pscratch = np.zeros(engine.max_nodes, np.uint8)
        self.helpers: list = []

    def start_helpers(self) -> None:
        """Start a helper thread per ring (each its own union-find workspace, on the engine's
        tables), so windows of the parallel streams go to them; ``stop_helpers`` ends them."""
        h = self.engine.max_helpers
        if h <= 0 or self.helpers:
            return
        self.pidx[:] = 0  # empty rings (the loop settled its jobs before it last returned)
        tables = self.engine.tables
        size = (self.engine.uf_max_nodes, self.engine.uf_max_edges, self.engine.uf_max_length)
        # Off the workers' CPUs: a thread inherits its creator's affinity (a pinned worker's), so each
        # helper takes the process's main thread's, which the server keeps off the workers' CPUs.
        cpus = os.sched_getaffinity(os.getpid())

        def helper(i: int, ws, scratch) -> None:
            os.sched_setaffinity(0, cpus)
            KP.helper_loop(i, tables, self.pjobs, self.pres_ring, self.pidx, scratch, *ws)

        for i in range(h):
            ws = uf.Workspace(*size).arrays()
            scratch = np.zeros(self.engine.max_nodes, np.uint8)
            th = threading.Thread(target=helper, args=(i, ws, scratch), name=f"rtdecoder-helper-{self.wid}-{i}",
                                  daemon=True)
            th.start()
            self.helpers.append(th)
        self.ctl[CTL_HELPERS] = h

    def stop_helpers(self) -> None:
        """Stop the helpers (after the loop settled their jobs) and wait for them."""
        if not self.helpers:
            return
        self.ctl[CTL_HELPERS] = 0
        for i in range(len(self.helpers)):
            self.pidx[i, KP.STOP] = 1
        for th in self.helpers:
            th.join()
        self.helpers = []

    def _cuqr_scratch(self, engine) -> None:
        """The CUQR layer's scratch SYNDROME and the batch its data-path replies go to
        (``rtdecoder.dataplane.process_cuqr``): room for a round of the engine's largest
        stream, and for every reply one round can produce."""
        if getattr(self, "cq_in", None) is None or len(self.cq_in) < engine.slot_bytes:
            self.cq_in = np.zeros(engine.slot_bytes, np.uint8)
        slots = engine.max_windows + 4
        if getattr(self, "cq_tx", None) is None or self.cq_tx.buf.shape[0] < slots:
            self.cq_tx = TxArrays(np.zeros((slots, D.TX_BYTES), np.uint8), np.zeros((slots, L.HDR_WORDS), np.int64),
                                  np.zeros((slots, 2), np.int64), np.zeros(slots, np.int64), np.zeros(1, np.int64))

    def _pack(self) -> None:
        self.arrays = WorkerArrays(self.counters, self.hist, self.out, self.trace, self.tmeta, self.escape_chosen,
                                   self.escape, *self.gpu_slot, self.rl, self.ctl, self.cq_in, self.cq_tx, self.pjobs,
                                   self.pres_ring, self.pidx, self.pscratch, self.rec, self.recw, self.wid)

    def rebind(self, engine) -> None:
        """Serve ``engine`` from now on (a reloaded configuration); counters, histograms, trace and
        transmit batch are kept, the escape's output and the union-find workspace grow if they
        must. Only while the worker's loop is not running."""
        self.engine = engine
        if engine.max_edges + 1 > len(self.escape_chosen):
            self.escape_chosen = np.zeros(engine.max_edges + 1, np.int64)
        need = (engine.uf_max_nodes, engine.uf_max_edges, engine.uf_max_length)
        if any(a > b for a, b in zip(need, self._ws_size)):
            self._ws_size = tuple(max(a, b) for a, b in zip(need, self._ws_size))
            self.workspace = uf.Workspace(*self._ws_size).arrays()
        self._cuqr_scratch(engine)
        self._parallel_rings(engine)
        self._pack()  # the record ring, if any, is kept

    def replies(self) -> list[bytes]:
        """The queued replies (in-process path), as ``bytes``; empties the queue."""
        q = int(self.txq[0])
        out = [self.tx.buf[j, : self.tx.iov[j, 1]].tobytes() for j in range(q)]
        self.txq[0] = 0
        return out


class Worker:
    """One data-plane worker thread: pins itself to ``cpu`` and runs ``endpoint.serve(self)``.

    Attributes:
        state: its ``WorkerState``; ctl: its control words (``state.ctl``).
        handled: datagrams handled so far by its loops.
        error: the exception that ended the thread, if one did.
    """

    def __init__(self, engine, endpoint, cpu: int | None, name: str, tx_slots: int = 64,
                 gpu_slot: tuple | None = None, error_limit: tuple[int, int] = (1000, 100)):
        self.engine = engine
        self.endpoint = endpoint
        self.cpu = cpu
        self.state = WorkerState(engine, tx_slots=tx_slots, gpu_slot=gpu_slot,
                                 error_replies_per_s=error_limit[0], error_burst=error_limit[1])
        self.ctl = self.state.ctl
        self.handled = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._pause = threading.Event()
        self._parked = threading.Event()
        self._resume = threading.Event()
        self._gate = threading.Lock()  # held by the thread while its loop runs, or by ``park``
        self._holding = False  # ``park`` holds the gate: no loop was running
        self.quit = False

    def _run(self) -> None:
        try:
            if self.cpu is not None:
                os.sched_setaffinity(0, {self.cpu})  # 0: the calling thread
            self.endpoint.serve(self)
        except BaseException as e:  # reported by Server.run; the process then exits non-zero
            self.error = e

    @property
    def paused(self) -> bool:
        """A reload is swapping the engine: an endpoint between sessions waits."""
        return self._pause.is_set()

    @property
    def running(self) -> bool:
        """Neither stopped nor draining: an endpoint may take another session."""
        return not self.quit and self.ctl[CTL_DRAIN] == 0

    def run_loop(self, loop) -> None:
        """Run ``loop(state)`` (a transport's compiled loop, which returns the datagrams it handled
        once its stop word is set) until the worker is stopped or draining, or until the stop word
        is set by someone else (an endpoint ending a session). While the worker is parked for a
        reload it waits, then runs the loop again on the new engine (``loop`` reads
        ``worker.engine`` each time it is called)."""
        while True:
            with self._gate:
                self._resume.clear()  # a resume meant for a wait that never came
                self.state.start_helpers()
                try:
                    self.handled += loop(self.state)
                finally:
                    self.state.stop_helpers()
            if self.quit:
                return
            if self._pause.is_set():
                self._parked.set()  # between two datagrams: the server may swap the engine now
                self._resume.wait()
                continue
            if self.ctl[CTL_STOP] != 0 or self.ctl[CTL_DRAIN] != 0:
                return

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.quit = True
        self.ctl[CTL_STOP] = 1
        self._resume.set()

    def park(self, timeout_s: float = 5.0) -> bool:
        """Stop the loop between two datagrams and hold it (datagrams wait in the transport).
        Where no loop runs (before the first, between sessions) the worker is held by taking its
        gate, so none starts until ``unpark``."""
        self._parked.clear()
        self._pause.set()
        self.ctl[CTL_STOP] = 1
        if self._gate.acquire(blocking=False):
            self._holding = True
            return True
        return self._parked.wait(timeout_s)

    def unpark(self) -> None:
        self._parked.clear()
        self._pause.clear()
        if not self.quit:
            self.ctl[CTL_STOP] = 0
        self._resume.set()
        if self._holding:
            self._holding = False
            self._gate.release()

    def rebind(self, engine) -> None:
        self.engine = engine
        self.state.rebind(engine)

    def drain(self, deadline_ns: int) -> None:
        self.ctl[CTL_DRAIN] = deadline_ns
