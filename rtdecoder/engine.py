"""The engine: every configured stream's graphs, decoders and hot-path tables.

Building an ``Engine`` does all the work that must stay off the data path: stim circuits,
DEMs, window plans and graphs, decoder compilation, and the preallocated tables of
``rtdecoder.kernels.tables``. After that, a datagram is handled by
``rtdecoder.dataplane.process_datagram``, in a transport's compiled loop or in process through
``Engine.handle``: ``ingest`` checks it and appends its rounds; each window that became complete
is decoded and committed, and its CORRECTION goes back.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import stim

from rtdecoder import dataplane as D
from rtdecoder import decoders
from rtdecoder import protocol as P
from rtdecoder.config import StreamConfig, format_ids
from rtdecoder.decoders import CompiledWindowDecoder, DecoderSpec
from rtdecoder.dem import (DetectorLayout, MeasurementLayout, circuit_dem, dem_components, detector_layout, make_circuit,
                           measurement_layout, measurement_layout_from_rows, observable_detectors)
from rtdecoder.heralds import herald_detectors
from rtdecoder.kernels import tables as K
from rtdecoder.kernels import union_find as uf
from rtdecoder.kernels import wire
from rtdecoder.transport import libc as L
from rtdecoder.transport.libc import allow_rows, source_words
from rtdecoder.windows import WindowPlan, plan_parallel, plan_windows
from rtdecoder.worker import WorkerState


@dataclass
class StreamRuntime:
    """One configured stream: its circuit, DEM, layout, window plan and compiled decoder, and
    ``keep``, uint8 per detector (``rtdecoder.dem.observable_detectors``: 1 where a detection
    event can change an observable; ingest drops the others)."""

    cfg: StreamConfig
    circuit: stim.Circuit | None
    dem: stim.DetectorErrorModel
    layout: DetectorLayout
    plan: WindowPlan
    spec: DecoderSpec
    decoder: CompiledWindowDecoder
    keep: np.ndarray
    mlayout: MeasurementLayout | None = None
    """Where the controller sends measurements: how they become detection events."""
    heralds: np.ndarray | None = None
    """bool per detector: the herald detectors (``rtdecoder.heralds``), or None: none."""
    _fingerprint: int | None = None

    @property
    def num_heralds(self) -> int:
        return int(self.heralds.sum()) if self.heralds is not None else 0

    @property
    def round_bytes(self) -> int:
        """A round block's size on the wire: of detection events, or of measurements."""
        return self.mlayout.round_bytes if self.mlayout is not None else self.layout.round_bytes

    @property
    def fingerprint(self) -> int:
        """The DEM's fingerprint (DESCRIBE_REPLY, docs/wire-protocol.md §4.8), u64."""
        if self._fingerprint is None:
            self._fingerprint = P.dem_fingerprint(self.dem)
        return self._fingerprint

    @property
    def info(self) -> P.StreamInfo:
        return P.StreamInfo(
            num_detectors=self.layout.num_detectors,
            num_rounds=self.layout.num_rounds,
            num_observables=self.layout.num_observables,
            round_bytes=self.round_bytes,
            max_datagram=self.cfg.max_datagram,
            window_rounds=self.cfg.window,
            commit_rounds=self.cfg.commit,
            decoder=self.spec.wire_id,
            input=P.INPUT_MEASUREMENTS if self.mlayout is not None else P.INPUT_DETECTION_EVENTS,
        )


DEFAULT_MAX_STREAM_GIB = 8.0
"""The largest estimated cost of one stream's build (``estimate_stream_bytes``) that is built
without asking: ``--max-stream-gib`` / ``max_stream_gib`` raise it."""
PROGRESS_BYTES = 1 << 30
"""Streams estimated above this are built behind a progress display."""
BYTES_PER_GRAPH_NODE = 8192
BYTES_PER_DETECTOR = 1024
"""The estimate's coefficients: the peak memory of building streams of d = 5 .. 25 (DEM, window
graphs, PyMatching's and union-find's copies of them) stayed under these per window-graph node
and per detector of the shot (docs/architecture.md, "Measurements")."""


def estimate_stream_bytes(cfg: StreamConfig, circuit: stim.Circuit | None) -> tuple[int, str]:
    """An upper estimate of the memory that building stream ``cfg`` takes, from its circuit's
    detector count and its windows alone (nothing is built), and a description of the sizes.

    The window graphs dominate: a stream has at most four distinct ones (first, interior, next to
    last, last), each of about ``W`` rounds' detectors; with parallel windows, about six of up to
    ``2W - C`` rounds'."""
    if cfg.model is not None:
        nd, blocks = cfg.model.num_detectors, cfg.model.num_rounds
    else:
        nd = circuit.num_detectors
        blocks = cfg.rounds + 1 if cfg.is_generated else \
            len({c[-1] for c in circuit.get_detector_coordinates().values() if c}) or 1
    per_round = nd / max(blocks, 1)
    w = blocks if cfg.window == 0 else min(cfg.window, blocks)
    windows = 1 if w >= blocks else -(-(blocks - w) // max(cfg.commit, 1)) + 1
    graphs = min(4, windows)
    if cfg.parallel > 1 and w < blocks:  # A windows of W + (W - C) rounds; first, inner, last A and B graphs
        w = min(2 * cfg.window - cfg.commit, blocks)
        graphs = min(6, 2 * windows)
    est = int(BYTES_PER_GRAPH_NODE * graphs * w * per_round + BYTES_PER_DETECTOR * nd)
    return est, (f"{nd:,} detectors in {blocks:,} round blocks, {graphs} window graph(s) of about "
                 f"{int(w * per_round):,} nodes")


def build_stream(cfg: StreamConfig, step=None, circuit: stim.Circuit | None = None) -> StreamRuntime:
    """Everything one stream needs, built once (raises ``ConfigError`` on a bad stream).
    ``step(name)``, if given, is called as each stage begins (a progress display); ``circuit``:
    ``make_circuit(cfg)``, if already made."""
    step = step or (lambda name: None)
    if cfg.model is not None:
        return stream_for_dem(cfg, cfg.model.dem, None, step)
    step("circuit")
    circuit = circuit if circuit is not None else make_circuit(cfg)
    step("detector error model")
    return stream_for_dem(cfg, circuit_dem(circuit), circuit, step)


def _measurements(cfg: StreamConfig, circuit: stim.Circuit | None, layout: DetectorLayout, keep: np.ndarray):
    if cfg.input != "measurements":
        return None
    if cfg.model is not None:
        return measurement_layout_from_rows(cfg.model.d_rows, cfg.model.num_measurements, layout, keep)
    if circuit is None:
        from rtdecoder.config import ConfigError

        raise ConfigError(f"stream {cfg.id}: input = \"measurements\" needs the circuit, not only its DEM")
    return measurement_layout(circuit, layout, keep)


def stream_for_dem(cfg: StreamConfig, dem: stim.DetectorErrorModel, circuit: stim.Circuit | None = None,
                   step=None) -> StreamRuntime:
    """A stream decoding ``dem`` (graphlike, with detector time coordinates) with ``cfg``'s
    decoder and windows; ``cfg``'s circuit fields are not used."""
    step = step or (lambda name: None)
    step("detector layout")
    layout = detector_layout(dem)
    step("components")
    comps = dem_components(dem)
    spec = decoders.get(cfg.decoder)
    # A decoder that reads correlations needs the other basis's detection events too.
    keep = np.ones(layout.num_detectors, np.uint8) if spec.correlations else \
        observable_detectors(comps, layout.num_detectors)
    heralds = herald_detectors(circuit) if circuit is not None else None
    if heralds is not None and heralds.any():
        keep[heralds] = 1  # a herald changes no observable, but says where an error was
    else:
        heralds = None
    step("window graphs")
    if cfg.parallel > 1:  # the sandwich schedule, its windows in round order of their commit regions
        plan = plan_parallel(layout, comps, cfg.window, cfg.commit, keep, spec.correlations, heralds).as_window_plan()
    else:
        plan = plan_windows(layout, comps, cfg.window, cfg.commit, keep, correlations=spec.correlations,
                            heralds=heralds)
    mlayout = _measurements(cfg, circuit, layout, keep)
    step(f"{spec.name} decoder")
    return StreamRuntime(cfg, circuit, dem, layout, plan, spec, spec.compile(plan), keep, mlayout, heralds)


def _build_checked(cfg: StreamConfig, max_stream_gib: float, log) -> StreamRuntime:
    """``build_stream`` after checking the estimate against the limit; behind a progress display
    for a large stream (a spinner on a terminal, else a line per stage in ``log``)."""
    from rtdecoder.config import ConfigError

    circuit = make_circuit(cfg) if cfg.model is None else None
    est, sizes = estimate_stream_bytes(cfg, circuit)
    gib = est / 2**30
    if gib > max_stream_gib:
        raise ConfigError(f"stream {cfg.id}: building it would take about {gib:.1f} GiB ({sizes}), more than "
                          f"--max-stream-gib {max_stream_gib:g} allows: use a smaller distance, fewer rounds or a "
                          "shorter window, or raise the limit (--max-stream-gib, max_stream_gib in [server]) on a "
                          "machine with the memory")
    if est <= PROGRESS_BYTES:
        return build_stream(cfg, circuit=circuit)
    from rich.console import Console

    console = Console(stderr=True)
    head = f"stream {cfg.id}: building ({sizes}, about {gib:.1f} GiB)"
    if not console.is_terminal:
        out = log if log is not None else sys.stderr
        return build_stream(cfg, lambda name: print(f"rtdecoder: {head}: {name}", file=out, flush=True), circuit)
    with console.status(head) as status:
        return build_stream(cfg, lambda name: status.update(f"{head}: {name}"), circuit)


class Engine:
    """The configured streams and the preallocated tables the hot path works on.

    Streams whose configurations differ only in id, ``allow`` and ``max_datagram``
    (``StreamConfig.build_key``) share one DEM, window plan, compiled decoder and the tables
    built from them; each keeps its own detection events and shot state. An escape decoder's
    ``decode_window`` runs holding the GIL, so one compiled decoder serves all of them.

    Args:
        streams: stream configurations (or streams already built, ``stream_for_dem``) with
            distinct ids.
        slot_bytes: size of a receive slot; datagrams longer than this are rejected TOO_LARGE.
        host_alloc: ``f(shape, dtype) -> (device handle, numpy view)`` for the detection-event
            array ``syn`` (``rtdecoder.gpu.mapped_zeros``: mapped memory that the persistent GPU
            decoder reads); default: ordinary host memory.
        log: where to say what was built, a line per group of like streams (default: nowhere).

    Raises:
        ConfigError: a stream cannot be built (the message says which and why).
    """

    def __init__(self, streams: Sequence[StreamConfig | StreamRuntime], slot_bytes: int = P.DEFAULT_MAX_DATAGRAM,
                 host_alloc=None, log=None, max_stream_gib: float = DEFAULT_MAX_STREAM_GIB):
        self.slot_bytes = slot_bytes
        self._host_alloc = host_alloc
        self.streams: dict[int, StreamRuntime] = {}
        built: dict[tuple, StreamRuntime] = {}
        for item in streams:
            if isinstance(item, StreamRuntime):
                rt = item
            elif item.build_key in built:
                rt = dataclasses.replace(built[item.build_key], cfg=item)
            else:
                rt = _build_checked(item, max_stream_gib, log)
            built.setdefault(rt.cfg.build_key, rt)
            self.streams[rt.cfg.id] = rt
        if log is not None:
            for line in self.describe():
                print(f"rtdecoder: {line}", file=log)
        self._build_tables()
        self.warm_up()

    def record_meta(self) -> dict[str, dict]:
        """Per stream id (a string), what ``rtdecoder replay`` checks a service against before it
        replays a recording: decoder, window, commit, rounds, detectors, input and the DEM's
        fingerprint (hexadecimal), as HELLO_REPLY and DESCRIBE_REPLY give them."""
        out = {}
        for sid, rt in sorted(self.streams.items()):
            i = rt.info
            out[str(sid)] = {"decoder": rt.spec.name, "window": i.window_rounds, "commit": i.commit_rounds,
                             "rounds": i.num_rounds, "detectors": i.num_detectors, "input": i.input,
                             "fingerprint": f"{rt.fingerprint:016x}"}
        return out

    def describe(self) -> list[str]:
        """One line per group of streams that share their DEM and window plan."""
        groups: dict[int, list[StreamRuntime]] = {}
        for rt in self.streams.values():
            groups.setdefault(id(rt.plan), []).append(rt)
        lines = []
        for rts in groups.values():
            rt = rts[0]
            ids = sorted(r.cfg.id for r in rts)
            who = f"stream {ids[0]}" if len(ids) == 1 else f"{len(ids)} streams ({format_ids(ids)}), one DEM and plan:"
            text = rt.cfg.describe().split(": ", 1)[1]
            lines.append(f"{who} {text}: {rt.layout.num_detectors} detectors in {rt.layout.num_rounds} rounds, "
                         f"{rt.plan.num_windows} windows on {len(rt.plan.graphs)} distinct graphs")
            if rt.cfg.window != 0 and rt.plan.num_windows == 1:
                lines.append(f"  note: window {rt.cfg.window} covers the whole shot ({rt.layout.num_rounds} round "
                             "blocks): each shot is decoded whole, as with --window all")
            if rt.num_heralds:
                users = [s.name for s in decoders.specs() if s.heralds]
                how = rt.spec.heralds or f"not used by {rt.spec.name}: {' or '.join(users)} use them"
                lines.append(f"  heralds: {rt.num_heralds} herald detectors per shot, {how}")
        return lines

    def _build_tables(self) -> None:
        rts = list(self.streams.values())
        max_sid = max(self.streams)
        self.st = np.zeros((max_sid + 1, K.NUM_COLS), np.int64)
        offs, win, gbase, node_round, edges = [], [], [], [], []
        off_base = syn_base = win_base = node_base = edge_base = graph_base = pres_rows = 0
        allow: list[np.ndarray] = []
        moffs, dptr, drec, dflip = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], \
            [np.zeros(0, np.uint8)]
        dkept, dkptr, dshift = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        moff_base = det_base = rec_base = meas_base = kept_base = kptr_base = cq_base = 0
        mplans: dict[int, tuple[int, int, int]] = {}  # id(plan) -> its (moffs, dptr, dkptr) bases
        allow_at: dict[tuple[str, ...], tuple[int, int]] = {}
        allow_base = 0
        keep: list[np.ndarray] = []
        plans: dict[int, tuple[int, int, int]] = {}  # id(plan) -> its (offs, win, graph) bases
        self._plan_rts: list[StreamRuntime] = []  # one stream per distinct plan, in table order
        spans: list[tuple[int, int, int]] = []  # per global window: (first detector, detectors, local graph)
        for rt in rts:
            sid, lay, plan = rt.cfg.id, rt.layout, rt.plan
            if id(plan) not in plans:
                plans[id(plan)] = (off_base, win_base, graph_base)
                self._plan_rts.append(rt)
                offs.append(lay.round_offsets)
                off_base += len(lay.round_offsets)
                w = np.stack([plan.start, plan.end, plan.commit_end, plan.graph + graph_base, plan.core, plan.kind],
                             axis=1)
                win.append(w)
                win_base += plan.num_windows
                graph_base += len(plan.graphs)
                spans += [(int(lay.round_offsets[a]), plan.graphs[g].num_nodes, int(g))
                          for a, g in zip(plan.start, plan.graph)]
                for g in plan.graphs:
                    gbase.append((node_base, edge_base))
                    node_round.append(g.node_round)
                    edges.append(np.stack([g.edge_u, g.edge_v, g.edge_obs.view(np.int64)], axis=1))
                    node_base += g.num_nodes
                    edge_base += g.num_edges
            ob, wb, gb = plans[id(plan)]
            row = self.st[sid]
            row[K.C_CONFIGURED] = 1
            row[K.C_READY] = 1
            row[K.C_NROUNDS] = lay.num_rounds
            row[K.C_RBYTES] = rt.round_bytes
            row[K.C_NDET] = lay.num_detectors
            row[K.C_NOBS] = lay.num_observables
            row[K.C_OFF_BASE] = ob
            row[K.C_SYN_BASE] = syn_base
            row[K.C_WIN_BASE] = wb
            row[K.C_NWIN] = plan.num_windows
            row[K.C_MAXDG] = min(rt.cfg.max_datagram, self.slot_bytes)
            row[K.C_WINDOW] = rt.cfg.window
            row[K.C_COMMIT] = rt.cfg.commit
            row[K.C_DECODER] = rt.spec.wire_id
            row[K.C_CALL] = rt.spec.call_id
            row[K.C_DEADLINE] = int(round(rt.cfg.deadline_us * 1000))
            row[K.C_FAST] = decoders.get(rt.spec.fast).wire_id + 1 if rt.spec.fast and rt.cfg.deadline_us > 0 else 0
            row[K.C_FALLBACK] = decoders.fallback().wire_id if rt.cfg.deadline_us > 0 else -1
            row[K.C_PARALLEL] = rt.cfg.parallel
            row[K.C_HERALDS] = rt.num_heralds
            if rt.cfg.parallel > 1:
                row[K.C_PRES_BASE] = pres_rows
                pres_rows += plan.num_windows
            row[K.C_FINGERPRINT] = np.uint64(rt.fingerprint).astype(np.int64)
            if rt.cfg.allow not in allow_at:  # streams with the same list share its rows, so the
                rows = allow_rows(rt.cfg.allow)  # any-stream check in ingest reads each subnet once
                allow_at[rt.cfg.allow] = (allow_base, len(rows))
                allow.append(rows)
                allow_base += len(rows)
            row[K.C_ALLOW_BASE], row[K.C_ALLOW_N] = allow_at[rt.cfg.allow]
            keep.append(rt.keep)
            syn_base += lay.num_detectors
            ml = rt.mlayout
            row[K.C_CQ_BASE] = cq_base
            row[K.C_CQ_BITS] = lay.num_detectors if ml is None else ml.num_measurements
            row[K.S_CQ_POS] = row[K.C_CQ_BITS]  # no CUQR shot begun: the next enqueue begins one
            cq_base += row[K.C_CQ_BITS]
            if ml is not None:
                if id(plan) not in mplans:
                    mplans[id(plan)] = (moff_base, det_base, kptr_base)
                    dkept.append(ml.kept)
                    dkptr.append(ml.kept_ptr + kept_base)
                    dshift.append(np.append(ml.round_shift, 0))  # parallel to dkptr
                    kept_base += len(ml.kept)
                    kptr_base += len(ml.kept_ptr)
                    moffs.append(ml.meas_offsets)
                    moff_base += len(ml.meas_offsets)
                    dptr.append(ml.det_ptr + rec_base)
                    dflip.append(np.append(ml.det_flip, 0))  # parallel to dptr
                    det_base += len(ml.det_ptr)
                    drec.append(ml.det_rec)
                    rec_base += len(ml.det_rec)
                row[K.C_INPUT] = P.INPUT_MEASUREMENTS
                row[K.C_MOFF_BASE], row[K.C_DET_BASE], row[K.C_KPTR_BASE] = mplans[id(plan)]
                row[K.C_MEAS_BASE] = meas_base
                meas_base += ml.num_measurements
        self.offs = np.concatenate(offs).astype(np.int64)
        self.allow = np.ascontiguousarray(np.concatenate(allow))
        self.moffs = np.concatenate(moffs).astype(np.int64)
        self.dptr = np.concatenate(dptr).astype(np.int64)
        self.drec = np.concatenate(drec).astype(np.int64)
        self.dflip = np.concatenate(dflip).astype(np.uint8)
        self.dkept = np.concatenate(dkept).astype(np.int64)
        self.dkptr = np.concatenate(dkptr).astype(np.int64)
        self.dshift = np.concatenate(dshift).astype(np.int64)
        self.meas = np.zeros(meas_base, np.uint8)
        self.cqbits = np.zeros(cq_base, np.uint8)
        if self._host_alloc is None:
            self.syn = np.zeros(syn_base, np.uint8)
        else:
            self.syn_device, self.syn = self._host_alloc(syn_base, np.uint8)
        self.keep = np.ascontiguousarray(np.concatenate(keep).astype(np.uint8))  # parallel to syn
        self.win = np.ascontiguousarray(np.concatenate(win).astype(np.int64))
        self.gbase = np.asarray(gbase, np.int64).reshape(-1, 2)
        self.node_round = np.concatenate(node_round).astype(np.int64)
        self.edges = np.ascontiguousarray(np.concatenate(edges).astype(np.int64))
        self._build_union_find(self._plan_rts)
        # Parallel streams: results by window, carries by shot parity, the controllers' addresses.
        self.max_helpers = max(rt.cfg.parallel for rt in rts) - 1
        self.pres = np.zeros((pres_rows, 2), np.int64)
        self.pcarry = np.zeros((2, 2, syn_base if self.max_helpers > 0 else 0), np.uint8)
        self.paddr = np.zeros((max_sid + 1, L.SOCKADDR_BYTES), np.uint8)
        self.tables = K.Tables(self.st, self.offs, self.syn, self.keep, self.win, self.gbase, self.node_round,
                               self.edges, self.uf_base, self.uf_ptr, self.uf_slot, self.uf_eu, self.uf_ev, self.allow,
                               self.moffs, self.meas, self.dptr, self.drec, self.dflip, self.dkept, self.dkptr,
                               self.dshift, self.cqbits, self.pres, self.pcarry, self.paddr, self.uf_hbase,
                               self.uf_hidx, self.uf_hptr, self.uf_hedge)
        self.max_edges = max(g.num_edges for rt in rts for g in rt.plan.graphs)
        self.max_nodes = max(g.num_nodes for rt in rts for g in rt.plan.graphs)
        self.max_windows = max(rt.plan.num_windows for rt in rts)
        self.decoders = [None] * (max_sid + 1)
        for rt in rts:
            self.decoders[rt.cfg.id] = rt.decoder
        # Per stream whose decoder escapes, made once: each of its (global) windows' graph index
        # in the stream's plan and detection events (a view of syn, carry included); the escape
        # only looks them up.
        self.escape_windows: list[dict | None] = [None] * (max_sid + 1)
        for rt in rts:
            if rt.spec.call == "escape":
                sid = rt.cfg.id
                wb, sb = int(self.st[sid, K.C_WIN_BASE]), int(self.st[sid, K.C_SYN_BASE])
                views = {}
                for k in range(wb, wb + rt.plan.num_windows):
                    rel, n, g = spans[k]
                    views[k] = (g, self.syn[sb + rel:sb + rel + n])
                self.escape_windows[sid] = views
        # The in-process path's worker state: room for every reply one datagram can produce.
        self._set_local(WorkerState(self, tx_slots=self.max_windows + 4))

    def _set_local(self, state: WorkerState) -> None:
        """The in-process path's worker state: room for every reply one datagram can produce."""
        self.local = state
        self.counters = state.counters
        self.hist = state.hist
        self.tx = state.tx.buf[0]

    def _build_union_find(self, rts: list[StreamRuntime]) -> None:
        """Every compiled decoder's window graphs (union-find CSR arrays), and those of escape
        decoders' streams with a deadline (their fallback), concatenated in global graph order,
        with ``uf_base[g] = (ptr start, nodes, slot start, slots, edge start, edges)`` (zeros for
        the graphs of the other streams whose decoder escapes)."""
        from rtdecoder.heralds import kernel_arrays

        parts: list[tuple] = []
        hparts: list[tuple] = []
        for rt in rts:
            if rt.spec.call == "compiled":
                parts += rt.decoder.graphs
            elif rt.cfg.deadline_us > 0:  # the escape's fallback past the deadline
                parts += [uf.build_graph(g.num_nodes, g.edge_u, g.edge_v, g.edge_weight) for g in rt.plan.graphs]
            else:
                parts += [None] * len(rt.plan.graphs)
            hparts += [kernel_arrays(g.heralds) if g.heralds is not None else None for g in rt.plan.graphs]
        # heralds: uf_hbase[g] = (hidx start, nodes with heralds (0: none), hptr start, hedge start)
        hbase = np.zeros((len(parts), 4), np.int64)
        hidxs, hptrs, hedges = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)], [np.zeros(1, np.int32)]
        ib, pb_, hb = 0, 0, 1
        for g, h in enumerate(hparts):
            if h is None or parts[g] is None or len(h[0]) == 0:
                continue
            hidx, hptr, hedge = h
            hbase[g] = (ib, len(hidx), pb_, hb)
            hidxs.append(hidx)
            hptrs.append(hptr)
            hedges.append(hedge)
            ib, pb_, hb = ib + len(hidx), pb_ + len(hptr), hb + len(hedge)
        self.uf_hbase = hbase
        self.uf_hidx = np.concatenate(hidxs).astype(np.int32)
        self.uf_hptr = np.concatenate(hptrs + [np.zeros(1, np.int64)]).astype(np.int64)
        self.uf_hedge = np.concatenate(hedges).astype(np.int32)
        base = np.zeros((len(parts), 6), np.int64)
        ptrs, slots, eus, evs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int32)], [np.zeros(0, np.int32)]
        pb = sb = eb = 0
        max_nodes = max_edges = max_len = 1
        for g, graph in enumerate(parts):
            if graph is None:
                continue
            ptr, slot, eu, ev = graph
            n, m = len(ptr) - 1, len(eu)
            base[g] = (pb, n, sb, len(slot), eb, m)
            ptrs.append(ptr)
            slots.append(slot)
            eus.append(eu)
            evs.append(ev)
            pb, sb, eb = pb + n + 1, sb + len(slot), eb + m
            max_nodes, max_edges, max_len = max(max_nodes, n), max(max_edges, m), max(max_len, uf.max_length(graph))
        self.uf_base = base
        self.uf_ptr = np.concatenate(ptrs).astype(np.int64)
        self.uf_slot = np.concatenate(slots).astype(np.int64)
        self.uf_eu = np.concatenate(eus).astype(np.int32)
        self.uf_ev = np.concatenate(evs).astype(np.int32)
        self.uf_max_nodes, self.uf_max_edges, self.uf_max_length = max_nodes, max_edges, max_len

    def adopt(self, old: "Engine", sids) -> None:
        """Take over the shot state of streams ``sids`` from ``old`` (the same configuration in
        both: their shot in progress, its detection events so far, window and observable
        progress), so a reload does not disturb them."""
        for sid in sids:
            n = int(self.st[sid, K.C_NDET])
            assert n == old.st[sid, K.C_NDET] and self.st[sid, K.C_NWIN] == old.st[sid, K.C_NWIN]
            self.st[sid, K.S_HAS_SHOT:] = old.st[sid, K.S_HAS_SHOT:]
            a, b, m = int(self.st[sid, K.C_CQ_BASE]), int(old.st[sid, K.C_CQ_BASE]), int(self.st[sid, K.C_CQ_BITS])
            self.cqbits[a:a + m] = old.cqbits[b:b + m]  # a CUQR controller's bits so far
            a, b = int(self.st[sid, K.C_SYN_BASE]), int(old.st[sid, K.C_SYN_BASE])
            self.syn[a:a + n] = old.syn[b:b + n]
            if self.st[sid, K.C_PARALLEL] > 1:  # its windows' results, carries and controller address
                a, b, w = int(self.st[sid, K.C_PRES_BASE]), int(old.st[sid, K.C_PRES_BASE]), int(self.st[sid, K.C_NWIN])
                self.pres[a:a + w] = old.pres[b:b + w]
                a, b = int(self.st[sid, K.C_SYN_BASE]), int(old.st[sid, K.C_SYN_BASE])
                self.pcarry[:, :, a:a + n] = old.pcarry[:, :, b:b + n]
                self.paddr[sid] = old.paddr[sid]
            ml = self.streams[sid].mlayout
            if ml is not None:  # the measurements so far, which later detectors still read
                a, b, m = int(self.st[sid, K.C_MEAS_BASE]), int(old.st[sid, K.C_MEAS_BASE]), ml.num_measurements
                self.meas[a:a + m] = old.meas[b:b + m]

    def attach_gpu(self, decoder) -> None:
        """Decode the in-process path's union-find windows through slot 0 of ``decoder`` (a
        started ``rtdecoder.gpu.PersistentDecoder`` over this engine) and warm up through it."""
        self._set_local(WorkerState(self, tx_slots=self.max_windows + 4, gpu_slot=decoder.slot_arrays(0)))
        self.warm_up()

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) every kernel and run one all-zero shot through
        every stream (the escape's object-mode block compiles on its first call), then
        reset the streams and zero the counters, histograms and trace."""
        self.handle(P.encode(P.Header(P.MsgType.PING)), rx_ns=0)
        for sid, rt in self.streams.items():
            lay = rt.layout
            per = max(1, (min(rt.cfg.max_datagram, self.slot_bytes) - P.HEADER_LEN) // rt.round_bytes)
            for first in range(0, lay.num_rounds, per):
                nr = min(per, lay.num_rounds - first)
                self.handle(P.encode(P.Header(P.MsgType.SYNDROME, stream_id=sid, shot_id=1, first_round=first,
                                              num_rounds=nr), bytes(nr * rt.round_bytes)), rx_ns=0)
        self.st[:, K.S_HAS_SHOT:] = 0  # every S_* column: no shot in progress anywhere
        self.st[:, K.S_CQ_POS] = self.st[:, K.C_CQ_BITS]  # no CUQR shot either: an enqueue begins one
        self.syn[:] = 0
        self.pres[:] = 0
        self.pcarry[:] = 0
        self.meas[:] = 0
        loc = self.local
        for a in (loc.counters, loc.hist, loc.trace, loc.tmeta):
            a[:] = 0

    # -- in-process path (tests, the demo's cross-check, benchmarks) -------------------------
    def handle(self, datagram: bytes | bytearray | np.ndarray, rx_ns: int | None = None,
               tx_ns: int | None = None, source: str = "127.0.0.1", port: int = 0) -> list[bytes]:
        """Process one datagram as the server does and return the replies it would send.

        ``source``/``port``: the address it came from (for the allow-lists and the error-reply
        rate limit; default loopback).

        Runs ``rtdecoder.dataplane.process_datagram``, the transports' code, on a copy of the
        datagram (so it allocates; the server receives into a ring slot and sends from its
        transmit batch directly). ``rx_ns`` is the receive time to record and ``tx_ns`` the send
        time to stamp (default: the clock's).
        """
        buf = np.zeros(self.slot_bytes, np.uint8)
        data = np.frombuffer(bytes(datagram), np.uint8)
        buf[: min(len(data), self.slot_bytes)] = data[: self.slot_bytes]
        rx = time.perf_counter_ns() if rx_ns is None else rx_ns
        loc = self.local
        hi, lo = source_words(source)
        D.process_datagram(buf, len(data), rx, 0, 0, hi, lo, port, 0, D.FLUSH_NONE, self.tables, loc.arrays,
                           loc.workspace, loc.tx_arrays)
        if loc.helpers:  # parallel streams' windows with helpers: their replies before returning
            D.settle_parallel(self.tables, loc.arrays, loc.workspace, loc.tx_arrays, D.FLUSH_NONE, 60 * 10**9)
        D.flush(D.FLUSH_NONE, loc.tx_arrays, loc.arrays)
        if tx_ns is not None:
            for j in np.nonzero(loc.txflag[: loc.txq[0]] == D.STAMP)[0]:
                wire.wr(loc.tx.buf[j], wire.STAMP_OFFSET, 8, tx_ns)
        return loc.replies()

    def decode_shots(self, sid: int, events: np.ndarray, rounds_per_packet: int = 1) -> np.ndarray:
        """Decode whole shots in process, through the same packets and state machine as the server.

        Args:
            sid: stream id.
            events: bool/uint8 array ``(num_shots, num_detectors)``; for a stream whose controller
                sends measurements, ``(num_shots, num_measurements)`` measurement records instead
                (stim's order, as ``Circuit.compile_sampler`` gives them).
            rounds_per_packet: rounds framed into each SYNDROME packet.

        Returns:
            uint8 array ``(num_shots, num_observables)``: each shot's final prediction.

        Raises:
            RuntimeError: a shot got no FINAL correction (an error reply instead).
        """
        rt = self.streams[sid]
        lay = rt.layout
        offsets = rt.mlayout.meas_offsets if rt.mlayout is not None else lay.round_offsets
        packed = P.pack_rounds(events, offsets, rt.round_bytes)
        preds = np.zeros((len(events), lay.num_observables), np.uint8)
        self.handle(P.encode(P.Header(P.MsgType.RESET, stream_id=sid)))
        if rt.cfg.parallel > 1:  # the stream's windows go to helper threads, as in the service
            self.local.start_helpers()
        try:
            self._decode_each_shot(sid, events, rounds_per_packet, packed, preds)
        finally:
            self.local.stop_helpers()
        return preds

    def _decode_each_shot(self, sid, events, rounds_per_packet, packed, preds) -> None:
        lay = self.streams[sid].layout
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
