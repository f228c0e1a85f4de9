"""The ``udp`` transport: non-blocking datagram sockets, busy-polled by a compiled loop.

A blocking socket costs tens of microseconds of wake-up latency per round trip, so the data plane
never sleeps: ``serve_loop`` polls ``recvmmsg`` with ``MSG_DONTWAIT`` straight into the worker's
receive ring (``rtdecoder.ring.PinnedRing``) and hands each datagram to
``rtdecoder.dataplane.process_datagram``. ``MSG_TRUNC`` makes the kernel report a
datagram's full length even when it is longer than the slot, so oversize datagrams are detected
(and answered TOO_LARGE) rather than silently truncated.

Several workers share one port: each has its own socket in an ``SO_REUSEPORT`` group, and a
classic BPF program attached to the group (``SO_ATTACH_REUSEPORT_CBPF``, Linux 4.5+) steers each
datagram to socket ``stream_id % workers``, reading the little-endian stream id at bytes 10–11
of the datagram (docs/wire-protocol.md §2). A datagram too short to hold a stream id goes to
socket 0. So every stream is handled by exactly one worker, and no datagram changes threads.

``SO_BUSY_POLL`` (Linux 3.11+) asks the kernel to poll the NIC's queue during a receive that finds
the socket empty; raising it past ``net.core.busy_read`` needs ``CAP_NET_ADMIN``. It only helps on
a NIC driver with NAPI; loopback has none, so on loopback it changes nothing.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from numba import njit

from rtdecoder.dataplane import (PARALLEL_WAIT_NS, drained, flush, poll_parallel, process_datagram, queue_reply,
                                 row_addr, settle_parallel, turn_empty, turn_read)
from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.kernels.tables import CNT_BATCHES, CNT_POLLS, CNT_RECV_ERRORS, CTL_DRAIN, CTL_SHED, CTL_STOP
from rtdecoder.transport import Opened, Probe, ServeContext, TransportSpec, register
from rtdecoder.transport import libc as L

SO_BUSY_POLL = getattr(socket, "SO_BUSY_POLL", 46)
SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>
STREAM_ID_OFFSET = 10  # docs/wire-protocol.md §2: the header's stream_id field, little-endian u16


def steering_program(workers: int) -> list[tuple[int, int, int, int]]:
    """The classic BPF program ``return (pkt[10] | pkt[11] << 8) % workers``, as
    ``(code, jt, jf, k)`` instructions (``linux/filter.h``). A failed load (a datagram shorter
    than 12 bytes) ends the program returning 0."""
    return [
        (0x30, 0, 0, STREAM_ID_OFFSET),      # ldb [10]        A = low byte
        (0x07, 0, 0, 0),                     # tax             X = A
        (0x30, 0, 0, STREAM_ID_OFFSET + 1),  # ldb [11]        A = high byte
        (0x64, 0, 0, 8),                     # lsh #8
        (0x4C, 0, 0, 0),                     # or x
        (0x94, 0, 0, workers),               # mod #workers
        (0x16, 0, 0, 0),                     # ret a
    ]


class UdpTransport:
    """``workers`` bound, non-blocking UDP sockets on one address (one per worker).

    Args:
        host, port: address to bind (port 0 picks a free port; see ``address``).
        workers: sockets in the ``SO_REUSEPORT`` group; datagrams are steered by stream id.
        busy_poll_us: ``SO_BUSY_POLL`` to ask for (0: leave it off); ``busy_poll`` says what
            the kernel granted.
        rcvbuf_bytes, sndbuf_bytes: socket buffer sizes asked of the kernel (it may cap them).

    Raises:
        OSError: the address cannot be bound, or the steering program cannot be attached (the
            message names the address or the option).
    """

    name = "udp"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, workers: int = 1, busy_poll_us: int = 50,
                 rcvbuf_bytes: int = 4 << 20, sndbuf_bytes: int = 1 << 20):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socks: list[socket.socket] = []
        self._prog = None
        try:
            for i in range(workers):
                s = socket.socket(family, socket.SOCK_DGRAM)
                self.socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf_bytes)
                if workers > 1:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                try:
                    s.bind((host, port))
                except OSError as e:
                    raise OSError(e.errno, f"cannot bind UDP {host}:{port}: {e.strerror} (choose another with "
                                           "--port, or port in the config file's [server])") from None
                if i == 0:
                    port = s.getsockname()[1]
                    if workers > 1:
                        self._attach_steering(s, workers)
                s.setblocking(False)
        except BaseException:
            self.close()
            raise
        self.address = self.socks[0].getsockname()[:2]
        self.busy_poll = self._busy_poll(busy_poll_us)

    @property
    def sock(self) -> socket.socket:
        return self.socks[0]

    def _attach_steering(self, s: socket.socket, workers: int) -> None:
        prog = steering_program(workers)
        self._prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
        fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(self._prog))
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
        except OSError as e:
            raise OSError(e.errno, f"cannot attach the stream-steering BPF program (SO_ATTACH_REUSEPORT_CBPF, "
                                   f"Linux 4.5+): {e.strerror}; run with one worker") from None

    def _busy_poll(self, us: int) -> str:
        if us <= 0:
            return "SO_BUSY_POLL off (not asked)"
        try:
            for s in self.socks:
                s.setsockopt(socket.SOL_SOCKET, SO_BUSY_POLL, us)
        except OSError as e:
            return (f"SO_BUSY_POLL {us} µs refused ({e.strerror}): it needs CAP_NET_ADMIN above "
                    "net.core.busy_read; the loop busy-polls in user space regardless")
        note = " (no effect on loopback: it has no NAPI queue)" if self.address[0] in ("127.0.0.1", "::1") else ""
        return f"SO_BUSY_POLL {us} µs{note}"

    def fds(self) -> list[int]:
        return [s.fileno() for s in self.socks]

    def close(self) -> None:
        for s in self.socks:
            s.close()


@njit(cache=True, nogil=True, _nrt=False)
def serve_loop(fd, rxhdr, rxname, rxbuf, batch, echo, tables, state, ws, tx):
    """Busy-poll ``fd`` until ``state.ctl[CTL_STOP]`` is set, or, once ``ctl[CTL_DRAIN]`` holds a
    deadline, until the socket is empty and no shot of this worker's streams is in flight (or the
    deadline passes); hand every datagram to ``process_datagram``.

    Replies go with one ``sendmmsg`` when the receive batch has been handled (``flush``),
    earlier when the transmit batch is full, and at once after a datagram that completed a
    shot. Overload: after ``ctl[CTL_BUSY_BATCHES]`` consecutive full batches the worker sheds
    (``ctl[CTL_SHED]`` = 1): SYNDROME datagrams that would start a new shot are answered BUSY
    until a read comes back short or empty, so the shots in flight finish and the backlog,
    bounded by the socket's receive buffer, drains. Every read asks for ``batch`` datagrams (the
    ring position goes back to slot 0 where fewer slots are left), so a full read always means
    the socket held a whole batch.

    Args:
        rxhdr, rxname, rxbuf: the receive ring's ``MessageBatch`` arrays (a power of two of
            slots); ``batch``: most datagrams per ``recvmmsg``.
        echo: send each datagram back unchanged and do nothing else (the transport floor).
        tables, state, ws, tx: as ``process_datagram``.

    Returns:
        The number of datagrams handled.
    """
    ctl = state.ctl
    counters = state.counters
    parallel = state.pjobs.shape[0] > 0  # the engine has parallel streams: poll their helpers
    slots = rxbuf.shape[0]
    mask = slots - 1
    slot = 0
    handled = 0
    full = 0
    ctl[CTL_SHED] = 0
    while L.load_acquire(ctl, CTL_STOP) == 0:
        counters[CNT_POLLS] += 1
        draining = L.load_acquire(ctl, CTL_DRAIN) != 0  # read first: see ``drained``
        if slots - slot < batch:  # every read asks for a whole batch, so a full one means a backlog
            slot = 0
        r = L.recvmmsg(fd, rxhdr.ctypes.data + slot * (8 * L.HDR_WORDS), batch, L.MSG_DONTWAIT | L.MSG_TRUNC)
        if r <= 0:
            empty = True
            if r < 0:
                e = L.errno()
                empty = e == L.EAGAIN
                if e != L.EAGAIN and e != L.EINTR:
                    counters[CNT_RECV_ERRORS] += 1
            if empty:  # the socket is empty: no backlog
                full = turn_empty(ctl)
            if parallel and poll_parallel(tables, state, ws, tx, fd) >= 0 and tx.q[0] > 0:
                flush(fd, tx, state)  # windows the helpers finished: their replies go now
            if draining and drained(ctl, tables.st):
                break
            continue
        rx = monotonic_ns()
        counters[CNT_BATCHES] += 1
        full = turn_read(ctl, counters, r, batch, full)  # a whole batch read: a backlog, if it lasts
        for i in range(r):
            s = slot + i
            n = rxhdr[s, L.H_LEN] & 0xFFFFFFFF
            name_addr = rxhdr[s, L.H_NAME]
            namelen = rxhdr[s, L.H_NAMELEN] & 0xFFFFFFFF
            if echo:  # send straight from the ring slot (no copy, any length up to the slot)
                if tx.q[0] == tx.buf.shape[0]:
                    flush(fd, tx, state)
                queue_reply(tx, row_addr(rxbuf, s), min(n, rxbuf.shape[1]), 0, name_addr, namelen)
            else:
                src_hi, src_lo, src_port = L.source_of(rxname[s])
                if process_datagram(rxbuf[s], n, rx, name_addr, namelen, src_hi, src_lo, src_port, ctl[CTL_SHED], fd,
                                    tables, state, ws, tx):
                    flush(fd, tx, state)
            rxhdr[s, L.H_NAMELEN] = L.SOCKADDR_BYTES  # value-result: reset for the next receive
        if parallel:
            poll_parallel(tables, state, ws, tx, fd)
        # the replies point into this batch's slots (names, echoed data): they leave before the
        # next recvmmsg can overwrite them
        flush(fd, tx, state)
        slot = (slot + r) & mask
        handled += r
    if parallel:  # the helpers' jobs come back before the loop returns (and its helpers stop)
        settle_parallel(tables, state, ws, tx, fd, PARALLEL_WAIT_NS)
        flush(fd, tx, state)
    return handled


class UdpEndpoint:
    """One worker's side of the UDP transport: its socket and receive ring."""

    def __init__(self, fd: int, ring, batch: int, echo: bool):
        self.fd, self.ring, self.batch, self.echo = fd, ring, batch, echo
        self.rx = L.MessageBatch(ring.slots, ring.slot_bytes, buffers=ring.array)

    def _loop(self, worker, state, tables):
        return serve_loop(self.fd, self.rx.hdr, self.rx.name, self.ring.array, self.batch, self.echo, tables,
                          state.arrays, state.workspace, state.tx_arrays)

    def serve(self, worker) -> None:
        worker.run_loop(lambda s: self._loop(worker, s, worker.engine.tables))

    def warm_up(self, worker) -> None:
        """Compile (or load) ``serve_loop``: run it once with the stop word set."""
        s = worker.state
        stop = s.ctl[CTL_STOP]
        s.ctl[CTL_STOP] = 1
        try:
            self._loop(worker, s, worker.engine.tables)
        finally:
            s.ctl[CTL_STOP] = stop


def _open(ctx: ServeContext) -> Opened:
    from rtdecoder.config import format_ids
    from rtdecoder.ring import PinnedRing
    from rtdecoder.worker import Worker

    cfg = ctx.cfg
    t = UdpTransport(cfg.host, cfg.port, workers=len(ctx.cpus), busy_poll_us=cfg.busy_poll_us)
    print(f"rtdecoder: udp on {t.address[0]}:{t.address[1]}, {t.busy_poll}", file=ctx.log)

    def workers(engine, gpu) -> list:
        out = []
        for i, (cpu, fd) in enumerate(zip(ctx.cpus, t.fds())):
            ring = PinnedRing(cfg.ring_slots, ctx.slot_bytes)
            slot = gpu.slot_arrays(i + 1) if gpu is not None else None
            out.append(Worker(engine, UdpEndpoint(fd, ring, cfg.recv_batch, ctx.echo), cpu, f"rtdecoder-udp-{i}",
                              gpu_slot=slot, error_limit=(cfg.error_replies_per_s, cfg.error_burst)))
            owned = sorted(s for s in engine.streams if s % len(ctx.cpus) == i)
            where = f"pinned to CPU {cpu}" if cpu is not None else "not pinned (give --cpus to pin)"
            print(f"rtdecoder: worker {i} {where}, streams {format_ids(owned)}, ring {ring.slots} x {ring.slot_bytes} "
                  f"bytes {ring.pinned_reason}", file=ctx.log)
        return out

    return Opened(t.address, workers, t.close, t.fds())


class UdpController:
    """The controller's side: a connected, non-blocking UDP socket (the emulator's compiled shot
    driver sends and receives on ``fileno()`` itself)."""

    def __init__(self, host: str, port: int, stream_id: int = 0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.connect((host, port))
        self.sock.setblocking(False)
        self._rx = bytearray(65536)
        self._rxv = memoryview(self._rx)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: bytes) -> None:
        try:
            self.sock.send(msg)
        except ConnectionRefusedError:  # nothing listens yet: the caller retries or times out
            pass

    def recv(self) -> memoryview | None:
        try:
            n = self.sock.recv_into(self._rx)
        except (BlockingIOError, ConnectionRefusedError):
            return None
        return self._rxv[:n]

    def close(self) -> None:
        self.sock.close()


SPEC = register(TransportSpec(
    name="udp", summary="UDP datagrams, busy-polled with recvmmsg/sendmmsg, one socket per worker",
    probe=lambda: Probe(True, "UDP sockets (always available)"), open=_open, controller=UdpController,
    auto=2, remote=True, echo=True))
