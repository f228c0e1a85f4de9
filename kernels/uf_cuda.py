"""Union-find decoding on the GPU with numba.cuda: batch and persistent kernels.

The device code is the CPU kernel itself: ``rtdecoder.kernels.union_find.decode`` is compiled
for the CUDA target (its helpers are ``inline="always"``, so they are inlined into it), one
window per CUDA thread, each thread with a workspace of its own. The GPU therefore runs the same
algorithm with the same tie rule (edges completing at the same time are taken last scheduled
first, ``union_find``'s module docstring) and its corrections are identical to the CPU's, edge
for edge and in the same order; ``tests/test_gpu.py`` checks that on stim-sampled windows. The
parallelism is across windows (many streams, shots or windows in flight), not inside one.

Graphs (``rtdecoder.engine.Engine``'s union-find tables, copied to the device once):
``uf_base[g] = (ptr start, nodes, slot start, slots, edge start, edges)``, ``uf_ptr`` int64,
``uf_slot`` int64, ``uf_eu``/``uf_ev`` int32; ``emask`` int64, each edge's observable mask
(bit ``i`` = observable ``i``, the edges in ``uf_eu`` order).

Workspace (``device_workspace``): the ``union_find.Workspace`` arrays with a leading axis of one
row per thread (or per persistent slot); every row is all-clear between decodes.

This module imports ``numba.cuda`` and is imported only by ``rtdecoder.gpu`` when a GPU backend
is chosen (or under numba's CUDA simulator, ``NUMBA_ENABLE_CUDASIM=1``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import cuda, int64

from rtdecoder.kernels import union_find as uf
from rtdecoder.kernels.slots import CTL_STOP, RQ_EVENTS, RQ_GRAPH, RQ_SEQ, RS_COUNT, RS_SEQ, WORDS

if numba.config.ENABLE_CUDASIM:
    def _decode(*args):
        """Under numba's CUDA simulator kernels run as Python, and the kernel's ``njit`` helpers
        cannot take the simulator's wrapped arrays: unwrap them (views of the same memory) and
        run the CPU kernel. ``tests/test_gpu.py`` compiles the device path to PTX separately."""
        return uf.decode(*[a._item._ary if hasattr(a, "_item") else a for a in args])
else:
    _decode = cuda.jit(device=True)(uf.decode.py_func)  # the CPU kernel, compiled for the device

PERSISTENT_THREADS = 32
"""Threads per persistent slot (one warp): all copy the window's events from mapped host memory
(coalesced), thread 0 decodes."""


@cuda.jit
def batch_kernel(uf_base, uf_ptr, uf_slot, uf_eu, uf_ev, emask, win_graph, win_events, events,
                 p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, counts, obs, chosen_out):
    """Decode windows ``0 .. len(win_graph)-1``, grid-stride, one window per thread at a time.

    Args:
        win_graph: int64 ``(W,)``, each window's graph (``uf_base`` row).
        win_events: int64 ``(W,)``, offset of each window's first detection event in ``events``.
        events: uint8, detection events (0/1), one byte per node, windows back to back.
        p0 .. p9: the workspace, ``union_find.Workspace.arrays()`` order, one row per thread.
        counts: int64 ``(W,)`` out, edges chosen (-1: no correction explains the events).
        obs: int64 ``(W,)`` out, XOR of the chosen edges' observable masks.
        chosen_out: int64 ``(W, c)`` out, the first ``min(count, c)`` chosen edges (``c`` may be 0).
    """
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    if t >= p0.shape[0]:
        return
    cap = chosen_out.shape[1]
    for w in range(t, win_graph.shape[0], stride):
        g = win_graph[w]
        pb, nn, sb, ns, eb, m = uf_base[g, 0], uf_base[g, 1], uf_base[g, 2], uf_base[g, 3], uf_base[g, 4], uf_base[g, 5]
        lo = win_events[w]
        n = _decode(uf_ptr[pb:pb + nn + 1], uf_slot[sb:sb + ns], uf_eu[eb:eb + m], uf_ev[eb:eb + m],
                    events[lo:lo + nn], uf_eu[:0], uf_ptr, uf_eu, p0[t], p1[t], p2[t], p3[t], p4[t], p5[t], p6[t],
                    p7[t], p8[t], p9[t])
        counts[w] = n
        mask = int64(0)
        ch = p9[t]
        for i in range(n if n > 0 else 0):
            e = ch[i]
            mask ^= emask[eb + e]
            if i < cap:
                chosen_out[w, i] = e
        obs[w] = mask


@cuda.jit
def persistent_kernel(ctl, req, res, syn, uf_base, uf_ptr, uf_slot, uf_eu, uf_ev, uf_hbase, uf_hidx, uf_hptr,
                      uf_hedge, evbuf, p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, chosen, last):
    """Resident decoder: block ``b`` serves slots ``b, b + grid, b + 2 grid, ...`` until
    ``ctl[CTL_STOP]`` is set (on a GPU the grid is one block per slot; numba's simulator, which
    runs one kernel at a time and its blocks one after another, gets one block for all slots).

    Protocol per slot ``s`` (``rtdecoder.kernels.slots``; all in mapped host memory but
    ``evbuf``, ``last`` and the workspace): the host writes ``req[s*WORDS + RQ_GRAPH]``,
    ``RQ_EVENTS`` and then, last, a new ``RQ_SEQ``; thread 0 sees it (``last[s]`` holds the
    sequence number answered before), the block's threads copy the window's events from ``syn``
    to ``evbuf[s]`` (coalesced reads over the bus), thread 0 decodes, writes the chosen edges to
    ``chosen[s]`` and ``res[s*WORDS + RS_COUNT]``, fences (``threadfence_system``) and writes
    ``RS_SEQ`` last. No launch per window. Workspace row ``s`` belongs to slot ``s``. A graph's
    heralds (``uf_hbase`` and the three arrays after it, ``rtdecoder.engine.Engine``'s) erase
    edges as on the CPU.
    """
    lane = cuda.threadIdx.x
    sh = cuda.shared.array(2, int64)
    nslots = last.shape[0]
    while True:
        if lane == 0:
            found = False
            while not found:
                cuda.threadfence_system()  # a fence per poll: the loads below are not hoisted
                if ctl[CTL_STOP] != 0:
                    sh[0] = -1
                    break
                for s in range(cuda.blockIdx.x, nslots, cuda.gridDim.x):
                    q = req[s * WORDS + RQ_SEQ]
                    if q != last[s]:
                        sh[0] = q
                        sh[1] = s
                        found = True
                        break
        cuda.syncthreads()
        seq = sh[0]
        s = sh[1]
        if seq < 0:
            return
        cuda.threadfence_system()
        base = s * WORDS
        g = req[base + RQ_GRAPH]
        lo = req[base + RQ_EVENTS]
        pb, nn, sb, ns, eb, m = uf_base[g, 0], uf_base[g, 1], uf_base[g, 2], uf_base[g, 3], uf_base[g, 4], uf_base[g, 5]
        ev = evbuf[s]
        for i in range(lane, nn, cuda.blockDim.x):
            ev[i] = syn[lo + i]
        cuda.syncthreads()
        if lane == 0:
            h0, hn, h2, h3 = uf_hbase[g, 0], uf_hbase[g, 1], uf_hbase[g, 2], uf_hbase[g, 3]
            n = _decode(uf_ptr[pb:pb + nn + 1], uf_slot[sb:sb + ns], uf_eu[eb:eb + m], uf_ev[eb:eb + m], ev[:nn],
                        uf_hidx[h0:h0 + hn], uf_hptr[h2:], uf_hedge[h3:], p0[s], p1[s], p2[s], p3[s], p4[s], p5[s],
                        p6[s], p7[s], p8[s], p9[s])
            out = chosen[s]
            ch = p9[s]
            for i in range(n if n > 0 else 0):
                out[i] = ch[i]
            res[base + RS_COUNT] = n
            cuda.threadfence_system()
            res[base + RS_SEQ] = seq
            last[s] = seq
        cuda.syncthreads()  # sh is rewritten only after every thread has read it


def device_workspace(rows: int, num_nodes: int, num_edges: int, max_length: int) -> tuple:
    """The 10 workspace arrays of ``union_find.Workspace(num_nodes, num_edges, max_length)`` with
    a leading axis of ``rows``, on the device, all-clear."""
    one = uf.Workspace(num_nodes, num_edges, max_length).arrays()
    return tuple(cuda.to_device(np.ascontiguousarray(np.broadcast_to(a, (rows,) + a.shape))) for a in one)


def workspace_bytes(num_nodes: int, num_edges: int, max_length: int) -> int:
    """Device bytes of one workspace row."""
    return sum(a.nbytes for a in uf.Workspace(num_nodes, num_edges, max_length).arrays())
