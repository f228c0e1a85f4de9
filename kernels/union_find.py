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
2. Peeling: the complete edges that merged two clusters form a spanning forest of the clusters.
   Each tree is peeled from its leaves towards the node where its cluster touches the boundary
   (if it does): a leaf with a detection event takes its tree edge, which moves the event to its
   neighbour; an event left at that node goes out through the boundary edge. A node keeps its
   tree degree and the XOR of its tree edges' indices, which at a leaf is the leaf's one edge, so
   peeling needs no search of the graph.

Growth is simulated event by event, not step by step. Each cluster keeps its *radius* (how long
it has been active) as a linear function of time, and each node the cluster's radius when it
joined, so an edge's growth at any time is the sum over its ends of (cluster radius now - radius
when that end joined). Completion times go in a bucket queue (times are integers and never more
than the longest edge ahead of the present, so a circular array of buckets suffices). Two kinds
of entry:

- *Frontier* (one per node of an active cluster): an edge from the node to a node in no cluster
  (or to the boundary) grows from that side alone, so the node's free edges complete in order of
  length. Each node's adjacency is sorted by length and the node queues only its first free
  edge; when that completes (the far node joins the cluster, or the cluster reaches the
  boundary) the node queues the next. Edges found no longer free are passed over for good.
- *Edge* (edges whose both ends are in clusters, queued when the second end joins): the time
  the two sides' growth reaches its length.

The events' frontier entries wait for one *wake* entry (index ``m + n``), queued at the length of
the shortest edge at any event: no frontier edge can complete before it, and by then each pair
of events joined by an edge no longer than twice that length has merged into an even cluster
that does not grow. At the wake only the events whose clusters still grow queue their frontier;
at p = 0.001, where most events come in such pairs, that skips most frontier entries.

When a cluster starts growing (a merge makes it odd, a node joins it) its nodes' entries are
(re)queued. When it stops (a merge makes it even, it reaches the boundary) nothing is done: an
entry that comes up is checked against the growth at that time and requeued, or dropped, if the
rates have fallen since it was made. An entry is acted on only if it is its edge's (node's)
current one, and an edge whose ends have come to lie in one cluster is dropped when it comes up.
A decode costs time in proportion to the nodes the clusters reach and their edges, plus one
pass over the window's detection events that loads eight at a time and looks at each of the
eight only where the word is not zero. The events' adjacency rows are prefetched
(``rtdecoder.kernels.memory.prefetch``) before any is read, so their cache misses overlap.

Ties: edges that complete at the same time are taken in the bucket's order (last scheduled
first); a decode is a pure function of the graph and the detection events.

Graph (``build_graph``, once per window graph): ``ptr`` int64 ``(n + 1,)`` and ``slot`` int64
``(2 m,)``, the CSR adjacency with each slot packed as ``edge << 40 | (other + 1) << 16 | length``
(``other == -1`` for the boundary, ``length`` the edge's, see ``quantise_weights``), each node's
slots in order of length, then edge; ``eu``/``ev``
int32 ``(m,)``, the endpoints (``ev == -1`` for a boundary edge).

Workspace (``Workspace``, made once for the largest graph of a stream): every array is left
all-clear by each decode, which resets only what it touched. All arithmetic is int64.
Compiled with ``_nrt=False``: the kernel allocates nothing and takes no reference counts.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder.kernels.memory import load_word, prefetch

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
    order = np.lexsort((edge, w[edge], ends))  # each node's edges by length: its frontier's order
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
        self.deg = np.zeros(n, i32)              # node: complete tree edges at it
        self.xedge = np.zeros(n, i32)            # node: XOR of those edges
        self.touched = np.zeros(n, i32)
        self.front = np.zeros(n, i32)            # node: first edge (by length) that may be free
        self.due = np.full(m + n + 1, -1, i32)   # edge, node (frontier), the wake: its scheduled time
        self.done = np.zeros(m + n + 1, np.uint8)  # edge: complete
        self.seen = np.zeros(m + n + 1, i32)     # the entries ever scheduled, for the reset
        self.bucket = np.full(p, -1, i32)        # queue: first entry of each time bucket
        self.entry_edge = np.zeros(2 * (m + n + 1) + 64, i32)
        self.entry_next = np.zeros(2 * (m + n + 1) + 64, i32)
        self.count = np.zeros(3, np.int64)       # [edges seen, entries used, entries queued]
        self.chosen = np.zeros(2 * n + 1, np.int64)  # a tree edge per node, a boundary edge per cluster

    def arrays(self):
        return (self.parent, self.size, self.nxt, self.odd, self.bnode, self.bedge, self.radius, self.since,
                self.offset, self.in_cluster, self.defect, self.deg, self.xedge, self.touched,
                self.front, self.due, self.done, self.seen, self.bucket, self.entry_edge, self.entry_next,
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
def _front(v, ptr, slot, in_cluster, done, front):
    """Node v's first free edge in its adjacency (sorted by length): the slot index, or
    ``ptr[v + 1]`` if none is left. Edges passed over never become free again."""
    j = ptr[v] + front[v]
    hi = ptr[v + 1]
    while j < hi:
        s = slot[j]
        u = ((s >> 16) & 0xFFFFFF) - 1
        if u < 0:
            if not done[s >> 40]:
                break
        elif not in_cluster[u]:
            break
        j += 1
    front[v] = j - ptr[v]
    return j


@njit(_nrt=False, cache=True, inline="always")
def _schedule_front(v, g_v, now, m, ptr, slot, in_cluster, front, due, done, seen, bucket, entry_edge,
                    entry_next, count):
    """Queue node v's frontier entry (index ``m + v``): the time its first free edge completes,
    growing from v's side alone (``g_v`` grown so far)."""
    j = _front(v, ptr, slot, in_cluster, done, front)
    if j < ptr[v + 1]:
        rem = (slot[j] & 0xFFFF) - g_v
        _enqueue(m + v, now + rem if rem > 0 else now, due, done, seen, bucket, entry_edge, entry_next, count)


@njit(_nrt=False, cache=True, inline="always")
def _schedule_edges(v, g_v, now, rv, ptr, slot, parent, odd, bnode, radius, since, offset, in_cluster, due,
                    done, seen, bucket, entry_edge, entry_next, count):
    """(Re)schedule, from the rates at `now`, node v's edges to nodes of other clusters (v in the
    cluster rooted at rv, grown ``g_v`` from v's side and growing)."""
    for j in range(ptr[v], ptr[v + 1]):
        s = slot[j]
        u = ((s >> 16) & 0xFFFFFF) - 1
        if u < 0 or not in_cluster[u]:
            continue  # free: the frontier's
        e = s >> 40
        if done[e]:
            continue
        ru = _find(parent, u)
        if ru == rv:
            continue
        g_u, k_u = _growth(ru, u, now, odd, bnode, radius, since, offset)
        _enqueue(e, _due(now, (s & 0xFFFF) - g_v - g_u, 1 + k_u), due, done, seen, bucket, entry_edge,
                 entry_next, count)


@njit(_nrt=False, cache=True, inline="always")
def _schedule_node(v, rv, now, m, ptr, slot, parent, odd, bnode, radius, since, offset, in_cluster, front,
                   due, done, seen, bucket, entry_edge, entry_next, count):
    """(Re)schedule, from the rates at `now`, node v's edges to nodes of other clusters and its
    frontier (the time its first free edge completes). Called only while v's cluster, rooted at
    rv, grows: a cluster that stops leaves its entries to be checked as they come up."""
    g_v = radius[rv] + (now - since[rv]) - offset[v]
    _schedule_edges(v, g_v, now, rv, ptr, slot, parent, odd, bnode, radius, since, offset, in_cluster, due, done,
                    seen, bucket, entry_edge, entry_next, count)
    _schedule_front(v, g_v, now, m, ptr, slot, in_cluster, front, due, done, seen, bucket, entry_edge,
                    entry_next, count)


@njit(_nrt=False, cache=True, inline="always")
def _schedule_list(first, root, now, m, ptr, slot, parent, nxt, odd, bnode, radius, since, offset, in_cluster,
                   front, due, done, seen, bucket, entry_edge, entry_next, count):
    """``_schedule_node`` for every node on the circular node list through ``first`` (a cluster,
    or one side of a merge before its list is spliced), whose root is now ``root``."""
    v = first
    while True:
        _schedule_node(v, root, now, m, ptr, slot, parent, odd, bnode, radius, since, offset, in_cluster, front,
                       due, done, seen, bucket, entry_edge, entry_next, count)
        v = nxt[v]
        if v == first:
            break


@njit(_nrt=False, cache=True)
def decode(ptr, slot, eu, ev, events,
           parent, size, nxt, odd, bnode, bedge, radius, since, offset, in_cluster, defect, deg,
           xedge, touched, front, due, done, seen, bucket, entry_edge, entry_next, count, chosen):
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
    m = eu.shape[0]
    mask = bucket.shape[0] - 1
    nt = 0
    w = 0
    if events.strides[0] == 1:  # 8 nodes a load; branch-free within a word that has an event
        while w + 8 <= n:
            if load_word(events, w) != 0:
                for v in range(w, w + 8):
                    touched[nt] = v
                    nt += events[v] != 0
            w += 8
    for v in range(w, n):
        touched[nt] = v
        nt += events[v] != 0
    for i in range(nt):
        v = touched[i]
        in_cluster[v] = 1
        odd[v] = 1
        defect[v] = 1
    nactive = nt
    nev = nt
    for i in range(nt):  # start every event's adjacency loading before using any (misses overlap)
        prefetch(ptr, touched[i])
    for i in range(nt):
        v = touched[i]
        prefetch(slot, ptr[v])
        prefetch(slot, ptr[v + 1] - 1)
    wake = MAX_LENGTH
    for i in range(nt):  # edges between events now; frontiers at the wake (see the module docstring)
        v = touched[i]
        if ptr[v + 1] > ptr[v] and (slot[ptr[v]] & 0xFFFF) < wake:
            wake = slot[ptr[v]] & 0xFFFF
        _schedule_edges(v, 0, 0, v, ptr, slot, parent, odd, bnode, radius, since, offset, in_cluster, due, done,
                        seen, bucket, entry_edge, entry_next, count)
    if nt > 0:
        _enqueue(m + n, wake, due, done, seen, bucket, entry_edge, entry_next, count)
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
        if due[e] != now or done[e]:
            continue  # stale: completed, cancelled or rescheduled to another time
        grown = -1
        if e == m + n:  # the wake: the events' frontiers, where their clusters still grow
            due[e] = -2  # consumed
            for i in range(nev):
                v = touched[i]
                r = _find(parent, v)
                if odd[r] == 1 and bnode[r] < 0:
                    _schedule_front(v, radius[r] + (now - since[r]) - offset[v], now, m, ptr, slot, in_cluster,
                                    front, due, done, seen, bucket, entry_edge, entry_next, count)
            continue
        if e >= m:  # a frontier entry: node v's first free edge completes now, if v still grows
            grown = e - m
            due[e] = -2  # consumed
            ra = _find(parent, grown)
            if odd[ra] == 0 or bnode[ra] >= 0:
                continue  # its cluster stopped growing: restarting reschedules it
            j = _front(grown, ptr, slot, in_cluster, done, front)
            if j == ptr[grown + 1]:
                continue
            s = slot[j]
            rem = (s & 0xFFFF) - (radius[ra] + (now - since[ra]) - offset[grown])
            if rem > 0:  # its first free edge is a longer one now (or the cluster paused): not yet
                _enqueue(e, now + rem, due, done, seen, bucket, entry_edge, entry_next, count)
                continue
            e = s >> 40
            if due[e] == -1:  # never queued: remember it for the reset
                seen[count[0]] = e
                count[0] += 1
                due[e] = -2
            a = grown
            b = ((s >> 16) & 0xFFFFFF) - 1
            rb = -1  # the far end is free (or the boundary)
        else:  # an edge between two clusters
            a = eu[e]
            b = ev[e]
            ra = _find(parent, a)
            rb = _find(parent, b)
            if ra == rb:
                continue  # inside one cluster now: it never needs to complete
            # a cluster that stops growing leaves its edges' entries as they are: check the growth
            g_a, k_a = _growth(ra, a, now, odd, bnode, radius, since, offset)
            g_b, k_b = _growth(rb, b, now, odd, bnode, radius, since, offset)
            j = ptr[a]
            while slot[j] >> 40 != e:
                j += 1
            t = _due(now, (slot[j] & 0xFFFF) - g_a - g_b, k_a + k_b)
            if t != now:
                due[e] = -2  # consumed
                if t > now:
                    _enqueue(e, t, due, done, seen, bucket, entry_edge, entry_next, count)
                continue
        done[e] = 1
        if b < 0:  # the cluster reaches the boundary and stops growing
            if bnode[ra] >= 0:
                continue
            bnode[ra] = a
            bedge[ra] = e
            if odd[ra]:  # it was growing: it stops (its queued entries are checked as they come up)
                nactive -= 1
                radius[ra] += now - since[ra]
                since[ra] = now
            continue
        if rb < 0:  # a node new to the clusters joins as an even cluster of its own
            rb = b
            in_cluster[b] = 1
            touched[nt] = b
            nt += 1
            since[b] = now
        deg[a] += 1  # the tree edges, for peeling
        deg[b] += 1
        xedge[a] ^= e
        xedge[b] ^= e
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
        # reschedule the edges of a side that starts growing (lists not yet spliced); a side that
        # stops leaves its entries, which are checked as they come up
        if act and not act_a:
            _schedule_list(ra, ra, now, m, ptr, slot, parent, nxt, odd, bnode, radius, since, offset, in_cluster,
                           front, due, done, seen, bucket, entry_edge, entry_next, count)
        if act and not act_b:
            _schedule_list(rb, ra, now, m, ptr, slot, parent, nxt, odd, bnode, radius, since, offset, in_cluster,
                           front, due, done, seen, bucket, entry_edge, entry_next, count)
        t = nxt[ra]
        nxt[ra] = nxt[rb]
        nxt[rb] = t
        if grown >= 0 and act:  # the node whose frontier edge completed grows on to its next
            _schedule_front(grown, radius[ra] - offset[grown], now, m, ptr, slot, in_cluster, front, due, done,
                            seen, bucket, entry_edge, entry_next, count)

    # Peeling: the complete edges that merged clusters form a forest (``deg``: tree edges at a
    # node, ``xedge``: their XOR, which at a leaf is its one edge). Leaves are cut one by one,
    # each moving its event to its neighbour; a cluster's boundary node is never cut, so each
    # tree shrinks to it and a remaining event leaves through the boundary edge.
    nchosen = 0
    for i in range(nt):
        v = touched[i]
        while deg[v] == 1:
            r = _find(parent, v)
            if bnode[r] == v:
                break
            e = xedge[v]
            p = eu[e] + ev[e] - v
            if defect[v]:
                chosen[nchosen] = e
                nchosen += 1
                defect[v] = 0
                defect[p] ^= 1
            deg[v] = 0
            deg[p] -= 1
            xedge[p] ^= e
            v = p
    for i in range(nt):
        v = touched[i]
        if defect[v]:
            r = _find(parent, v)
            if bnode[r] == v:
                chosen[nchosen] = bedge[r]
                nchosen += 1
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
        deg[v] = 0
        xedge[v] = 0
        front[v] = 0
    if count[2] == 1 and due[m + n] >= 0:  # only the wake is left: every cluster stopped before it
        bucket[due[m + n] & mask] = -1
    elif count[2] > 0:
        bucket[:] = -1
    for i in range(count[0]):
        e = seen[i]
        due[e] = -1
        done[e] = 0
    count[0] = 0
    count[1] = 0
    count[2] = 0
    return nchosen if ok else -1


@njit(_nrt=False, cache=True)
def decode_batch(ptr, slot, eu, ev, emask, events, counts, obs,
                 parent, size, nxt, odd, bnode, bedge, radius, since, offset, in_cluster, defect, deg,
                 xedge, touched, front, due, done, seen, bucket, entry_edge, entry_next, count, chosen):
    """``decode`` on every row of ``events`` (uint8 ``(shots, num_nodes)``) with one graph:
    ``counts[s]`` the edges chosen (-1: none explains the events) and ``obs[s]`` the XOR of their
    observable masks (``emask`` int64 per edge, bit ``i`` = observable ``i``). The CPU side of
    ``rtdecoder decode``; the GPU's is ``rtdecoder.kernels.uf_cuda.batch_kernel``."""
    for s in range(events.shape[0]):
        n = decode(ptr, slot, eu, ev, events[s], parent, size, nxt, odd, bnode, bedge, radius, since, offset,
                   in_cluster, defect, deg, xedge, touched, front, due, done, seen, bucket, entry_edge,
                   entry_next, count, chosen)
        counts[s] = n
        mask = np.int64(0)
        for i in range(n):
            mask ^= emask[chosen[i]]
        obs[s] = mask
