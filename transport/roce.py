"""RoCE transport: a reliable-connected queue pair per controller, through pyverbs.

docs/wire-protocol.md §11 is the specification; this module implements both sides of it.

Why reliable connected (RC) with RDMA WRITE: the controller writes each message (the same bytes
as a UDP datagram, §2–§4) straight into a slot of the service's receive ring, which is the memory
region, and then writes the slot's 8-byte *ready word* (length and sequence number) with a
second RDMA WRITE on the same QP. RC executes a QP's writes in order, so a reader that sees the
ready word sees the message. The service's compiled loop (``rtdecoder.transport.ring.ring_serve_loop``)
finds new messages by polling the ready word of the next slot in memory: no verbs call and no
completion queue entry per message, which from numba is the cheapest possible check (one cached
load until the line changes). Polling the completion queue instead would need ``ibv_poll_cq``,
an inline function behind a driver function pointer that pyverbs does not expose to compiled
code. UD would need a posted receive and a completion per message, and its messages are
unreliable, which the protocol would then have to handle as loss.

Replies travel the same way in the other direction: the service RDMA-writes each reply, then its
ready word, into the controller's reply ring (registered by the controller and announced at
rendezvous). The service posts those writes with pyverbs from the data plane's reply escape
(``RoceReplyPoster.post``), one ``objmode`` call per message that produced replies.

Flow control: the service RDMA-writes its count of consumed messages into the controller's credit
word (the first 8 bytes of the controller's region) every ``slots // 4`` messages; the controller
may send message ``n`` only when ``n - credit <= slots``. The controller consumes replies at once,
so the service needs no credit from it beyond the reply ring's size (a controller that falls more
than ``reply_slots`` replies behind loses replies, and the ready words' sequence numbers show it).

Rendezvous: a small TCP exchange on the service's port (``RdvInfo``, 64 bytes each way): queue
pair number, PSN, GID, rkey, region address and ring geometry. The TCP connection stays open for
the life of the queue pair; closing it ends the session.

``probe()`` says exactly what is missing where RoCE cannot run (``--transport auto`` then takes
UDP and says why); the verbs calls themselves run only where pyverbs and an active RoCE port
exist.
"""

from __future__ import annotations

import ctypes.util
import importlib
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtdecoder.kernels.tables import CTL_STOP
from rtdecoder.transport import Opened, Probe, ServeContext, TransportSpec, register
from rtdecoder.transport import libc as L
from rtdecoder.transport.ring import CREDIT_OFFSET, HEADER_BYTES, READY_BYTES, RingReader, RingSessions, RingWriter

RDV_MAGIC = 0x56445452  # "RTDV" little-endian
RDV_VERSION = 1
RDV = struct.Struct("<IHHII16sQIIIIQ")
"""§11.2: magic, version, flags, qp_num, psn, gid, region address, rkey, slot_bytes, slots, mtu,
reserved — 64 bytes, little-endian."""
assert RDV.size == 64
IBV_PORT_ACTIVE = 4
IBV_LINK_LAYER_ETHERNET = 2


@dataclass(frozen=True)
class RdvInfo:
    """One side's rendezvous message (§11.2)."""

    qp_num: int
    psn: int
    gid: bytes
    addr: int
    rkey: int
    slot_bytes: int
    slots: int
    mtu: int
    flags: int = 0

    def pack(self) -> bytes:
        return RDV.pack(RDV_MAGIC, RDV_VERSION, self.flags, self.qp_num, self.psn, self.gid, self.addr, self.rkey,
                        self.slot_bytes, self.slots, self.mtu, 0)

    @classmethod
    def unpack(cls, data: bytes) -> "RdvInfo":
        """Raises ``ValueError`` on a short message, a wrong magic or version, or a bad geometry."""
        if len(data) != RDV.size:
            raise ValueError(f"rendezvous message is {len(data)} bytes, expected {RDV.size}")
        magic, version, flags, qpn, psn, gid, addr, rkey, slot_bytes, slots, mtu, _ = RDV.unpack(data)
        if magic != RDV_MAGIC:
            raise ValueError(f"rendezvous magic {magic:#x} is not {RDV_MAGIC:#x}")
        if version != RDV_VERSION:
            raise ValueError(f"rendezvous version {version} is not supported (this side speaks {RDV_VERSION})")
        if slots < 2 or slots & (slots - 1) or slot_bytes < 64 + READY_BYTES or slot_bytes % 8:
            raise ValueError(f"ring geometry {slots} x {slot_bytes} bytes: slots must be a power of two >= 2 and "
                             f"slots at least {64 + READY_BYTES} bytes, a multiple of 8")
        if qpn >= 1 << 24 or psn >= 1 << 24:
            raise ValueError("queue pair number and PSN are 24-bit values")
        return cls(qpn, psn, gid, addr, rkey, slot_bytes, slots, mtu, flags)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the peer closed the rendezvous connection")
        buf += chunk
    return buf


def rendezvous_accept(conn: socket.socket, mine: RdvInfo) -> RdvInfo:
    """Service side: read the controller's ``RdvInfo``, answer with ``mine``."""
    theirs = RdvInfo.unpack(recv_exact(conn, RDV.size))
    conn.sendall(mine.pack())
    return theirs


def rendezvous_connect(sock: socket.socket, mine: RdvInfo) -> RdvInfo:
    """Controller side: send ``mine``, read the service's ``RdvInfo``."""
    sock.sendall(mine.pack())
    return RdvInfo.unpack(recv_exact(sock, RDV.size))


# --- what the host has -------------------------------------------------------------------------
@dataclass
class RdmaPort:
    device: str
    port: int
    state: str
    link_layer: str
    gids: list[str] = field(default_factory=list)

    @property
    def active_roce(self) -> bool:
        return self.state.endswith("ACTIVE") and self.link_layer.lower() == "ethernet"


@dataclass
class RoceStatus:
    """``usable``: an RDMA device with an active Ethernet (RoCE) port and pyverbs to drive it.
    ``reason``: why not (what is missing and how to fix it), or what was found."""

    usable: bool
    reason: str
    ports: list[RdmaPort]
    pyverbs: str
    libibverbs: str | None


def sysfs_ports(root: str = "/sys/class/infiniband") -> list[RdmaPort]:
    """RDMA devices and ports as the kernel lists them (no library needed)."""
    out: list[RdmaPort] = []
    base = Path(root)
    if not base.is_dir():
        return out
    for dev in sorted(base.iterdir()):
        for port in sorted((dev / "ports").glob("*"), key=lambda p: int(p.name) if p.name.isdigit() else 0):
            def read(name: str) -> str:
                try:
                    return (port / name).read_text().strip()
                except OSError:
                    return "?"
            gids = []
            for g in sorted((port / "gids").glob("*"), key=lambda p: int(p.name))[:4]:
                try:
                    text = g.read_text().strip()
                except OSError:
                    continue
                if text.strip("0:"):
                    gids.append(text)
            out.append(RdmaPort(dev.name, int(port.name), read("state"), read("link_layer"), gids))
    return out


def probe() -> RoceStatus:
    """Whether RoCE can be used here, and if not, exactly what is missing."""
    lib = ctypes.util.find_library("ibverbs")
    try:
        importlib.import_module("pyverbs")
        pv = "importable"
    except ImportError as e:
        pv = f"not importable ({e})"
    ports = sysfs_ports()
    if not pv.startswith("importable"):
        return RoceStatus(False, "no pyverbs: install Debian's python3-pyverbs (system Python) or build the pyverbs "
                                 "sdist against rdma-core (libibverbs-dev, cython) into this environment",
                          ports, pv, lib)
    if lib is None:
        return RoceStatus(False, "no libibverbs: install rdma-core (Debian: ibverbs-providers, libibverbs1)",
                          ports, pv, lib)
    try:
        from pyverbs.device import get_device_list

        devices = get_device_list()
    except Exception as e:  # noqa: BLE001 - pyverbs raises its own error types
        return RoceStatus(False, f"no RDMA device: get_device_list() failed ({e}); load the NIC's RDMA driver "
                                 "(mlx5_ib, irdma, bnxt_re) or rdma_rxe for soft-RoCE", ports, pv, lib)
    if not devices:
        return RoceStatus(False, "no RDMA device: get_device_list() is empty; load the NIC's RDMA driver "
                                 "(mlx5_ib, irdma, bnxt_re) or rdma_rxe for soft-RoCE", ports, pv, lib)
    active = [p for p in ports if p.active_roce]
    if not active:
        listed = ", ".join(f"{p.device}/{p.port} {p.state} {p.link_layer}" for p in ports) or "none in sysfs"
        return RoceStatus(False, f"no active RoCE port (ports: {listed}); bring the link up and check the cable "
                                 "and `rdma link`", ports, pv, lib)
    p = active[0]
    return RoceStatus(True, f"{p.device} port {p.port} is ACTIVE on Ethernet (RoCE)", ports, pv, lib)


# --- verbs (run only where pyverbs and a device exist) -----------------------------------------
def rts_attr(port: int, mtu: int, lid: int, psn: int, peer: RdvInfo, gid_index: int):
    """The pyverbs ``QPAttr`` that takes an RC queue pair to RTS towards ``peer`` (§11.1 step 3):
    remote write access, path MTU the smaller of the two, global route to the peer's GID."""
    import pyverbs.enums as e
    from pyverbs.addr import GID, AHAttr, GlobalRoute
    from pyverbs.qp import QPAttr

    attr = QPAttr(port_num=port)
    attr.qp_access_flags = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
    attr.path_mtu = min(mtu, peer.mtu)
    attr.dest_qp_num = peer.qp_num
    attr.rq_psn = peer.psn
    attr.sq_psn = psn
    attr.max_dest_rd_atomic = 1
    attr.max_rd_atomic = 1
    attr.min_rnr_timer = 12
    attr.timeout = 14
    attr.retry_cnt = 7
    attr.rnr_retry = 7
    text = ":".join(peer.gid.hex()[i:i + 4] for i in range(0, 32, 4))
    gr = GlobalRoute(dgid=GID(text), sgid_index=gid_index)
    attr.ah_attr = AHAttr(port_num=port, is_global=1, gr=gr, dlid=lid)
    return attr


def write_wr(local_addr: int, length: int, lkey: int, rkey: int, remote_addr: int, signaled: bool, inline: bool):
    """The pyverbs ``SendWR`` of one RDMA WRITE."""
    import pyverbs.enums as e
    from pyverbs.wr import SGE, SendWR

    flags = (e.IBV_SEND_SIGNALED if signaled else 0) | (e.IBV_SEND_INLINE if inline else 0)
    wr = SendWR(opcode=e.IBV_WR_RDMA_WRITE, num_sge=1, sg=[SGE(local_addr, length, lkey)], send_flags=flags)
    wr.set_wr_rdma(rkey, remote_addr)
    return wr


class RoceLink:
    """One RC queue pair over a registered region, and the peer's region to write into.

    Args:
        region: the local ring (uint8, C-contiguous, page-locked): the MR that the peer writes.
        slots, slot_bytes: its geometry, announced at rendezvous.
        device, port, gid_index: which RDMA port to use (default: the first active RoCE port).
        local: further arrays registered for local access only: the buffers writes are posted
            from (the transmit batch, a send staging area).
    """

    def __init__(self, region: np.ndarray, slots: int, slot_bytes: int, device: str | None = None, port: int = 1,
                 gid_index: int = 0, depth: int = 1024, local: tuple[np.ndarray, ...] = ()):
        import pyverbs.enums as e
        from pyverbs.cq import CQ
        from pyverbs.device import Context
        from pyverbs.mr import MR
        from pyverbs.pd import PD
        from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr

        if device is None:
            active = [p for p in sysfs_ports() if p.active_roce]
            if not active:
                raise RuntimeError(probe().reason)
            device, port = active[0].device, active[0].port
        self.e = e
        self.region, self.slots, self.slot_bytes = region, slots, slot_bytes
        self.port, self.gid_index = port, gid_index
        self.ctx = Context(name=device)
        self.pd = PD(self.ctx)
        access = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
        self.mr = MR(self.pd, region.nbytes, access, address=region.ctypes.data)
        self.local = [(a.ctypes.data, a.nbytes, MR(self.pd, a.nbytes, e.IBV_ACCESS_LOCAL_WRITE, address=a.ctypes.data))
                      for a in local]
        self.cq = CQ(self.ctx, depth, None, None, 0)
        cap = QPCap(max_send_wr=depth, max_recv_wr=1, max_send_sge=1, max_recv_sge=1, max_inline_data=64)
        self.qp = QP(self.pd, QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq, cap=cap),
                     QPAttr(port_num=port))
        self.psn = int.from_bytes(os.urandom(3), "little")
        self.port_attr = self.ctx.query_port(port)
        self.gid = self.ctx.query_gid(port, gid_index)
        self.peer: RdvInfo | None = None
        self.unsignaled = 0

    def info(self) -> RdvInfo:
        gid = bytes.fromhex(str(self.gid).replace(":", ""))
        return RdvInfo(self.qp.qp_num, self.psn, gid, self.region.ctypes.data, self.mr.rkey, self.slot_bytes,
                       self.slots, int(self.port_attr.active_mtu))

    def connect(self, peer: RdvInfo) -> None:
        """Move the queue pair to RTS towards ``peer`` (RESET → INIT → RTR → RTS)."""
        self.qp.to_rts(rts_attr(self.port, int(self.port_attr.active_mtu), self.port_attr.lid, self.psn, peer,
                                self.gid_index))
        self.peer = peer

    def lkey(self, addr: int, length: int) -> int:
        """The lkey of the registered memory holding ``[addr, addr + length)``."""
        if self.region.ctypes.data <= addr and addr + length <= self.region.ctypes.data + self.region.nbytes:
            return self.mr.lkey
        for base, size, mr in self.local:
            if base <= addr and addr + length <= base + size:
                return mr.lkey
        raise ValueError(f"{length} bytes at {addr:#x} are in no registered buffer")

    def write(self, local_addr: int, length: int, remote_addr: int, inline: bool = False, wait: bool = False) -> None:
        """Post one RDMA WRITE of ``length`` bytes at ``local_addr`` to ``remote_addr`` in the
        peer's region. ``inline``: the bytes are copied at post time (up to 64), so the source may
        be reused at once. ``wait``: signal this write and wait for its completion, which on RC
        also completes every write posted before it (their sources may then be reused)."""
        self.unsignaled += 1
        signaled = wait or self.unsignaled >= 256  # a completion now and then keeps the send queue draining
        self.qp.post_send(write_wr(local_addr, length, self.lkey(local_addr, length), self.peer.rkey, remote_addr,
                                   signaled, inline))
        if signaled:
            self.unsignaled = 0
            while not self.reap():
                pass

    def reap(self) -> int:
        """Take completions off the CQ (how many); a failed one raises ``RuntimeError`` (the link
        is broken: the peer went away or its region was deregistered)."""
        n, wcs = self.cq.poll(16)
        for wc in wcs[:n]:
            if wc.status != self.e.IBV_WC_SUCCESS:
                raise RuntimeError(f"RDMA write failed: work completion status {wc.status}")
        return n

    def close(self) -> None:
        for obj in (self.qp, self.mr, *[m for _, _, m in self.local], self.cq, self.pd, self.ctx):
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass


class RoceReplyPoster:
    """The service's reply escape over RDMA (a ring worker's ``WorkerState.poster``): each queued reply
    is written into the controller's reply ring, body then ready word (inline), then the credit
    word; the last write is waited for, so the transmit batch may be reused when ``post``
    returns (costs one RC acknowledgement per datagram with replies)."""

    def __init__(self, link: RoceLink, txbuf: np.ndarray, txiov: np.ndarray):
        peer = link.peer
        self.link, self.txbuf, self.txiov = link, txbuf, txiov
        self.writer = RingWriter(peer.slots, peer.slot_bytes, HEADER_BYTES)
        self.stage = np.zeros(2, np.int64)  # inline sources: a ready word, the credit

    def post(self, q: int, consumed: int) -> int:
        base = self.link.peer.addr
        for j in range(q):
            n = int(self.txiov[j, 1])
            body, ready, word = self.writer.next(n)
            self.link.write(self.txbuf[j].ctypes.data, n, base + body)
            self.stage[0] = word
            self.link.write(self.stage.ctypes.data, 8, base + ready, inline=True)
        self.stage[1] = consumed
        self.link.write(self.stage.ctypes.data + 8, 8, base + CREDIT_OFFSET, inline=True, wait=True)
        return q


class RoceController:
    """The controller's side of §11 (``rtdecoder emulate --transport roce``, tests): a region of
    its own (header with the credit word, then the reply ring) and a send staging area,
    rendezvous with the service over TCP, then messages written into the service's ring.

    ``send`` returns False when the service has not yet credited room for the message."""

    def __init__(self, host: str, port: int, reply_slots: int = 1024, reply_slot_bytes: int = 256,
                 link: RoceLink | None = None, sock: socket.socket | None = None):
        self.region = np.zeros(HEADER_BYTES + reply_slots * reply_slot_bytes, np.uint8)
        self.stage = np.zeros(65536 + 64, np.uint8)
        self.words = np.zeros(1, np.int64)
        self.link = link or RoceLink(self.region, reply_slots, reply_slot_bytes, local=(self.stage, self.words))
        self.sock = sock or socket.create_connection((host, port), timeout=10)
        peer = rendezvous_connect(self.sock, self.link.info())
        self.link.connect(peer)
        self.writer = RingWriter(peer.slots, peer.slot_bytes)
        self.reader = RingReader(self.region, reply_slots, reply_slot_bytes, HEADER_BYTES)
        self.credit_words = self.region.view(np.int64)

    def send(self, datagram: bytes) -> bool:
        if self.writer.seq + 1 - int(self.credit_words[CREDIT_OFFSET // 8]) > self.writer.slots:
            return False
        n = len(datagram)
        body, ready, word = self.writer.next(n)
        self.stage[:n] = np.frombuffer(datagram, np.uint8)
        base = self.link.peer.addr
        self.link.write(self.stage.ctypes.data, n, base + body)
        self.words[0] = word
        self.link.write(self.words.ctypes.data, 8, base + ready, inline=True, wait=True)
        return True

    def poll(self) -> bytes | None:
        return self.reader.poll()

    def recv(self) -> memoryview | None:
        m = self.reader.poll()
        return None if m is None else memoryview(m)

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.link.close()


# --- the transport: the service's endpoint, the controller's side, the registration -----------
class RoceEndpoint(RingSessions):
    """The service's side of ``roce``: controller sessions one at a time on one worker, each a TCP
    rendezvous on the service's port (§11.2) then ``ring_serve_loop`` over the worker's pinned
    ring, which is the memory region the controller RDMA-writes into. A controller that connects
    while a session runs waits in the listen backlog; the session ends when its controller
    closes the TCP connection."""

    def __init__(self, listener: socket.socket, ring, log):
        super().__init__(ring.array.reshape(-1), ring.slots, ring.slot_bytes)
        self.listener, self.pinned, self.log = listener, ring, log

    def serve(self, worker) -> None:
        self.listener.settimeout(0.2)
        while worker.running:
            if worker.paused:  # a reload is swapping the engine
                time.sleep(0.01)
                continue
            try:
                conn, addr = self.listener.accept()
            except socket.timeout:
                continue
            self._session(worker, conn, addr)
            if worker.running:
                worker.ctl[CTL_STOP] = 0  # the controller left: wait for the next one

    def _session(self, worker, conn: socket.socket, addr) -> None:
        s = worker.state
        link = RoceLink(self.ring, self.slots, self.slot_bytes, local=(s.tx.buf,))
        try:
            self.reset()  # before the controller learns where to write
            peer = rendezvous_accept(conn, link.info())
            link.connect(peer)
            print(f"rtdecoder: roce session with {addr[0]} (QP {peer.qp_num:#x}, reply ring {peer.slots} x "
                  f"{peer.slot_bytes} bytes)", file=self.log, flush=True)
            threading.Thread(target=self._watch, args=(worker, conn), daemon=True).start()
            hi, lo = L.source_words(addr[0])
            self.run_session(worker, RoceReplyPoster(link, s.tx.buf, s.tx.iov), hi, lo)
        finally:
            link.close()
            conn.close()

    @staticmethod
    def _watch(worker, conn: socket.socket) -> None:
        """The session ends when the controller closes its rendezvous connection."""
        try:
            conn.settimeout(None)
            conn.recv(1)
        except OSError:
            pass
        if not worker.quit:
            worker.ctl[CTL_STOP] = 1


def _open(ctx: ServeContext) -> Opened:
    from rtdecoder.ring import PinnedRing
    from rtdecoder.worker import Worker

    cfg = ctx.cfg
    if len(ctx.cpus) > 1:
        print(f"rtdecoder: roce serves one controller session on one worker: CPU {ctx.cpus[0]}; "
              f"{ctx.cpus[1:]} stay idle", file=ctx.log)
    try:
        listener = socket.create_server((cfg.host, cfg.port), family=socket.AF_INET6 if ":" in cfg.host
                                        else socket.AF_INET)
    except OSError as e:
        raise OSError(e.errno, f"cannot listen on tcp {cfg.host}:{cfg.port} for the RoCE rendezvous: {e.strerror} "
                               "(choose another with --port, or port in the config file's [server])") from None
    address = listener.getsockname()[:2]
    print(f"rtdecoder: roce rendezvous on tcp {address[0]}:{address[1]}", file=ctx.log)

    def workers(engine, gpu) -> list:
        ring = PinnedRing(cfg.ring_slots, ctx.slot_bytes)
        slot = gpu.slot_arrays(1) if gpu is not None else None
        w = Worker(engine, RoceEndpoint(listener, ring, ctx.log), ctx.cpus[0], "rtdecoder-roce",
                   tx_slots=engine.max_windows + 4, gpu_slot=slot,
                   error_limit=(cfg.error_replies_per_s, cfg.error_burst))
        where = f"pinned to CPU {ctx.cpus[0]}" if ctx.cpus[0] is not None else "not pinned"
        print(f"rtdecoder: roce worker {where}, ring {ring.slots} x {ring.slot_bytes} bytes {ring.pinned_reason}",
              file=ctx.log)
        return [w]

    return Opened(address, workers, listener.close)


class BlockingRoceController(RoceController):
    """``RoceController`` whose ``send`` waits for credit (the emulator's controller side)."""

    def send(self, datagram: bytes) -> None:
        while not super().send(datagram):  # no credit yet: the service writes it as it consumes
            pass


def _probe() -> Probe:
    st = probe()
    return Probe(st.usable, st.reason)


SPEC = register(TransportSpec(
    name="roce", summary="RDMA writes over RoCE through pyverbs (docs/wire-protocol.md §11)",
    probe=_probe, open=_open, controller=lambda host, port, stream_id=0: BlockingRoceController(host, port),
    auto=0, remote=True))
