"""Weighted union-find decoding with peeling, in numba.

Algorithm: Delfosse and Nickerson, "Almost-linear time decoding algorithm for topological codes"
(arXiv:1709.06218), cluster growth and union; Delfosse and Zémor (arXiv:1703.01517), peeling;
weighted growth as in Huang, Newman and Brown, "Fault-tolerant weighted union-find decoding on the
toric code" (arXiv:2004.04693).

1. Every node with a detection event starts an odd cluster. A cluster is *active* while it is odd
   and does not touch the boundary. Edge ``e`` has an integer length (its weight
   ``ln((1-p)/p)`` quantised, see ``quantise_weights``) and grows by one unit per unit of time
   from each end that lies in an active cluster (so twice as fast between two active clusters).
   When its growth reaches its length the edge is complete: the clusters at its ends merge, or,
   for an edge to the boundary, its cluster now touches the boundary.
2. Peeling: each cluster's complete edges are searched breadth-first from a node where the
   cluster touches the boundary (if it does), and the tree is peeled from the leaves: a leaf with
   a detection event takes its tree edge, which moves the event to its parent; an event left at
   the root goes out through the boundary edge.

Growth is simulated event by event, not step by step. Each cluster keeps its *radius* (how long
it has been active) as a linear function of time, and each node the cluster's radius when it
joined, so an edge's growth at any time is the sum over its ends of (cluster radius now - radius
when that end joined). An edge's completion time is put in a bucket queue (times are integers and
never more than the longest edge ahead of the present, so a circular array of buckets suffices).
When a cluster starts or stops growing (a merge changes its parity, it reaches the boundary, a
node joins it) the edges at its nodes are rescheduled, and an edge that stops growing has its
entry voided; an entry is acted on only if it is the edge's current one, and an edge whose ends
have come to lie in one cluster is dropped when its entry comes up. A decode costs time in
proportion to the edges around the clusters, plus one branch-free pass over the window's
detection events.

Ties: edges that complete at the same time are taken in the bucket's order (last scheduled
first); a decode is a pure function of the graph and the detection events.

Graph (``build_graph``, once per window graph): ``ptr`` int64 ``(n + 1,)`` and ``slot`` int64
``(2 m,)``, the CSR adjacency with each slot packed as ``edge << 40 | (other + 1) << 16 | length``
(``other == -1`` for the boundary, ``length`` the edge's, see ``quantise_weights``); ``eu``/``ev``
int32 ``(m,)``, the endpoints (``ev == -1`` for a boundary edge).

Workspace (``Workspace``, made once for the largest graph of a stream): every array is left
all-clear by each decode, which resets only what it touched. All arithmetic is int64.
Compiled with ``_nrt=False``: the kernel allocates nothing and takes no reference counts.
"""

from __future__ import annotations

import numpy as np
from numba import njit

WEIGHT_RESOLUTION = 64
"""Integer length units per unit of edge weight (natural log of odds)."""

MAX_LENGTH = (1 << 16) - 1
MAX_INDEX = (1 << 24) - 1


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
    order = np.lexsort((edge, ends))
    ptr = np.zeros(num_nodes + 1, np.int64)
    np.add.at(ptr, ends + 1, 1)
    ptr = np.cumsum(ptr)
    edge, other = edge[order], other[order]
    slot = (edge << 40) | ((other + 1) << 16) | w[edge].astype(np.int64)
    return ptr, slot, eu.astype(np.int32), ev.astype(np.int32)


class Workspace:
    """Scratch arrays for graphs of up to ``num_nodes`` nodes, ``num_edges`` edges and edge
    lengths up to ``max_length``."""

    def __init__(self, num_nodes: int, num_edges: int, max_length: int = MAX_LENGTH):
        n, m = max(num_nodes, 1), max(num_edges, 1)
        p = 1
        while p <= max_length:
            p *= 2
        i32 = np.int32
        self.parent = np.arange(n, dtype=i32)
        self.size = np.ones(n, i32)
        self.nxt = np.arange(n, dtype=i32)       # circular list of each cluster's nodes
        self.odd = np.zeros(n, np.uint8)         # root: the cluster has an odd number of events
        self.bnode = np.full(n, -1, i32)         # root: a node where the cluster meets the boundary
        self.bedge = np.full(n, -1, i32)         # root: the complete boundary edge at bnode
        self.radius = np.zeros(n, i32)           # root: time active, as of `since`
        self.since = np.zeros(n, i32)
        self.offset = np.zeros(n, i32)           # node: its cluster's radius when it joined
        self.in_cluster = np.zeros(n, np.uint8)
        self.defect = np.zeros(n, np.uint8)
        self.visited = np.zeros(n, np.uint8)
        self.parent_edge = np.full(n, -1, i32)
        self.touched = np.zeros(n, i32)
        self.order = np.zeros(n, i32)
        self.due = np.full(m, -1, i32)           # edge: its scheduled completion time
        self.done = np.zeros(m, np.uint8)        # edge: complete
        self.seen = np.zeros(m, i32)             # the edges ever scheduled, for the reset
        self.bucket = np.full(p, -1, i32)        # queue: first entry of each time bucket
        self.entry_edge = np.zeros(2 * m + 64, i32)
        self.entry_next = np.zeros(2 * m + 64, i32)
        self.count = np.zeros(3, np.int64)       # [edges seen, entries used, entries queued]
        self.chosen = np.zeros(2 * n + 1, np.int64)  # a tree edge per node, a boundary edge per cluster

    def arrays(self):
        return (self.parent, self.size, self.nxt, self.odd, self.bnode, self.bedge, self.radius, self.since,
                self.offset, self.in_cluster, self.defect, self.visited, self.parent_edge, self.touched,
                self.order, self.due, self.done, self.seen, self.bucket, self.entry_edge, self.entry_next,
                self.count, self.chosen)


@njit(_nrt=False, cache=True, inline="always")
def _find(parent, v):
    r = v
    while parent[r] != r:
        r = parent[r]
    while parent[v] != r:
        p = parent[v]
        parent[v] = r
        v = p
    return r


@njit(_nrt=False, cache=True, inline="always")
def _growth(r, v, now, odd, bnode, radius, since, offset):
    """How far edges at node v (in the cluster rooted at r) have grown from v's side by `now`,
    and whether they are still growing from it."""
    act = odd[r] == 1 and bnode[r] < 0
    return np.int64(radius[r]) + (now - since[r]) * act - offset[v], np.int64(act)


@njit(_nrt=False, cache=True)
def _rebuild_queue(bucket, entry_edge, entry_next, due, done, seen, num_seen):
    """Refill the queue from ``due`` when its entry pool is used up (stale entries dropped)."""
    bucket[:] = -1
    mask = bucket.shape[0] - 1
    n = 0
    for i in range(num_seen):
        e = seen[i]
        if not done[e] and due[e] >= 0:
            b = due[e] & mask
            entry_edge[n] = e
            entry_next[n] = bucket[b]
            bucket[b] = n
            n += 1
    return n


@njit(_nrt=False, cache=True, inline="always")
def _enqueue(e, t, due, done, seen, bucket, entry_edge, entry_next, count):
    d = due[e]
    if t == d:
        return  # already queued for that time
    if d == -1:
        seen[count[0]] = e
        count[0] += 1
    due[e] = t
    n = count[1]
    if n == entry_edge.shape[0]:
        n = _rebuild_queue(bucket, entry_edge, entry_next, due, done, seen, count[0])
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
def _schedule_node(v, rv, now, ptr, slot, parent, odd, bnode, radius, since, offset, in_cluster,
                   due, done, seen, bucket, entry_edge, entry_next, count):
    """(Re)schedule every incomplete edge at node v (in the cluster rooted at rv) from the rates
    at `now`; edges inside the cluster are skipped."""
    g_v, k_v = _growth(rv, v, now, odd, bnode, radius, since, offset)
    for j in range(ptr[v], ptr[v + 1]):
        s = slot[j]
        e = s >> 40
        if done[e]:
            continue
        u = ((s >> 16) & 0xFFFFFF) - 1
        g = g_v
        k = k_v
        if u >= 0 and in_cluster[u]:
            ru = _find(parent, u)
            if ru == rv:
                continue
            g_u, k_u = _growth(ru, u, now, odd, bnode, radius, since, offset)
            g += g_u
            k += k_u
        t = _due(now, (s & 0xFFFF) - g, k)
        if t >= 0:
            _enqueue(e, t, due, done, seen, bucket, entry_edge, entry_next, count)
        elif due[e] >= 0:
            due[e] = -2  # not growing: its queued entry is void


@njit(_nrt=False, cache=True, inline="always")
def _schedule_list(first, root, now, ptr, slot, parent, nxt, odd, bnode, radius, since, offset, in_cluster,
                   due, done, seen, bucket, entry_edge, entry_next, count):
    """``_schedule_node`` for every node on the circular node list through ``first`` (a cluster,
    or one side of a merge before its list is spliced), whose root is now ``root``."""
    v = first
    while True:
        _schedule_node(v, root, now, ptr, slot, parent, odd, bnode, radius, since, offset, in_cluster,
                       due, done, seen, bucket, entry_edge, entry_next, count)
        v = nxt[v]
        if v == first:
            break


@njit(_nrt=False, cache=True)
def decode(ptr, slot, eu, ev, events,
           parent, size, nxt, odd, bnode, bedge, radius, since, offset, in_cluster, defect, visited,
           parent_edge, touched, order, due, done, seen, bucket, entry_edge, entry_next, count, chosen):
    """Decode one window with weighted union-find and peeling.

    Args:
        ptr, slot, eu, ev: the graph (see the module docstring).
        events: uint8 ``(num_nodes,)``, detection events (0 or 1).
        parent ... chosen: a ``Workspace``'s arrays, all-clear on entry and on return.

    Returns:
        ``k >= 0``: ``chosen[:k]`` are the chosen edges (each once), whose endpoints' events are
        exactly ``events`` (the boundary absorbs any number). ``-1`` if a cluster could not be
        neutralised (a component of the graph with an odd number of events and no boundary).
    """
    n = ptr.shape[0] - 1
    mask = bucket.shape[0] - 1
    nt = 0
    for v in range(n):  # branch-free: detection events are sparse and unpredictable
        touched[nt] = v
        nt += events[v] != 0
    for i in range(nt):
        v = touched[i]
        in_cluster[v] = 1
        odd[v] = 1
        defect[v] = 1
    nactive = nt
    for i in range(nt):
        v = touched[i]
        _schedule_node(v, v, 0, ptr, slot, parent, odd, bnode, radius, since, offset, in_cluster,
                       due, done, seen, bucket, entry_edge, entry_next, count)
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
        if done[e] or due[e] != now:
            continue  # stale: completed, cancelled or rescheduled to another time
        a = eu[e]
        b = ev[e]
        ra = _find(parent, a) if in_cluster[a] else -1
        rb = _find(parent, b) if b >= 0 and in_cluster[b] else -1
        if ra == rb and ra >= 0:
            continue  # inside one cluster now: it never needs to complete
        done[e] = 1
        if b < 0:  # the cluster reaches the boundary and stops growing
            if bnode[ra] >= 0:
                continue
            bnode[ra] = a
            bedge[ra] = e
            if odd[ra]:  # it was growing: stop its edges
                nactive -= 1
                radius[ra] += now - since[ra]
                since[ra] = now
                _schedule_list(ra, ra, now, ptr, slot, parent, nxt, odd, bnode, radius, since, offset, in_cluster,
                               due, done, seen, bucket, entry_edge, entry_next, count)
            continue
        if ra < 0:  # a node new to the clusters joins as an even cluster of its own
            ra = a
            in_cluster[a] = 1
            touched[nt] = a
            nt += 1
            since[a] = now
        if rb < 0:
            rb = b
            in_cluster[b] = 1
            touched[nt] = b
            nt += 1
            since[b] = now
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        act_a = odd[ra] == 1 and bnode[ra] < 0
        act_b = odd[rb] == 1 and bnode[rb] < 0
        rad_a = radius[ra] + (now - since[ra]) * act_a
        rad_b = radius[rb] + (now - since[rb]) * act_b
        radius[ra] = rad_a
        since[ra] = now
        v = rb  # rb's nodes move under ra: each keeps the growth it has
        while True:
            offset[v] += rad_a - rad_b
            v = nxt[v]
            if v == rb:
                break
        parent[rb] = ra
        size[ra] += size[rb]
        odd[ra] ^= odd[rb]
        if bnode[ra] < 0 and bnode[rb] >= 0:
            bnode[ra] = bnode[rb]
            bedge[ra] = bedge[rb]
        act = odd[ra] == 1 and bnode[ra] < 0
        nactive += np.int64(act) - np.int64(act_a) - np.int64(act_b)
        # reschedule the edges of a side that started or stopped growing (lists not yet spliced)
        if act_a != act:
            _schedule_list(ra, ra, now, ptr, slot, parent, nxt, odd, bnode, radius, since, offset, in_cluster,
                           due, done, seen, bucket, entry_edge, entry_next, count)
        if act_b != act:
            _schedule_list(rb, ra, now, ptr, slot, parent, nxt, odd, bnode, radius, since, offset, in_cluster,
                           due, done, seen, bucket, entry_edge, entry_next, count)
        t = nxt[ra]
        nxt[ra] = nxt[rb]
        nxt[rb] = t

    # Peeling, cluster by cluster, over complete edges.
    nchosen = 0
    for i in range(nt):
        s = touched[i]
        if visited[s]:
            continue
        r = _find(parent, s)
        if bnode[r] >= 0:
            s = bnode[r]
        visited[s] = 1
        parent_edge[s] = -1
        order[0] = s
        head = 0
        tail = 1
        while head < tail:
            v = order[head]
            head += 1
            for j in range(ptr[v], ptr[v + 1]):
                sl = slot[j]
                u = ((sl >> 16) & 0xFFFFFF) - 1
                e = sl >> 40
                if u < 0 or not done[e] or visited[u]:
                    continue
                visited[u] = 1
                parent_edge[u] = e
                order[tail] = u
                tail += 1
        for q in range(tail - 1, 0, -1):
            v = order[q]
            if defect[v]:
                e = parent_edge[v]
                chosen[nchosen] = e
                nchosen += 1
                defect[v] = 0
                p = eu[e] if ev[e] == v else ev[e]
                defect[p] ^= 1
        if defect[s]:
            if bnode[r] >= 0:
                chosen[nchosen] = bedge[r]
                nchosen += 1
                defect[s] = 0
            else:
                ok = False

    # Leave the workspace all-clear.
    for i in range(nt):
        v = touched[i]
        parent[v] = v
        size[v] = 1
        nxt[v] = v
        odd[v] = 0
        bnode[v] = -1
        bedge[v] = -1
        radius[v] = 0
        since[v] = 0
        offset[v] = 0
        in_cluster[v] = 0
        defect[v] = 0
        visited[v] = 0
        parent_edge[v] = -1
    for i in range(count[0]):
        e = seen[i]
        due[e] = -1
        done[e] = 0
    if count[2] > 0:
        bucket[:] = -1
    count[0] = 0
    count[1] = 0
    count[2] = 0
    return nchosen if ok else -1


@njit(_nrt=False, cache=True)
def decode_batch(ptr, slot, eu, ev, emask, events, counts, obs,
                 parent, size, nxt, odd, bnode, bedge, radius, since, offset, in_cluster, defect, visited,
                 parent_edge, touched, order, due, done, seen, bucket, entry_edge, entry_next, count, chosen):
    """``decode`` on every row of ``events`` (uint8 ``(shots, num_nodes)``) with one graph:
    ``counts[s]`` the edges chosen (-1: none explains the events) and ``obs[s]`` the XOR of their
    observable masks (``emask`` int64 per edge, bit ``i`` = observable ``i``). The CPU side of
    ``rtdecoder decode``; the GPU's is ``rtdecoder.kernels.uf_cuda.batch_kernel``."""
    for s in range(events.shape[0]):
        n = decode(ptr, slot, eu, ev, events[s], parent, size, nxt, odd, bnode, bedge, radius, since, offset,
                   in_cluster, defect, visited, parent_edge, touched, order, due, done, seen, bucket, entry_edge,
                   entry_next, count, chosen)
        counts[s] = n
        mask = np.int64(0)
        for i in range(n):
            mask ^= emask[chosen[i]]
        obs[s] = mask
