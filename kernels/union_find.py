"""Weighted union-find decoding with peeling, in numba.

Algorithm: Delfosse and Nickerson, "Almost-linear time decoding algorithm for topological codes"
(arXiv:1709.06218), cluster growth and union; Delfosse and Zémor (arXiv:1703.01517), peeling;
weighted growth as in Huang, Newman and Brown, "Fault-tolerant weighted union-find decoding on the
toric code" (arXiv:2004.04693).

1. Every node with a detection event starts an odd cluster. While some cluster is *active* (odd
   and not touching the boundary), every active cluster grows all edges leaving it. Edge ``e`` has
   an integer length ``w[e]`` (its weight ``ln((1-p)/p)`` quantised, see ``quantise_weights``) and a
   growth counter; an edge grown from both ends grows twice as fast. Each step advances by the
   exact amount that completes the next edge (so the number of steps is the number of edges
   completed, not the sum of lengths), and completed edges merge the clusters at their ends.
   An edge to the boundary that completes marks its cluster as touching the boundary.
2. Peeling: each cluster's completed edges are searched breadth-first from a node where the
   cluster touches the boundary (if it does), and the tree is peeled from the leaves: a leaf with
   a detection event takes its tree edge, which moves the event to its parent; an event left at
   the root goes out through the boundary edge.

Ties: edges completing in the same step are merged in ascending order of the active clusters'
node lists, and breadth-first search visits edges in the graph's CSR order, so a decode is a pure
function of the graph and the detection events.

Graph arrays (built by ``build_graph`` once per window graph):
``ptr`` int64 ``(n + 1,)`` and ``adj_edge``/``adj_other`` int64 ``(2 * m,)``, the CSR adjacency
(``adj_other == -1`` for the boundary); ``eu``/``ev`` int64 ``(m,)`` endpoints (``ev == -1`` for a
boundary edge); ``w`` int64 ``(m,)`` lengths.

Workspace (``Workspace``, made once for the largest graph, reset incrementally by each decode):
every array is sized to nodes or edges and left all-clear between decodes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

WEIGHT_RESOLUTION = 64
"""Integer length units per unit of edge weight (natural log of odds)."""


def quantise_weights(weight: np.ndarray) -> np.ndarray:
    """Integer edge lengths ``max(1, round(WEIGHT_RESOLUTION * weight))`` (int64)."""
    return np.maximum(1, np.rint(np.asarray(weight, np.float64) * WEIGHT_RESOLUTION)).astype(np.int64)


def build_graph(num_nodes: int, eu: np.ndarray, ev: np.ndarray, weight: np.ndarray):
    """CSR adjacency and integer lengths of a graph: ``(ptr, adj_edge, adj_other, eu, ev, w)``."""
    eu = np.asarray(eu, np.int64)
    ev = np.asarray(ev, np.int64)
    m = len(eu)
    ends = np.concatenate([eu, ev])
    other = np.concatenate([ev, eu])
    edge = np.concatenate([np.arange(m), np.arange(m)])
    keep = ends >= 0
    ends, other, edge = ends[keep], other[keep], edge[keep]
    order = np.lexsort((edge, ends))
    ptr = np.zeros(num_nodes + 1, np.int64)
    np.add.at(ptr, ends + 1, 1)
    ptr = np.cumsum(ptr)
    return (ptr, edge[order].astype(np.int64), other[order].astype(np.int64), eu, ev, quantise_weights(weight))


class Workspace:
    """Scratch arrays for graphs of up to ``num_nodes`` nodes and ``num_edges`` edges."""

    def __init__(self, num_nodes: int, num_edges: int):
        n, m = num_nodes, num_edges
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, np.int64)
        self.odd = np.zeros(n, np.uint8)          # root: cluster has an odd number of events
        self.bnode = np.full(n, -1, np.int64)     # root: a node where the cluster meets the boundary
        self.bedge = np.full(n, -1, np.int64)     # root: the completed boundary edge at bnode
        self.nxt = np.arange(n, dtype=np.int64)   # circular list of each cluster's nodes
        self.in_cluster = np.zeros(n, np.uint8)   # node has joined a cluster (touched)
        self.defect = np.zeros(n, np.uint8)
        self.visited = np.zeros(n, np.uint8)
        self.parent_edge = np.full(n, -1, np.int64)
        self.touched = np.zeros(n, np.int64)
        self.active = np.zeros(n, np.int64)
        self.next_active = np.zeros(n, np.int64)
        self.mark = np.zeros(n, np.uint8)
        self.order = np.zeros(n, np.int64)
        self.grown = np.zeros(m, np.int64)
        self.done = np.zeros(m, np.uint8)
        self.grown_list = np.zeros(m, np.int64)
        self.completed = np.zeros(m, np.int64)
        self.chosen = np.zeros(2 * n + 1, np.int64)  # a tree edge per node, a boundary edge per cluster

    def arrays(self):
        return (self.parent, self.size, self.odd, self.bnode, self.bedge, self.nxt, self.in_cluster,
                self.defect, self.visited, self.parent_edge, self.touched, self.active, self.next_active,
                self.mark, self.order, self.grown, self.done, self.grown_list, self.completed, self.chosen)


@njit(cache=True, inline="always")
def _find(parent, v):
    r = v
    while parent[r] != r:
        r = parent[r]
    while parent[v] != r:
        p = parent[v]
        parent[v] = r
        v = p
    return r


@njit(cache=True)
def decode(ptr, adj_edge, adj_other, eu, ev, w, events,
           parent, size, odd, bnode, bedge, nxt, in_cluster, defect, visited, parent_edge, touched,
           active, next_active, mark, order, grown, done, grown_list, completed, chosen):
    """Decode one window with weighted union-find and peeling.

    Args:
        ptr, adj_edge, adj_other, eu, ev, w: the graph (see the module docstring).
        events: uint8 ``(num_nodes,)``, detection events (0 or 1).
        parent ... chosen: a ``Workspace``'s arrays, all-clear on entry and on return.

    Returns:
        ``k >= 0``: ``chosen[:k]`` are the chosen edges (each once), whose endpoints' events are
        exactly ``events`` (the boundary absorbs any number). ``-1`` if a cluster could not be
        neutralised (a component of the graph with an odd number of events and no boundary).
    """
    n = ptr.shape[0] - 1
    nt = 0
    na = 0
    for v in range(n):
        if events[v]:
            in_cluster[v] = 1
            odd[v] = 1
            defect[v] = 1
            touched[nt] = v
            nt += 1
            active[na] = v
            na += 1
    ng = 0
    ok = True
    while na > 0:
        # 1. the growth step: the least amount that completes some edge leaving an active cluster
        step = np.int64(1) << 62
        for a in range(na):
            r = active[a]
            v = r
            while True:
                for j in range(ptr[v], ptr[v + 1]):
                    e = adj_edge[j]
                    if done[e]:
                        continue
                    u = adj_other[j]
                    k = 1
                    if u >= 0:
                        ru = _find(parent, u) if in_cluster[u] else -1
                        if ru == r:
                            continue
                        if ru >= 0 and odd[ru] and bnode[ru] < 0:
                            k = 2
                    rem = w[e] - grown[e]
                    t = (rem + k - 1) // k
                    if t < step:
                        step = t
                v = nxt[v]
                if v == r:
                    break
        # 2. grow every edge leaving an active cluster by `step` per growing end. (The test for
        # 'leaves the cluster' repeats pass 1's on purpose: sharing it through a jitted helper
        # made this decode 3x slower at d=13, 72 -> 240 us per window, as numba compiled it.)
        nc = 0
        for a in range(na):
            r = active[a]
            v = r
            while True:
                for j in range(ptr[v], ptr[v + 1]):
                    e = adj_edge[j]
                    if done[e]:
                        continue
                    u = adj_other[j]
                    if u >= 0 and in_cluster[u] and _find(parent, u) == r:
                        continue
                    if grown[e] == 0:
                        grown_list[ng] = e
                        ng += 1
                    grown[e] += step
                    if grown[e] >= w[e]:
                        grown[e] = w[e]
                        done[e] = 1
                        completed[nc] = e
                        nc += 1
                v = nxt[v]
                if v == r:
                    break
        # 3. merge along completed edges
        for c in range(nc):
            e = completed[c]
            a = eu[e]
            b = ev[e]
            if b < 0:  # an edge to the boundary only grows from its cluster's side
                ra = _find(parent, a)
                if bnode[ra] < 0:
                    bnode[ra] = a
                    bedge[ra] = e
                continue
            # either end may be new to the clusters: the edge may have grown from the other one
            if not in_cluster[a]:
                in_cluster[a] = 1
                touched[nt] = a
                nt += 1
            if not in_cluster[b]:
                in_cluster[b] = 1
                touched[nt] = b
                nt += 1
            ra = _find(parent, a)
            rb = _find(parent, b)
            if ra == rb:
                continue
            if size[ra] < size[rb]:
                ra, rb = rb, ra
            parent[rb] = ra
            size[ra] += size[rb]
            odd[ra] ^= odd[rb]
            if bnode[ra] < 0 and bnode[rb] >= 0:
                bnode[ra] = bnode[rb]
                bedge[ra] = bedge[rb]
            t = nxt[ra]
            nxt[ra] = nxt[rb]
            nxt[rb] = t
        # 4. the clusters still active
        nn = 0
        for a in range(na):
            r = _find(parent, active[a])
            if odd[r] and bnode[r] < 0 and not mark[r]:
                mark[r] = 1
                next_active[nn] = r
                nn += 1
        for a in range(nn):
            mark[next_active[a]] = 0
            active[a] = next_active[a]
        na = nn
        if nc == 0 and na > 0:  # nothing left to grow: an odd component without boundary
            ok = False
            break

    # Peeling, cluster by cluster, over completed edges.
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
                u = adj_other[j]
                e = adj_edge[j]
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
        odd[v] = 0
        bnode[v] = -1
        bedge[v] = -1
        nxt[v] = v
        in_cluster[v] = 0
        defect[v] = 0
        visited[v] = 0
        parent_edge[v] = -1
    for i in range(ng):
        e = grown_list[i]
        grown[e] = 0
        done[e] = 0
    return nchosen if ok else -1
