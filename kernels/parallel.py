"""Parallel-window kernels (``rtdecoder.windows.ParallelPlan``, the sandwich schedule): the
commit rule of A and B windows, one worker's share of a layer for the offline decoder
(``rtdecoder.parallel``), and, for the service, one window of a parallel stream
(``decode_region``) and a helper thread's loop over its job ring (``helper_loop``), all
compiled, nogil and allocation-free, so several threads run them at once on one shot.

Offline tables (built by ``rtdecoder.parallel.ParallelWindowDecoder``): per window of a layer,
``wlo`` (its first detector in the shot), ``wc0``/``wc1`` (its core, in rounds relative to its
first round; layer B: unused) and ``wg`` (its graph); per graph ``g``, ``ub[g]`` the union-find
CSR rows (as ``rtdecoder.engine.Engine.uf_base``) and ``gb[g] = (first node, first edge)`` into
the concatenated ``node_round`` and ``edges`` (``(u, v, observable mask)`` rows, int64). The
service's windows are those of ``rtdecoder.kernels.tables.Tables`` (``W_CORE``, ``W_KIND``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder.kernels import union_find as uf
from rtdecoder.kernels.memory import load_word, store_word
from rtdecoder.kernels.tables import (C_OFF_BASE, C_SYN_BASE, W_COMMIT, W_CORE, W_GRAPH, W_KIND, W_START,
                                     WK_A)
from rtdecoder.transport.libc import fetch_add, load_acquire, sched_yield, store_release

LAYER_A = 0
LAYER_B = 1
PAD = 8
"""int64 entries per worker in the barrier array: one 64-byte cache line each."""


@njit(cache=True, nogil=True, _nrt=False)
def commit_edges(layer, chosen, n, edges, node_round, nb, eb, c0, c1, lo, carry_up, carry_down):
    """The observable flips one window commits from its chosen edges (``chosen[:n]``, local edge
    indices into the rows ``eb ..`` of ``edges``, ``(u, v, observable mask)``; its nodes' rounds at
    ``node_round[nb + node]``). Layer A commits the edges with an endpoint in the core rounds
    ``[c0, c1)`` and flips such an edge's other endpoint, where it lies in a buffer, in
    ``carry_up`` (above the core) or ``carry_down`` (below it), indexed by detector (``lo`` +
    node); layer B commits all."""
    flips = np.int64(0)
    for i in range(n):
        e = eb + chosen[i]
        if layer == LAYER_B:
            flips ^= edges[e, 2]
            continue
        u = edges[e, 0]
        v = edges[e, 1]
        ru = node_round[nb + u]
        uin = ru >= c0 and ru < c1
        vin = False
        rv = np.int64(-1)
        if v >= 0:
            rv = node_round[nb + v]
            vin = rv >= c0 and rv < c1
        if not uin and not vin:
            continue
        flips ^= edges[e, 2]
        x = np.int64(-1)
        rx = np.int64(0)
        if not uin:
            x, rx = u, ru
        elif v >= 0 and not vin:
            x, rx = v, rv
        if x >= 0:
            if rx >= c1:
                carry_up[lo + x] ^= 1
            else:
                carry_down[lo + x] ^= 1
    return flips


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def gap_events(syn, keep, lo, nn, carry_up, carry_down, scratch):
    """A B window's events: ``syn & keep`` XOR both carries over ``[lo, lo + nn)`` into
    ``scratch[:nn]``, eight detectors at a time; the carries there are cleared."""
    i = 0
    while i + 8 <= nn:
        store_word(scratch, i, (load_word(syn, lo + i) & load_word(keep, lo + i)) ^ load_word(carry_up, lo + i)
                   ^ load_word(carry_down, lo + i))
        store_word(carry_up, lo + i, 0)
        store_word(carry_down, lo + i, 0)
        i += 8
    while i < nn:
        scratch[i] = (syn[lo + i] & keep[lo + i]) ^ carry_up[lo + i] ^ carry_down[lo + i]
        carry_up[lo + i] = 0
        carry_down[lo + i] = 0
        i += 1


@njit(cache=True, nogil=True, _nrt=False)
def uf_layer(layer, next_window, at, count, wlo, wc0, wc1, wg, ub, ptr, slot, ueu, uev, gb, node_round, edges,
             syn, keep, carry_up, carry_down, scratch, nd, in_cluster, touched, es, seen, bucket, entry_edge,
             entry_next, cnt, chosen):
    """Decode windows of one layer with union-find and commit them, taking each next window from
    the shared counter ``next_window[at]`` (``fetch_add``) until all ``count`` are taken: the
    workers share a layer's windows out as they finish, so none waits at the barrier behind a
    share that happened to be slow.

    A window decodes ``syn & keep`` over its detectors (uint8, 0 or 1; copied to ``scratch``, at
    least the largest window's nodes, eight at a time), layer B XORed with both carries, which it
    then clears (every carry lands in a B window: an A window's buffers are the gaps beside its
    core), so the next shot starts from clear carries.

    Returns:
        ``(flips, failed)``: the XOR of the windows' committed observable flips, and -1, or
        ``(0, j)`` when window ``j`` has no correction.
    """
    flips = np.int64(0)
    while True:
        j = fetch_add(next_window, at, 1)
        if j >= count:
            break
        g = wg[j]
        pb, nn, sb, ns, ebu, m = ub[g, 0], ub[g, 1], ub[g, 2], ub[g, 3], ub[g, 4], ub[g, 5]
        lo = wlo[j]
        if layer == LAYER_A:
            for i in range(0, nn - 7, 8):
                store_word(scratch, i, load_word(syn, lo + i) & load_word(keep, lo + i))
            for i in range(nn & ~7, nn):
                scratch[i] = syn[lo + i] & keep[lo + i]
        else:
            gap_events(syn, keep, lo, nn, carry_up, carry_down, scratch)
        events = scratch[:nn]
        n = uf.decode(ptr[pb:pb + nn + 1], slot[sb:sb + ns], ueu[ebu:ebu + m], uev[ebu:ebu + m], events, ueu[:0],
                      ptr, ueu, nd, in_cluster, touched, es, seen, bucket, entry_edge, entry_next, cnt, chosen)
        if n < 0:
            return np.int64(0), j
        flips ^= commit_edges(layer, chosen, n, edges, node_round, gb[g, 0], gb[g, 1], wc0[j], wc1[j], lo,
                              carry_up, carry_down)
    return flips, np.int64(-1)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _meet(arrive, t, k, value):
    """Spin barrier: say this worker reached ``value``, then wait until every worker has."""
    store_release(arrive, t * PAD, value)
    for u in range(k):
        while load_acquire(arrive, u * PAD) < value:
            pass


@njit(cache=True, nogil=True, _nrt=False)
def uf_worker(t, k, events, keep, flips, failed, arrive, taken, a_lo, a_c0, a_c1, a_g, b_lo, b_c0, b_c1, b_g, ub, ptr,
              slot, ueu, uev, gb, node_round, edges, carry_up, carry_down, scratch, nd, in_cluster, touched, es, seen, bucket,
              entry_edge, entry_next, cnt, chosen):
    """Worker ``t`` of ``k``: every shot (row) of ``events`` in turn, A windows as it takes them
    (``taken[s, 0]``, int64 ``(shots, 2 * PAD)``, zero: the shot's next A window, and
    ``taken[s, PAD]`` its next B window, each on a cache line of its own), a barrier, B windows
    likewise. Each worker is one thread calling this; they meet at a spin barrier on ``arrive``
    (int64, ``k * PAD``; entry ``t * PAD`` is worker ``t``'s, starting at 0, on a cache line of
    its own) and take windows with an atomic add; no lock. The carries
    (``carry_up``/``carry_down``, uint8 ``(2, num_detectors)``, clear) alternate between two rows
    by shot, so a worker starts the next shot's A windows while others finish this shot's B
    windows: the next barrier, which every worker reaches only after its B windows, is what keeps
    shot ``s + 2``'s A windows off the row that shot ``s``'s B windows read.

    Writes ``flips[s, t]`` (this worker's committed flips of shot ``s``) and, for a window
    without a correction, ``failed[s] = 1``.
    """
    for s in range(events.shape[0]):
        syn = events[s]
        up = carry_up[s & 1]
        down = carry_down[s & 1]
        f, bad = uf_layer(LAYER_A, taken[s], 0, a_lo.shape[0], a_lo, a_c0, a_c1, a_g, ub, ptr, slot, ueu, uev, gb,
                          node_round, edges, syn, keep, up, down, scratch, nd, in_cluster, touched,
                          es, seen, bucket, entry_edge, entry_next, cnt, chosen)
        _meet(arrive, t, k, s + 1)
        g, bad2 = uf_layer(LAYER_B, taken[s], PAD, b_lo.shape[0], b_lo, b_c0, b_c1, b_g, ub, ptr, slot, ueu, uev, gb,
                           node_round, edges, syn, keep, up, down, scratch, nd, in_cluster, touched,
                           es, seen, bucket, entry_edge, entry_next, cnt, chosen)
        flips[s, t] = f ^ g
        if bad >= 0 or bad2 >= 0:
            failed[s] = 1


# --- the service: a parallel stream's windows on the owning worker and its helpers ------------
RING = 256
"""Slots of each helper's job ring and result ring (a power of two)."""
RW = 8
"""int64 words per ring slot: job ``(sid, window, shot generation)``; result ``(sid, window,
shot generation, flips, ok)``."""
JOB_HEAD, JOB_TAIL, RES_HEAD, RES_TAIL, STOP = 0, PAD, 2 * PAD, 3 * PAD, 4 * PAD
"""Offsets in a helper's row of ``pidx``: the job ring's head (written by the worker) and tail (by
the helper), the result ring's head (helper) and tail (worker), and the helper's stop word; each
on a cache line of its own."""
IDX_WORDS = 5 * PAD


@njit(cache=True, nogil=True, _nrt=False)
def decode_region(tables, sid, k, gen, scratch, nd, in_cluster, touched, es, seen, bucket, entry_edge, entry_next,
                  cnt, chosen):
    """Decode window ``k`` (global) of parallel stream ``sid`` for shot generation ``gen`` with
    union-find and commit it: A windows read ``syn`` (``keep`` already applied at ingest), B
    windows ``syn`` XOR the carries of their shot's parity row (``Tables.pcarry``), which they
    clear.

    Returns:
        ``(flips, ok)``: the window's committed observable flips, and 0 when no correction exists.
    """
    st, win, syn = tables.st, tables.win, tables.syn
    g = win[k, W_GRAPH]
    ub = tables.uf_base
    pb, nn, sb, ns, eb, m = ub[g, 0], ub[g, 1], ub[g, 2], ub[g, 3], ub[g, 4], ub[g, 5]
    hb = tables.uf_hbase[g]
    start = win[k, W_START]
    lo = st[sid, C_SYN_BASE] + tables.offs[st[sid, C_OFF_BASE] + start]
    par = gen & 1
    up = tables.pcarry[par, 0]
    down = tables.pcarry[par, 1]
    layer = LAYER_A if win[k, W_KIND] == WK_A else LAYER_B
    if layer == LAYER_A:
        events = syn[lo:lo + nn]
    else:
        gap_events(syn, tables.keep, lo, nn, up, down, scratch)
        events = scratch[:nn]
    n = uf.decode(tables.uf_ptr[pb:pb + nn + 1], tables.uf_slot[sb:sb + ns], tables.uf_eu[eb:eb + m],
                  tables.uf_ev[eb:eb + m], events, tables.uf_hidx[hb[0]:hb[0] + hb[1]], tables.uf_hptr[hb[2]:],
                  tables.uf_hedge[hb[3]:], nd, in_cluster, touched, es, seen, bucket, entry_edge, entry_next,
                  cnt, chosen)
    if n < 0:
        return np.int64(0), np.int64(0)
    flips = commit_edges(layer, chosen, n, tables.edges, tables.node_round, tables.gbase[g, 0], tables.gbase[g, 1],
                         win[k, W_CORE] - start, win[k, W_COMMIT] - start, lo, up, down)
    return flips, np.int64(1)


@njit(cache=True, nogil=True, _nrt=False)
def helper_loop(h, tables, pjobs, pres_ring, pidx, scratch, nd, in_cluster, touched, es, seen, bucket, entry_edge,
                entry_next, cnt, chosen):
    """Helper ``h`` of a worker: take jobs from its ring, decode them (``decode_region``) and
    post the results, until its stop word is set and its ring is empty. Single producer (the
    worker) and single consumer (this helper) per ring, acquire/release counters, no lock; an
    idle helper yields its core between polls. Returns the jobs done."""
    idx = pidx[h]
    done = np.int64(0)
    idle = np.int64(0)
    while True:
        tail = idx[JOB_TAIL]
        if load_acquire(idx, JOB_HEAD) == tail:
            if load_acquire(idx, STOP) != 0:
                return done
            idle += 1
            if idle > 2000:
                sched_yield()
            continue
        idle = 0
        job = pjobs[h, tail & (RING - 1)]
        sid, k, gen = job[0], job[1], job[2]
        flips, ok = decode_region(tables, sid, k, gen, scratch, nd, in_cluster, touched, es, seen, bucket, entry_edge,
                                  entry_next, cnt, chosen)
        head = idx[RES_HEAD]
        res = pres_ring[h, head & (RING - 1)]
        res[0] = sid
        res[1] = k
        res[2] = gen
        res[3] = flips
        res[4] = ok
        store_release(idx, RES_HEAD, head + 1)
        store_release(idx, JOB_TAIL, tail + 1)
        done += 1
