"""The ring protocol of docs/wire-protocol.md §11.3 and §11.4, and the data plane over it.

A peer writes each message into the next slot of the service's receive ring and then the slot's
8-byte *ready word* (``length | sequence << 32``); ``ring_serve_loop`` polls the ready word of the
next slot and hands the message to ``rtdecoder.dataplane.process_datagram``. Replies go back the
same way into the peer's reply ring, through the worker's ``poster`` (one object-mode call per
message that produced replies), with the count of consumed messages in the peer's credit word.

The RoCE transport (``rtdecoder.transport.roce``) runs this over RDMA writes. The ``memory``
transport here runs it in one address space (``MemoryLink``: replies copied in the order an RDMA
NIC would place them): the reference the RDMA link is checked against, and an in-process
transport for tests (``memory_controller`` finds a service's ring by its port number).
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
from numba import njit, objmode

from rtdecoder.dataplane import (FLUSH_NONE, PARALLEL_WAIT_NS, drained, flush, poll_parallel, post_replies,
                                 process_datagram, settle_parallel, turn_empty, turn_read)
from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.kernels.tables import CNT_BATCHES, CNT_POLLS, CNT_SEND_DROPPED, CTL_DRAIN, CTL_SHED, CTL_STOP
from rtdecoder.transport import Opened, Probe, ServeContext, TransportSpec, register
from rtdecoder.transport import libc as L

READY_BYTES = 8
"""§11.3: the last 8 bytes of a slot: ``length | sequence << 32``, written after the message."""
CREDIT_OFFSET = 0
"""§11.4: the controller's credit word, at the start of its registered region."""
RS_NEXT = 0      # rstate: the sequence number expected next (starts at 1)
RS_CONSUMED = 1  # rstate: messages consumed
RS_CREDITED = 2  # rstate: consumed count last reported to the peer


HEADER_BYTES = 64
"""The controller's region: a 64-byte header (the credit word at ``CREDIT_OFFSET``), then its
reply ring."""


def ready_word(length: int, seq: int) -> int:
    """``length | seq << 32`` as a signed int64 (the ready word's bits)."""
    w = (length & 0xFFFFFFFF) | ((seq & 0xFFFFFFFF) << 32)
    return w - (1 << 64) if w >= 1 << 63 else w


class RingWriter:
    """Sequencing for one direction of §11.3: message ``seq`` (from 1) goes to slot
    ``(seq - 1) % slots``; returns where its body and ready word go."""

    def __init__(self, slots: int, slot_bytes: int, base: int = 0):
        self.slots, self.slot_bytes, self.base = slots, slot_bytes, base
        self.seq = 0

    def next(self, length: int) -> tuple[int, int, int]:
        """``(body offset, ready-word offset, ready word)`` of the next message of ``length`` bytes.

        Raises:
            ValueError: the message does not fit a slot.
        """
        if length > self.slot_bytes - READY_BYTES:
            raise ValueError(f"a {length}-byte message does not fit a {self.slot_bytes}-byte slot")
        self.seq += 1
        off = self.base + ((self.seq - 1) % self.slots) * self.slot_bytes
        return off, off + self.slot_bytes - READY_BYTES, ready_word(length, self.seq)


class MemoryLink:
    """§11 in one address space: the service's replies are copied into ``peer_region`` (the
    controller's header and reply ring) in the order an RDMA NIC would place them (body, then
    ready word), and the credit word is updated. The reference the RDMA link is checked
    against, and the ring transport of the shared transport tests.

    ``txbuf``/``txiov``: the worker's transmit batch (``WorkerState.tx.buf`` and ``.iov``).
    """

    def __init__(self, peer_region: np.ndarray, reply_slots: int, slot_bytes: int, txbuf: np.ndarray,
                 txiov: np.ndarray):
        self.peer = peer_region
        self.words = peer_region.view(np.int64)
        self.writer = RingWriter(reply_slots, slot_bytes, HEADER_BYTES)
        self.txbuf, self.txiov = txbuf, txiov

    def post(self, q: int, consumed: int) -> int:
        for j in range(q):
            n = int(self.txiov[j, 1])
            body, ready, word = self.writer.next(n)
            self.peer[body:body + n] = self.txbuf[j, :n]
            self.words[ready // 8] = word
        self.words[CREDIT_OFFSET // 8] = consumed
        return q


class RingReader:
    """The receiving side of §11.3 over a region in this address space: the next message, if its
    ready word has arrived (then the word is cleared)."""

    def __init__(self, region: np.ndarray, slots: int, slot_bytes: int, base: int = 0):
        self.region, self.words = region, region.view(np.int64)
        self.slots, self.slot_bytes, self.base = slots, slot_bytes, base
        self.seq = 1

    def poll(self) -> bytes | None:
        off = self.base + ((self.seq - 1) % self.slots) * self.slot_bytes
        w = (off + self.slot_bytes - READY_BYTES) // 8
        word = int(self.words[w]) & 0xFFFFFFFFFFFFFFFF
        if word >> 32 != self.seq & 0xFFFFFFFF:
            return None
        n = word & 0xFFFFFFFF
        msg = self.region[off:off + n].tobytes()
        self.words[w] = 0
        self.seq += 1
        return msg


@njit(cache=True, inline="always", _nrt=False)
def ring_batch(slots):
    """The most messages one turn of ``ring_serve_loop`` takes (a read): a quarter of the ring,
    at most 32, at least 1. A turn that finds that many ready is a full read (``turn_read``)."""
    return max(1, min(32, slots >> 2))


@njit(cache=True, inline="always", _nrt=False)
def _ready(words, seq, mask, slot_bytes, body):
    """The length of message ``seq`` if its ready word says it is in its slot, else -1."""
    word = L.load_acquire(words, (((seq - 1) & mask) * slot_bytes + body) >> 3)
    if (word >> 32) & 0xFFFFFFFF != seq & 0xFFFFFFFF:
        return -1
    return word & 0xFFFFFFFF


@njit(cache=True, nogil=True, _nrt=False)
def ring_serve_loop(ring, words, slots, slot_bytes, src_hi, src_lo, rstate, tables, state, ws, tx):
    """Poll the ready words of the next slots of ``ring``; take the messages whose sequence numbers
    are the ones expected, in order, at most ``ring_batch(slots)`` a turn (the overload
    bookkeeping of every transport, ``dataplane.turn_read``: a turn that finds that many sets
    BEHIND and, repeated, sheds with BUSY), hand each to ``process_datagram``, clear its word,
    and post the replies
    through the reply escape (``dataplane.post_replies``: one ``objmode`` call per message that
    produced replies, and every ``slots // 4`` messages for the credit). With parallel streams it
    also polls their helpers' results while the ring is empty and posts the replies they complete,
    and settles every job before it returns. Stops on ``state.ctl[CTL_STOP]``, or drains like
    ``udp.serve_loop`` on ``ctl[CTL_DRAIN]``.

    Args:
        ring: uint8 ``(slots * slot_bytes,)``, the region the peer writes; ``words`` the same
            memory as int64 (``ring.view(np.int64)``).
        src_hi, src_lo: the peer's address (for the allow-lists).
        rstate: int64 ``(4,)``, ``RS_*`` (kept across calls, so a session can be resumed).
        tables, state, ws, tx: as ``process_datagram``.

    Returns:
        Messages handled.
    """
    ctl = state.ctl
    counters = state.counters
    handled = 0
    mask = slots - 1
    body = slot_bytes - READY_BYTES
    batch = ring_batch(slots)
    parallel = state.pjobs.shape[0] > 0  # the engine has parallel streams: poll their helpers
    full = turn_empty(ctl)
    while L.load_acquire(ctl, CTL_STOP) == 0:
        counters[CNT_POLLS] += 1
        draining = L.load_acquire(ctl, CTL_DRAIN) != 0  # read first: see ``drained``
        # A read: the messages ready in order from the next one, at most a batch of them.
        got = 0
        while got < batch and _ready(words, rstate[RS_NEXT] + got, mask, slot_bytes, body) >= 0:
            got += 1
        if got == 0:
            full = turn_empty(ctl)
            if parallel:  # windows the helpers finished: their replies go now
                poll_parallel(tables, state, ws, tx, FLUSH_NONE)
                if tx.q[0] > 0:
                    _post(tx, state, rstate)
            if draining and drained(ctl, tables.st):
                break
            continue
        rx = monotonic_ns()
        counters[CNT_BATCHES] += 1
        full = turn_read(ctl, counters, got, batch, full)  # a whole batch waiting: a backlog, if it lasts
        for _ in range(got):
            seq = rstate[RS_NEXT]
            i = (seq - 1) & mask
            w = (i * slot_bytes + body) >> 3
            n = _ready(words, seq, mask, slot_bytes, body)
            o = i * slot_bytes
            process_datagram(ring[o:o + body], n, rx, 0, 0, src_hi, src_lo, 0, ctl[CTL_SHED], FLUSH_NONE, tables,
                             state, ws, tx)
            L.store_release(words, w, 0)
            rstate[RS_NEXT] = seq + 1
            rstate[RS_CONSUMED] += 1
            handled += 1
            if parallel:
                poll_parallel(tables, state, ws, tx, FLUSH_NONE)
            if tx.q[0] > 0 or rstate[RS_CONSUMED] - rstate[RS_CREDITED] >= (slots >> 2):
                _post(tx, state, rstate)
    if parallel:  # the helpers' jobs come back before the loop returns (and its helpers stop)
        settle_parallel(tables, state, ws, tx, FLUSH_NONE, PARALLEL_WAIT_NS)
        if tx.q[0] > 0:
            _post(tx, state, rstate)
    return handled


@njit(cache=True, nogil=True, _nrt=False)
def _post(tx, state, rstate):
    """Close the queued replies (``flush`` without a socket) and post them through the worker's
    reply escape (``dataplane.post_replies``), with the count of messages consumed (the credit)."""
    q = tx.q[0]
    flush(FLUSH_NONE, tx, state)
    consumed = rstate[RS_CONSUMED]
    wid = state.wid
    with objmode(r="int64"):
        r = post_replies(wid, q, consumed)
    if r < 0:
        state.counters[CNT_SEND_DROPPED] += q
    else:
        rstate[RS_CREDITED] = consumed
    tx.q[0] = 0


class RingSessions:
    """What a ring transport's endpoint shares: one worker, one ring (``PinnedRing`` or a plain
    array), and sessions, each a peer whose replies a ``poster`` delivers."""

    def __init__(self, ring: np.ndarray, slots: int, slot_bytes: int):
        self.ring, self.slots, self.slot_bytes = ring, slots, slot_bytes
        self.words = ring.view(np.int64)
        self.rstate = np.zeros(4, np.int64)

    def _loop(self, state, tables, src_hi: int, src_lo: int):
        return ring_serve_loop(self.ring, self.words, self.slots, self.slot_bytes, src_hi, src_lo, self.rstate,
                               tables, state.arrays, state.workspace, state.tx_arrays)

    def reset(self) -> None:
        """Clear the ring and the sequence state for a new peer: before the peer can write (the
        rendezvous reply, the attach), never while a loop runs."""
        self.words[:] = 0
        self.rstate[:] = 0
        self.rstate[RS_NEXT] = 1

    def run_session(self, worker, poster, src_hi: int, src_lo: int) -> None:
        """Serve one peer (after ``reset``) until the worker is stopped or the session's end sets
        the stop word."""
        worker.state.poster = poster
        try:
            worker.run_loop(lambda s: self._loop(s, worker.engine.tables, src_hi, src_lo))
        finally:
            worker.state.poster = None

    def warm_up(self, worker) -> None:
        """Compile (or load) ``ring_serve_loop``: run it once with the stop word set."""
        s = worker.state
        stop = s.ctl[CTL_STOP]
        s.ctl[CTL_STOP] = 1
        try:
            self._loop(s, worker.engine.tables, 0, 0)
        finally:
            s.ctl[CTL_STOP] = stop


# --- the in-process ``memory`` transport --------------------------------------------------------
REPLY_SLOT_BYTES = 256
_ENDPOINTS: dict[int, "MemoryEndpoint"] = {}
_ports = itertools.count(1)


class MemoryEndpoint(RingSessions):
    """The service's side of ``memory``: a ring in this process that one ``MemoryController`` at
    a time attaches to (by the port number ``open`` returned)."""

    def __init__(self, slots: int, slot_bytes: int, reply_slots: int):
        super().__init__(np.zeros(slots * slot_bytes, np.uint8), slots, slot_bytes)
        self.reply_slots = reply_slots
        self.port = next(_ports)
        self._attached = threading.Event()
        self._peer: np.ndarray | None = None
        self._worker = None
        _ENDPOINTS[self.port] = self

    def attach(self, peer: np.ndarray) -> None:
        """A controller's region (its credit word, then its reply ring) starts a session."""
        if self._attached.is_set():
            raise ConnectionError(f"the memory transport's port {self.port} has a controller already")
        self.reset()  # the worker waits for the attach: no loop runs
        self._peer = peer
        self._attached.set()

    def detach(self) -> None:
        self._attached.clear()
        if self._worker is not None and not self._worker.quit:
            self._worker.ctl[CTL_STOP] = 1

    def serve(self, worker) -> None:
        self._worker = worker
        while worker.running:
            if not self._attached.wait(0.05) or worker.paused:
                continue
            s = worker.state
            poster = MemoryLink(self._peer, self.reply_slots, REPLY_SLOT_BYTES, s.tx.buf, s.tx.iov)
            hi, lo = L.source_words("127.0.0.1")
            self.run_session(worker, poster, hi, lo)
            if worker.running:
                worker.ctl[CTL_STOP] = 0  # the controller left: wait for the next one

    def close(self) -> None:
        _ENDPOINTS.pop(self.port, None)


def _open_memory(ctx: ServeContext) -> Opened:
    from rtdecoder.worker import Worker

    cfg = ctx.cfg
    ep = MemoryEndpoint(cfg.ring_slots, ctx.slot_bytes, reply_slots=1024)
    print(f"rtdecoder: memory ring in this process, port {ep.port} ({cfg.ring_slots} x {ctx.slot_bytes} bytes); "
          "a controller attaches with rtdecoder.transport.ring.MemoryController", file=ctx.log)

    def workers(engine, gpu) -> list:
        slot = gpu.slot_arrays(1) if gpu is not None else None
        return [Worker(engine, ep, ctx.cpus[0], "rtdecoder-memory", tx_slots=engine.max_windows + 4, gpu_slot=slot,
                       error_limit=(cfg.error_replies_per_s, cfg.error_burst))]

    return Opened(("memory", ep.port), workers, ep.close)


class MemoryController:
    """The controller's side of ``memory``: writes messages into the service's ring by the §11.3
    rules (body, then ready word) once the credit allows, reads replies from its own region."""

    def __init__(self, host: str, port: int, stream_id: int = 0, reply_slots: int = 1024):
        try:
            self.endpoint = _ENDPOINTS[port]
        except KeyError:
            raise ConnectionError(f"no memory transport with port {port} in this process") from None
        ep = self.endpoint
        self.region = np.zeros(HEADER_BYTES + reply_slots * REPLY_SLOT_BYTES, np.uint8)
        self.credit = self.region.view(np.int64)
        self.writer = RingWriter(ep.slots, ep.slot_bytes)
        self.reader = RingReader(self.region, reply_slots, REPLY_SLOT_BYTES, HEADER_BYTES)
        ep.attach(self.region)

    def send(self, msg: bytes) -> None:
        """Write one message; waits (spinning) while the service has not credited room for it."""
        while self.writer.seq + 1 - int(self.credit[CREDIT_OFFSET // 8]) > self.writer.slots:
            pass
        n = len(msg)
        body, ready, word = self.writer.next(n)
        self.endpoint.ring[body:body + n] = np.frombuffer(msg, np.uint8)
        L.store_release(self.endpoint.words, ready // 8, word)

    def recv(self) -> memoryview | None:
        m = self.reader.poll()
        return None if m is None else memoryview(m)

    def close(self) -> None:
        self.endpoint.detach()


SPEC = register(TransportSpec(
    name="memory", summary="the §11 ring protocol in this process (tests; rtdecoder.transport.ring.MemoryController)",
    probe=lambda: Probe(True, "in-process ring (always available; reachable only from this process)"),
    open=_open_memory, controller=MemoryController, auto=None, remote=False))
