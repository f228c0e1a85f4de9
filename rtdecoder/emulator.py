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

Pacing: round ``r`` of a shot is measured at ``t0 + (r + 1) * cycle``; a packet is
sent when its last round has been measured, against absolute deadlines, so a late send is caught
up on rather than pushing every later round back. A shot's correction is awaited before the next
shot starts, so that shots do not queue behind each other and each latency is one shot's own.
Over UDP, sending, pacing and receiving run in compiled code (``drive_shot``, the C library's
``send`` and ``recv`` from numba), so the controller adds no interpreter time to the latencies it
measures; over a transport whose controller side has no socket (RoCE, ``memory``) the same
pacing runs in Python (``PolledShotDriver``). Replies are read by one parser, ``parse_reply``
(the benchmarks' clients in ``bench/clients.py`` use it too).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pymatching
from numba import njit

from rtdecoder import protocol as P
from rtdecoder.config import StreamConfig
from rtdecoder.kernels import wire as K
from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.transport import libc as L


class EmulatorError(RuntimeError):
    """The emulator cannot run: no server answered, or the server's stream does not match."""


@dataclass
class EmulatorOptions:
    """How the emulator drives the service.

    Attributes:
        host, port: the service's address (UDP port, or RoCE rendezvous port).
        shots: shots to send.
        rounds_per_packet: rounds framed into one SYNDROME packet.
        cycle_us: time between rounds, µs (0: send as fast as possible).
        timeout_s: how long to wait for a shot's final correction before counting it lost.
        seed: stim sampler seed (None: random).
        progress: show a progress bar on standard error.
        drop, duplicate, reorder: per-datagram probabilities of a network fault (``fault_plan``):
            the datagram is not sent, sent twice, or swapped with the next one.
        fault_seed: seed of the fault draws.
        expect: the service's stream's ``decoder``, ``window`` and ``commit`` as the user asked for
            them; those that differ from its HELLO_REPLY are reported (a warning, not an error).
        transport: a registered transport's name or ``auto`` (``rtdecoder.transport.choose``).
        dialect: ``"native"`` (rtdecoder's protocol) or ``"cuqr"`` (CUDA-Q QEC's real-time RPC over
            UDP, through ``rtdecoder.cuqr_client``: one ``enqueue_syndromes`` per packet's rounds,
            then ``get_corrections`` at once; the stream's ``input`` says whether the bits are
            measurements or detection events).
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
    expect: dict = field(default_factory=dict)
    dialect: str = "native"

    def __post_init__(self) -> None:
        if self.dialect not in ("native", "cuqr"):
            raise ValueError(f"dialect {self.dialect!r} must be native or cuqr")
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
    interrupted: bool = False
    """Ctrl-C ended the run early: ``shots`` counts the shots that were sent."""
    dialect: str = "native"
    """The wire dialect the emulator spoke (``EmulatorOptions.dialect``)."""
    erasure: float = 0.0
    """Heralded-erasure probability of the circuit (``StreamConfig.erasure``; 0: none). The offline
    PyMatching reference decodes the DEM alone and does not use the heralds."""

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
    """The controller side of one stream's conversation with the service, over ``link`` (a
    transport's controller side: ``send``, ``recv``, ``close``; ``rtdecoder.transport``)."""

    def __init__(self, link, stream_id: int):
        self.link = link
        self.stream_id = stream_id

    @classmethod
    def connect(cls, transport: str, host: str, port: int, stream_id: int) -> "Controller":
        """Over the registered transport called ``transport``."""
        from rtdecoder import transport as T

        return cls(T.get(transport).controller(host, port, stream_id), stream_id)

    def recv(self) -> memoryview | None:
        return self.link.recv()

    def send(self, msg: bytes) -> None:
        self.link.send(msg)

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

    def hello(self, timeout_s: float = 0.5, attempts: int = 10) -> P.StreamInfo:
        r = self.request(P.MsgType.HELLO, P.MsgType.HELLO_REPLY, timeout_s, attempts)
        return P.StreamInfo.unpack(r[P.HEADER_LEN:])

    def describe(self, num_rounds: int, timeout_s: float = 1.0) -> tuple[int, list[int]]:
        """The stream's DEM fingerprint and its detectors per round (DESCRIBE, §4.8), asked
        ``MAX_DESCRIBE_ROUNDS`` rounds at a time."""
        counts: list[int] = []
        fingerprint = 0
        while len(counts) < num_rounds:
            msg = P.encode(P.Header(P.MsgType.DESCRIBE, stream_id=self.stream_id, first_round=len(counts)))
            self.send(msg)
            end = time.perf_counter() + timeout_s
            while True:
                r = self.recv()
                if r is not None and P.decode_header(r).msg_type == P.MsgType.DESCRIBE_REPLY:
                    d = P.decode_describe(r)
                    if d.first_round == len(counts):
                        break
                if time.perf_counter() > end:
                    raise EmulatorError(f"no DESCRIBE_REPLY from the service within {timeout_s:.1f} s")
            fingerprint = d.fingerprint
            counts += d.counts
        return fingerprint, counts

    def reset(self, timeout_s: float = 1.0) -> None:
        self.request(P.MsgType.RESET, P.MsgType.RESET_ACK, timeout_s, 3)

    def close(self) -> None:
        self.link.close()


@njit(cache=True)
def _write_packets(buf, starts, firsts, counts, rbytes, stream_id, shot_id, blocks):
    for i in range(starts.shape[0]):
        o = starts[i]
        K.write_header(buf[o:], K.T_SYNDROME, 0, stream_id, firsts[i], shot_id, counts[i], counts[i] * rbytes, 0)
        n = counts[i] * rbytes
        src = blocks[firsts[i]:firsts[i] + counts[i]].reshape(-1)
        buf[o + K.HEADER_LEN:o + K.HEADER_LEN + n] = src


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
    buf = np.zeros(int(starts[-1]), np.uint8)
    _write_packets(buf, starts[:-1], firsts, counts, rbytes, stream_id, shot_id, np.ascontiguousarray(blocks))
    return buf, starts[:-1].copy(), sizes.astype(np.int64), firsts + counts


# parse_reply's fields (int64 ``reply``)
RP_TYPE = 0
RP_SHOT = 1
RP_FLAGS = 2
RP_FIRST_ROUND = 3
RP_STATUS = 4
"""An ERROR's status (§4.5)."""
RP_SERVER_RX = 5
RP_SERVER_TX = 6
RP_TS = 7
"""The controller's stamp echoed in the header."""
NUM_RP = 8


@njit(cache=True, nogil=True)
def parse_reply(rx, n, reply):
    """Read what a controller needs of one reply into ``reply[RP_*]``: type, shot, flags, first
    round, controller stamp; an ERROR's status; a CORRECTION's or PONG's server stamps. Returns
    the message type, or -1 for something that is not a message of this protocol (too short, or
    another magic number)."""
    if n < K.HEADER_LEN or K.rd(rx, K.OFF_MAGIC, 4) != K.MAGIC:
        return -1
    mtype = np.int64(rx[K.OFF_TYPE])
    reply[RP_TYPE] = mtype
    reply[RP_SHOT] = K.rd(rx, K.OFF_SHOT, 8)
    reply[RP_FLAGS] = K.rd(rx, K.OFF_FLAGS, 2)
    reply[RP_FIRST_ROUND] = K.rd(rx, K.OFF_FIRST_ROUND, 4)
    reply[RP_TS] = K.rd(rx, K.OFF_CONTROLLER_TS, 8)
    reply[RP_STATUS] = K.rd(rx, K.OFF_ERR_STATUS, 2) if mtype == K.T_ERROR and n >= K.OFF_ERR_STATUS + 2 else 0
    if (mtype == K.T_CORRECTION or mtype == K.T_PONG) and n >= K.OFF_CORR_TX + 8:
        reply[RP_SERVER_RX] = K.rd(rx, K.OFF_CORR_RX, 8)
        reply[RP_SERVER_TX] = K.rd(rx, K.OFF_CORR_TX, 8)
    else:
        reply[RP_SERVER_RX] = 0
        reply[RP_SERVER_TX] = 0
    return mtype


@njit(cache=True, inline="always")
def cumulative_flips(rx, nobs, pred):
    """A CORRECTION's cumulative observable flips (§4.4, the second bit field) into ``pred``."""
    ob = (nobs + 7) >> 3
    for o in range(nobs):
        pred[o] = (rx[K.OFF_CORR_FLIPS + ob + (o >> 3)] >> (o & 7)) & 1


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


@njit(cache=True, nogil=True)
def _on_reply(rx, n, shot_id, nobs, now, res, pred, corr_round, corr_time, errs, last_ts, reply):
    """Apply one reply to the shot's results. A SYNDROME reply can only be an echo (the transport
    floor, ``rtdecoder serve --echo``): the echo of the shot's last datagram, recognised by its
    controller stamp ``last_ts`` (0 while that datagram is unsent), stands for the final answer."""
    mtype = parse_reply(rx, n, reply)
    shot = reply[RP_SHOT]
    if mtype == K.T_SYNDROME:
        if last_ts != 0 and shot == shot_id and reply[RP_TS] == last_ts:
            res[R_FINAL] = 1
            res[R_FINAL_RECEIVED] = now
    elif mtype == K.T_CORRECTION:
        if shot != shot_id:
            return  # a late correction of an earlier shot
        c = res[R_CORRECTIONS]
        if c < corr_round.shape[0]:
            corr_round[c] = reply[RP_FIRST_ROUND]
            corr_time[c] = now
        res[R_CORRECTIONS] = c + 1
        if reply[RP_FLAGS] & K.FLAG_FINAL:
            cumulative_flips(rx, nobs, pred)
            res[R_FINAL] = 1
            res[R_FINAL_RECEIVED] = now
            res[R_SERVER_RX] = reply[RP_SERVER_RX]
            res[R_SERVER_TX] = reply[RP_SERVER_TX]
    elif mtype == K.T_ERROR:
        status = reply[RP_STATUS]
        if status < errs.shape[0]:
            errs[status] += 1
        if shot == shot_id:
            res[R_POISONED] = 1


@njit(cache=True, nogil=True)
def drive_shot(fd, pkt, offset, length, ready, cycle_ns, timeout_ns, shot_id, nobs, rx, res, pred,
               sent_time, corr_round, corr_time, errs, reply):
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
                _on_reply(rx, n, shot_id, nobs, now, res, pred, corr_round, corr_time, errs, 0, reply)
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
            _on_reply(rx, n, shot_id, nobs, now, res, pred, corr_round, corr_time, errs, sent_time[npk - 1], reply)
        elif now > end:
            break


def run_emulator(cfg: StreamConfig, opts: EmulatorOptions) -> Report:
    """Drive the service at ``opts.host:opts.port`` with ``opts.shots`` shots of stream ``cfg``.

    Raises:
        EmulatorError: the service does not answer HELLO, or its stream differs from ``cfg``.
    """
    from rtdecoder import transport as T
    from rtdecoder.shots import ShotSource, stream_layout

    if opts.dialect == "cuqr":
        return _run_cuqr(cfg, opts, ShotSource(cfg, opts.seed, cfg.input == "measurements"))
    layout = stream_layout(cfg)
    spec, why = T.choose(opts.transport)
    if opts.progress:
        print(f"rtdecoder emulate: {why}", file=sys.stderr)
    ctl = Controller.connect(spec.name, opts.host, opts.port, cfg.id)
    try:
        try:
            info = ctl.hello()
        except EmulatorError as e:
            raise EmulatorError(f"{e}: is `rtdecoder serve` running on {opts.host}:{opts.port} with stream {cfg.id}, "
                                "and does its --allow list hold this address?") from None
        source = ShotSource(cfg, opts.seed, info.input == P.INPUT_MEASUREMENTS)
        mlayout = source.mlayout
        blocks = source.blocks
        rbytes = mlayout.round_bytes if mlayout is not None else layout.round_bytes
        mine = (layout.num_detectors, layout.num_rounds, layout.num_observables, rbytes)
        theirs = (info.num_detectors, info.num_rounds, info.num_observables, info.round_bytes)
        if mine != theirs:
            raise EmulatorError(
                f"stream {cfg.id} on the service has (detectors, rounds, observables, round bytes) = {theirs}, "
                f"the emulator's {'circuit' if cfg.model is None else 'model'} has {mine}: run both with the same "
                + ("--circuit/--distance/--rounds" if cfg.model is None else "configuration"))
        if P.HEADER_LEN + opts.rounds_per_packet * info.round_bytes > info.max_datagram:
            raise EmulatorError(f"--rounds-per-packet {opts.rounds_per_packet} makes datagrams larger than "
                                f"the service's {info.max_datagram}-byte limit")
        fingerprint, counts = ctl.describe(info.num_rounds)
        if counts != np.diff(blocks).tolist():
            what = "measurements" if mlayout is not None else "detectors"
            raise EmulatorError(f"stream {cfg.id} on the service has other {what} per round than the emulator's "
                                "circuit: run both with the same --circuit")
        service = _service_view(cfg, info)
        differs = [f"{k} {service[k]} (asked for: {v})" for k, v in opts.expect.items() if service[k] != v]
        if fingerprint != P.dem_fingerprint(source.dem):
            differs.append("its detector error model (another p, noise model or circuit: the DEM fingerprints differ)")
        if differs:
            print(f"rtdecoder emulate: warning: stream {cfg.id} on the service differs from the emulator's: "
                  + "; ".join(differs) + ". The report gives the service's decoder and window; the reference "
                  "decoding uses the emulator's circuit.", file=sys.stderr)
        ctl.reset()
        return _drive(cfg, opts, ctl, source, service)
    finally:
        ctl.close()


def _run_cuqr(cfg: StreamConfig, opts: EmulatorOptions, source) -> Report:
    """``run_emulator`` in CUDA-Q's dialect: only CUQR requests go to the service (a controller
    built for CUDA-Q's server does not speak rtdecoder's protocol)."""
    import socket

    from rtdecoder import cuqr_client as C

    if opts.transport not in ("udp", "auto"):
        raise EmulatorError(f"--dialect cuqr runs over UDP, not {opts.transport}")
    if opts.faulty:
        raise EmulatorError("--drop/--duplicate/--reorder are for the native dialect")
    layout = source.layout
    bounds = source.blocks
    nobs = layout.num_observables
    probe = C.Client((opts.host, opts.port), timeout_s=2.0)
    try:
        r = probe.reset(cfg.id)
        if r.status != 0:
            raise EmulatorError(f"reset_decoder({cfg.id}) answered {r.status_name}: the service has no stream {cfg.id}"
                                if r.status == 1 else f"reset_decoder({cfg.id}) answered {r.status_name}")
        r = probe.corrections(cfg.id, nobs)
        if r.status == 2:
            raise EmulatorError(f"decoder {cfg.id} on the service does not have {nobs} observables (get_corrections "
                                "answered BAD_REQUEST): run both with the same circuit")
    except socket.timeout:
        raise EmulatorError(f"no CUQR response from {opts.host}:{opts.port}: is `rtdecoder serve` running there "
                            f"with stream {cfg.id}, and does its --allow list hold this address?") from None
    finally:
        probe.close()
    family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.connect((opts.host, opts.port))
    driver = C.ShotDriver(sock, cfg.id, bounds, nobs, opts.rounds_per_packet, opts.cycle_us, opts.timeout_s)
    nshots = opts.shots
    preds = np.zeros((nshots, nobs), np.uint8)
    obs = np.zeros((nshots, nobs), bool)
    reference = np.zeros((nshots, nobs), np.uint8)
    answered = np.zeros(nshots, bool)
    failed = np.zeros(nshots, bool)
    latency = np.full(nshots, np.nan)
    statuses: dict[str, int] = {}
    matching = pymatching.Matching.from_detector_error_model(source.dem)
    chunk = max(1, min(nshots, 20_000_000 // max(int(bounds[-1]), 1)))
    busy_ns = 0
    done = 0
    interrupted = False
    try:
        for c0 in range(0, nshots, chunk):
            c1 = min(nshots, c0 + chunk)
            bits, dets, obs[c0:c1] = source.sample(c1 - c0)
            reference[c0:c1] = matching.decode_batch(dets)
            for s in range(c0, c1):
                res = driver.run(bits[s - c0], preds[s])
                answered[s] = res[C.CR_FINAL] == 1
                failed[s] = res[C.CR_FAILED] == 1
                if failed[s]:
                    name = C.STATUS.get(int(res[C.CR_STATUS]), str(int(res[C.CR_STATUS])))
                    statuses[name] = statuses.get(name, 0) + 1
                end = res[C.CR_FINAL_RECEIVED] if answered[s] else res[C.CR_LAST_SENT]
                busy_ns += max(int(end - res[C.CR_SHOT_START]), 0)
                if answered[s]:
                    latency[s] = (res[C.CR_FINAL_RECEIVED] - res[C.CR_LAST_SENT]) / 1000.0
                done = s + 1
    except KeyboardInterrupt:
        interrupted = True
    finally:
        sock.close()
    if interrupted:
        nshots = done
        preds, obs, reference, answered, failed, latency = (preds[:done], obs[:done], reference[:done],
                                                            answered[:done], failed[:done], latency[:done])
    lat = latency[answered]
    ler, ler_se = _rate(int(np.sum(np.any(preds[answered] != obs[answered], axis=1))), int(answered.sum()))
    rler, rler_se = _rate(int(np.sum(np.any(reference != obs, axis=1))), nshots)
    service = {"decoder": opts.expect.get("decoder", "(decoder not said over CUQR)"),
               "window": opts.expect.get("window", -1),
               "commit": opts.expect.get("commit", -1)}
    return Report(
        circuit=cfg.circuit if cfg.model is None else cfg.model.source, distance=cfg.distance,
        rounds=layout.num_rounds, p=cfg.p, decoder=service["decoder"],
        window=service["window"], commit=service["commit"], rounds_per_packet=opts.rounds_per_packet,
        cycle_us=opts.cycle_us, shots=nshots, latency_us=percentiles(lat), server_latency_us=percentiles(np.zeros(0)),
        throughput_rounds_per_s=nshots * layout.num_rounds / (max(busy_ns, 1) / 1e9),
        logical_error_rate=ler, logical_error_rate_stderr=ler_se,
        reference_logical_error_rate=rler, reference_logical_error_rate_stderr=rler_se,
        disagreements_with_reference=int(np.sum(np.any(preds[answered] != reference[answered], axis=1))),
        lost=int(np.sum(~answered & ~failed)), errors=int(failed.sum()), error_statuses=statuses,
        latencies_us=lat, predictions=preds, answered=answered, poisoned=failed, affected=np.zeros(nshots, bool),
        interrupted=interrupted, dialect="cuqr", erasure=cfg.erasure,
    )


def _service_view(cfg: StreamConfig, info: P.StreamInfo) -> dict:
    """The service's decoder, window and commit from its HELLO_REPLY, as ``StreamConfig`` fields."""
    from rtdecoder import decoders

    spec = decoders.by_wire_id(info.decoder)
    return {"decoder": spec.name if spec is not None else f"decoder id {info.decoder}",
            "window": info.window_rounds, "commit": info.commit_rounds}


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
    """The controller's preallocated buffers for ``drive_shot`` on one stream (a controller link
    with a socket, ``fileno()``)."""

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
        self.reply = np.zeros(NUM_RP, np.int64)

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
        drive_shot(self.ctl.link.fileno(), buf, off, length, ready, self.cycle_ns, self.timeout_ns, shot_id,
                   self.layout.num_observables, self.rx, self.res, pred_row, self.sent_time, self.corr_round,
                   self.corr_time, self.errs, self.reply)
        return self.res


class PolledShotDriver(ShotDriver):
    """``ShotDriver.run`` over a controller link without a socket (RoCE, ``memory``), paced and
    timed in Python, so the emulator's own time is in the latencies it reports."""

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
            m = self.ctl.recv()
            if m is not None:
                self.rx[:len(m)] = np.frombuffer(m, np.uint8)
                _on_reply(self.rx, len(m), shot_id, nobs, monotonic_ns(), res, pred_row, self.corr_round,
                          self.corr_time, self.errs, 0, self.reply)

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


def _drive(cfg, opts, ctl, source, service: dict) -> Report:
    layout, mlayout = source.layout, source.mlayout
    nobs = layout.num_observables
    nshots = opts.shots
    preds = np.zeros((nshots, nobs), np.uint8)
    obs = np.zeros((nshots, nobs), bool)
    reference = np.zeros((nshots, nobs), np.uint8)
    answered = np.zeros(nshots, bool)
    errored = np.zeros(nshots, bool)
    latency = np.full(nshots, np.nan)
    server = np.full(nshots, np.nan)
    kind = ShotDriver if hasattr(ctl.link, "fileno") else PolledShotDriver
    driver = kind(ctl, layout, opts.rounds_per_packet, opts.cycle_us, opts.timeout_s)
    poisoned = np.zeros(nshots, bool)
    affected = np.zeros(nshots, bool)
    rng = np.random.default_rng(opts.fault_seed)
    npk = -(-layout.num_rounds // opts.rounds_per_packet)
    matching = pymatching.Matching.from_detector_error_model(source.dem)  # the reference decodes the events
    chunk = max(1, min(nshots, 20_000_000 // max(layout.num_detectors, 1)))  # about 20 MB of samples at a time

    progress = None
    if opts.progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("[bold]emulating[/] d={task.fields[d]} {task.fields[dec]}"), BarColumn(),
                            MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        task = progress.add_task("shots", total=nshots, d=cfg.distance, dec=service["decoder"])
        progress.start()
    busy_ns = 0
    done = 0  # shots whose outcome is known
    interrupted = False
    try:
        for c0 in range(0, nshots, chunk):
            c1 = min(nshots, c0 + chunk)
            sent, dets, obs[c0:c1] = source.sample(c1 - c0)
            if mlayout is None:
                packed = P.pack_rounds(sent, layout.round_offsets, layout.round_bytes)
            else:
                packed = P.pack_rounds(sent, mlayout.meas_offsets, mlayout.round_bytes)
            reference[c0:c1] = matching.decode_batch(dets)
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
                done = s + 1
                if progress is not None and (s % 16 == 15 or s == nshots - 1):
                    progress.update(task, completed=s + 1)
    except KeyboardInterrupt:  # Ctrl-C: report the shots whose outcome is known
        interrupted = True
    finally:
        if progress is not None:
            progress.stop()
    if interrupted:
        nshots = done
        preds, obs, reference, answered, errored = preds[:done], obs[:done], reference[:done], answered[:done], \
            errored[:done]
        latency, server, poisoned, affected = latency[:done], server[:done], poisoned[:done], affected[:done]

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
        circuit=cfg.circuit if cfg.model is None else cfg.model.source, distance=cfg.distance,
        rounds=layout.num_rounds, p=cfg.p, decoder=service["decoder"],
        window=service["window"], commit=service["commit"], rounds_per_packet=opts.rounds_per_packet,
        cycle_us=opts.cycle_us,
        shots=nshots, latency_us=percentiles(lat), server_latency_us=percentiles(server[answered]),
        throughput_rounds_per_s=nshots * layout.num_rounds / elapsed,
        logical_error_rate=ler, logical_error_rate_stderr=ler_se,
        reference_logical_error_rate=rler, reference_logical_error_rate_stderr=rler_se,
        disagreements_with_reference=disagree, lost=lost, errors=int(driver.errs.sum()), error_statuses=statuses,
        faults=faults, latencies_us=lat, predictions=preds, answered=answered, poisoned=poisoned, affected=affected,
        interrupted=interrupted, erasure=cfg.erasure,
    )


def write_json(report: Report, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report.to_json(), f, indent=2, allow_nan=True)
        f.write("\n")


def write_json_list(reports: list[Report], path: str) -> None:
    """Several streams' reports (``emulate --config``) as one JSON list."""
    with open(path, "w") as f:
        json.dump([r.to_json() for r in reports], f, indent=2, allow_nan=True)
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
