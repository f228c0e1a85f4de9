"""Parallel-window kernels: one worker's share of a layer of the sandwich schedule
(``rtdecoder.windows.ParallelPlan``) decoded by union-find and committed, with no allocation,
so several workers run it at once on one shot (``rtdecoder.parallel``).

Tables (built by ``rtdecoder.parallel.ParallelWindowDecoder``): per window of a layer, ``wlo``
(its first detector in the shot), ``wc0``/``wc1`` (its core, in rounds relative to its first
round; layer B: unused) and ``wg`` (its graph); per graph ``g``, ``ub[g]`` the union-find CSR
rows (as ``rtdecoder.engine.Engine.uf_base``) and ``gb[g] = (first node, first edge)`` into the
concatenated ``node_round`` and ``eu``/``ev``/``eobs`` (the window graphs' edges, int64, the
observable masks as int64 bits).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder.kernels import union_find as uf
from rtdecoder.kernels.memory import load_word, store_word
from rtdecoder.transport.libc import load_acquire, store_release

LAYER_A = 0
LAYER_B = 1
PAD = 8
"""int64 entries per worker in the barrier array: one 64-byte cache line each."""


@njit(cache=True, nogil=True, _nrt=False)
def commit_edges(layer, chosen, n, eu, ev, eobs, node_round, nb, eb, c0, c1, lo, carry_up, carry_down):
    """The observable flips one window commits from its chosen edges (``chosen[:n]``, local edge
    indices). Layer A commits the edges with an endpoint in the core rounds ``[c0, c1)`` and
    flips such an edge's other endpoint, where it lies in a buffer, in ``carry_up`` (above the
    core) or ``carry_down`` (below it), indexed by detector (``lo`` + node); layer B commits all."""
    flips = np.int64(0)
    for i in range(n):
        e = eb + chosen[i]
        if layer == LAYER_B:
            flips ^= eobs[e]
            continue
        u = eu[e]
        v = ev[e]
        ru = node_round[nb + u]
        uin = ru >= c0 and ru < c1
        vin = False
        rv = np.int64(-1)
        if v >= 0:
            rv = node_round[nb + v]
            vin = rv >= c0 and rv < c1
        if not uin and not vin:
            continue
        flips ^= eobs[e]
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


@njit(cache=True, nogil=True, _nrt=False)
def uf_layer(layer, first, step, count, wlo, wc0, wc1, wg, ub, ptr, slot, ueu, uev, gb, node_round, eu, ev, eobs,
             syn, keep, carry_up, carry_down, scratch, nd, in_cluster, touched, es, seen, bucket, entry_edge,
             entry_next, cnt, chosen):
    """Decode windows ``first, first + step, ...`` (below ``count``) of one layer with union-find
    and commit them.

    A window decodes ``syn & keep`` over its detectors (uint8, 0 or 1; copied to ``scratch``, at
    least the largest window's nodes, eight at a time), layer B XORed with both carries, which it
    then clears (every carry lands in a B window: an A window's buffers are the gaps beside its
    core), so the next shot starts from clear carries.

    Returns:
        ``(flips, failed)``: the XOR of the windows' committed observable flips, and -1, or
        ``(0, j)`` when window ``j`` has no correction.
    """
    flips = np.int64(0)
    for j in range(first, count, step):
        g = wg[j]
        pb, nn, sb, ns, ebu, m = ub[g, 0], ub[g, 1], ub[g, 2], ub[g, 3], ub[g, 4], ub[g, 5]
        lo = wlo[j]
        i = 0
        if layer == LAYER_A:
            while i + 8 <= nn:  # eight detectors at a time
                store_word(scratch, i, load_word(syn, lo + i) & load_word(keep, lo + i))
                i += 8
            while i < nn:
                scratch[i] = syn[lo + i] & keep[lo + i]
                i += 1
        else:
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
        events = scratch[:nn]
        n = uf.decode(ptr[pb:pb + nn + 1], slot[sb:sb + ns], ueu[ebu:ebu + m], uev[ebu:ebu + m], events, nd,
                      in_cluster, touched, es, seen, bucket, entry_edge, entry_next, cnt, chosen)
        if n < 0:
            return np.int64(0), j
        flips ^= commit_edges(layer, chosen, n, eu, ev, eobs, node_round, gb[g, 0], gb[g, 1], wc0[j], wc1[j], lo,
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
def uf_worker(t, k, events, keep, flips, failed, arrive, a_lo, a_c0, a_c1, a_g, b_lo, b_c0, b_c1, b_g, ub, ptr, slot, ueu, uev,
              gb, node_round, eu, ev, eobs, carry_up, carry_down, scratch, nd, in_cluster, touched, es, seen, bucket,
              entry_edge, entry_next, cnt, chosen):
    """Worker ``t`` of ``k``: every shot (row) of ``events`` in turn, its share of layer A (A
    windows ``t, t + k, ...``), a barrier, its share of layer B. Each worker is one thread calling
    this; they meet at a spin barrier on ``arrive`` (int64, ``k * PAD``; entry ``t * PAD`` is
    worker ``t``'s, starting at 0, on a cache line of its own) and nothing else. The carries
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
        f, bad = uf_layer(LAYER_A, t, k, a_lo.shape[0], a_lo, a_c0, a_c1, a_g, ub, ptr, slot, ueu, uev, gb,
                          node_round, eu, ev, eobs, syn, keep, up, down, scratch, nd, in_cluster, touched,
                          es, seen, bucket, entry_edge, entry_next, cnt, chosen)
        _meet(arrive, t, k, s + 1)
        g, bad2 = uf_layer(LAYER_B, t, k, b_lo.shape[0], b_lo, b_c0, b_c1, b_g, ub, ptr, slot, ueu, uev, gb,
                           node_round, eu, ev, eobs, syn, keep, up, down, scratch, nd, in_cluster, touched,
                           es, seen, bucket, entry_edge, entry_next, cnt, chosen)
        flips[s, t] = f ^ g
        if bad >= 0 or bad2 >= 0:
            failed[s] = 1
