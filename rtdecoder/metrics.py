"""Prometheus export: a collector that reads the hot loop's preallocated arrays at scrape time.

The hot loop never calls ``observe()`` or ``inc()``: each worker adds to its own int64 arrays
(``rtdecoder.worker.WorkerState``: counters, histograms, trace ring), and
``EngineCollector`` sums them over the workers and turns them into metric families when
Prometheus scrapes. Times are exported in seconds, with buckets from 1 µs to 10 ms
(``rtdecoder.kernels.histogram.BUCKETS_NS``): the client library's default buckets start at 5 ms and
would hide everything that matters here.

Metrics (all prefixed ``rtdecoder_``):

- ``server_latency_seconds`` histogram: receive of the syndrome packet that completed a window →
  that window's CORRECTION handed to the socket.
- ``decode_seconds{decoder}`` histogram: time inside the window decoder, per window, one
  ``decoder`` label per registered decoder (``rtdecoder.decoders``).
- ``stage_seconds{stage}`` histogram, per window: ``check`` (received → datagram checked and its
  rounds appended), ``decode`` (checked → window decoded and committed), ``send`` (decoded →
  ``sendmmsg`` returned); see ``rtdecoder.dataplane``.
- ``stage_recent_seconds{stage, quantile}`` gauge: p50/p99/p99.9 of each stage (and ``server``,
  received → sent) over the last windows in the workers' trace rings (up to 4096 each).
- ``escape_seconds`` histogram: per window of a decoder called through the escape (matching,
  plug-ins), time spent entering and leaving the Python call beyond the decoder's own time.
- ``packets_received_total``, ``bytes_received_total``, ``syndrome_packets_total``,
  ``corrections_sent_total``, ``shots_decoded_total``, ``shots_abandoned_total``,
  ``receive_errors_total``, ``replies_dropped_total``, ``receive_batches_total`` counters.
- ``packets_rejected_total{reason}`` counter, one ``reason`` per status code of
  ``docs/wire-protocol.md`` §6.
- ``streams`` gauge, ``build_info`` info.
"""

from __future__ import annotations

import platform
from typing import Iterator, Sequence

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from rtdecoder import __version__
from rtdecoder import decoders
from rtdecoder import protocol as P
from rtdecoder.engine import Engine
from rtdecoder.kernels import cuqr as CQ
from rtdecoder.kernels import tables as K
from rtdecoder.kernels.histogram import BUCKETS_NS, NUM_BUCKETS
from rtdecoder.worker import WorkerState

BUCKET_BOUNDS_S = [f"{b / 1e9:.6g}" for b in BUCKETS_NS] + ["+Inf"]


def _buckets(row: np.ndarray) -> tuple[list[tuple[str, float]], float]:
    row = row.copy()  # one consistent snapshot of a row that the hot loop keeps writing
    counts = np.cumsum(row[:NUM_BUCKETS])
    return [(le, float(c)) for le, c in zip(BUCKET_BOUNDS_S, counts)], float(row[NUM_BUCKETS + 1]) / 1e9


def build_info() -> dict[str, str]:
    import numba
    import pymatching
    import stim

    return {
        "version": __version__,
        "python": platform.python_version(),
        "numba": numba.__version__,
        "stim": stim.__version__,
        "pymatching": pymatching.__version__,
        "protocol": str(P.VERSION),
    }


STAGES = (("check", K.HIST_CHECK, K.TR_RECEIVED, K.TR_CHECKED), ("decode", K.HIST_STAGE_DECODE, K.TR_CHECKED, K.TR_DECODED),
          ("send", K.HIST_SEND, K.TR_DECODED, K.TR_SENT))


class EngineCollector(Collector):
    """Exports an engine's and its workers' counters and histograms (see the module docstring)."""

    def __init__(self, engine: Engine, workers: Sequence[WorkerState] = (), fds: Sequence[int] = ()):
        self.engine = engine
        self.states = [engine.local, *workers]
        self.fds = list(fds)
        self._info = build_info()

    def rebind(self, engine: Engine) -> None:
        """Report ``engine`` (a reloaded configuration) from now on."""
        self.engine = engine
        self.states[0] = engine.local

    def collect(self) -> Iterator:
        c = sum(s.counters.copy() for s in self.states)
        hist = sum(s.hist.copy() for s in self.states)
        buckets, total = _buckets(hist[K.HIST_SERVER])
        yield HistogramMetricFamily(
            "rtdecoder_server_latency_seconds",
            "Receive of the syndrome packet that completed a window to its correction's send stamp (the "
            "server_tx_ns - server_rx_ns a CORRECTION carries), seconds; the send call itself is in "
            "rtdecoder_stage_seconds{stage=\"send\"}.",
            buckets=buckets, sum_value=total)
        dec = HistogramMetricFamily("rtdecoder_decode_seconds", "Time inside the window decoder per window, seconds.",
                                    labels=["decoder"])
        for spec in decoders.specs():
            b, s = _buckets(hist[K.HIST_DECODE + spec.wire_id])
            dec.add_metric([spec.name], b, s)
        yield dec
        stage = HistogramMetricFamily("rtdecoder_stage_seconds", "Per window, time in each stage of the data plane, "
                                      "seconds (check, decode, send).", labels=["stage"])
        for name, row, _, _ in STAGES:
            b, s = _buckets(hist[row])
            stage.add_metric([name], b, s)
        yield stage
        b, s = _buckets(hist[K.HIST_ESCAPE])
        yield HistogramMetricFamily("rtdecoder_escape_seconds", "Per window of a decoder called through the "
                                    "escape, time entering and leaving the Python call beyond the decoder's own "
                                    "time, seconds.", buckets=b, sum_value=s)
        yield self._recent()
        for name, idx, doc in (
            ("rtdecoder_packets_received", K.CNT_PACKETS, "Datagrams of rtdecoder's protocol received (CUQR "
             "requests: rtdecoder_cuqr_requests_total)."),
            ("rtdecoder_bytes_received", K.CNT_BYTES, "Bytes received in datagrams."),
            ("rtdecoder_syndrome_packets", K.CNT_SYNDROME, "SYNDROME messages received, accepted or not."),
            ("rtdecoder_corrections_sent", K.CNT_CORRECTIONS, "CORRECTION messages sent."),
            ("rtdecoder_shots_decoded", K.CNT_SHOTS, "Shots whose final correction was sent."),
            ("rtdecoder_shots_abandoned", K.CNT_ABANDONED, "Shots the controller left unfinished by starting another."),
            ("rtdecoder_receive_errors", K.CNT_RECV_ERRORS, "recvmmsg failures other than 'nothing to receive'."),
            ("rtdecoder_replies_dropped", K.CNT_SEND_DROPPED, "Replies the kernel refused to send."),
            ("rtdecoder_receive_batches", K.CNT_BATCHES, "recvmmsg calls that returned datagrams "
             "(packets_received / this: datagrams per batch)."),
            ("rtdecoder_overloads", K.CNT_OVERLOADED, "Times a worker fell behind (consecutive full receive "
             "batches) and began answering new shots BUSY."),
            ("rtdecoder_error_replies_suppressed", K.CNT_ERRORS_SUPPRESSED, "ERROR replies not sent: the source "
             "was over its error-reply budget (the datagrams are still counted by reason)."),
        ):
            yield CounterMetricFamily(name, doc, value=float(c[idx]))
        rej = CounterMetricFamily("rtdecoder_packets_rejected", "Datagrams rejected, by status code (answered "
                                  "with an ERROR), or not_allowed (a source outside the stream's allow-list: no reply).",
                                  labels=["reason"])
        for status in P.Status:
            if status != P.Status.OK:
                rej.add_metric([status.name.lower()], float(c[status]))
        rej.add_metric(["not_allowed"], float(c[K.REJECT_NOT_ALLOWED]))
        yield rej
        req = CounterMetricFamily("rtdecoder_cuqr_requests", "CUDA-Q real-time RPC (CUQR) requests received, by "
                                  "function (other: none of the three, or a header that does not parse).",
                                  labels=["function"])
        known = 0
        for i, name in enumerate(("enqueue_syndromes", "get_corrections", "reset_decoder")):
            req.add_metric([name], float(c[K.CNT_CQ_FUNCTION + i]))
            known += c[K.CNT_CQ_FUNCTION + i]
        req.add_metric(["other"], float(c[K.CNT_CQ_REQUESTS] - known))
        yield req
        rep = CounterMetricFamily("rtdecoder_cuqr_replies", "CUQR responses, by status (BAD_REQUEST and "
                                  "INVALID_DECODER counted here even when the source's error-reply budget kept "
                                  "them from being sent).", labels=["status"])
        for i, name in enumerate(CQ.STATUS_NAMES):
            rep.add_metric([name.lower()], float(c[K.CNT_CQ_STATUS + i]))
        yield rep
        yield GaugeMetricFamily("rtdecoder_workers_overloaded", "Workers answering new shots BUSY now.",
                                value=float(sum(int(st.ctl[K.CTL_SHED]) for st in self.states)))
        if self.fds:
            queued, dropped = socket_queues(self.fds)
            yield GaugeMetricFamily("rtdecoder_socket_queued_bytes", "Bytes waiting in the service's UDP receive "
                                    "buffers (bounded by SO_RCVBUF).", value=float(queued))
            yield CounterMetricFamily("rtdecoder_socket_drops", "Datagrams the kernel dropped because a receive "
                                      "buffer was full (/proc/net/udp).", value=float(dropped))
        fb = CounterMetricFamily("rtdecoder_deadline_fallbacks", "Windows of streams with a deadline_us that "
                                 "their escape decoder (from) would have finished past the deadline, decoded by "
                                 "its fast mode or by the compiled fallback decoder (to) instead.",
                                 labels=["from", "to"])
        last = next((s.name for s in decoders.specs() if s.fallback), "none")
        for spec in decoders.specs():
            if spec.call == "escape":
                if spec.fast:
                    fb.add_metric([spec.name, spec.fast], float(c[K.CNT_FALLBACK_FAST + spec.wire_id]))
                fb.add_metric([spec.name, last], float(c[K.CNT_FALLBACK + spec.wire_id]))
        yield fb
        fr = CounterMetricFamily("rtdecoder_frames", "Frames an AF_XDP worker took from its RX ring, by what "
                                 "rtdecoder.kernels.frames.parse_udp found (ok: handed to the data path).",
                                 labels=["status"])
        from rtdecoder.kernels.frames import STATUS_NAMES

        for i, name in enumerate(STATUS_NAMES):
            fr.add_metric([name], float(c[K.CNT_FRAMES + i]))
        yield fr
        pw = CounterMetricFamily("rtdecoder_parallel_windows", "Windows of parallel streams (parallel > 1) decoded, "
                                 "by who decoded them: a helper thread, or the owning worker (its turn, or no "
                                 "helper free).", labels=["by"])
        pw.add_metric(["helper"], float(c[K.CNT_PAR_HELPER]))
        pw.add_metric(["owner"], float(c[K.CNT_PAR_OWNER]))
        yield pw
        polls = CounterMetricFamily("rtdecoder_worker_polls", "Turns of each data-plane worker's receive loop, "
                                    "busy or idle: one that stops rising is a worker not polling (stuck in a "
                                    "decode, or not scheduled).", labels=["worker"])
        for i, st in enumerate(self.states[1:]):
            polls.add_metric([str(i)], float(st.counters[K.CNT_POLLS]))
        yield polls
        yield self._backlog()
        dl = GaugeMetricFamily("rtdecoder_stream_deadline_seconds", "Per stream, its deadline_us in seconds (0: "
                               "none): the bound the alert on the service's p99 compares with.", labels=["stream"])
        for sid in sorted(self.engine.streams):
            dl.add_metric([str(sid)], self.engine.streams[sid].cfg.deadline_us * 1e-6)
        yield dl
        yield GaugeMetricFamily("rtdecoder_streams", "Configured streams.", value=len(self.engine.streams))
        yield GaugeMetricFamily("rtdecoder_workers", "Data-plane workers.", value=len(self.states) - 1)
        yield InfoMetricFamily("rtdecoder_build", "Versions of rtdecoder and what it decodes with.", value=self._info)

    def _backlog(self) -> GaugeMetricFamily:
        g = GaugeMetricFamily("rtdecoder_stream_backlog_rounds", "Per stream, rounds of the shot in progress "
                              "received but not yet committed (0 between shots): how far decoding trails the "
                              "controller.", labels=["stream"])
        st, win = self.engine.st, self.engine.win
        for sid in sorted(self.engine.streams):
            g.add_metric([str(sid)], float(stream_backlog(st, win, sid)))
        return g

    def _recent(self) -> GaugeMetricFamily:
        g = GaugeMetricFamily("rtdecoder_stage_recent_seconds", "Quantiles of each stage over the workers' trace "
                              "rings (the last windows decoded), seconds.", labels=["stage", "quantile"])
        t = np.concatenate([s.trace[s.trace[:, K.TR_SENT] > 0] for s in self.states])
        if len(t) == 0:
            return g
        spans = [(name, t[:, b] - t[:, a]) for name, _, a, b in STAGES]
        spans.append(("server", t[:, K.TR_SENT] - t[:, K.TR_RECEIVED]))
        for name, v in spans:
            for q, x in zip(("0.5", "0.99", "0.999"), np.percentile(v, [50, 99, 99.9])):
                g.add_metric([name, q], float(x) / 1e9)
        return g


def stream_backlog(st: np.ndarray, win: np.ndarray, sid: int) -> int:
    """Rounds of stream ``sid``'s shot in progress received but not committed: the rounds
    received past the commit region of its last committed window (0 when no shot is in
    progress, or it is done or poisoned). Read while the worker writes: a snapshot."""
    row = st[sid].copy()
    if row[K.S_HAS_SHOT] != 1 or row[K.S_DONE] == 1 or row[K.S_POISONED] == 1:
        return 0
    done = int(row[K.S_NEXT_WIN])
    committed = int(win[row[K.C_WIN_BASE] + done - 1, K.W_COMMIT]) if done > 0 else 0
    return max(int(row[K.S_NEXT_ROUND]) - committed, 0)


def socket_queues(fds: Sequence[int]) -> tuple[int, int]:
    """(bytes queued, datagrams dropped) over the UDP sockets ``fds``, from ``/proc/net/udp`` and
    ``/proc/net/udp6`` (the kernel drops a datagram when a socket's receive buffer is full);
    (0, 0) where those files cannot be read."""
    import os

    inodes = set()
    for fd in fds:
        try:
            inodes.add(os.fstat(fd).st_ino)
        except OSError:
            pass
    queued = dropped = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) >= 13 and int(f[9]) in inodes:
                queued += int(f[4].split(":")[1], 16)
                dropped += int(f[12])
    return queued, dropped


def make_registry(engine: Engine, workers: Sequence[WorkerState] = (), fds: Sequence[int] = ()) -> CollectorRegistry:
    """A fresh registry holding only the engine's collector (tests make one each); ``fds``: the
    service's sockets, whose kernel queues and drops are exported."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, workers, fds))
    return registry


def serve_http(port: int, addr: str, registry: CollectorRegistry, is_ready):
    """Serve ``registry`` over HTTP on ``addr:port`` in a daemon thread; the server (its
    ``server_port``, ``shutdown``, ``server_close``).

    Paths: ``/metrics`` (and ``/``) answers 503 with a line of text until ``is_ready()`` is
    true (the streams are still being built: a scrape then records the target down rather than
    healthy with no series), then the exposition; ``/healthz`` 200 while the process runs (a
    liveness probe); ``/readyz`` 200 once ready, else 503 (a readiness probe).

    Raises:
        OSError: the address cannot be bound.
    """
    import socket
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"alive\n"]
        if path == "/readyz" or not is_ready():
            ok = is_ready()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ready\n" if ok else b"rtdecoder: the streams are being built; no metrics yet\n"]
        return metrics(environ, start_response)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # no line per scrape
            pass

    httpd = make_server(addr, port, app, server_class=Server, handler_class=Quiet)
    threading.Thread(target=httpd.serve_forever, name="rtdecoder-metrics-http", daemon=True).start()
    return httpd
