"""The data plane over AF_XDP: a compiled loop on one socket's rings (``rtdecoder.transport.xsk``)
that takes whole frames from the RX ring, checks them (``rtdecoder.kernels.frames.parse_udp``),
hands each UDP payload to ``rtdecoder.dataplane.process_datagram`` like the UDP transport, builds
the reply frames (``frames.write_reply``) in free UMEM frames on the TX ring, and gives the RX
frames back through the fill ring, with no system call per frame (one ``sendto`` kick per batch
of replies, and a ``recvfrom`` kick when the kernel asks for the fill ring to be refilled; the
kernel's "need wakeup" flags, Documentation/networking/af_xdp.rst).

A reply's destination is its request frame: ``process_datagram`` gets the frame's address and
header length as the "name" the UDP transport gets a ``sockaddr``; a parallel stream keeps a copy
of those headers for the replies it sends later (``Tables.paddr``).

Registered as the ``xdp`` transport (``--transport xdp --xdp-interface IF``): ``open`` loads the
redirect program (``rtdecoder.transport.xdp_prog``) and attaches it natively, else generically,
and makes one socket (``rtdecoder.transport.xsk``) and worker per receive queue in
``xdp_queues``; frames are counted by status (``rtdecoder_frames_total{status}``).

A datagram longer than the link's MTU arrives as IP fragments, which are not reassembled: its
first fragment is answered ``TOO_LARGE`` (docs/wire-protocol.md §7) from the header it holds, and
the rest go to the kernel, which drops them when reassembly times out. A frame longer than a UMEM
frame (4 KiB, less the kernel's headroom) cannot arrive at all (an MTU above about 3,500 bytes):
the kernel drops it before the service sees it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder import protocol as P
from rtdecoder.dataplane import (FLUSH_NONE, PARALLEL_WAIT_NS, drained, flush, poll_parallel, process_datagram,
                                 settle_parallel, turn_empty, turn_read)
from rtdecoder.kernels import cuqr as CQ
from rtdecoder.kernels import frames as F
from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.kernels.tables import CNT_BATCHES, CNT_FRAMES, CNT_POLLS, CNT_SEND_DROPPED, CTL_DRAIN, CTL_SHED, \
    CTL_STOP
from rtdecoder.transport import Opened, Probe, ServeContext, TransportSpec, register
from rtdecoder.transport import libc as L
from rtdecoder.transport.xsk import FRAME, XDP_RING_NEED_WAKEUP

PROD, CONS, FLAGS, DESC = 0, 1, 2, 3
MIN_ECHO = max(P.HEADER_LEN, CQ.HEADER_BYTES)
"""A first fragment holding fewer payload bytes than this has no header to echo in a TOO_LARGE
reply: it is only counted."""
"""A ring as the loop takes it: ``(producer, consumer, flags, desc)`` (``xsk.Ring``'s arrays)."""


def ring_tuple(ring) -> tuple:
    return ring.producer, ring.consumer, ring.flags, ring.desc


@njit(cache=True, nogil=True, _nrt=False)
def reclaim(comp, free, nfree):
    """Completed TX frames (the completion ring) back to the free list; returns its length."""
    cprod = L.load_acquire(comp[PROD], 0)
    ccons = np.int64(comp[CONS][0])
    cdesc = comp[DESC]
    cmask = cdesc.shape[0] - 1
    while ccons != cprod:
        free[nfree] = cdesc[ccons & cmask]
        nfree += 1
        ccons = (ccons + 1) & 0xFFFFFFFF
    L.store_release(comp[CONS], 0, ccons)
    return nfree


@njit(cache=True, inline="always", _nrt=False)
def rx_frame(umem, rdesc, k, port, out, counters):
    """RX ring entry ``k``: its frame's UMEM address, checked by ``parse_udp`` (``out`` written)
    and counted by status; returns ``(address, status)``."""
    d = rdesc[k & (rdesc.shape[0] - 1)]
    addr = np.int64(d[0])
    length = np.int64(d[1] & 0xFFFFFFFF)
    status = F.parse_udp(umem[addr:addr + length], length, port, out)
    counters[CNT_FRAMES + status] += 1
    return addr, status


@njit(cache=True, nogil=True, _nrt=False)
def xdp_echo(fd, port, umem, rdesc, cons, n, txr, comp, free, nfree, out, counters):
    """Echo mode, the transport floor: each of the ``n`` RX frames from ``cons`` that
    ``parse_udp`` accepts goes back to its sender with its payload unchanged, in a reply frame
    built in a free TX frame; nothing is decoded. One kick for the batch. Returns the free TX
    frames left."""
    nfree = reclaim(comp, free, nfree)
    tdesc = txr[DESC]
    tmask = tdesc.shape[0] - 1
    tprod = np.int64(txr[PROD][0])
    room = tdesc.shape[0] - ((tprod - L.load_acquire(txr[CONS], 0)) & 0xFFFFFFFF)
    sent = 0
    for i in range(n):
        addr, status = rx_frame(umem, rdesc, cons + i, port, out, counters)
        if status != F.OK:
            continue
        if nfree == 0 or room == 0:
            counters[CNT_SEND_DROPPED] += 1
            continue
        nfree -= 1
        at = free[nfree]
        dst = umem[at:at + FRAME]
        off = F.reply_payload_offset(out[F.F_L3], out[F.F_FAMILY])
        p = addr + out[F.F_PAYLOAD]
        for k in range(out[F.F_PAYLOAD_LEN]):
            dst[off + k] = umem[p + k]
        flen = F.write_reply(umem[addr:addr + FRAME], out[F.F_L3], out[F.F_FAMILY], dst, out[F.F_PAYLOAD_LEN])
        tdesc[tprod & tmask, 0] = at
        tdesc[tprod & tmask, 1] = flen
        tprod = (tprod + 1) & 0xFFFFFFFF
        room -= 1
        sent += 1
    if sent:
        L.store_release(txr[PROD], 0, tprod)
        L.send(fd, 0, 0, L.MSG_DONTWAIT)
    return nfree


@njit(cache=True, nogil=True, _nrt=False)
def xdp_flush(fd, umem, txr, comp, free, nfree, tables, state, tx):
    """Turn the queued replies into frames on the TX ring and kick the kernel; returns the free
    frames left. Send times are stamped and traces closed first (``dataplane.flush``)."""
    q = tx.q[0]
    nfree = reclaim(comp, free, nfree)
    if q == 0:
        return nfree
    flush(FLUSH_NONE, tx, state)
    ub = umem.ctypes.data
    flat = tables.paddr.reshape(-1)  # a parallel stream's copy of its request headers
    pb = flat.ctypes.data
    tdesc = txr[DESC]
    tmask = tdesc.shape[0] - 1
    tprod = np.int64(txr[PROD][0])
    room = tdesc.shape[0] - ((tprod - L.load_acquire(txr[CONS], 0)) & 0xFFFFFFFF)
    sent = 0
    for j in range(q):
        name = tx.hdr[j, L.H_NAME]  # the request frame's headers: in the UMEM, or a parallel stream's copy
        hlen = tx.hdr[j, L.H_NAMELEN]
        if ub <= name and name + hlen <= ub + umem.shape[0]:
            req = umem[name - ub:name - ub + hlen]
        elif pb <= name and name + hlen <= pb + flat.shape[0]:
            req = flat[name - pb:name - pb + hlen]
        else:
            req = umem[0:0]
        if nfree == 0 or room == 0 or req.shape[0] < F.ETH_HEADER:
            state.counters[CNT_SEND_DROPPED] += 1
            continue
        l3 = F.ETH_HEADER + (F.VLAN_TAG if F.be16(req, 12) == F.ETH_P_8021Q else 0)
        family = 4 if F.be16(req, l3 - 2) == F.ETH_P_IPV4 else 6
        nfree -= 1
        addr = free[nfree]
        out = umem[addr:addr + FRAME]
        off = F.reply_payload_offset(l3, family)
        length = tx.iov[j, 1]
        row = tx.buf[j]
        for i in range(length):
            out[off + i] = row[i]
        flen = F.write_reply(req, l3, family, out, length)
        tdesc[tprod & tmask, 0] = addr
        tdesc[tprod & tmask, 1] = flen
        tprod = (tprod + 1) & 0xFFFFFFFF
        room -= 1
        sent += 1
    tx.q[0] = 0
    if sent:
        L.store_release(txr[PROD], 0, tprod)
        L.send(fd, 0, 0, L.MSG_DONTWAIT)  # copy mode sends only when told to
    return nfree


@njit(cache=True, nogil=True, _nrt=False)
def xdp_serve_loop(fd, port, umem, rxr, fill, txr, comp, free, free_n, fout, batch, echo, tables, state, ws, tx):
    """Busy-poll the RX ring until ``state.ctl[CTL_STOP]`` is set (or, draining, until nothing is in
    flight): every frame checked and counted by status (``CNT_FRAMES``), every datagram to
    ``port`` through ``process_datagram``, the replies sent as frames (``xdp_flush``) after each
    batch of at most ``batch`` frames, and the RX frames given back through the fill ring.

    Args:
        fd: the AF_XDP socket; port: the service's UDP port; umem: the UMEM (uint8).
        rxr, fill, txr, comp: the rings as ``ring_tuple`` gives them.
        free: int64, room for every TX frame: the free TX frames' UMEM addresses, the first
            ``free_n[0]`` of them (kept up to date on return).
        fout: int64 ``(frames.NUM_F,)``, scratch for ``parse_udp``.
        echo: send each datagram back unchanged and do nothing else (``xdp_echo``: the
            transport floor).

    Returns:
        Frames received.
    """
    ctl = state.ctl
    counters = state.counters
    parallel = state.pjobs.shape[0] > 0
    out = fout
    nfree = free_n[0]
    ub = umem.ctypes.data
    rdesc = rxr[DESC]
    rmask = rdesc.shape[0] - 1
    fdesc = fill[DESC]
    fmask = fdesc.shape[0] - 1
    handled = 0
    full = turn_empty(ctl)
    while L.load_acquire(ctl, CTL_STOP) == 0:
        counters[CNT_POLLS] += 1
        draining = L.load_acquire(ctl, CTL_DRAIN) != 0
        prod = L.load_acquire(rxr[PROD], 0)
        cons = np.int64(rxr[CONS][0])
        if prod == cons:
            full = turn_empty(ctl)
            if parallel:
                poll_parallel(tables, state, ws, tx, FLUSH_NONE)
            if tx.q[0] > 0:
                nfree = xdp_flush(fd, umem, txr, comp, free, nfree, tables, state, tx)
            if draining and drained(ctl, tables.st):
                break
            continue
        n = min((prod - cons) & 0xFFFFFFFF, batch)
        rx = monotonic_ns()
        counters[CNT_BATCHES] += 1
        full = turn_read(ctl, counters, n, batch, full)  # a whole batch waiting: a backlog, if it lasts
        if echo:
            nfree = xdp_echo(fd, port, umem, rdesc, cons, n, txr, comp, free, nfree, out, counters)
        for i in range(0 if echo else n):
            addr, status = rx_frame(umem, rdesc, cons + i, port, out, counters)
            if status != F.OK and (status != F.TOO_LARGE or out[F.F_PRESENT] < MIN_ECHO):
                continue
            p = addr + out[F.F_PAYLOAD]
            if tx.q[0] == tx.buf.shape[0]:
                nfree = xdp_flush(fd, umem, txr, comp, free, nfree, tables, state, tx)
            # a first fragment: the part present, and the length announced (longer: TOO_LARGE)
            process_datagram(umem[p:p + out[F.F_PRESENT]], out[F.F_PAYLOAD_LEN], rx, ub + addr, out[F.F_PAYLOAD],
                             out[F.F_SRC_HI], out[F.F_SRC_LO], out[F.F_SRC_PORT], ctl[CTL_SHED], FLUSH_NONE, tables,
                             state, ws, tx)
        if parallel:
            poll_parallel(tables, state, ws, tx, FLUSH_NONE)
        nfree = xdp_flush(fd, umem, txr, comp, free, nfree, tables, state, tx)  # before the frames go back
        fprod = np.int64(fill[PROD][0])
        for i in range(n):
            fdesc[(fprod + i) & fmask] = rdesc[(cons + i) & rmask, 0] & ~np.uint64(FRAME - 1)
        L.store_release(fill[PROD], 0, fprod + n)
        L.store_release(rxr[CONS], 0, cons + n)
        if fill[FLAGS][0] & XDP_RING_NEED_WAKEUP:
            L.recv(fd, 0, 0, L.MSG_DONTWAIT)
        handled += n
    if parallel:
        settle_parallel(tables, state, ws, tx, FLUSH_NONE, PARALLEL_WAIT_NS)
        nfree = xdp_flush(fd, umem, txr, comp, free, nfree, tables, state, tx)
    free_n[0] = nfree
    return handled


class XdpEndpoint:
    """One worker's side of the AF_XDP transport: its socket (one receive queue), the socket's TX
    frames (the UMEM's second half) and the loop's scratch."""

    def __init__(self, sock, port: int, batch: int, echo: bool = False):
        self.sock, self.port, self.batch, self.echo = sock, port, batch, echo
        first = sock.rx_frames_n
        self.free = np.zeros(sock.frames, np.int64)
        self.free[:sock.frames - first] = np.arange(first, sock.frames, dtype=np.int64) * FRAME
        self.free_n = np.array([sock.frames - first], np.int64)
        self.fout = np.zeros(F.NUM_F, np.int64)
        self.rings = tuple(ring_tuple(r) for r in (sock.rx, sock.fill, sock.tx, sock.completion))

    def loop(self, state, tables):
        """``xdp_serve_loop`` on this socket for ``state`` (a ``WorkerState``) and ``tables``."""
        return xdp_serve_loop(self.sock.sock.fileno(), self.port, self.sock.umem, *self.rings, self.free, self.free_n,
                              self.fout, self.batch, self.echo, tables, state.arrays, state.workspace,
                              state.tx_arrays)

    def serve(self, worker) -> None:
        worker.run_loop(lambda s: self.loop(s, worker.engine.tables))

    def warm_up(self, worker) -> None:
        """Compile (or load) ``xdp_serve_loop``: run it once with the stop word set."""
        s = worker.state
        stop = s.ctl[CTL_STOP]
        s.ctl[CTL_STOP] = 1
        try:
            self.loop(s, worker.engine.tables)
        finally:
            s.ctl[CTL_STOP] = stop


PAGES = {"hugetlb": "2 MiB huge pages", "thp": "4 KiB pages with transparent huge pages asked for (reserve "
         "huge pages, vm.nr_hugepages, to be sure of them)", "4k": "4 KiB pages"}


def _probe() -> Probe:
    import os
    import socket

    from rtdecoder.transport.xdp_prog import libbpf
    from rtdecoder.transport.xsk import AF_XDP

    if os.geteuid() != 0:
        return Probe(False, "AF_XDP needs root (CAP_NET_ADMIN and CAP_BPF)")
    try:
        libbpf()
    except OSError as e:
        return Probe(False, str(e))
    try:
        socket.socket(AF_XDP, socket.SOCK_RAW, 0).close()
    except OSError as e:
        return Probe(False, f"this kernel has no AF_XDP sockets ({e.strerror}; CONFIG_XDP_SOCKETS)")
    return Probe(True, "AF_XDP sockets and libbpf available")


def _serves(cfg) -> str | None:
    import socket

    if not cfg.xdp_interface:
        return "no interface given (--xdp-interface, xdp_interface in [server]): AF_XDP serves one network interface"
    try:
        socket.if_nametoindex(cfg.xdp_interface)
    except OSError:
        return f"interface {cfg.xdp_interface!r} does not exist here (ip link lists those that do)"
    if cfg.port == 0:
        return "AF_XDP needs a fixed --port: the redirect program matches it"
    return None


def _open(ctx: ServeContext) -> Opened:
    import socket

    from rtdecoder.config import format_ids
    from rtdecoder.transport.xdp_prog import RedirectProgram
    from rtdecoder.transport.xsk import XskSocket
    from rtdecoder.worker import Worker

    cfg = ctx.cfg
    ifindex = socket.if_nametoindex(cfg.xdp_interface)
    prog = RedirectProgram(cfg.port, queues=max(cfg.xdp_queues) + 1)
    socks: list = []
    try:
        attach = "native"
        try:
            prog.attach(ifindex, "native")
        except OSError:
            attach = "skb"
            prog.attach(ifindex, "skb")
        for q in cfg.xdp_queues:
            socks.append(XskSocket(ifindex, q, mode=cfg.xdp_mode, xskmap_fd=prog.map_fd))
    except BaseException:
        for s in socks:
            s.close()
        prog.close()
        raise
    print(f"rtdecoder: xdp on {cfg.xdp_interface} (index {ifindex}) port {cfg.port}, queues "
          f"{list(cfg.xdp_queues)}: program attached in {attach} mode, sockets in {socks[0].mode} mode, each UMEM "
          f"{socks[0].umem.nbytes >> 20} MiB on {PAGES[socks[0].pages]}", file=ctx.log)

    def workers(engine, gpu) -> list:
        out = []
        for i, s in enumerate(socks):
            cpu = ctx.cpus[i % len(ctx.cpus)]
            slot = gpu.slot_arrays(i + 1) if gpu is not None else None
            out.append(Worker(engine, XdpEndpoint(s, cfg.port, cfg.recv_batch, ctx.echo), cpu, f"rtdecoder-xdp-{i}",
                              gpu_slot=slot, error_limit=(cfg.error_replies_per_s, cfg.error_burst)))
            owned = sorted(x for x in engine.streams if x % len(socks) == i)
            where = f"pinned to CPU {cpu}" if cpu is not None else "not pinned (give --cpus to pin)"
            print(f"rtdecoder: worker {i} on queue {s.queue} {where}, streams {format_ids(owned)}", file=ctx.log)
        return out

    def close() -> None:
        for s in socks:
            s.close()
        prog.close()

    return Opened((cfg.host, cfg.port), workers, close, [])


def _controller(host: str, port: int, stream_id: int = 0):
    from rtdecoder.transport.udp import UdpController

    return UdpController(host, port, stream_id)


SPEC = register(TransportSpec(
    name="xdp", summary="AF_XDP: whole frames from the driver's queue in shared rings, busy-polled, no system call "
                        "per datagram (the controller speaks plain UDP)",
    probe=_probe, open=_open, controller=_controller, auto=1, remote=True, serves=_serves, echo=True))
