"""Prometheus export: a collector that reads the hot loop's preallocated arrays at scrape time.

The hot loop never calls ``observe()`` or ``inc()``: it adds to int64 arrays
(``Engine.counters``, ``Engine.hist``), and ``EngineCollector`` turns them into metric families
when Prometheus scrapes. Times are exported in seconds, with buckets from 1 µs to 10 ms
(``rtdecoder.kernels.stream.BUCKETS_NS``): the client library's default buckets start at 5 ms and
would hide everything that matters here.

Metrics (all prefixed ``rtdecoder_``):

- ``server_latency_seconds`` histogram: receive of the syndrome packet that completed a window →
  that window's CORRECTION handed to the socket.
- ``decode_seconds{decoder}`` histogram: time inside the window decoder, per window.
- ``packets_received_total``, ``bytes_received_total``, ``syndrome_packets_total``,
  ``corrections_sent_total``, ``shots_decoded_total``, ``shots_abandoned_total`` counters.
- ``packets_rejected_total{reason}`` counter, one ``reason`` per status code of
  ``docs/wire-protocol.md`` §6.
- ``streams`` gauge, ``build_info`` info.
"""

from __future__ import annotations

import platform
from typing import Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from rtdecoder import __version__
from rtdecoder import protocol as P
from rtdecoder.engine import HIST_DECODE, HIST_SERVER, Engine
from rtdecoder.kernels import stream as K

BUCKET_BOUNDS_S = [f"{b / 1e9:.6g}" for b in K.BUCKETS_NS] + ["+Inf"]


def _buckets(row: np.ndarray) -> tuple[list[tuple[str, float]], float]:
    row = row.copy()  # one consistent snapshot of a row that the hot loop keeps writing
    counts = np.cumsum(row[: K.NUM_BUCKETS])
    return [(le, float(c)) for le, c in zip(BUCKET_BOUNDS_S, counts)], float(row[K.NUM_BUCKETS + 1]) / 1e9


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


class EngineCollector(Collector):
    """Exports an ``Engine``'s counters and histograms (see the module docstring)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._info = build_info()

    def collect(self) -> Iterator:
        e = self.engine
        c = e.counters.copy()
        buckets, total = _buckets(e.hist[HIST_SERVER])
        yield HistogramMetricFamily(
            "rtdecoder_server_latency_seconds",
            "Receive of the syndrome packet that completed a window to its correction sent, seconds.",
            buckets=buckets, sum_value=total)
        dec = HistogramMetricFamily("rtdecoder_decode_seconds", "Time inside the window decoder per window, seconds.",
                                    labels=["decoder"])
        for name, i in P.DECODER_IDS.items():
            b, s = _buckets(e.hist[HIST_DECODE + i])
            dec.add_metric([name], b, s)
        yield dec
        for name, idx, doc in (
            ("rtdecoder_packets_received", K.CNT_PACKETS, "Datagrams received."),
            ("rtdecoder_bytes_received", K.CNT_BYTES, "Bytes received in datagrams."),
            ("rtdecoder_syndrome_packets", K.CNT_SYNDROME, "SYNDROME messages received, accepted or not."),
            ("rtdecoder_corrections_sent", K.CNT_CORRECTIONS, "CORRECTION messages sent."),
            ("rtdecoder_shots_decoded", K.CNT_SHOTS, "Shots whose final correction was sent."),
            ("rtdecoder_shots_abandoned", K.CNT_ABANDONED, "Shots the controller left unfinished by starting another."),
        ):
            yield CounterMetricFamily(name, doc, value=float(c[idx]))
        rej = CounterMetricFamily("rtdecoder_packets_rejected", "Datagrams answered with an error, by status code.",
                                  labels=["reason"])
        for status in P.Status:
            if status != P.Status.OK:
                rej.add_metric([status.name.lower()], float(c[status]))
        yield rej
        yield GaugeMetricFamily("rtdecoder_streams", "Configured streams.", value=len(e.streams))
        yield InfoMetricFamily("rtdecoder_build", "Versions of rtdecoder and what it decodes with.", value=self._info)


def make_registry(engine: Engine) -> CollectorRegistry:
    """A fresh registry holding only the engine's collector (tests make one each)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    return registry
