"""Typed, validated configuration: streams and the server.

A stream is one decoding problem (docs/architecture.md, "Streams"): a stim circuit
(a generated one named like ``surface_code:rotated_memory_z`` with distance, rounds and circuit-level
noise strength ``p``, or a ``.stim`` file), a decoder, and sliding-window parameters in rounds.

Config files are TOML::

    [server]
    host = "127.0.0.1"
    port = 7700
    metrics_port = 9400
    cpus = [2, 3]      # one pinned worker per CPU; stream s goes to worker s % 2
    busy_poll_us = 50
    backend = "cpu"    # or "gpu" (persistent GPU decoder), "auto" (gpu where a usable GPU is)

    [[streams]]
    id = 0
    circuit = "surface_code:rotated_memory_z"
    distance = 5
    rounds = 25
    p = 0.001
    decoder = "matching"
    window = 10        # rounds, or "all" to decode whole shots
    commit = 5

Every value is checked when loaded; an unknown key raises ``ConfigError`` naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import stim

from rtdecoder.backends import BACKENDS
from rtdecoder.errors import ConfigError

INPUTS = ("detection_events", "measurements")
"""What a stream's controller may send in SYNDROME blocks."""
WINDOW_ALL = 0
"""``window = "all"`` is stored as 0: the whole shot is one window."""
MAX_PARALLEL = 64
"""The most workers one stream's parallel windows may have."""
LOOPBACK = ("127.0.0.0/8", "::1/128")
"""The default ``allow`` list: loopback only."""


def parse_cpu_list(value: str) -> tuple[int, ...]:
    """``"2,3"``, ``"2-5"`` or ``"2,4-6"`` (the kernel's and taskset's list format) → CPU numbers.

    Raises:
        ValueError: not such a list.
    """
    out: list[int] = []
    for part in value.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-")
            out += range(int(lo), int(hi) + 1)
        elif part:
            out.append(int(part))
    return tuple(out)


def format_ids(ids) -> str:
    """Sorted ids as ranges, the inverse of ``parse_cpu_list``: a log line per group of streams
    or worker, however many.

    >>> format_ids([0, 1, 2, 5, 7, 8])
    '0-2, 5, 7-8'
    """
    out: list[list[int]] = []
    for i in sorted(ids):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out) or "none"


@dataclass(frozen=True, eq=False)
class MatrixModel:
    """A stream's model given as matrices rather than a circuit (``StreamConfig.model``).

    Attributes:
        source: where it came from, for messages (``"decoders.yaml decoder 3"``).
        dem: the detector error model, graphlike, every detector with coordinates ``(0, 0, t)``,
            ``t`` its round.
        detector_round: int64 ``(num_detectors,)``, non-decreasing.
        d_rows: each detector's measurements (absolute indices within a shot, canonical: no
            repeats).
        num_measurements: measurements per shot (one more than the largest index in D).
    """

    source: str
    dem: stim.DetectorErrorModel
    detector_round: np.ndarray
    d_rows: tuple[tuple[int, ...], ...]
    num_measurements: int

    @property
    def digest(self) -> str:
        """SHA-256 of what the stream is built from (DEM, rounds, D): equal models, equal digests.
        A reload (SIGHUP) keeps the streams whose models did not change."""
        d = self.__dict__.get("_digest")
        if d is None:
            h = hashlib.sha256(str(self.dem).encode())
            h.update(np.ascontiguousarray(self.detector_round, np.int64).tobytes())
            h.update(repr((self.d_rows, self.num_measurements)).encode())
            d = h.hexdigest()
            object.__setattr__(self, "_digest", d)
        return d

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MatrixModel) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    @property
    def num_detectors(self) -> int:
        return len(self.d_rows)

    @property
    def num_rounds(self) -> int:
        return int(self.detector_round[-1]) + 1 if len(self.detector_round) else 1


@dataclass(frozen=True)
class StreamConfig:
    """One stream.

    Attributes:
        id: stream id on the wire (§2 ``stream_id``), 0..65535.
        circuit: ``"family:task"`` for ``stim.Circuit.generated`` (for example
            ``"surface_code:rotated_memory_z"``) or a path to a ``.stim`` file.
        distance: code distance (generated circuits only).
        rounds: syndrome-extraction rounds (generated circuits only). Default ``5 * distance``,
            in config files and on the command line alike.
        p: circuit-level noise strength (generated circuits only): after-Clifford depolarization,
            data depolarization before each round, measurement and reset flips, all ``p``.
        decoder: a registered decoder's name (``rtdecoder.decoders``: ``"matching"``,
            ``"union_find"``, ``"matching_correlated"`` and any plug-in's).
        window: window length ``W`` in rounds; 0 (``"all"`` in files and flags) decodes whole shots.
            Default ``2 * distance``.
        commit: commit region ``C`` in rounds, ``1 <= C <= W``. Default ``distance``.
        max_datagram: largest syndrome datagram accepted for this stream, bytes (§7).
        input: what the controller sends: ``"detection_events"`` (default) or ``"measurements"``,
            the circuit's raw measurement results round by round, which the service turns into
            detection events itself (``rtdecoder.dem.MeasurementLayout``; docs/wire-protocol.md §5.1).
        parallel: workers that decode the stream's windows, ``1 .. MAX_PARALLEL``. 1 (default):
            sliding windows, decoded by the data-plane worker that owns the stream. ``k > 1``: the
            parallel-window (sandwich) schedule (``rtdecoder.windows.ParallelPlan``; cores of
            ``commit`` rounds, buffers and gaps of ``window - commit``), its windows dealt to the
            owning worker and ``k - 1`` helper threads in turn (``rtdecoder.kernels.parallel``);
            compiled decoders (union_find) only.
        deadline_us: for a decoder called through the escape (``matching``,
            ``matching_correlated``): a window whose decode would end more than this many µs
            after its last round was received (the time since then plus the stream's running
            average of the decoder's time per window) is decoded by the decoder's fast mode
            (``DecoderSpec.fast``: plain matching for ``matching_correlated``) where that one's
            average still meets the deadline, else by the compiled union-find, and counted
            (``rtdecoder_deadline_fallbacks_total{from,to}``), as is every window while the worker
            is behind (its last receive batch was full: the datagrams waited in the socket for a
            time their receive stamps do not show); a stall costs a little accuracy instead of
            latency. 0 (default): no deadline.
        model: a ``rtdecoder.cudaq_config.MatrixModel``: the stream's detector error model and
            measurement → detector map given as matrices (a CUDA-Q YAML decoder) instead of a
            circuit; ``circuit``, ``distance``, ``rounds`` and ``p`` are then not used, ``input`` is
            ``"measurements"`` and ``window`` defaults to ``"all"``.
        erasure: generated circuits only: a heralded erasure (``HERALDED_ERASE``) of every data
            qubit at the start of each round with this probability, each with a herald detector
            (``rtdecoder.heralds.with_erasure``); the controller sends the heralds as detection
            events (docs/wire-protocol.md §5.2) and the decoder uses them (union_find erases,
            matching_correlated reweights). Circuit files declare their own. 0 (default): none.
        allow: the controller addresses or subnets (CIDR, IPv4 or IPv6) this stream accepts
            datagrams from; default loopback only. Datagrams from elsewhere get no reply and are
            counted (``rtdecoder_packets_rejected_total{reason="not_allowed"}``).

    Raises:
        ConfigError: for any value out of range, with the fix in its message.
    """

    id: int = 0
    circuit: str = "surface_code:rotated_memory_z"
    distance: int = 5
    rounds: int | None = None
    p: float = 0.001
    decoder: str = "matching"
    window: int | None = None
    commit: int | None = None
    max_datagram: int = 4096
    allow: tuple[str, ...] = LOOPBACK
    input: str = "detection_events"
    deadline_us: float = 0.0
    parallel: int = 1
    erasure: float = 0.0
    model: Any = None

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ConfigError(f"stream {self.id}: input {self.input!r} must be one of {', '.join(INPUTS)}")
        if isinstance(self.allow, str) or not isinstance(self.allow, tuple) or not self.allow:
            raise ConfigError(f"stream {self.id}: allow {self.allow!r} must be a non-empty list of addresses or "
                              "subnets, e.g. [\"10.0.0.0/24\", \"127.0.0.1\"]")
        for a in self.allow:
            try:
                ipaddress.ip_network(a, strict=False)
            except ValueError as e:
                raise ConfigError(f"stream {self.id}: allow entry {a!r} is not an address or subnet ({e})") from None
        if not 0 <= self.id <= 0xFFFF:
            raise ConfigError(f"stream id {self.id} is out of range: use 0..65535")
        from rtdecoder import decoders

        try:
            decoders.get(self.decoder)
        except ConfigError as e:
            raise ConfigError(f"stream {self.id}: {e}") from None
        if self.rounds is None:
            object.__setattr__(self, "rounds", 5 * self.distance)
        if not 0.0 <= self.erasure < 1.0:
            raise ConfigError(f"stream {self.id}: erasure {self.erasure} must be in [0, 1) (0: none)")
        if self.erasure > 0 and not self.is_generated:
            raise ConfigError(f"stream {self.id}: erasure is for generated circuits; a circuit file declares its own "
                              "HERALDED_ERASE instructions, each with a DETECTOR on its record")
        if not 0.0 <= self.deadline_us <= 1e6:
            raise ConfigError(f"stream {self.id}: deadline_us {self.deadline_us} must be in 0..1000000 µs (0: none)")
        if self.deadline_us > 0 and decoders.get(self.decoder).call != "escape":
            raise ConfigError(f"stream {self.id}: deadline_us is for decoders called through the escape (like "
                              f"matching); {self.decoder} runs compiled in the loop already, with nothing faster "
                              "to fall back to")
        if self.model is not None:
            if not isinstance(self.model, MatrixModel):
                raise ConfigError(f"stream {self.id}: model must be a MatrixModel (from a CUDA-Q YAML configuration)")
            if self.input != "measurements":
                raise ConfigError(f"stream {self.id}: a matrix model's controller sends measurements (input)")
            if self.window is None:
                object.__setattr__(self, "window", WINDOW_ALL)
        elif self.is_generated:
            if self.distance < 2:
                raise ConfigError(f"stream {self.id}: distance {self.distance} must be at least 2")
            if self.rounds < 1:
                raise ConfigError(f"stream {self.id}: rounds {self.rounds} must be at least 1")
            if not 0.0 <= self.p < 0.5:
                raise ConfigError(f"stream {self.id}: p {self.p} must be in [0, 0.5)")
        elif not Path(self.circuit).is_file():
            raise ConfigError(
                f"stream {self.id}: circuit {self.circuit!r} is neither a generated circuit name "
                "(like 'surface_code:rotated_memory_z') nor an existing .stim file"
            )
        window = 2 * self.distance if self.window is None else self.window
        commit = self.distance if self.commit is None else self.commit
        if window < 0:
            raise ConfigError(f"stream {self.id}: window {window} must be a positive number of rounds or 'all'")
        if window != WINDOW_ALL and not 1 <= commit <= window:
            raise ConfigError(f"stream {self.id}: commit {commit} must be between 1 and the window ({window}) rounds")
        if window != WINDOW_ALL and window < 2:
            raise ConfigError(f"stream {self.id}: window {window} is too short: use at least 2 rounds or 'all'")
        if not 64 + 40 <= self.max_datagram <= 65507:
            raise ConfigError(f"stream {self.id}: max_datagram {self.max_datagram} must be in 104..65507 bytes")
        if not 1 <= self.parallel <= MAX_PARALLEL:
            raise ConfigError(f"stream {self.id}: parallel {self.parallel} must be in 1..{MAX_PARALLEL} workers")
        if self.parallel > 1:
            if window == WINDOW_ALL or commit >= window:
                raise ConfigError(f"stream {self.id}: parallel windows need a window longer than the commit region "
                                  f"(got window {'all' if window == WINDOW_ALL else window}, commit {commit}): the "
                                  "rounds between cores are window - commit, e.g. window = 2 * distance, commit = "
                                  "distance")
            if decoders.get(self.decoder).call != "compiled":
                raise ConfigError(f"stream {self.id}: parallel windows in the service run compiled decoders "
                                  f"(union_find); {self.decoder} runs through Python, which one lock serialises: "
                                  f"use parallel = 1, or decode it offline in parallel windows (rtdecoder decode "
                                  "--parallel-windows K)")
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "commit", commit if window != WINDOW_ALL else 0)

    @property
    def build_key(self) -> tuple:
        """What the stream's DEM, window plan and compiled decoder depend on: streams with equal
        keys share them (``rtdecoder.engine.Engine``)."""
        fallback = self.deadline_us > 0  # its union-find graphs are built too
        sandwich = self.parallel > 1  # the parallel-window plan, not sliding windows
        if self.model is not None:
            return (self.model.digest, self.decoder, self.window, self.commit, self.input, fallback, sandwich)
        gen = (self.distance, self.rounds, self.p, self.erasure) if self.is_generated else \
            (os.path.realpath(self.circuit),)
        return (self.circuit, *gen, self.decoder, self.window, self.commit, self.input, fallback, sandwich)

    @property
    def is_generated(self) -> bool:
        return ":" in self.circuit and not os.path.exists(self.circuit)

    def describe(self) -> str:
        w = "all" if self.window == WINDOW_ALL else f"{self.window}/{self.commit}"
        dl = f", deadline {self.deadline_us:g} µs" if self.deadline_us > 0 else ""
        dl += f", parallel windows on {self.parallel} workers" if self.parallel > 1 else ""
        if self.model is not None:
            return (f"stream {self.id}: {self.model.source}, decoder={self.decoder}, window/commit={w}, "
                    f"measurements in{dl}")
        src = f"{self.circuit} d={self.distance} rounds={self.rounds} p={self.p}" if self.is_generated else self.circuit
        src += f" erasure={self.erasure}" if self.erasure > 0 else ""
        sends = ", measurements in" if self.input == "measurements" else ""
        return f"stream {self.id}: {src}, decoder={self.decoder}, window/commit={w}{sends}{dl}"


@dataclass(frozen=True)
class ServerConfig:
    """The server: where it listens and which streams it decodes.

    Attributes:
        host, port: UDP address for syndrome traffic (port 0 picks a free one).
        metrics_host, metrics_port: where ``/metrics`` is served (localhost by default; port 0
            picks a free one; -1 disables it).
        ring_slots: receive ring slots per worker, a power of two.
        cpus: CPUs to pin one worker each to (``()``: one worker, not pinned). Stream ``s`` is
            handled by worker ``s % len(cpus)``.
        busy_poll_us: ``SO_BUSY_POLL`` to ask of the kernel, µs (0: off).
        recv_batch: most datagrams taken per ``recvmmsg`` (1..ring_slots).
        error_replies_per_s, error_burst: ERROR replies each source may receive, per second and
            in a burst (a token bucket per source address and port); the rest are not sent and
            are counted (``rtdecoder_error_replies_suppressed_total``). The datagrams are still
            counted by reason and their shots poisoned as usual.
        transport: a registered transport's name (``rtdecoder.transport``: ``udp``, ``roce``
            through pyverbs, ``xdp`` (AF_XDP), ``memory`` in process) or ``auto`` (the first, by
            rank, that can run here: roce, then xdp where ``xdp_interface`` is set, then udp; the
            log says why).
        busy_batches: overload threshold: after this many consecutive full ``recvmmsg``
            batches a worker answers new shots BUSY until its socket's backlog drains.
        drain_s: on SIGTERM, the longest the workers wait for the shots in flight to finish, s.
        backend: where union-find windows are decoded: ``cpu``, ``gpu`` (the persistent GPU
            decoder, ``rtdecoder.gpu``) or ``auto`` (gpu where a usable GPU is, else cpu).
        max_stream_gib: the most memory one stream's build may take by its estimate
            (``rtdecoder.engine.estimate_stream_bytes``), GiB; a larger stream is refused before
            anything is built.
        xdp_interface, xdp_queues, xdp_mode: for ``transport = "xdp"`` (AF_XDP,
            ``rtdecoder.transport.xdp``): the network interface, its receive queues (one worker
            and socket each) and the sockets' mode, ``copy``, ``zerocopy`` or ``auto`` (zero-copy
            where the driver has it).
        record_dir: record every datagram received and every reply sent into this directory
            (``rtdecoder.record``; empty: no recording), in at most ``record_files`` files of
            ``record_file_mb`` MiB (the oldest deleted first), through a ring of
            ``record_ring_mb`` MiB per worker (entries that find it full are dropped and counted).
        streams: the streams, with distinct ids.
    """

    host: str = "127.0.0.1"
    port: int = 7700
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400
    ring_slots: int = 1024
    cpus: tuple[int, ...] = ()
    busy_poll_us: int = 50
    recv_batch: int = 16
    error_replies_per_s: int = 1000
    error_burst: int = 100
    drain_s: float = 2.0
    busy_batches: int = 4
    transport: str = "auto"
    backend: str = "cpu"
    max_stream_gib: float = 8.0
    xdp_interface: str = ""
    xdp_queues: tuple[int, ...] = (0,)
    xdp_mode: str = "auto"
    record_dir: str = ""
    record_files: int = 16
    record_file_mb: int = 64
    record_ring_mb: int = 16
    streams: tuple[StreamConfig, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range: use 0..65535")
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port {self.metrics_port} is out of range: use 0..65535, or -1 to disable")
        if self.ring_slots < 2 or self.ring_slots & (self.ring_slots - 1):
            raise ConfigError(f"ring_slots {self.ring_slots} must be a power of two, at least 2")
        if self.xdp_mode not in ("auto", "copy", "zerocopy"):
            raise ConfigError(f"xdp_mode {self.xdp_mode!r} must be auto, copy or zerocopy")
        if not (1 <= self.record_files <= 100_000 and 1 <= self.record_file_mb <= 65_536
                and 1 <= self.record_ring_mb <= 4096):
            raise ConfigError(f"record_files {self.record_files}, record_file_mb {self.record_file_mb} and "
                              f"record_ring_mb {self.record_ring_mb} must be positive (and at most 100000, 65536 and "
                              "4096)")
        if not isinstance(self.xdp_queues, tuple) or not self.xdp_queues or \
                not all(isinstance(q, int) and 0 <= q < 1024 for q in self.xdp_queues):
            raise ConfigError(f"xdp_queues {self.xdp_queues!r} must be a list of receive queue numbers, e.g. [0, 1]")
        if not isinstance(self.cpus, tuple) or not all(isinstance(c, int) and c >= 0 for c in self.cpus):
            raise ConfigError(f"cpus {self.cpus!r} must be a list of CPU numbers, e.g. [2, 3]")
        if len(set(self.cpus)) != len(self.cpus):
            raise ConfigError(f"cpus {list(self.cpus)} lists a CPU twice: one worker per CPU")
        if not 0 <= self.busy_poll_us <= 1_000_000:
            raise ConfigError(f"busy_poll_us {self.busy_poll_us} must be in 0..1000000")
        if not 0 < self.error_replies_per_s <= 10_000_000 or not 0 < self.error_burst <= 1_000_000:
            raise ConfigError(f"error_replies_per_s {self.error_replies_per_s} and error_burst {self.error_burst} "
                              "must be positive (at most 10000000 and 1000000)")
        if not 1 <= self.busy_batches <= 1_000_000:
            raise ConfigError(f"busy_batches {self.busy_batches} must be at least 1")
        if not 0 <= self.drain_s <= 3600:
            raise ConfigError(f"drain_s {self.drain_s} must be in 0..3600 seconds")
        if self.transport != "auto":
            from rtdecoder.transport import get as transport_spec

            transport_spec(self.transport)
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not 1 <= self.recv_batch <= self.ring_slots:
            raise ConfigError(f"recv_batch {self.recv_batch} must be in 1..ring_slots ({self.ring_slots})")
        if not 0 < self.max_stream_gib <= 1 << 20:
            raise ConfigError(f"max_stream_gib {self.max_stream_gib} must be a positive number of GiB")
        if not self.streams:
            raise ConfigError("no streams configured: add a [[streams]] table or pass --circuit/--distance")
        ids = [s.id for s in self.streams]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"stream ids must be distinct, got {sorted(ids)}")


def _window_value(value: Any, where: str) -> int:
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return WINDOW_ALL
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: window {value!r} must be a number of rounds or 'all'") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: window {value!r} must be a number of rounds or 'all'")
    return value


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields) - ({"streams"} if cls is ServerConfig else set()))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys are {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        if name == "window":
            kwargs[name] = _window_value(value, where)
            continue
        expected = fields[name].type
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "str": isinstance(value, str),
        }.get(str(expected).split(" ")[0], True)
        if not ok:
            raise ConfigError(f"{where}: {name} = {value!r} should be of type {expected}")
        if name == "allow":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: allow = {value!r} should be a list of addresses or subnets")
            value = tuple(value)
        if name in ("cpus", "xdp_queues"):
            if not isinstance(value, list):
                raise ConfigError(f"{where}: {name} = {value!r} should be a list of numbers")
            value = tuple(value)
        kwargs[name] = float(value) if expected == "float" else value
    return cls(**kwargs)


def load_toml(path: str | os.PathLike[str]) -> ServerConfig:
    """Load and validate a TOML server config (see the module docstring for the schema);
    ``rtdecoder.configfile.load_config`` reads either form.

    Raises:
        ConfigError: the file is missing or not TOML, a key is unknown, or a value is invalid.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {e.start}): is it a TOML file?") from None
    except OSError as e:
        raise ConfigError(f"config file {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"server", "streams"})
    if unknown:
        raise ConfigError(f"{p}: unknown top-level key {unknown[0]!r}; use [server] and [[streams]]")
    streams_raw = data.get("streams", [])
    if not isinstance(streams_raw, list):
        raise ConfigError(f"{p}: 'streams' must be an array of tables ([[streams]])")
    streams = tuple(_build(StreamConfig, s, f"{p} [[streams]] #{i}") for i, s in enumerate(streams_raw))
    server_table = dict(data.get("server", {}))
    return _build(ServerConfig, {**server_table, "streams": streams}, f"{p} [server]")
