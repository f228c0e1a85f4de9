"""The engine: every configured stream's graphs, decoders and hot-path tables.

Building an ``Engine`` does all the work that DESIGN.md keeps off the hot path: stim circuits,
DEMs, window plans and graphs, decoder compilation, and the preallocated arrays of
``rtdecoder.kernels.stream``. After that, a datagram is handled by ``Engine.handle`` (or the
same steps inlined in ``rtdecoder.server``): ``ingest`` checks it and appends its rounds; each
window that became complete is decoded and committed, and its CORRECTION goes back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import stim

from rtdecoder import protocol as P
from rtdecoder.config import StreamConfig
from rtdecoder.decoders import CompiledWindowDecoder, make_decoder
from rtdecoder.dem import DetectorLayout, dem_components, detector_layout, make_circuit
from rtdecoder.kernels import stream as K
from rtdecoder.windows import WindowPlan, plan_windows

HIST_SERVER = 0
"""Row of ``Engine.hist``: receive of the syndrome packet that completed a window → its
CORRECTION sent."""
HIST_DECODE = 1
"""Rows ``HIST_DECODE + decoder id`` of ``Engine.hist``: time inside the window decoder."""
TX_BYTES = 256


@dataclass
class StreamRuntime:
    """One configured stream: its circuit, DEM, layout, window plan and compiled decoder."""

    cfg: StreamConfig
    circuit: stim.Circuit | None
    dem: stim.DetectorErrorModel
    layout: DetectorLayout
    plan: WindowPlan
    decoder: CompiledWindowDecoder

    @property
    def info(self) -> P.StreamInfo:
        return P.StreamInfo(
            num_detectors=self.layout.num_detectors,
            num_rounds=self.layout.num_rounds,
            num_observables=self.layout.num_observables,
            round_bytes=self.layout.round_bytes,
            max_datagram=self.cfg.max_datagram,
            window_rounds=self.cfg.window,
            commit_rounds=self.cfg.commit,
            decoder=P.DECODER_IDS[self.cfg.decoder],
        )


def build_stream(cfg: StreamConfig) -> StreamRuntime:
    """Everything one stream needs, built once (raises ``ConfigError`` on a bad stream)."""
    circuit = make_circuit(cfg)
    return stream_for_dem(cfg, circuit.detector_error_model(decompose_errors=True), circuit)


def stream_for_dem(cfg: StreamConfig, dem: stim.DetectorErrorModel, circuit: stim.Circuit | None = None) -> StreamRuntime:
    """A stream decoding ``dem`` (graphlike, with detector time coordinates) with ``cfg``'s
    decoder and windows; ``cfg``'s circuit fields are not used."""
    layout = detector_layout(dem)
    plan = plan_windows(layout, dem_components(dem), cfg.window, cfg.commit)
    decoder = make_decoder(cfg.decoder).compile(plan)
    return StreamRuntime(cfg, circuit, dem, layout, plan, decoder)


class Engine:
    """The configured streams and the preallocated tables the hot path works on.

    Args:
        streams: stream configurations (or streams already built, ``stream_for_dem``) with
            distinct ids.
        slot_bytes: size of a receive slot; datagrams longer than this are rejected TOO_LARGE.

    Raises:
        ConfigError: a stream cannot be built (the message says which and why).
    """

    def __init__(self, streams: Sequence[StreamConfig | StreamRuntime], slot_bytes: int = P.DEFAULT_MAX_DATAGRAM):
        self.slot_bytes = slot_bytes
        self.streams: dict[int, StreamRuntime] = {}
        for item in streams:
            rt = item if isinstance(item, StreamRuntime) else build_stream(item)
            self.streams[rt.cfg.id] = rt
        self._build_tables()
        self.warm_up()

    def _build_tables(self) -> None:
        rts = list(self.streams.values())
        max_sid = max(self.streams)
        self.st = np.zeros((max_sid + 1, K.NUM_COLS), np.int64)
        offs, win, gbase, node_round, edges = [], [], [], [], []
        off_base = syn_base = win_base = node_base = edge_base = graph_base = 0
        spans: list[tuple[int, int]] = []  # each window's detectors in syn, all streams in order
        local_graph: list[int] = []
        for rt in rts:
            sid, lay, plan = rt.cfg.id, rt.layout, rt.plan
            row = self.st[sid]
            row[K.C_CONFIGURED] = 1
            row[K.C_READY] = 1
            row[K.C_NROUNDS] = lay.num_rounds
            row[K.C_RBYTES] = lay.round_bytes
            row[K.C_NDET] = lay.num_detectors
            row[K.C_NOBS] = lay.num_observables
            row[K.C_OFF_BASE] = off_base
            row[K.C_SYN_BASE] = syn_base
            row[K.C_WIN_BASE] = win_base
            row[K.C_NWIN] = plan.num_windows
            row[K.C_MAXDG] = min(rt.cfg.max_datagram, self.slot_bytes)
            row[K.C_WINDOW] = rt.cfg.window
            row[K.C_COMMIT] = rt.cfg.commit
            row[K.C_DECODER] = P.DECODER_IDS[rt.cfg.decoder]
            offs.append(lay.round_offsets)
            off_base += len(lay.round_offsets)
            spans += [(syn_base + int(lay.round_offsets[a]), syn_base + int(lay.round_offsets[b]))
                      for a, b in zip(plan.start, plan.end)]
            local_graph += [int(g) for g in plan.graph]
            syn_base += lay.num_detectors
            w = np.stack([plan.start, plan.end, plan.commit_end, plan.graph + graph_base], axis=1)
            win.append(w)
            win_base += plan.num_windows
            graph_base += len(plan.graphs)
            for g in plan.graphs:
                gbase.append((node_base, edge_base))
                node_round.append(g.node_round)
                edges.append(np.stack([g.edge_u, g.edge_v, g.edge_obs.view(np.int64)], axis=1))
                node_base += g.num_nodes
                edge_base += g.num_edges
        self.offs = np.concatenate(offs).astype(np.int64)
        self.syn = np.zeros(syn_base, np.uint8)
        self.win = np.ascontiguousarray(np.concatenate(win).astype(np.int64))
        self.gbase = np.asarray(gbase, np.int64).reshape(-1, 2)
        self.node_round = np.concatenate(node_round).astype(np.int64)
        self.edges = np.ascontiguousarray(np.concatenate(edges).astype(np.int64))
        self.counters = np.zeros(K.NUM_COUNTERS, np.int64)
        self.hist = np.zeros((HIST_DECODE + len(P.DECODER_IDS), K.NUM_BUCKETS + 2), np.int64)
        self.tx = np.zeros(TX_BYTES, np.uint8)
        self.tx64 = self.tx.view(np.uint64)
        whole = memoryview(self.tx)
        self.tx_views = [whole[:i] for i in range(TX_BYTES + 1)]  # one per reply length, made once
        self.out = np.zeros(3, np.int64)
        self.decoders = [None] * (max_sid + 1)
        for rt in rts:
            self.decoders[rt.cfg.id] = rt.decoder
        # Per global window, made once: its detection events (a view of syn, carry included) and
        # its graph's index within its stream's decoder. The window loop only looks them up.
        self.window_events = [self.syn[lo:hi] for lo, hi in spans]
        self.window_graph = local_graph

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) every kernel, then zero the counters."""
        buf = np.zeros(self.slot_bytes, np.uint8)
        ping = P.encode(P.Header(P.MsgType.PING))
        buf[: len(ping)] = np.frombuffer(ping, np.uint8)
        K.ingest(buf, len(ping), 0, self.st, self.offs, self.syn, self.counters, self.tx, self.out)
        sid = next(iter(self.streams))
        K.next_window(self.st, self.win, sid)
        chosen = np.zeros(1, np.int64)
        st_copy, syn_copy, c_copy = self.st.copy(), self.syn.copy(), self.counters.copy()
        K.commit_window(st_copy, self.offs, syn_copy, self.win, self.gbase, self.node_round, self.edges,
                        sid, 0, chosen, 0, self.tx.copy(), c_copy)
        K.observe(self.hist.copy(), 0, 1)
        self.counters[:] = 0

    # -- in-process path (tests, the demo's cross-check, benchmarks) -------------------------
    def handle(self, datagram: bytes | bytearray | np.ndarray, rx_ns: int | None = None,
               clock: Callable[[], int] = time.perf_counter_ns) -> list[bytes]:
        """Process one datagram as the server does and return the replies it would send.

        Allocates (it copies the datagram into a slot and the replies into ``bytes``); the
        server's loop runs the same steps on a ring slot and sends from ``tx`` directly.
        """
        buf = np.zeros(self.slot_bytes, np.uint8)
        data = np.frombuffer(bytes(datagram), np.uint8)
        buf[: min(len(data), self.slot_bytes)] = data[: self.slot_bytes]
        rx = clock() if rx_ns is None else rx_ns
        replies: list[bytes] = []
        K.ingest(buf, len(data), rx, self.st, self.offs, self.syn, self.counters, self.tx, self.out)
        if self.out[K.OUT_REPLY_LEN]:
            if self.out[K.OUT_STAMP]:
                self.tx64[K.STAMP_OFFSET // 8] = clock()
            replies.append(self.tx[: self.out[K.OUT_REPLY_LEN]].tobytes())
        sid = int(self.out[K.OUT_STREAM])
        if sid >= 0:
            self.run_windows(sid, lambda view, acc: acc.append(bytes(view)), replies, clock)
        return replies

    def run_windows(self, sid: int, send: Callable[[memoryview, object], object], dest: object,
                    clock: Callable[[], int] = time.perf_counter_ns) -> int:
        """Decode and commit every complete window of stream ``sid``.

        Each CORRECTION is built in ``self.tx``, stamped with its send time, and handed to
        ``send(view, dest)`` (the server passes ``socket.sendto`` and the controller's address).
        A decoder failure poisons the shot and sends an INTERNAL error instead.

        Returns:
            The number of windows decoded.
        """
        st, win, syn, tx, hist, views = self.st, self.win, self.syn, self.tx, self.hist, self.tx_views
        window_graph, window_events = self.window_graph, self.window_events
        dec = self.decoders[sid]
        row = HIST_DECODE + st[sid, K.C_DECODER]
        done = 0
        while True:
            k = K.next_window(st, win, sid)
            if k < 0:
                return done
            t0 = clock()
            try:
                chosen, n = dec.decode_window(window_graph[k], window_events[k])
            except ValueError:
                st[sid, K.S_POISONED] = 1
                self.counters[P.Status.INTERNAL] += 1
                size = K.write_error(tx, tx, 0, int(P.Status.INTERNAL), st[sid, K.S_SHOT], win[k, K.W_START],
                                     st[sid, K.S_RX_NS])
                K.wr(tx, P.OFF_STREAM, 2, sid)
                send(views[size], dest)
                return done
            t1 = clock()
            size = K.commit_window(st, self.offs, syn, win, self.gbase, self.node_round, self.edges,
                                   sid, k, chosen, n, tx, self.counters)
            K.observe(hist, row, t1 - t0)
            t2 = clock()
            self.tx64[K.STAMP_OFFSET // 8] = t2
            send(views[size], dest)
            K.observe(hist, HIST_SERVER, t2 - st[sid, K.S_RX_NS])
            done += 1

    def decode_shots(self, sid: int, events: np.ndarray, rounds_per_packet: int = 1) -> np.ndarray:
        """Decode whole shots in process, through the same packets and state machine as the server.

        Args:
            sid: stream id.
            events: bool/uint8 array ``(num_shots, num_detectors)``.
            rounds_per_packet: rounds framed into each SYNDROME packet.

        Returns:
            uint8 array ``(num_shots, num_observables)``: each shot's final prediction.

        Raises:
            RuntimeError: a shot got no FINAL correction (an error reply instead).
        """
        rt = self.streams[sid]
        lay = rt.layout
        packed = P.pack_rounds(events, lay.round_offsets, lay.round_bytes)
        preds = np.zeros((len(events), lay.num_observables), np.uint8)
        self.handle(P.encode(P.Header(P.MsgType.RESET, stream_id=sid)))
        for s in range(len(events)):
            final = None
            for first in range(0, lay.num_rounds, rounds_per_packet):
                nr = min(rounds_per_packet, lay.num_rounds - first)
                pkt = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=sid, shot_id=s + 1, first_round=first,
                                        num_rounds=nr), packed[s, first:first + nr].tobytes())
                for reply in self.handle(pkt):
                    h = P.decode_header(reply)
                    if h.msg_type != P.MsgType.CORRECTION:
                        raise RuntimeError(f"shot {s}: {P.decode_error(reply)[1].name} reply")
                    c = P.decode_correction(reply, lay.num_observables)
                    if c.final:
                        final = c
            if final is None:
                raise RuntimeError(f"shot {s}: no final correction")
            preds[s] = final.cumulative
        return preds
