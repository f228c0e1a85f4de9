"""``rtdecoder serve``: the decoding service.

Start-up builds the ``Engine`` (every graph, decoder and table), the pinned receive ring, the
UDP socket and the metrics endpoint, then prints one JSON line ``{"event": "ready", ...}`` on
standard output with the bound ports, and enters the data-plane loop.

The loop runs to completion on one core (DESIGN.md, "The hot path"): it busy-polls the
non-blocking socket, receives into the next ring slot, lets ``ingest`` check the datagram and
append its rounds, decodes and commits every window that became complete, and sends each reply
from the preallocated ``tx`` buffer. Per packet it builds no graph or buffer and formats or logs
nothing; it does run Python bytecode (the socket calls and the PyMatching call), which a later
stage removes by compiling the whole loop with numba.

SIGINT and SIGTERM stop the loop after the datagram in hand; the process then exits 0.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Callable, TextIO

from prometheus_client import start_http_server

from rtdecoder.config import ServerConfig
from rtdecoder.engine import Engine
from rtdecoder.kernels import stream as K
from rtdecoder.metrics import make_registry
from rtdecoder.ring import PinnedRing
from rtdecoder.transport.udp import MSG_TRUNC, UdpTransport


class Server:
    """A configured service: engine, ring, transport and metrics endpoint.

    Raises:
        ConfigError: a stream cannot be built.
        OSError: an address cannot be bound.
    """

    def __init__(self, cfg: ServerConfig, log: TextIO = sys.stderr):
        self.cfg = cfg
        self.log = log
        t0 = time.perf_counter()
        slot_bytes = 1 << max(s.max_datagram for s in cfg.streams).bit_length()
        self.engine = Engine(cfg.streams, slot_bytes=slot_bytes)
        for rt in self.engine.streams.values():
            print(f"rtdecoder: {rt.cfg.describe()}: {rt.layout.num_detectors} detectors in "
                  f"{rt.layout.num_rounds} rounds, {rt.plan.num_windows} windows on "
                  f"{len(rt.plan.graphs)} distinct graphs", file=log)
        print(f"rtdecoder: streams built in {time.perf_counter() - t0:.1f} s", file=log)
        self.ring = PinnedRing(cfg.ring_slots, slot_bytes)
        print(f"rtdecoder: ring {cfg.ring_slots} x {slot_bytes} bytes, {self.ring.pinned_reason}", file=log)
        self.transport = UdpTransport(cfg.host, cfg.port)
        print(f"rtdecoder: transport udp on {self.transport.address[0]}:{self.transport.address[1]} "
              "(busy-polled; RDMA is not built yet)", file=log)
        self.metrics_port = -1
        if cfg.metrics_port >= 0:
            httpd, _ = start_http_server(cfg.metrics_port, addr=cfg.metrics_host, registry=make_registry(self.engine))
            self.metrics_port = httpd.server_port
            print(f"rtdecoder: metrics on http://{cfg.metrics_host}:{self.metrics_port}/metrics", file=log)
        self.running = [True]

    def ready_line(self) -> str:
        return json.dumps({"event": "ready", "host": self.transport.address[0], "port": self.transport.address[1],
                           "metrics_port": self.metrics_port})

    def stop(self, *_: object) -> None:
        self.running[0] = False

    def run(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        """The data-plane loop; returns when ``stop()`` is called (or a signal handler calls it)."""
        e = self.engine
        st, offs, syn, counters, tx, out, tx64, views = e.st, e.offs, e.syn, e.counters, e.tx, e.out, e.tx64, e.tx_views
        ingest = K.ingest
        run_windows = e.run_windows
        sock = self.transport.sock
        recv = sock.recvfrom_into
        sendto = sock.sendto
        slot_views = self.ring.views
        slot_arrays = [self.ring.array[i] for i in range(self.ring.slots)]
        mask = self.ring.mask
        stamp = K.STAMP_OFFSET // 8
        running = self.running
        slot = 0
        while running[0]:
            try:
                n, addr = recv(slot_views[slot], 0, MSG_TRUNC)
            except BlockingIOError:
                continue
            except ConnectionRefusedError:  # an ICMP error from an earlier send: nothing to do
                continue
            rx = clock()
            ingest(slot_arrays[slot], n, rx, st, offs, syn, counters, tx, out)
            size = out[0]
            if size:
                if out[2]:
                    tx64[stamp] = clock()
                try:
                    sendto(views[size], addr)
                except OSError:
                    pass
            if out[1] >= 0:
                try:
                    run_windows(out[1], sendto, addr, clock)
                except OSError:
                    pass
            slot = (slot + 1) & mask

    def close(self) -> None:
        self.transport.close()


def serve(cfg: ServerConfig, stdout: TextIO = sys.stdout) -> int:
    """Build the service, announce readiness on ``stdout``, and serve until SIGINT or SIGTERM."""
    server = Server(cfg)
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    print(server.ready_line(), file=stdout, flush=True)
    try:
        server.run()
    finally:
        server.close()
        c = server.engine.counters
        print(f"rtdecoder: stopped after {c[K.CNT_PACKETS]} packets, {c[K.CNT_SHOTS]} shots decoded", file=server.log)
    return 0
