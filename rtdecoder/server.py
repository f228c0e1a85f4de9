"""``rtdecoder serve``: the decoding service.

Start-up builds the ``Engine`` (every graph, decoder and table), chooses the transport
(``rtdecoder.transport.choose``) and opens it: the transport binds and makes one worker
(``rtdecoder.worker.Worker``) per configured CPU it can use, each with its endpoint, its own
pinned receive ring, transmit batch, counters, histograms and union-find workspace. It compiles
(or loads from numba's cache) the transport's loop, starts the metrics endpoint, prints one JSON
line ``{"event": "ready", ...}`` on standard output with the bound ports, and starts the
workers.

Each worker is a thread that pins itself to its CPU and runs its transport's compiled loop with
the GIL released: no Python bytecode runs per datagram (escape decoders excepted: see
``rtdecoder.dataplane``). With UDP, streams are sharded ``stream_id % workers``, steered by the
kernel (``rtdecoder.transport.udp``). The main thread only waits for signals; the metrics
thread reads the workers' arrays at scrape time.

With ``backend = "gpu"`` (``--backend gpu``, or ``auto`` on a host with a usable GPU) the
detection events live in mapped host memory and each worker decodes its union-find windows
through a slot of the resident GPU decoder (``rtdecoder.gpu.PersistentDecoder``); the worker
itself still receives, commits and sends.

SIGHUP reloads the config file (``Server.reload``): streams added or changed are built while the
workers keep serving, changed ones answering NOT_READY; the workers then pause between two
datagrams for the swap, and the streams that did not change keep their shots in progress.

SIGTERM and SIGINT drain: each worker goes on serving until its socket is empty and none of its
streams has a shot in flight (their final corrections or error replies go out as usual), or
``drain_s`` has passed; then the process exits 0. A second signal stops the workers at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import struct
import sys
import time
from typing import TextIO

import numpy as np
from prometheus_client import CollectorRegistry

from rtdecoder import dataplane as D
from rtdecoder import transport
from rtdecoder.config import ConfigError, ServerConfig
from rtdecoder.configfile import load_config
from rtdecoder.engine import Engine
from rtdecoder.gpu import PersistentDecoder, choose_backend, mapped_zeros
from rtdecoder.kernels import tables as K
from rtdecoder.metrics import EngineCollector, serve_http
from rtdecoder.transport import libc as L
from rtdecoder.worker import Worker


def hold_cpu_dma_latency(log: TextIO) -> int | None:
    """Write 0 to ``/dev/cpu_dma_latency`` and keep it open: while the descriptor is open, the
    kernel's PM QoS keeps every core out of deep C-states (whose exit latency is tens of µs).
    Returns the descriptor, or None where the device is absent or not writable (the log says)."""
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
        os.write(fd, struct.pack("<i", 0))
    except OSError as e:
        print(f"rtdecoder: /dev/cpu_dma_latency not held ({e.strerror}): cores may enter deep C-states "
              "(deploy/TUNING.md)", file=log)
        return None
    print("rtdecoder: holding /dev/cpu_dma_latency at 0 µs while serving (no deep C-states)", file=log)
    return fd



def receive_slot_bytes(streams) -> int:
    """The receive slot of a service of ``streams``: the smallest power of two at least the
    largest ``max_datagram`` (docs/wire-protocol.md §6.4 step 3, §7); a longer datagram is
    answered TOO_LARGE."""
    return 1 << (max(s.max_datagram for s in streams) - 1).bit_length()

class Server:
    """A configured service: engine, transport, workers and metrics endpoint.

    Args:
        echo: answer every datagram with itself and do nothing else (the transport floor that
            ``bench/latency.py`` measures; also a link check for controller vendors).
        config_path: the file SIGHUP reloads (TOML, or CUDA-Q YAML); overrides: ``ServerConfig``
            fields the command line set, applied over the file's again at each reload.

    Raises:
        ConfigError: a stream cannot be built, or a CPU in ``cpus`` is not available to this
            process.
        OSError: an address cannot be bound.
    """

    def __init__(self, cfg: ServerConfig, log: TextIO = sys.stderr, echo: bool = False,
                 config_path: str | None = None, overrides: dict | None = None):
        L.require_supported()
        self.cfg = cfg
        self.log = log
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self._draining = False
        self._reload_pending = False
        self.opened = None
        self._httpd = None
        self.gpu = None
        self._pm_qos = hold_cpu_dma_latency(log)
        try:
            self._start(cfg, log, echo)
        except BaseException:
            self.close()
            raise

    def _start(self, cfg: ServerConfig, log: TextIO, echo: bool) -> None:
        """Addresses, then streams, workers and the compiled loop (``__init__``)."""
        allowed = os.sched_getaffinity(0)
        missing = [c for c in cfg.cpus if c not in allowed]
        if missing:
            raise ConfigError(f"cpus {missing} are not available to this process (allowed: {sorted(allowed)}); "
                              "pick from those, or check taskset/cgroup limits")
        backend, why = choose_backend(cfg.backend)
        print(f"rtdecoder: {why}", file=log)
        spec, transport_why = transport.choose(cfg.transport, cfg)
        if echo and not spec.echo:
            transport_why = f"transport udp: {spec.name} has no echo mode (echo runs over UDP or AF_XDP)"
            spec = transport.get("udp")
        self.transport_name = spec.name
        print(f"rtdecoder: {transport_why}", file=log)
        cpus: list[int | None] = list(cfg.cpus) or [None]
        rest = allowed - set(cfg.cpus)
        if cfg.cpus and rest:  # keep this thread (and the metrics thread it starts) off the workers' CPUs
            os.sched_setaffinity(0, rest)
        # Addresses first: one in use is reported before minutes of building streams.
        slot_bytes = receive_slot_bytes(cfg.streams)
        self.opened = spec.open(transport.ServeContext(cfg, cpus, slot_bytes, echo, log))
        self.address = self.opened.address
        self.collector: EngineCollector | None = None
        self.metrics_port = -1
        registry = CollectorRegistry(auto_describe=False)
        if cfg.metrics_port >= 0:
            try:
                self._httpd = serve_http(cfg.metrics_port, cfg.metrics_host, registry, lambda: self.collector is not None)
            except OSError as e:
                raise OSError(e.errno, f"cannot serve metrics on http://{cfg.metrics_host}:{cfg.metrics_port}: "
                                       f"{e.strerror} (choose another with --metrics-port, or metrics_port in the "
                                       "config file's [server]; -1 turns metrics off)") from None
            self.metrics_port = self._httpd.server_port
        self._build(cfg, backend, cpus, echo, registry)

    def _build(self, cfg: ServerConfig, backend: str, cpus: list, echo: bool, registry: CollectorRegistry) -> None:
        """The streams, the GPU decoder, the workers and the compiled loop, once the addresses are bound."""
        log = self.log
        t0 = time.perf_counter()
        self.workers: list[Worker] = []
        self.engine = Engine(cfg.streams, slot_bytes=receive_slot_bytes(cfg.streams),
                             host_alloc=mapped_zeros if backend == "gpu" else None, log=log,
                             max_stream_gib=cfg.max_stream_gib)
        print(f"rtdecoder: streams built in {time.perf_counter() - t0:.1f} s", file=log)
        if backend == "gpu":  # slot 0: the in-process path (warm-up); slot i + 1: worker i
            t1 = time.perf_counter()
            self.gpu = PersistentDecoder(self.engine, slots=len(cpus) + 1)
            self.gpu.start()
            self.engine.attach_gpu(self.gpu)
            print(f"rtdecoder: persistent GPU decoder: {len(cpus) + 1} resident kernels, union-find windows "
                  f"decoded from mapped memory; compiled and warmed up in {time.perf_counter() - t1:.1f} s", file=log)
        self.workers = self.opened.workers(self.engine, self.gpu)
        for i, w in enumerate(self.workers):
            w.ctl[K.CTL_WORKER], w.ctl[K.CTL_WORKERS], w.ctl[K.CTL_BUSY_BATCHES] = i, len(self.workers), cfg.busy_batches
        if echo:
            print("rtdecoder: ECHO mode: every datagram is sent back unchanged; nothing is decoded", file=log)
        t2 = time.perf_counter()
        what = "the data plane" + (" and the parallel-window kernels" if any(s.parallel > 1 for s in cfg.streams)
                                   else "")
        print(f"rtdecoder: compiling {what} (the first run on a host takes up to a minute or two; numba caches it)",
              file=log, flush=True)
        self.workers[0].endpoint.warm_up(self.workers[0])
        print(f"rtdecoder: data plane compiled in {time.perf_counter() - t2:.1f} s", file=log)
        self.recorder = None
        if cfg.record_dir:
            from rtdecoder.record import Recorder, ring_bytes

            for w in self.workers:
                w.state.enable_recording(ring_bytes(cfg.record_ring_mb))
            self.recorder = Recorder([w.state for w in self.workers], cfg.record_dir, cfg.record_file_mb << 20,
                                     cfg.record_files, meta={"streams": self.engine.describe(),
                                                             "stream_info": self.engine.record_meta()})
            print(f"rtdecoder: recording every datagram and reply into {cfg.record_dir} ({cfg.record_files} files of "
                  f"{cfg.record_file_mb} MiB at most; rtdecoder replay {cfg.record_dir})", file=log)
        if self._httpd is not None:
            self.collector = EngineCollector(self.engine, [w.state for w in self.workers], self.opened.fds)
            registry.register(self.collector)
            print(f"rtdecoder: metrics on http://{cfg.metrics_host}:{self.metrics_port}/metrics", file=log)

    def ready_line(self) -> str:
        return json.dumps({"event": "ready", "host": self.address[0], "port": self.address[1],
                           "metrics_port": self.metrics_port, "workers": len(self.workers),
                           "transport": self.transport_name})

    def stop(self, *_: object) -> None:
        for w in self.workers:
            w.stop()

    def drain(self, *_: object) -> None:
        """SIGTERM/SIGINT: finish the shots in flight (their final corrections or error replies
        are sent as usual), then stop; at most ``drain_s`` seconds. A second signal stops at once."""
        if self._draining:
            print("rtdecoder: second signal: stopping now", file=self.log)
            self.stop()
            return
        self._draining = True
        print(f"rtdecoder: draining: finishing the shots in flight (at most {self.cfg.drain_s:g} s)", file=self.log)
        deadline = time.monotonic_ns() + int(self.cfg.drain_s * 1e9)
        for w in self.workers:
            w.drain(deadline)

    def run(self) -> int:
        """Start the workers and wait until they stop (``stop()`` or a signal handler calling it).

        Returns:
            0, or 1 if a worker failed (its exception is printed).
        """
        if self.recorder is not None:
            self.recorder.start()
        for w in self.workers:
            w.start()
        while any(w.thread.is_alive() for w in self.workers):
            for w in self.workers:
                w.thread.join(timeout=0.2)  # a signal interrupts the wait and runs its handler
                if w.error is not None:
                    self.stop()
            if self._reload_pending and not self._draining:
                self._reload_pending = False
                self.reload()
        if self.recorder is not None:
            self.recorder.stop()
            print(f"rtdecoder: recorded {self.recorder.entries:,} entries ({self.recorder.drops:,} dropped: ring "
                  "full)", file=self.log)
        failed = [w for w in self.workers if w.error is not None]
        for w in failed:
            print(f"rtdecoder: worker on CPU {w.cpu} failed: {w.error!r}", file=self.log)
        return 1 if failed else 0

    def request_reload(self, *_: object) -> None:
        """SIGHUP: reload the config file (done by the main loop, not in the signal handler)."""
        self._reload_pending = True

    RESTART_ONLY = ("host", "port", "metrics_host", "metrics_port", "ring_slots", "cpus", "busy_poll_us",
                    "recv_batch", "error_replies_per_s", "error_burst", "backend", "busy_batches", "transport",
                    "max_stream_gib")

    def reload(self, new_cfg: ServerConfig | None = None) -> bool:
        """Apply a new configuration's streams without disturbing the streams that did not change.

        Streams added are built; streams changed are rebuilt, and answer NOT_READY meanwhile
        (their shot in progress is dropped); streams removed answer NOT_READY, then
        UNKNOWN_STREAM. While the new tables are built the workers go on serving; then each is
        parked between two datagrams (datagrams wait in the socket), the unchanged streams' shot
        state is carried over, and the workers resume. Server-level settings change only at a
        restart (said in the log). ``new_cfg`` defaults to the config file read again.

        Returns:
            Whether the new streams are in service. On any error the running configuration
            stays and the log says why.
        """
        t0 = time.perf_counter()
        if new_cfg is None:
            if not self.config_path:
                print("rtdecoder: SIGHUP: no --config file to reload; nothing changed", file=self.log)
                return False
            try:
                new_cfg = load_config(self.config_path)
                if self.overrides:  # the command line's server settings win over the file's, as at start
                    new_cfg = ServerConfig(**{**new_cfg.__dict__, **self.overrides})
            except ConfigError as e:
                print(f"rtdecoder: SIGHUP: config not reloaded, the running one stays: {e}", file=self.log)
                return False
        if self.gpu is not None:
            print("rtdecoder: SIGHUP: reloading is not supported with the GPU backend; restart the service",
                  file=self.log)
            return False
        fixed = [f for f in self.RESTART_ONLY if getattr(new_cfg, f) != getattr(self.cfg, f)]
        if fixed:
            print(f"rtdecoder: SIGHUP: {', '.join(fixed)} change only at a restart; the running values stay",
                  file=self.log)
        old = {c.id: c for c in self.cfg.streams}
        new = {c.id: c for c in new_cfg.streams}
        unchanged = [i for i in new if old.get(i) == new[i]]
        changed = [i for i in new if i in old and old[i] != new[i]]
        added = [i for i in new if i not in old]
        removed = [i for i in old if i not in new]
        if not (changed or added or removed):
            print("rtdecoder: SIGHUP: the streams are unchanged", file=self.log)
            return True
        for i in changed + removed:
            self.engine.st[i, K.C_READY] = 0  # NOT_READY while the new tables are built
        print(f"rtdecoder: SIGHUP: reconfiguring: streams added {added}, changed {changed}, removed {removed} "
              f"(changed and removed streams answer NOT_READY meanwhile; {unchanged} keep serving)", file=self.log)
        try:
            rts = [self.engine.streams[i] for i in unchanged] + [new[i] for i in changed + added]
            engine = Engine(rts, slot_bytes=self.engine.slot_bytes, max_stream_gib=self.cfg.max_stream_gib)
        except ConfigError as e:
            for i in changed + removed:
                self.engine.st[i, K.C_READY] = 1
            print(f"rtdecoder: SIGHUP: config not applied, the running one stays: {e}", file=self.log)
            return False
        t1 = time.perf_counter()
        parked = [w.park() for w in self.workers]
        try:
            if not all(parked):
                for i in changed + removed:
                    self.engine.st[i, K.C_READY] = 1
                print("rtdecoder: SIGHUP: a worker did not pause within 5 s; the running configuration stays",
                      file=self.log)
                return False
            engine.adopt(self.engine, unchanged)
            for w in self.workers:
                w.rebind(engine)
            self.engine = engine
            self.cfg = dataclasses.replace(self.cfg, streams=new_cfg.streams)
            if self.collector is not None:
                self.collector.rebind(engine)
        finally:
            pause_us = (time.perf_counter() - t1) * 1e6
            for w in self.workers:
                w.unpark()
        print(f"rtdecoder: SIGHUP: reloaded in {time.perf_counter() - t0:.1f} s (workers paused {pause_us:.0f} µs); "
              f"streams now {sorted(new)}", file=self.log)
        return True

    def counters(self) -> np.ndarray:
        """Every worker's counters (and the in-process path's), summed."""
        return self.engine.counters + sum(w.state.counters for w in self.workers)

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()
            self.opened = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._pm_qos is not None:
            os.close(self._pm_qos)
            self._pm_qos = None
        if self.gpu is not None:
            self.gpu.stop()
            self.gpu = None


def serve(cfg: ServerConfig, stdout: TextIO = sys.stdout, echo: bool = False, config_path: str | None = None,
          overrides: dict | None = None) -> int:
    """Build the service, announce readiness on ``stdout``, and serve until SIGINT or SIGTERM;
    SIGHUP reloads ``config_path`` (with the command line's ``overrides`` of its server
    settings applied again)."""
    server = Server(cfg, echo=echo, config_path=config_path, overrides=overrides)
    signal.signal(signal.SIGTERM, server.drain)
    signal.signal(signal.SIGINT, server.drain)
    signal.signal(signal.SIGHUP, server.request_reload)
    print(server.ready_line(), file=stdout, flush=True)
    try:
        rc = server.run()
    finally:
        server.close()
        c = server.counters()
        left = D.shots_in_flight(server.engine.st, 0, 1)
        print(f"rtdecoder: stopped after {c[K.CNT_PACKETS]} packets, {c[K.CNT_SHOTS]} shots decoded"
              + (f"; {left} shots were still in flight" if left else ""), file=server.log)
    return rc

