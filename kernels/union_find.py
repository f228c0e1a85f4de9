"""Weighted union-find decoding with peeling, in numba (CPU, and CUDA through
``rtdecoder.kernels.uf_cuda``).

Algorithm: Delfosse and Nickerson, "Almost-linear time decoding algorithm for topological codes"
(arXiv:1709.06218), cluster growth and union; Delfosse and Zémor (arXiv:1703.01517), peeling;
weighted growth as in Huang, Newman and Brown, "Fault-tolerant weighted union-find decoding on the
toric code" (arXiv:2004.04693). Every node with a detection event starts an odd cluster; a
cluster grows while it is odd and does not touch the boundary, each edge of it by one length unit
per unit of time from each growing end; a complete edge merges its clusters (or connects one to
the boundary). The merging edges form a spanning forest, peeled from its leaves towards the
boundary. How growth is simulated (event by event, with a bucket queue) is in
docs/architecture.md, "union-find".

``decode`` returns the number of chosen edges (their indices in the workspace's ``chosen``), or -1
when no set of edges explains the events (a component with an odd number of events and no
boundary). Ties are broken by the bucket queue's order: a decode is a pure function of the graph
and the detection events, and the CPU and CUDA builds choose the same edges in the same order.

Graph (``build_graph``, once per window graph): ``ptr`` int64 ``(n + 1,)`` and ``slot`` int64
``(2 m,)``, the CSR adjacency with each slot packed as ``edge << 40 | (other + 1) << 16 | length``
(``other == -1`` for the boundary; ``length`` the edge's integer length, ``quantise_weights``),
each node's slots in order of length, then edge; ``eu``/``ev`` int32 ``(m,)``, the endpoints
(``ev == -1`` for a boundary edge). At most ``MAX_INDEX`` nodes and edges.

Workspace (``Workspace``, made once for the largest graph it will see): arrays that every decode
leaves all-clear (it resets only what it touched). A node's state is one 64-byte row of the node
table ``nd`` (columns ``PARENT`` .. ``FRONT``); ``in_cluster`` is a dense byte array. All
arithmetic is int64. Compiled with ``_nrt=False``: the kernel allocates nothing and takes no
reference counts, so the compiled data plane calls it directly.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder.kernels.memory import load_word, prefetch

WEIGHT_RESOLUTION = 64
"""Integer length units per unit of edge weight (natural log of odds)."""

MAX_LENGTH = (1 << 16) - 1
MAX_INDEX = (1 << 24) - 1


NO_HERALDS = (np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(1, np.int32))
"""``decode``'s ``hidx, hptr, hedge`` for a graph without heralds."""


def max_length(graph) -> int:
    """The longest edge length in a ``build_graph`` graph (what ``Workspace`` needs to know)."""
    slot = graph[1]
    return int((slot & 0xFFFF).max()) if len(slot) else 1


def quantise_weights(weight: np.ndarray) -> np.ndarray:
    """Integer edge lengths ``clip(round(WEIGHT_RESOLUTION * weight), 1, MAX_LENGTH)`` (int32)."""
    q = np.rint(np.asarray(weight, np.float64) * WEIGHT_RESOLUTION)
    return np.clip(q, 1, MAX_LENGTH).astype(np.int32)


def build_graph(num_nodes: int, eu: np.ndarray, ev: np.ndarray, weight: np.ndarray):
    """The decoding graph's arrays ``(ptr, slot, eu, ev)`` (see the module docstring).

    Args:
        num_nodes: nodes (detectors) of the graph.
        eu, ev: int ``(m,)``, each edge's endpoints, ``ev == -1`` for an edge to the boundary.
        weight: float ``(m,)``, each edge's weight ``ln((1-p)/p)``.

    Raises:
        ValueError: more than ``MAX_INDEX`` nodes or edges.
    """
    eu = np.asarray(eu, np.int64)
    ev = np.asarray(ev, np.int64)
    m = len(eu)
    if num_nodes > MAX_INDEX or m > MAX_INDEX:
        raise ValueError(f"union-find graphs hold at most {MAX_INDEX} nodes and edges "
                         f"(got {num_nodes} nodes, {m} edges)")
    w = quantise_weights(weight)
    ends = np.concatenate([eu, ev])
    other = np.concatenate([ev, eu])
    edge = np.concatenate([np.arange(m), np.arange(m)])
    keep = ends >= 0
    ends, other, edge = ends[keep], other[keep], edge[keep]
    order = np.lexsort((edge, w[edge], ends))  # each node's edges by length: its frontier's order
    ptr = np.zeros(num_nodes + 1, np.int64)
    np.add.at(ptr, ends + 1, 1)
    ptr = np.cumsum(ptr)
    edge, other = edge[order], other[order]
    slot = (edge << 40) | ((other + 1) << 16) | w[edge].astype(np.int64)
    return ptr, slot, eu.astype(np.int32), ev.astype(np.int32)


# Columns of the node table ``nd`` (int32, one 64-byte row per node): a node's state shares one
# cache line, so a node a decode reaches costs one miss, not one per array.
PARENT = 0   # union-find parent (itself at a root)
SIZE = 1     # root: nodes in the cluster
NXT = 2      # next node on the cluster's circular list
ODD = 3      # root: 1 if the cluster has an odd number of events
BNODE = 4    # root: a node where the cluster meets the boundary (-1: none yet)
BEDGE = 5    # root: the complete boundary edge at BNODE
RADIUS = 6   # root: time active, as of SINCE
SINCE = 7
OFFSET = 8   # node: its cluster's radius when it joined
DEFECT = 9   # node: 1 while it holds an event (peeling moves them)
DEG = 10     # node: complete tree edges at it
XEDGE = 11   # node: XOR of those edges
FRONT = 12   # node: first slot (by length) whose edge may be free
NODE_COLUMNS = 16

# Columns of the entry table ``es`` (int32, one row per edge, per node's frontier and for the wake).
DUE = 0      # the time its entry is queued for; -1 never queued, -2 consumed
DONE = 1     # edge: 1 once complete


def aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialised C-ordered array whose data starts on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


class Workspace:
    """Scratch arrays for graphs of up to ``num_nodes`` nodes, ``num_edges`` edges and edge
    lengths up to ``max_length``."""

    def __init__(self, num_nodes: int, num_edges: int, max_length: int = MAX_LENGTH):
        n, m = max(num_nodes, 1), max(num_edges, 1)
        p = 1
        while p <= max_length:
            p *= 2
        i32 = np.int32
        self.nd = aligned_empty((n, NODE_COLUMNS), i32)  # the node table (columns above), all-clear:
        self.nd[:] = 0                                   # each node a cluster of its own, no event
        self.nd[:, PARENT] = self.nd[:, NXT] = np.arange(n)
        self.nd[:, SIZE] = 1
        self.nd[:, BNODE] = self.nd[:, BEDGE] = -1
        self.in_cluster = np.zeros(n, np.uint8)  # node: in a cluster (dense: neighbours are tested)
        self.touched = np.zeros(n, i32)          # the events, then the nodes clusters reached
        self.es = np.zeros((m + n + 1, 2), i32)  # entry (edge, node frontier, the wake): [DUE, DONE]
        self.es[:, DUE] = -1
        self.seen = np.zeros(m + n + 1, i32)     # the entries ever scheduled, for the reset
        self.bucket = np.full(p, -1, i32)        # queue: first entry of each time bucket
        self.entry_edge = np.zeros(2 * (m + n + 1) + 64, i32)
        self.entry_next = np.zeros(2 * (m + n + 1) + 64, i32)
        self.count = np.zeros(4, np.int64)       # [edges seen, entries used, entries queued, scratch]
        self.chosen = np.zeros(2 * n + 1, np.int64)  # a tree edge per node, a boundary edge per cluster

    def arrays(self):
        return (self.nd, self.in_cluster, self.touched, self.es, self.seen, self.bucket,
                self.entry_edge, self.entry_next, self.count, self.chosen)


@njit(_nrt=False, cache=True, inline="always")
def _find(nd, v):
    r = v
    while nd[r, PARENT] != r:
        r = nd[r, PARENT]
    while nd[v, PARENT] != r:
        p = nd[v, PARENT]
        nd[v, PARENT] = r
        v = p
    return r


@njit(_nrt=False, cache=True, inline="always")
def _growth(r, v, now, nd):
    """How far edges at node v (in the cluster rooted at r) have grown from v's side by `now`,
    and whether they are still growing from it."""
    act = nd[r, ODD] == 1 and nd[r, BNODE] < 0
    return np.int64(nd[r, RADIUS]) + (now - nd[r, SINCE]) * act - nd[v, OFFSET], np.int64(act)


@njit(_nrt=False, cache=True)
def _rebuild_queue(bucket, entry_edge, entry_next, es, seen, num_seen):
    """Refill the queue from ``es`` when its entry pool is used up (stale entries dropped)."""
    bucket[:] = -1
    mask = bucket.shape[0] - 1
    n = 0
    for i in range(num_seen):
        e = seen[i]
        if not es[e, DONE] and es[e, DUE] >= 0:
            b = es[e, DUE] & mask
            entry_edge[n] = e
            entry_next[n] = bucket[b]
            bucket[b] = n
            n += 1
    return n


@njit(_nrt=False, cache=True, inline="always")
def _enqueue(e, t, es, seen, bucket, entry_edge, entry_next, count):
    d = es[e, DUE]
    if t == d:
        return  # already queued for that time
    if d == -1:
        seen[count[0]] = e
        count[0] += 1
    es[e, DUE] = t
    n = count[1]
    if n == entry_edge.shape[0]:
        n = _rebuild_queue(bucket, entry_edge, entry_next, es, seen, count[0])
        count[2] = n
    b = t & (bucket.shape[0] - 1)
    entry_edge[n] = e
    entry_next[n] = bucket[b]
    bucket[b] = n
    count[1] = n + 1
    count[2] += 1


@njit(_nrt=False, cache=True, inline="always")
def _due(now, rem, k):
    """The completion time of an edge `rem` short of its length, growing from `k` ends; -1 if
    it is not growing. (No division: k is 0, 1 or 2.)"""
    if rem <= 0:
        return now
    if k == 0:
        return -1
    if k == 1:
        return now + rem
    return now + ((rem + 1) >> 1)


@njit(_nrt=False, cache=True, inline="always")
def _front(v, ptr, slot, in_cluster, es, nd):
    """Node v's first free edge in its adjacency (sorted by length): the slot index, or
    ``ptr[v + 1]`` if none is left. Edges passed over never become free again."""
    j = ptr[v] + nd[v, FRONT]
    hi = ptr[v + 1]
    while j < hi:
        s = slot[j]
        u = ((s >> 16) & 0xFFFFFF) - 1
        if u < 0:
            if not es[s >> 40, DONE]:
                break
        elif not in_cluster[u]:
            break
        j += 1
    nd[v, FRONT] = j - ptr[v]
    return j


@njit(_nrt=False, cache=True, inline="always")
def _schedule_front(v, g_v, now, m, ptr, slot, in_cluster, nd, es, seen, bucket, entry_edge, entry_next,
                    count):
    """Queue node v's frontier entry (index ``m + v``): the time its first free edge completes,
    growing from v's side alone (``g_v`` grown so far)."""
    j = _front(v, ptr, slot, in_cluster, es, nd)
    if j < ptr[v + 1]:
        rem = (slot[j] & 0xFFFF) - g_v
        _enqueue(m + v, now + rem if rem > 0 else now, es, seen, bucket, entry_edge, entry_next, count)


@njit(_nrt=False, cache=True, inline="always")
def _schedule_edges(v, g_v, now, rv, ptr, slot, nd, in_cluster, es, seen, bucket, entry_edge, entry_next,
                    count):
    """(Re)schedule, from the rates at `now`, node v's edges to nodes of other clusters (v in the
    cluster rooted at rv, grown ``g_v`` from v's side and growing)."""
    for j in range(ptr[v], ptr[v + 1]):
        s = slot[j]
        u = ((s >> 16) & 0xFFFFFF) - 1
        if u < 0 or not in_cluster[u]:
            continue  # free: the frontier's
        e = s >> 40
        if es[e, DONE]:
            continue
        ru = _find(nd, u)
        if ru == rv:
            continue
        g_u, k_u = _growth(ru, u, now, nd)
        _enqueue(e, _due(now, (s & 0xFFFF) - g_v - g_u, 1 + k_u), es, seen, bucket, entry_edge,
                 entry_next, count)


@njit(_nrt=False, cache=True, inline="always")
def _schedule_node(v, rv, now, m, ptr, slot, nd, in_cluster, es, seen, bucket, entry_edge, entry_next, count):
    """(Re)schedule, from the rates at `now`, node v's edges to nodes of other clusters and its
    frontier (the time its first free edge completes). Called only while v's cluster, rooted at
    rv, grows: a cluster that stops leaves its entries to be checked as they come up."""
    g_v = nd[rv, RADIUS] + (now - nd[rv, SINCE]) - nd[v, OFFSET]
    _schedule_edges(v, g_v, now, rv, ptr, slot, nd, in_cluster, es, seen, bucket, entry_edge, entry_next,
                    count)
    _schedule_front(v, g_v, now, m, ptr, slot, in_cluster, nd, es, seen, bucket, entry_edge, entry_next, count)


@njit(_nrt=False, cache=True, inline="always")
def _schedule_list(first, root, now, m, ptr, slot, nd, in_cluster, es, seen, bucket, entry_edge, entry_next,
                   count):
    """``_schedule_node`` for every node on the circular node list through ``first`` (a cluster,
    or one side of a merge before its list is spliced), whose root is now ``root``."""
    v = first
    while True:
        _schedule_node(v, root, now, m, ptr, slot, nd, in_cluster, es, seen, bucket, entry_edge, entry_next,
                       count)
        v = nd[v, NXT]
        if v == first:
            break


@njit(_nrt=False, cache=True, inline="always")
def _tree_edge(nd, a, b, e):
    """Edge ``e`` between ``a`` and ``b`` joins the forest that peeling walks (``DEG``, ``XEDGE``)."""
    nd[a, DEG] += 1
    nd[b, DEG] += 1
    nd[a, XEDGE] ^= e
    nd[b, XEDGE] ^= e


@njit(_nrt=False, cache=True, inline="always")
def _link(nd, ra, rb):
    """Root ``rb``'s cluster goes under root ``ra``: size, parity and boundary merged (the node
    lists are spliced by the caller, when it is ready to)."""
    nd[rb, PARENT] = ra
    nd[ra, SIZE] += nd[rb, SIZE]
    nd[ra, ODD] ^= nd[rb, ODD]
    if nd[ra, BNODE] < 0 and nd[rb, BNODE] >= 0:
        nd[ra, BNODE] = nd[rb, BNODE]
        nd[ra, BEDGE] = nd[rb, BEDGE]


@njit(_nrt=False, cache=True, inline="always")
def _erase(e, eu, ev, nd, in_cluster, touched, es, seen, count, nt):
    """Make edge ``e`` complete at time 0: its ends join the clusters (``touched`` grows from
    ``nt``; the new length goes to ``count[3]``) and their clusters merge along it as a tree edge
    (a boundary edge makes the cluster meet the boundary)."""
    count[3] = nt
    if es[e, DONE]:
        return
    es[e, DONE] = 1
    if es[e, DUE] == -1:
        seen[count[0]] = e
        count[0] += 1
        es[e, DUE] = -2
    a = eu[e]
    b = ev[e]
    if not in_cluster[a]:
        in_cluster[a] = 1
        touched[nt] = a
        nt += 1
    ra = _find(nd, a)
    if b < 0:
        count[3] = nt
        if nd[ra, BNODE] < 0:
            nd[ra, BNODE] = a
            nd[ra, BEDGE] = e
        return
    if not in_cluster[b]:
        in_cluster[b] = 1
        touched[nt] = b
        nt += 1
    count[3] = nt
    rb = _find(nd, b)
    if ra == rb:
        return  # a cycle of erased edges: not a tree edge
    _tree_edge(nd, a, b, e)
    if nd[ra, SIZE] < nd[rb, SIZE]:
        ra, rb = rb, ra
    _link(nd, ra, rb)
    t = nd[ra, NXT]
    nd[ra, NXT] = nd[rb, NXT]
    nd[rb, NXT] = t


@njit(_nrt=False, cache=True)
def decode(ptr, slot, eu, ev, events, hidx, hptr, hedge, nd, in_cluster, touched, es, seen, bucket,
           entry_edge, entry_next, count, chosen):
    """Decode one window with weighted union-find and peeling, heralded erasures first.

    Args:
        ptr, slot, eu, ev: the graph (see the module docstring).
        events: uint8 ``(num_nodes,)``, detection events (0 or 1).
        hidx, hptr, hedge: the graph's heralds (``rtdecoder.heralds``): ``hidx`` int32
            ``(num_nodes,)``, -1 or the node's herald index ``i``; a detection event at such a
            node is no defect, and erases the edges ``hedge[hptr[i]:hptr[i + 1]]`` (int64 /
            int32): they are complete before anything grows, their clusters formed first (the
            erasure decoder of Delfosse and Zémor, arXiv:1703.01517, inside weighted growth); an
            edge erased twice, or erased edges forming a cycle, is fine. ``hidx`` empty
            (``NO_HERALDS``): plain weighted union-find, at no cost.
        nd ... chosen: a ``Workspace``'s arrays (``Workspace.arrays()`` order), all-clear on entry
            and on return.

    Returns:
        ``k >= 0``: ``chosen[:k]`` are the chosen edges (each once), whose endpoints' events are
        exactly ``events`` (the boundary absorbs any number). ``-1`` if a cluster could not be
        neutralised (a component of the graph with an odd number of events and no boundary).
    """
    n = ptr.shape[0] - 1
    m = eu.shape[0]
    mask = bucket.shape[0] - 1
    nt = 0
    w = 0
    if events.strides[0] == 1:  # 32 nodes a test, then 8; branch-free within a word that has an event
        while w + 32 <= n:
            if load_word(events, w) | load_word(events, w + 8) | load_word(events, w + 16) | \
                    load_word(events, w + 24) != 0:
                for x in range(w, w + 32, 8):
                    if load_word(events, x) != 0:
                        for v in range(x, x + 8):
                            touched[nt] = v
                            nt += events[v] != 0
            w += 32
        while w + 8 <= n:
            if load_word(events, w) != 0:
                for v in range(w, w + 8):
                    touched[nt] = v
                    nt += events[v] != 0
            w += 8
    for v in range(w, n):
        touched[nt] = v
        nt += events[v] != 0
    heralded = hidx.shape[0] > 0
    for i in range(nt):  # start every event's row and adjacency loading before using any (misses overlap)
        v = touched[i]
        prefetch(ptr, v)
        prefetch(nd[v], 0)
        if heralded:
            prefetch(hidx, v)
    for i in range(nt):
        v = touched[i]
        prefetch(slot, ptr[v])
        prefetch(slot, ptr[v + 1] - 1)
        in_cluster[v] = 1
        nd[v, ODD] = 1
        nd[v, DEFECT] = 1
    nev = nt
    if heralded:
        for k in range(nev):  # a herald's event: an even cluster of one node, not a defect (all first,
            v = touched[k]     # before any merge counts its parity)
            if hidx[v] >= 0:
                nd[v, ODD] = 0
                nd[v, DEFECT] = 0
        for k in range(nev):  # then their erased edges: complete at time 0, merged now
            h = hidx[touched[k]]
            if h >= 0:
                for i in range(hptr[h], hptr[h + 1]):
                    _erase(hedge[i], eu, ev, nd, in_cluster, touched, es, seen, count, nt)
                    nt = count[3]
    nactive = 0
    nev = nt
    wake = MAX_LENGTH
    for i in range(nt):  # edges between growing clusters now; frontiers at the wake (module docstring)
        v = touched[i]
        r = _find(nd, v)
        if nd[r, ODD] == 0 or nd[r, BNODE] >= 0:
            continue
        nactive += r == v
        if ptr[v + 1] > ptr[v] and (slot[ptr[v]] & 0xFFFF) < wake:
            wake = slot[ptr[v]] & 0xFFFF
        _schedule_edges(v, 0, 0, r, ptr, slot, nd, in_cluster, es, seen, bucket, entry_edge, entry_next, count)
    if nactive > 0:
        _enqueue(m + n, wake, es, seen, bucket, entry_edge, entry_next, count)
    ok = True
    now = 0
    while nactive > 0:
        if count[2] == 0:  # nothing left to grow: an odd component without boundary
            ok = False
            break
        while bucket[now & mask] < 0:
            now += 1
        q = bucket[now & mask]
        bucket[now & mask] = entry_next[q]
        count[2] -= 1
        e = entry_edge[q]
        if es[e, DUE] != now or es[e, DONE]:
            continue  # stale: completed, cancelled or rescheduled to another time
        grown = -1
        if e == m + n:  # the wake: the events' frontiers, where their clusters still grow
            es[e, DUE] = -2  # consumed
            for i in range(nev):
                v = touched[i]
                r = _find(nd, v)
                if nd[r, ODD] == 1 and nd[r, BNODE] < 0:
                    _schedule_front(v, nd[r, RADIUS] + (now - nd[r, SINCE]) - nd[v, OFFSET], now, m, ptr, slot,
                                    in_cluster, nd, es, seen, bucket, entry_edge, entry_next, count)
            continue
        if e >= m:  # a frontier entry: node v's first free edge completes now, if v still grows
            grown = e - m
            es[e, DUE] = -2  # consumed
            ra = _find(nd, grown)
            if nd[ra, ODD] == 0 or nd[ra, BNODE] >= 0:
                continue  # its cluster stopped growing: restarting reschedules it
            j = _front(grown, ptr, slot, in_cluster, es, nd)
            if j == ptr[grown + 1]:
                continue
            s = slot[j]
            rem = (s & 0xFFFF) - (nd[ra, RADIUS] + (now - nd[ra, SINCE]) - nd[grown, OFFSET])
            if rem > 0:  # its first free edge is a longer one now (or the cluster paused): not yet
                _enqueue(e, now + rem, es, seen, bucket, entry_edge, entry_next, count)
                continue
            e = s >> 40
            if es[e, DUE] == -1:  # never queued: remember it for the reset
                seen[count[0]] = e
                count[0] += 1
                es[e, DUE] = -2
            a = grown
            b = ((s >> 16) & 0xFFFFFF) - 1
            rb = -1  # the far end is free (or the boundary)
        else:  # an edge between two clusters
            a = eu[e]
            b = ev[e]
            ra = _find(nd, a)
            rb = _find(nd, b)
            if ra == rb:
                continue  # inside one cluster now: it never needs to complete
            # a cluster that stops growing leaves its edges' entries as they are: check the growth
            g_a, k_a = _growth(ra, a, now, nd)
            g_b, k_b = _growth(rb, b, now, nd)
            j = ptr[a]
            while slot[j] >> 40 != e:
                j += 1
            t = _due(now, (slot[j] & 0xFFFF) - g_a - g_b, k_a + k_b)
            if t != now:
                es[e, DUE] = -2  # consumed
                if t > now:
                    _enqueue(e, t, es, seen, bucket, entry_edge, entry_next, count)
                continue
        es[e, DONE] = 1
        if b < 0:  # the cluster reaches the boundary and stops growing
            if nd[ra, BNODE] >= 0:
                continue
            nd[ra, BNODE] = a
            nd[ra, BEDGE] = e
            if nd[ra, ODD]:  # it was growing: it stops (its queued entries are checked as they come up)
                nactive -= 1
                nd[ra, RADIUS] += now - nd[ra, SINCE]
                nd[ra, SINCE] = now
            continue
        if rb < 0:  # a node new to the clusters joins as an even cluster of its own
            rb = b
            in_cluster[b] = 1
            touched[nt] = b
            nt += 1
            nd[b, SINCE] = now
        _tree_edge(nd, a, b, e)  # for peeling
        if nd[ra, SIZE] < nd[rb, SIZE]:
            ra, rb = rb, ra
        act_a = nd[ra, ODD] == 1 and nd[ra, BNODE] < 0
        act_b = nd[rb, ODD] == 1 and nd[rb, BNODE] < 0
        rad_a = nd[ra, RADIUS] + (now - nd[ra, SINCE]) * act_a
        rad_b = nd[rb, RADIUS] + (now - nd[rb, SINCE]) * act_b
        nd[ra, RADIUS] = rad_a
        nd[ra, SINCE] = now
        v = rb  # rb's nodes move under ra: each keeps the growth it has
        while True:
            nd[v, OFFSET] += rad_a - rad_b
            v = nd[v, NXT]
            if v == rb:
                break
        _link(nd, ra, rb)
        act = nd[ra, ODD] == 1 and nd[ra, BNODE] < 0
        nactive += np.int64(act) - np.int64(act_a) - np.int64(act_b)
        # reschedule the edges of a side that starts growing (lists not yet spliced); a side that
        # stops leaves its entries, which are checked as they come up
        if act and not act_a:
            _schedule_list(ra, ra, now, m, ptr, slot, nd, in_cluster, es, seen, bucket, entry_edge, entry_next,
                           count)
        if act and not act_b:
            _schedule_list(rb, ra, now, m, ptr, slot, nd, in_cluster, es, seen, bucket, entry_edge, entry_next,
                           count)
        t = nd[ra, NXT]
        nd[ra, NXT] = nd[rb, NXT]
        nd[rb, NXT] = t
        if grown >= 0 and act:  # the node whose frontier edge completed grows on to its next
            _schedule_front(grown, nd[ra, RADIUS] - nd[grown, OFFSET], now, m, ptr, slot, in_cluster, nd, es,
                            seen, bucket, entry_edge, entry_next, count)

    # Peeling: the complete edges that merged clusters form a forest (``deg``: tree edges at a
    # node, ``xedge``: their XOR, which at a leaf is its one edge). Leaves are cut one by one,
    # each moving its event to its neighbour; a cluster's boundary node is never cut, so each
    # tree shrinks to it and a remaining event leaves through the boundary edge.
    nchosen = 0
    for i in range(nt):
        v = touched[i]
        while nd[v, DEG] == 1:
            r = _find(nd, v)
            if nd[r, BNODE] == v:
                break
            e = nd[v, XEDGE]
            p = eu[e] + ev[e] - v
            if nd[v, DEFECT]:
                chosen[nchosen] = e
                nchosen += 1
                nd[v, DEFECT] = 0
                nd[p, DEFECT] ^= 1
            nd[v, DEG] = 0
            nd[p, DEG] -= 1
            nd[p, XEDGE] ^= e
            v = p
    for i in range(nt):
        v = touched[i]
        if nd[v, DEFECT]:
            r = _find(nd, v)
            if nd[r, BNODE] == v:
                chosen[nchosen] = nd[r, BEDGE]
                nchosen += 1
            else:
                ok = False

    # Leave the workspace all-clear.
    for i in range(nt):
        v = touched[i]
        in_cluster[v] = 0
        row = nd[v]
        for c in range(NODE_COLUMNS):
            row[c] = 0
        row[PARENT] = v
        row[SIZE] = 1
        row[NXT] = v
        row[BNODE] = -1
        row[BEDGE] = -1
    if count[2] == 1 and es[m + n, DUE] >= 0:  # only the wake is left: every cluster stopped before it
        bucket[es[m + n, DUE] & mask] = -1
    elif count[2] > 0:
        bucket[:] = -1
    for i in range(count[0]):
        e = seen[i]
        es[e, DUE] = -1
        es[e, DONE] = 0
    count[0] = 0
    count[1] = 0
    count[2] = 0
    return nchosen if ok else -1


@njit(_nrt=False, cache=True)
def decode_batch(ptr, slot, eu, ev, emask, events, hidx, hptr, hedge, counts, obs,
                 nd, in_cluster, touched, es, seen, bucket, entry_edge, entry_next, count, chosen):
    """``decode`` on every row of ``events`` (uint8 ``(shots, num_nodes)``) with one graph and its
    heralds (``hidx, hptr, hedge``; ``NO_HERALDS`` for none):
    ``counts[s]`` the edges chosen (-1: none explains the events) and ``obs[s]`` the XOR of their
    observable masks (``emask`` int64 per edge, bit ``i`` = observable ``i``). The CPU side of
    ``rtdecoder decode``; the GPU's is ``rtdecoder.kernels.uf_cuda.batch_kernel``."""
    for s in range(events.shape[0]):
        n = decode(ptr, slot, eu, ev, events[s], hidx, hptr, hedge, nd, in_cluster, touched, es, seen, bucket,
                   entry_edge, entry_next, count, chosen)
        counts[s] = n
        mask = np.int64(0)
        for i in range(n):
            mask ^= emask[chosen[i]]
        obs[s] = mask
