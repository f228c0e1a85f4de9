"""``rtdecoder emulate``: a quantum-controller emulator that speaks the wire protocol.

It samples detection events and the true observable flips of a stream's circuit with stim,
sends each shot round by round (``rounds_per_packet`` rounds per SYNDROME packet) paced at the
cycle time, receives the corrections, and reports:

- per-shot round-trip latency, last round sent → final correction received, in µs
  (p50/p90/p99/p99.9/max), and the server's own share (its receive → send stamps);
- throughput in rounds per second of shot time (first round measured → final correction);
- the logical error rate of the service's predictions against stim's true observables, and that
  of offline PyMatching (``decode_batch`` on the whole DEM) on the very same shots;
- lost shots (no final correction within the timeout) and error replies.

Pacing (DESIGN.md): round ``r`` of a shot is measured at ``t0 + (r + 1) * cycle``; a packet is
sent when its last round has been measured, against absolute deadlines, so a late send is caught
up on rather than pushing every later round back. A shot's correction is awaited before the next
shot starts, so that shots do not queue behind each other and each latency is one shot's own.
Sending, pacing and receiving run in compiled code (``drive_shot``, the C library's ``send`` and
``recv`` from numba), so the controller adds no interpreter time to the latencies it measures.
"""

from __future__ import annotations

import json
import math
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pymatching
from numba import njit

from rtdecoder import protocol as P
from rtdecoder.config import StreamConfig
from rtdecoder.dem import detector_layout, make_circuit
from rtdecoder.kernels import stream as K
from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.transport import libc as L

HEADER_DTYPE = np.dtype([
    ("magic", "<u4"), ("version", "u1"), ("msg_type", "u1"), ("flags", "<u2"), ("header_len", "<u2"),
    ("stream_id", "<u2"), ("first_round", "<u4"), ("shot_id", "<u8"), ("num_rounds", "<u4"),
    ("payload_len", "<u4"), ("controller_ts_ns", "<u8"),
])
assert HEADER_DTYPE.itemsize == P.HEADER_LEN


class EmulatorError(RuntimeError):
    """The emulator cannot run: no server answered, or the server's stream does not match."""


@dataclass
class EmulatorOptions:
    """How the emulator drives the service.

    Attributes:
        host, port: the service's UDP address.
        shots: shots to send.
        rounds_per_packet: rounds framed into one SYNDROME packet.
        cycle_us: time between rounds, µs (0: send as fast as possible).
        timeout_s: how long to wait for a shot's final correction before counting it lost.
        seed: stim sampler seed (None: random).
        progress: show a progress bar on standard error.
        drop, duplicate, reorder: per-datagram probabilities of a network fault (``fault_plan``):
            the datagram is not sent, sent twice, or swapped with the next one.
        fault_seed: seed of the fault draws.
        transport: ``udp``, ``roce`` or ``auto`` (``rtdecoder.transport.select``).
    """

    host: str = "127.0.0.1"
    port: int = 7700
    shots: int = 2000
    rounds_per_packet: int = 1
    cycle_us: float = 1.0
    timeout_s: float = 1.0
    seed: int | None = 12345
    progress: bool = True
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    fault_seed: int = 7
    transport: str = "udp"

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"--{name} {v} must be a probability in [0, 1]")

    @property
    def faulty(self) -> bool:
        return self.drop > 0 or self.duplicate > 0 or self.reorder > 0


@dataclass
class Report:
    """What ``rtdecoder emulate`` and ``rtdecoder demo`` report; ``to_json`` gives the README's keys."""

    circuit: str
    distance: int
    rounds: int
    p: float
    decoder: str
    window: int
    commit: int
    rounds_per_packet: int
    cycle_us: float
    shots: int
    latency_us: dict[str, float]
    server_latency_us: dict[str, float]
    throughput_rounds_per_s: float
    logical_error_rate: float
    logical_error_rate_stderr: float
    reference_logical_error_rate: float
    reference_logical_error_rate_stderr: float
    disagreements_with_reference: int
    lost: int
    errors: int
    error_statuses: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    latencies_us: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    answered: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    poisoned: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    affected: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("latencies_us", "predictions", "answered", "poisoned", "affected"):
            d.pop(k)
        return d


def percentiles(values_us: np.ndarray) -> dict[str, float]:
    """p50, p90, p99, p99.9 and max of ``values_us`` (µs); NaN when empty."""
    if len(values_us) == 0:
        return {k: math.nan for k in ("p50", "p90", "p99", "p999", "max")}
    q = np.percentile(values_us, [50, 90, 99, 99.9])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "p999": float(q[3]),
            "max": float(np.max(values_us))}


def _rate(errors: int, shots: int) -> tuple[float, float]:
    if shots == 0:
        return math.nan, math.nan
    r = errors / shots
    return r, math.sqrt(max(r * (1 - r), 1.0 / shots) / shots)


class Controller:
    """The controller side of one stream's conversation with the service."""

    def __init__(self, host: str, port: int, stream_id: int):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.connect((host, port))
        self.sock.setblocking(False)
        self.stream_id = stream_id
        self.rx = bytearray(65536)
        self.rxv = memoryview(self.rx)

    def recv(self) -> memoryview | None:
        try:
            n = self.sock.recv_into(self.rx)
        except (BlockingIOError, ConnectionRefusedError):
            return None
        return self.rxv[:n]

    def request(self, msg_type: P.MsgType, want: P.MsgType, timeout_s: float, attempts: int = 1) -> memoryview:
        """Send a control message and wait for its reply (retrying ``attempts`` times)."""
        msg = P.encode(P.Header(msg_type, stream_id=self.stream_id))
        for _ in range(attempts):
            self.send(msg)
            end = time.perf_counter() + timeout_s
            while time.perf_counter() < end:
                r = self.recv()
                if r is None:
                    continue
                h = P.decode_header(r)
                if h.msg_type == want:
                    return r
                if h.msg_type == P.MsgType.ERROR:
                    _, status, _, _ = P.decode_error(r)
                    raise EmulatorError(f"the service answered {msg_type.name} with {status.name}")
        raise EmulatorError(f"no {want.name} from the service within {timeout_s * attempts:.1f} s")

    def send(self, msg: bytes) -> None:
        try:
            self.sock.send(msg)
        except ConnectionRefusedError:
            pass

    def hello(self, timeout_s: float = 0.5, attempts: int = 10) -> P.StreamInfo:
        r = self.request(P.MsgType.HELLO, P.MsgType.HELLO_REPLY, timeout_s, attempts)
        return P.StreamInfo.unpack(r[P.HEADER_LEN:])

    def reset(self, timeout_s: float = 1.0) -> None:
        self.request(P.MsgType.RESET, P.MsgType.RESET_ACK, timeout_s, 3)

    def close(self) -> None:
        self.sock.close()


def shot_packets(stream_id: int, shot_id: int, blocks: np.ndarray, rounds_per_packet: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The SYNDROME packets of one shot, back to back in one buffer.

    Args:
        blocks: uint8 ``(num_rounds, round_bytes)``, the shot's round blocks (§5).

    Returns:
        ``(buf, offset, length, ready)``: the uint8 buffer; int64 per packet, its offset and
        length in ``buf`` and the number of rounds measured before it can go (its last round + 1).
        Each header's ``controller_ts_ns`` is written at send time.
    """
    nrounds, rbytes = blocks.shape
    firsts = np.arange(0, nrounds, rounds_per_packet, dtype=np.int64)
    counts = np.minimum(rounds_per_packet, nrounds - firsts)
    sizes = P.HEADER_LEN + counts * rbytes
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    headers = np.zeros(len(firsts), HEADER_DTYPE)
    headers["magic"] = P.MAGIC
    headers["version"] = P.VERSION
    headers["msg_type"] = int(P.MsgType.SYNDROME)
    headers["header_len"] = P.HEADER_LEN
    headers["stream_id"] = stream_id
    headers["first_round"] = firsts
    headers["shot_id"] = shot_id
    headers["num_rounds"] = counts
    headers["payload_len"] = counts * rbytes
    hb = headers.view(np.uint8).reshape(len(firsts), P.HEADER_LEN)
    buf = np.zeros(int(starts[-1]), np.uint8)
    full = int(np.sum(counts == rounds_per_packet))
    if full:  # all packets but possibly the last have the same size: fill them as one 2-D block
        rows = buf[: full * int(sizes[0])].reshape(full, int(sizes[0]))
        rows[:, : P.HEADER_LEN] = hb[:full]
        rows[:, P.HEADER_LEN:] = blocks[: full * rounds_per_packet].reshape(full, rounds_per_packet * rbytes)
    if full < len(firsts):
        s0 = int(starts[full])
        buf[s0:s0 + P.HEADER_LEN] = hb[full]
        buf[s0 + P.HEADER_LEN:] = blocks[int(firsts[full]):].reshape(-1)
    return buf, starts[:-1].copy(), sizes.astype(np.int64), firsts + counts


# drive_shot's results (int64 ``res``)
R_FINAL = 0
R_POISONED = 1
R_LAST_SENT = 2
R_FINAL_RECEIVED = 3
R_SERVER_RX = 4
R_SERVER_TX = 5
R_CORRECTIONS = 6
R_SHOT_START = 7
NUM_R = 8


@njit(cache=True, inline="always")
def _cumulative_flips(rx, nobs, pred):
    """A CORRECTION's cumulative observable flips (§4.4, the second bit field) into ``pred``."""
    ob = (nobs + 7) >> 3
    for o in range(nobs):
        pred[o] = (rx[K.OFF_CORR_FLIPS + ob + (o >> 3)] >> (o & 7)) & 1


@njit(cache=True, nogil=True)
def _on_reply(rx, n, shot_id, nobs, now, res, pred, corr_round, corr_time, errs, last_ts):
    """Apply one reply to the shot's results. A SYNDROME reply can only be an echo (the transport
    floor, ``rtdecoder serve --echo``): the echo of the shot's last datagram, recognised by its
    controller stamp ``last_ts`` (0 while that datagram is unsent), stands for the final answer."""
    if n < P.HEADER_LEN or K.rd(rx, K.OFF_MAGIC, 4) != K.MAGIC:
        return
    mtype = rx[K.OFF_TYPE]
    shot = K.rd(rx, K.OFF_SHOT, 8)
    if mtype == K.T_SYNDROME:
        if last_ts != 0 and shot == shot_id and K.rd(rx, K.OFF_CONTROLLER_TS, 8) == last_ts:
            res[R_FINAL] = 1
            res[R_FINAL_RECEIVED] = now
    elif mtype == K.T_CORRECTION:
        if shot != shot_id:
            return  # a late correction of an earlier shot
        c = res[R_CORRECTIONS]
        if c < corr_round.shape[0]:
            corr_round[c] = K.rd(rx, K.OFF_FIRST_ROUND, 4)
            corr_time[c] = now
        res[R_CORRECTIONS] = c + 1
        if K.rd(rx, K.OFF_FLAGS, 2) & K.FLAG_FINAL:
            _cumulative_flips(rx, nobs, pred)
            res[R_FINAL] = 1
            res[R_FINAL_RECEIVED] = now
            res[R_SERVER_RX] = K.rd(rx, K.OFF_CORR_RX, 8)
            res[R_SERVER_TX] = K.rd(rx, K.OFF_CORR_TX, 8)
    elif mtype == K.T_ERROR:
        status = K.rd(rx, K.OFF_ERR_STATUS, 2)
        if status < errs.shape[0]:
            errs[status] += 1
        if shot == shot_id:
            res[R_POISONED] = 1


@njit(cache=True, nogil=True)
def drive_shot(fd, pkt, offset, length, ready, cycle_ns, timeout_ns, shot_id, nobs, rx, res, pred,
               sent_time, corr_round, corr_time, errs):
    """Send one shot's packets paced at the cycle time and wait for its final correction, in
    compiled code (``send``/``recv`` of the C library on a connected, non-blocking socket).

    Round ``r`` is measured at ``start + (r + 1) * cycle_ns``; packet ``i`` goes when its last
    round has been measured (``ready[i]``), against absolute deadlines, so a late send is caught
    up on. Replies are taken while waiting. ``sent_time[i]`` gets each packet's send time;
    ``corr_round``/``corr_time`` each CORRECTION's first round and arrival time (ns); ``errs``
    counts ERROR replies by status; ``pred`` gets the final cumulative observable flips;
    ``res[R_*]`` the rest. Against ``rtdecoder serve --echo`` (the transport floor) the echo of
    the last datagram is the final answer (``_on_reply``).
    """
    res[:] = 0
    start = monotonic_ns()
    res[R_SHOT_START] = start
    cap = rx.shape[0]
    npk = offset.shape[0]
    for i in range(npk):
        deadline = start + ready[i] * cycle_ns
        now = monotonic_ns()
        while now < deadline:
            n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
            now = monotonic_ns()
            if n > 0:
                _on_reply(rx, n, shot_id, nobs, now, res, pred, corr_round, corr_time, errs, 0)
        o = offset[i]
        K.wr(pkt, o + K.OFF_CONTROLLER_TS, 8, now)
        L.send(fd, pkt.ctypes.data + o, length[i], 0)
        sent_time[i] = now
    last = monotonic_ns()
    res[R_LAST_SENT] = sent_time[npk - 1]
    end = last + timeout_ns
    while res[R_FINAL] == 0 and res[R_POISONED] == 0:
        n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
        now = monotonic_ns()
        if n > 0:
            _on_reply(rx, n, shot_id, nobs, now, res, pred, corr_round, corr_time, errs, sent_time[npk - 1])
        elif now > end:
            break


# open-loop per-shot outcomes (``OpenLoop.outcome``)
O_NONE = 0
O_FINAL = 1
O_ERROR = 2


@njit(cache=True)
def _on_open_reply(rx, n, first_shot, nobs, outcome, status, pred):
    if n < P.HEADER_LEN or K.rd(rx, K.OFF_MAGIC, 4) != K.MAGIC:
        return 0
    s = K.rd(rx, K.OFF_SHOT, 8) - first_shot
    if s < 0 or s >= outcome.shape[0]:
        return 0
    mtype = rx[K.OFF_TYPE]
    if mtype == K.T_CORRECTION and K.rd(rx, K.OFF_FLAGS, 2) & K.FLAG_FINAL and outcome[s] == O_NONE:
        _cumulative_flips(rx, nobs, pred[s])
        outcome[s] = O_FINAL
        return 1
    if mtype == K.T_ERROR and outcome[s] == O_NONE:
        outcome[s] = O_ERROR
        status[s] = K.rd(rx, K.OFF_ERR_STATUS, 2)
        return 1
    return 0


@njit(cache=True, nogil=True)
def drive_open_loop(fd, pkt, offset, length, ready, cycle_ns, timeout_ns, first_shot, nobs, rx, outcome, status,
                    pred):
    """Send many shots' datagrams back to back, paced at ``cycle_ns`` per round and *not* waiting
    for any answer (a controller that does not slow down for the decoder), taking replies as they
    come; then wait up to ``timeout_ns`` for the shots still unanswered. ``outcome[s]`` (``O_*``)
    and ``status[s]`` (the first ERROR's status) tell what became of shot ``first_shot + s``;
    ``pred[s]`` its final correction. Returns ``(shots still unanswered, ns spent sending)``."""
    start = monotonic_ns()
    cap = rx.shape[0]
    open_shots = outcome.shape[0]
    for i in range(offset.shape[0]):
        deadline = start + ready[i] * cycle_ns
        now = monotonic_ns()
        while True:
            n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
            if n > 0:
                open_shots -= _on_open_reply(rx, n, first_shot, nobs, outcome, status, pred)
            elif now >= deadline:
                break
            now = monotonic_ns()
        L.send(fd, pkt.ctypes.data + offset[i], length[i], 0)
    sent = monotonic_ns()
    end = sent + timeout_ns
    while open_shots > 0 and monotonic_ns() < end:
        n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
        if n > 0:
            open_shots -= _on_open_reply(rx, n, first_shot, nobs, outcome, status, pred)
    return open_shots, sent - start


def open_loop_packets(stream_id: int, first_shot: int, blocks: np.ndarray, rounds_per_packet: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``shot_packets`` of shots ``first_shot ..`` (uint8 ``(shots, num_rounds, round_bytes)``),
    back to back; ``ready`` counts rounds from the first shot's start."""
    bufs, offs, lens, readys = [], [], [], []
    base = 0
    nrounds = blocks.shape[1]
    for s in range(blocks.shape[0]):
        buf, off, length, ready = shot_packets(stream_id, first_shot + s, blocks[s], rounds_per_packet)
        bufs.append(buf)
        offs.append(off + base)
        lens.append(length)
        readys.append(ready + s * nrounds)
        base += len(buf)
    return np.concatenate(bufs), np.concatenate(offs), np.concatenate(lens), np.concatenate(readys)


def run_emulator(cfg: StreamConfig, opts: EmulatorOptions) -> Report:
    """Drive the service at ``opts.host:opts.port`` with ``opts.shots`` shots of stream ``cfg``.

    Raises:
        EmulatorError: the service does not answer HELLO, or its stream differs from ``cfg``.
    """
    from rtdecoder.transport.select import choose_transport

    circuit = make_circuit(cfg)
    layout = detector_layout(circuit)
    transport, why = choose_transport(opts.transport)
    if opts.progress:
        print(f"rtdecoder emulate: {why}", file=sys.stderr)
    ctl = RoceStreamController(opts.host, opts.port, cfg.id) if transport == "roce" else \
        Controller(opts.host, opts.port, cfg.id)
    try:
        info = ctl.hello()
        mine = (layout.num_detectors, layout.num_rounds, layout.num_observables, layout.round_bytes)
        theirs = (info.num_detectors, info.num_rounds, info.num_observables, info.round_bytes)
        if mine != theirs:
            raise EmulatorError(
                f"stream {cfg.id} on the service has (detectors, rounds, observables, round bytes) = {theirs}, "
                f"the emulator's circuit has {mine}: run both with the same --circuit/--distance/--rounds")
        if P.HEADER_LEN + opts.rounds_per_packet * info.round_bytes > info.max_datagram:
            raise EmulatorError(f"--rounds-per-packet {opts.rounds_per_packet} makes datagrams larger than "
                                f"the service's {info.max_datagram}-byte limit")
        ctl.reset()
        return _drive(cfg, opts, ctl, circuit, layout)
    finally:
        ctl.close()


class RoceStreamController(Controller):
    """``Controller`` over RoCE (docs/wire-protocol.md §11): the same messages, written into the
    service's ring through ``rtdecoder.transport.roce.RoceController``; replies read from this
    side's reply ring. Its shots are driven from Python (``RoceShotDriver``), so the emulator's
    own time is in the latencies it reports over RoCE."""

    def __init__(self, host: str, port: int, stream_id: int):
        from rtdecoder.transport.roce import RoceController

        self.link = RoceController(host, port)
        self.stream_id = stream_id
        self.sock = None

    def recv(self) -> memoryview | None:
        m = self.link.poll()
        return None if m is None else memoryview(m)

    def send(self, msg: bytes) -> None:
        while not self.link.send(msg):  # no credit yet: the service writes it as it consumes
            pass

    def close(self) -> None:
        self.link.close()


def fault_plan(npk: int, rng: np.random.Generator, drop: float, duplicate: float, reorder: float
               ) -> tuple[np.ndarray, bool]:
    """The order in which a shot's ``npk`` datagrams go out over a faulty network, and whether the
    fault reaches the shot's data.

    Each datagram is dropped with probability ``drop``, else sent twice with probability
    ``duplicate``; then each adjacent pair is swapped with probability ``reorder``. The shot is
    *affected* unless its first ``npk`` sends are its datagrams in order (a duplicate after the
    last datagram reaches a shot already complete and cannot change its correction).

    Returns:
        ``(order, affected)``: int64 indices into the shot's datagrams, in sending order.
    """
    order: list[int] = []
    for i in range(npk):
        u = rng.random()
        if u < drop:
            continue
        order.append(i)
        if u < drop + duplicate:
            order.append(i)
    for j in range(len(order) - 1):
        if rng.random() < reorder:
            order[j], order[j + 1] = order[j + 1], order[j]
    arr = np.asarray(order, np.int64)
    affected = not (len(arr) >= npk and np.array_equal(arr[:npk], np.arange(npk)))
    return arr, affected


class ShotDriver:
    """The controller's preallocated buffers for ``drive_shot`` on one stream."""

    def __init__(self, ctl: Controller, layout, rounds_per_packet: int, cycle_us: float, timeout_s: float):
        self.ctl = ctl
        self.layout = layout
        self.rpp = rounds_per_packet
        self.cycle_ns = int(round(cycle_us * 1000))
        self.timeout_ns = int(timeout_s * 1e9)
        npk = -(-layout.num_rounds // rounds_per_packet)
        self.rx = np.zeros(65536, np.uint8)
        self.res = np.zeros(NUM_R, np.int64)
        self.sent_time = np.zeros(2 * npk + 2, np.int64)  # room for every datagram sent twice
        self.corr_round = np.zeros(layout.num_rounds + 2, np.int64)
        self.corr_time = np.zeros(layout.num_rounds + 2, np.int64)
        self.errs = np.zeros(P.NUM_STATUS, np.int64)

    def run(self, shot_id: int, packed_shot: np.ndarray, pred_row: np.ndarray, order: np.ndarray | None = None
            ) -> np.ndarray:
        """Send one shot (uint8 ``(num_rounds, round_bytes)`` blocks) and wait for its answer;
        returns ``res`` (``R_*``). ``order`` (``fault_plan``) sends the datagrams in that order
        instead, each no earlier than the latest of the rounds sent so far was measured."""
        buf, off, length, ready = shot_packets(self.ctl.stream_id, shot_id, packed_shot, self.rpp)
        if order is not None:
            if len(order) == 0:  # every datagram dropped: nothing to send, nothing to wait for
                self.res[:] = 0
                return self.res
            off, length, ready = off[order], length[order], np.maximum.accumulate(ready[order])
        drive_shot(self.ctl.sock.fileno(), buf, off, length, ready, self.cycle_ns, self.timeout_ns, shot_id,
                   self.layout.num_observables, self.rx, self.res, pred_row, self.sent_time, self.corr_round,
                   self.corr_time, self.errs)
        return self.res


class RoceShotDriver(ShotDriver):
    """``ShotDriver.run`` over a ``RoceStreamController``, paced and timed in Python."""

    def run(self, shot_id: int, packed_shot: np.ndarray, pred_row: np.ndarray, order: np.ndarray | None = None
            ) -> np.ndarray:
        buf, off, length, ready = shot_packets(self.ctl.stream_id, shot_id, packed_shot, self.rpp)
        if order is not None:
            if len(order) == 0:
                self.res[:] = 0
                return self.res
            off, length, ready = off[order], length[order], np.maximum.accumulate(ready[order])
        res, nobs = self.res, self.layout.num_observables
        res[:] = 0
        start = monotonic_ns()
        res[R_SHOT_START] = start

        def take() -> None:
            m = self.ctl.link.poll()
            if m is not None:
                self.rx[:len(m)] = np.frombuffer(m, np.uint8)
                _on_reply(self.rx, len(m), shot_id, nobs, monotonic_ns(), res, pred_row, self.corr_round,
                          self.corr_time, self.errs, 0)

        for i in range(len(off)):
            deadline = start + int(ready[i]) * self.cycle_ns
            while monotonic_ns() < deadline:
                take()
            now = monotonic_ns()
            K.wr(buf, int(off[i]) + K.OFF_CONTROLLER_TS, 8, now)
            self.ctl.send(buf[int(off[i]):int(off[i]) + int(length[i])].tobytes())
            self.sent_time[i] = now
        res[R_LAST_SENT] = self.sent_time[len(off) - 1]
        end = monotonic_ns() + self.timeout_ns
        while res[R_FINAL] == 0 and res[R_POISONED] == 0 and monotonic_ns() < end:
            take()
        return res


def _drive(cfg, opts, ctl, circuit, layout) -> Report:
    nobs = layout.num_observables
    nshots = opts.shots
    preds = np.zeros((nshots, nobs), np.uint8)
    obs = np.zeros((nshots, nobs), bool)
    reference = np.zeros((nshots, nobs), np.uint8)
    answered = np.zeros(nshots, bool)
    errored = np.zeros(nshots, bool)
    latency = np.full(nshots, np.nan)
    server = np.full(nshots, np.nan)
    kind = RoceShotDriver if isinstance(ctl, RoceStreamController) else ShotDriver
    driver = kind(ctl, layout, opts.rounds_per_packet, opts.cycle_us, opts.timeout_s)
    poisoned = np.zeros(nshots, bool)
    affected = np.zeros(nshots, bool)
    rng = np.random.default_rng(opts.fault_seed)
    npk = -(-layout.num_rounds // opts.rounds_per_packet)
    sampler = circuit.compile_detector_sampler(seed=opts.seed)
    matching = pymatching.Matching.from_detector_error_model(circuit.detector_error_model(decompose_errors=True))
    chunk = max(1, min(nshots, 20_000_000 // max(layout.num_detectors, 1)))  # about 20 MB of samples at a time

    progress = None
    if opts.progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("[bold]emulating[/] d={task.fields[d]} {task.fields[dec]}"), BarColumn(),
                            MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        task = progress.add_task("shots", total=nshots, d=cfg.distance, dec=cfg.decoder)
        progress.start()
    busy_ns = 0
    try:
        for c0 in range(0, nshots, chunk):
            c1 = min(nshots, c0 + chunk)
            dets, obs[c0:c1] = sampler.sample(c1 - c0, separate_observables=True)
            reference[c0:c1] = matching.decode_batch(dets)
            packed = P.pack_rounds(dets, layout.round_offsets, layout.round_bytes)
            for s in range(c0, c1):
                order = None
                if opts.faulty:
                    order, affected[s] = fault_plan(npk, rng, opts.drop, opts.duplicate, opts.reorder)
                res = driver.run(s + 1, packed[s - c0], preds[s], order)
                poisoned[s] = res[R_POISONED] == 1
                busy_ns += (res[R_FINAL_RECEIVED] if res[R_FINAL] else res[R_LAST_SENT]) - res[R_SHOT_START]
                answered[s] = res[R_FINAL] == 1
                errored[s] = res[R_POISONED] == 1 and not answered[s]
                if answered[s]:
                    latency[s] = (res[R_FINAL_RECEIVED] - res[R_LAST_SENT]) / 1000.0
                    server[s] = (res[R_SERVER_TX] - res[R_SERVER_RX]) / 1000.0
                if progress is not None and (s % 16 == 15 or s == nshots - 1):
                    progress.update(task, completed=s + 1)
    finally:
        if progress is not None:
            progress.stop()

    lat = latency[answered]
    errs = int(np.sum(np.any(preds[answered] != obs[answered], axis=1)))
    ler, ler_se = _rate(errs, int(answered.sum()))
    rler, rler_se = _rate(int(np.sum(np.any(reference != obs, axis=1))), nshots)
    disagree = int(np.sum(np.any(preds[answered] != reference[answered], axis=1)))
    lost = int(np.sum(~answered & ~errored))
    statuses = {P.Status(i).name: int(n) for i, n in enumerate(driver.errs) if n}
    faults = {}
    if opts.faulty:
        faults = {"shots_affected": int(affected.sum()), "affected_answered": int(np.sum(affected & answered)),
                  "affected_poisoned": int(np.sum(affected & errored)),
                  "affected_lost": int(np.sum(affected & ~answered & ~errored)),
                  "unaffected_not_answered": int(np.sum(~affected & ~answered))}
    elapsed = max(busy_ns, 1) / 1e9
    return Report(
        circuit=cfg.circuit, distance=cfg.distance, rounds=layout.num_rounds, p=cfg.p, decoder=cfg.decoder,
        window=cfg.window, commit=cfg.commit, rounds_per_packet=opts.rounds_per_packet, cycle_us=opts.cycle_us,
        shots=nshots, latency_us=percentiles(lat), server_latency_us=percentiles(server[answered]),
        throughput_rounds_per_s=nshots * layout.num_rounds / elapsed,
        logical_error_rate=ler, logical_error_rate_stderr=ler_se,
        reference_logical_error_rate=rler, reference_logical_error_rate_stderr=rler_se,
        disagreements_with_reference=disagree, lost=lost, errors=int(driver.errs.sum()), error_statuses=statuses,
        faults=faults, latencies_us=lat, predictions=preds, answered=answered, poisoned=poisoned, affected=affected,
    )


def write_json(report: Report, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report.to_json(), f, indent=2, allow_nan=True)
        f.write("\n")


def write_plot(report: Report, path: str) -> None:
    """A PNG histogram of the per-shot round-trip latency on a log axis, percentiles marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = report.latencies_us
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if len(lat):
        lo, hi = max(np.min(lat), 0.1), max(np.max(lat), 1.0)
        bins = np.logspace(np.log10(lo * 0.9), np.log10(hi * 1.1), 60)
        ax.hist(lat, bins=bins, color="#4c72b0")
        for name, style in (("p50", "-"), ("p99", "--"), ("p999", ":")):
            x = report.latency_us[name]
            ax.axvline(x, color="k", linestyle=style, linewidth=1, label=f"{name} {x:.1f} µs")
        ax.legend()
    ax.set_xscale("log")
    ax.set_xlabel("round trip, last round sent → final correction received (µs)")
    ax.set_ylabel("shots")
    ax.set_title(f"{report.circuit} d={report.distance} rounds={report.rounds} p={report.p} {report.decoder}, "
                 f"{report.shots} shots", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@njit(cache=True, nogil=True)
def round_trips(fd, packets, length, first_shot, echo, timeout_ns, rx, out, server):
    """Send ``packets[i, :length]`` one at a time (shot id ``first_shot + i`` written into each)
    and wait for its answer before the next; ``out[i]`` gets the round trip in ns (send →
    final CORRECTION of that shot received, or with ``echo`` the datagram's echo), or -1 if none
    came within ``timeout_ns`` or an ERROR came instead; ``server[i]`` the server's own share
    (the CORRECTION's send stamp minus its receive stamp; 0 for an echo). Compiled: the C
    library's ``send`` and ``recv`` on a connected, non-blocking socket.
    """
    cap = rx.shape[0]
    for i in range(packets.shape[0]):
        pkt = packets[i]
        shot = first_shot + i
        K.wr(pkt, K.OFF_SHOT, 8, shot)
        t0 = monotonic_ns()
        K.wr(pkt, K.OFF_CONTROLLER_TS, 8, t0)
        L.send(fd, pkt.ctypes.data, length, 0)
        out[i] = -1
        server[i] = 0
        while True:
            n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
            now = monotonic_ns()
            if n > 0:
                if echo:
                    if n == length and K.rd(rx, K.OFF_SHOT, 8) == shot:
                        out[i] = now - t0
                        break
                elif n >= K.HEADER_LEN and K.rd(rx, K.OFF_SHOT, 8) == shot:
                    if rx[K.OFF_TYPE] == K.T_ERROR:
                        break
                    if rx[K.OFF_TYPE] == K.T_CORRECTION and K.rd(rx, K.OFF_FLAGS, 2) & K.FLAG_FINAL:
                        out[i] = now - t0
                        server[i] = K.rd(rx, K.OFF_CORR_TX, 8) - K.rd(rx, K.OFF_CORR_RX, 8)
                        break
            elif now - t0 > timeout_ns:
                break
