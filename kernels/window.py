"""Window kernels: which window of a stream is complete, the commit/carry rule that turns a
decoder's chosen edges into a CORRECTION (docs/wire-protocol.md §4.4, §6.4), and the map from
PyMatching's node pairs to a window graph's edges.

Tables (layouts in ``rtdecoder.kernels.tables``; built by ``rtdecoder.engine.Engine``):
``win[k, W_*]`` every window of every stream; ``gbase[g, :]`` ``(first node, first edge)`` of
window graph ``g`` in ``node_round`` (each node's round relative to its window's first round) and
``edges`` (``(u, v, observable mask)`` rows, ``v == -1`` for a boundary edge).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder.kernels.tables import (
    C_NOBS, C_NROUNDS, C_NWIN, C_OFF_BASE, C_SYN_BASE, C_WIN_BASE, CNT_CORRECTIONS, CNT_SHOTS, S_CUM, S_DONE,
    S_HAS_SHOT, S_NEXT_ROUND, S_NEXT_WIN, S_POISONED, S_RX_NS, S_SHOT, S_TS, W_COMMIT, W_END, W_GRAPH, W_START)
from rtdecoder.kernels.wire import (
    CORRECTION_PREFIX_SIZE, FLAG_FINAL, OFF_CORR_FLIPS, OFF_CORR_RX, OFF_CORR_TX, T_CORRECTION, wr, write_header)

@njit(cache=True, _nrt=False)
def next_window(st, win, sid):
    """Global index of the stream's next window if all its rounds have arrived, else -1."""
    if st[sid, S_POISONED] == 1 or st[sid, S_HAS_SHOT] == 0:
        return -1
    w = st[sid, S_NEXT_WIN]
    if w >= st[sid, C_NWIN]:
        return -1
    k = st[sid, C_WIN_BASE] + w
    if st[sid, S_NEXT_ROUND] >= win[k, W_END]:
        return k
    return -1


@njit(cache=True, _nrt=False)
def commit_window(st, offs, syn, win, gbase, node_round, edges, sid, k, chosen, nchosen, tx, counters):
    """Commit window ``k`` of stream ``sid`` from its decoder's chosen edges; write the CORRECTION.

    An edge is committed when its earlier endpoint lies in the commit region (rounds
    ``[start, commit_end)``); a committed edge flips its observables into the correction and
    flips the detection events of its endpoints in the buffer (rounds ``>= commit_end``), which
    the next window then decodes (the carry). Edges wholly in the buffer are dropped: the next
    window decodes that region again with more rounds in view.

    Args:
        chosen: int64 array; its first ``nchosen`` entries are edge indices local to the
            window's graph (``0 <= e < number of edges of graph win[k, W_GRAPH]``).
        tx: uint8 array receiving the CORRECTION (§4.4); its send time at byte 48 is stamped by
            the caller just before sending.

    Returns:
        The CORRECTION's length in bytes.
    """
    g = win[k, W_GRAPH]
    nb = gbase[g, 0]
    eb = gbase[g, 1]
    start = win[k, W_START]
    final = win[k, W_END] == st[sid, C_NROUNDS]
    ncommit = win[k, W_COMMIT] - start
    lo = st[sid, C_SYN_BASE] + offs[st[sid, C_OFF_BASE] + start]
    flips = np.int64(0)
    for i in range(nchosen):
        e = eb + chosen[i]
        u = edges[e, 0]
        v = edges[e, 1]
        if node_round[nb + u] >= ncommit:
            continue
        flips ^= edges[e, 2]
        if v >= 0 and node_round[nb + v] >= ncommit:
            syn[lo + v] ^= 1
    st[sid, S_NEXT_WIN] += 1
    return write_correction(st, sid, start, ncommit, final, flips, tx, counters)


@njit(cache=True, _nrt=False)
def write_correction(st, sid, first, ncommit, final, flips, tx, counters):
    """Write the CORRECTION (§4.4) committing rounds ``[first, first + ncommit)`` of stream
    ``sid``'s shot with observable flips ``flips`` (the shot's cumulative flips updated; with
    ``final``, the shot done); its length in bytes."""
    cum = st[sid, S_CUM] ^ flips
    st[sid, S_CUM] = cum
    flags = 0
    if final:
        flags = FLAG_FINAL
        st[sid, S_DONE] = 1
        counters[CNT_SHOTS] += 1
    counters[CNT_CORRECTIONS] += 1
    nobs = st[sid, C_NOBS]
    ob = (nobs + 7) >> 3
    size = write_header(tx, T_CORRECTION, flags, sid, first, st[sid, S_SHOT], ncommit,
                        CORRECTION_PREFIX_SIZE + 2 * ob, st[sid, S_TS])
    wr(tx, OFF_CORR_RX, 8, st[sid, S_RX_NS])
    wr(tx, OFF_CORR_TX, 8, st[sid, S_RX_NS])
    for i in range(ob):
        tx[OFF_CORR_FLIPS + i] = np.uint8((flips >> (8 * i)) & 0xFF)
        tx[OFF_CORR_FLIPS + ob + i] = np.uint8((cum >> (8 * i)) & 0xFF)
    return size


@njit(cache=True, _nrt=False)
def edges_of_pairs(keys, num_nodes, pairs, chosen):
    """Map node pairs to edge indices of a window graph.

    Args:
        keys: int64 ``(num_edges,)``, the graph's sorted edge keys
            (``(hi + 1) * (num_nodes + 1) + (lo + 1)`` with ``lo = -1`` for the boundary; see
            ``rtdecoder.windows.WindowGraph.edge_key``).
        pairs: int64 ``(k, 2)`` node pairs, ``-1`` for the boundary (PyMatching's
            ``decode_to_edges_array``).
        chosen: int64 output array, at least ``k`` long.

    Returns:
        ``k``, with ``chosen[:k]`` holding the edge indices; -1 if a pair is not an edge.
    """
    k = pairs.shape[0]
    for i in range(k):
        a = pairs[i, 0]
        b = pairs[i, 1]
        lo = min(a, b)
        hi = max(a, b)
        key = (hi + 1) * (num_nodes + 1) + (lo + 1)
        j = np.searchsorted(keys, key)
        if j >= keys.shape[0] or keys[j] != key:
            return -1
        chosen[i] = j
    return k
