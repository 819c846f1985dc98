"""The similarity kernels of :mod:`subsetlm.select.dedup`: row blocks, kNN-graph edges, Borůvka, chains.

Everything works in *ordered-position space*: ``perm`` lists the rows partition by
partition, each partition in keep order, and position g stands for row ``perm[g]``; a
partition is the span ``bounds[p]:bounds[p + 1]``. Memory per partition of p rows: its
(p, d) float32 rows plus one block of at most ``block_elems`` similarities and the boolean
mask that hides some of them (at most ``block_elems`` bytes, a quarter of the block).

Example
-------
>>> import numpy as np
>>> X = np.eye(3, dtype=np.float32)[[0, 0, 1]]
>>> M, A = max_earlier(X, np.arange(3), np.array([0, 3]), np.zeros(1, bool), None, np.zeros(3, np.int32), 0.5,
...                    1 << 24, False)
>>> M.tolist(), A.tolist()                       # position 1 repeats position 0
([-inf, 1.0, 0.0], [-1, 0, 0])
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def gather_rows(X, idx: np.ndarray) -> np.ndarray:
    """(len(idx), d) float32 copy of X[idx], in the order of idx (gathered in row order: memmaps read forward)."""
    idx = np.asarray(idx, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), X.shape[1]), np.float32)
    out[order] = X[idx[order]]
    return out


def centroid_similarity(X, lab: np.ndarray, P: int, centroids) -> np.ndarray:
    """(n,) cosine of each row to its partition's centroid (default: the partition's normalised mean)."""
    n, d = X.shape
    if centroids is None:
        from scipy.sparse import csr_matrix

        C = np.zeros((P, d), np.float64)
        for s in range(0, n, 65536):
            lb = lab[s:s + 65536]
            C += csr_matrix((np.ones(len(lb)), (lb, np.arange(len(lb)))), shape=(P, len(lb))) @ np.asarray(
                X[s:s + 65536], dtype=np.float64)
    else:
        C = np.asarray(centroids, dtype=np.float64)
        if C.shape[0] < P or C.shape[1] != d:
            raise ValueError(f"centroids must be (P>={P}, d={d}); got {C.shape}")
    C = (C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    out = np.empty(n, np.float32)
    for s in range(0, n, 65536):
        xb = np.asarray(X[s:s + 65536], dtype=np.float32)
        out[s:s + 65536] = np.einsum("ij,ij->i", xb, C[lab[s:s + 65536]])
    return out


def row_cosines(X, a: np.ndarray, b: np.ndarray, block: int = 65536) -> np.ndarray:
    """(len(a),) float32 ``X[a_i] · X[b_i]`` (cosines of L2-normalised rows), gathered in blocks."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    out = np.empty(len(a), np.float32)
    for s in range(0, len(a), block):
        out[s:s + block] = np.einsum("ij,ij->i", gather_rows(X, a[s:s + block]), gather_rows(X, b[s:s + block]))
    return out


def pair_similarity(X, rep: np.ndarray) -> np.ndarray:
    """(n,) cos(row, rep[row]); 1 where rep is the row itself."""
    rep = np.asarray(rep, np.int64)
    out = np.ones(len(rep), np.float32)
    moved = np.flatnonzero(rep != np.arange(len(rep)))
    out[moved] = row_cosines(X, moved, rep[moved])
    return out


def prototype_similarity(X, kept: np.ndarray, P2: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each kept row to its centroid after re-clustering the kept rows into P2 (k-means)."""
    Xk = gather_rows(X, kept)
    if P2 > 1:
        from subsetlm.index.partitions import kmeans_partitions

        km = kmeans_partitions(Xk, P2, seed=seed, return_centroids=True)
        plab, C = km.labels.astype(np.int32), km.centroids
    else:
        plab, C = np.zeros(len(kept), np.int32), Xk.astype(np.float64).mean(0, keepdims=True)
    C = (C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return np.einsum("ij,ij->i", Xk, C[plab]), plab


def graph_partitions(graph, lab: np.ndarray, P: int, t: float) -> np.ndarray:
    """(P,) bool: partitions where every row's k-th neighbour is at or below t (the lists hold every duplicate)."""
    nb, sm = np.asarray(graph.neighbors), np.asarray(graph.similarities)
    if nb.shape[0] != len(lab):
        raise ValueError(f"graph has {nb.shape[0]} rows but X has {len(lab)}; pass the kNN graph of X")
    complete = (nb[:, -1] < 0) | (sm[:, -1] <= t)
    ok = np.ones(P, bool)
    ok[lab[~complete]] = False
    if not ok.all():
        logger.info("kNN graph (k=%d) misses duplicates in %d of %d partitions (a k-th neighbour above %.4g): "
                    "computing those in blocks", nb.shape[1], int((~ok).sum()), P, t)
    return ok


def graph_edges(graph, lab, pos, use_graph, t):
    """Edges (a, b, w) in ordered-position space from the graph, within partitions in ``use_graph``, w > t."""
    nb, sm = np.asarray(graph.neighbors), np.asarray(graph.similarities)
    src = np.repeat(np.arange(nb.shape[0]), nb.shape[1])
    dst, w = nb.reshape(-1).astype(np.int64), sm.reshape(-1)
    m = (dst >= 0) & (w > t)
    src, dst, w = src[m], dst[m], w[m]
    m = (dst != src) & (lab[dst] == lab[src]) & use_graph[lab[src]]
    return pos[src[m]], pos[dst[m]], w[m].astype(np.float32)


def _partitions(perm, bounds, use_graph, progress: bool):
    """(start, stop) of the partitions computed in blocks (a tqdm bar when asked)."""
    spans = [(int(bounds[p]), int(bounds[p + 1])) for p in range(len(bounds) - 1)
             if not use_graph[p] and bounds[p + 1] - bounds[p] > 1]
    if progress:
        from tqdm.auto import tqdm

        spans = tqdm(spans, desc="dedup partitions", unit="partition")
    return spans


# ---------------------------------------------------------------------------- the rules

def max_earlier(X, perm, bounds, use_graph, graph, lab, t, block_elems, progress):
    """M[g] = max cosine of position g to an earlier position of its partition, A[g] = that position (-1: none)."""
    n = len(perm)
    M = np.full(n, -np.inf, np.float32)
    A = np.full(n, -1, np.int64)
    for s0, e0 in _partitions(perm, bounds, use_graph, progress):
        Xp = gather_rows(X, perm[s0:e0])
        p = e0 - s0
        B = max(1, min(p, block_elems // p))
        for s in range(1, p, B):
            e = min(p, s + B)
            S = Xp[:e] @ Xp[s:e].T  # (e, e - s): rows i < e against columns j in [s, e)
            np.copyto(S[s:], -np.inf, where=np.tri(e - s, dtype=bool))  # keep i < j only
            a = S.argmax(0)
            A[s0 + s:s0 + e] = s0 + a
            M[s0 + s:s0 + e] = S[a, np.arange(e - s)]
    if use_graph.any():
        pos = positions(perm)
        ga, gb, gw = graph_edges(graph, lab, pos, use_graph, t)
        early, late = np.minimum(ga, gb), np.maximum(ga, gb)
        order = np.lexsort((early, -gw, late))  # per later position: highest cosine, then lowest position
        late, early, gw = late[order], early[order], gw[order]
        first = np.r_[True, late[1:] != late[:-1]][:len(late)]  # (no edge above t: nothing to set)
        M[late[first]], A[late[first]] = gw[first], early[first]
    return M, A


def forest(X, perm, bounds, use_graph, graph, lab, floor, block_elems, progress):
    """Maximum spanning forest edges (a, b, w) with w > floor, per partition, in position space.

    Graph partitions return their duplicate edges (not a forest; used only at a fixed eps).
    """
    parts = [boruvka(gather_rows(X, perm[s0:e0]), floor, block_elems, s0)
             for s0, e0 in _partitions(perm, bounds, use_graph, progress)]
    if use_graph.any():
        parts.append(graph_edges(graph, lab, positions(perm), use_graph, floor))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return tuple(np.concatenate(x) for x in zip(*parts))


def boruvka(Xp: np.ndarray, floor: float, block_elems: int, offset: int):
    """Borůvka rounds over row blocks: forest edges with cosine > floor (ties broken by (lo, hi) position)."""
    p = len(Xp)
    comp = np.arange(p)
    active = np.ones(p, bool)
    ea, eb, ew = [], [], []
    while True:
        idx = np.flatnonzero(active)
        m = len(idx)
        if m < 2:
            break
        ca = comp[idx]
        Xa = Xp[idx]
        bw, bj = np.empty(m, np.float32), np.empty(m, np.int64)
        B = max(1, min(m, block_elems // m))
        singletons = len(np.unique(ca)) == m  # the first round: only the diagonal is masked
        for s in range(0, m, B):
            S = Xa[s:s + B] @ Xa.T
            if singletons:
                S[np.arange(len(S)), np.arange(s, s + len(S))] = -np.inf
            else:
                np.copyto(S, -np.inf, where=ca[s:s + B, None] == ca[None, :])
            j = S.argmax(1)
            bj[s:s + B], bw[s:s + B] = j, S[np.arange(len(j)), j]
        lo, hi = np.minimum(idx, idx[bj]), np.maximum(idx, idx[bj])
        order = np.lexsort((hi, lo, -bw, ca))  # per component: its best outgoing edge first
        best = order[np.r_[True, ca[order][1:] != ca[order][:-1]]]
        up = bw[best] > floor
        active[np.isin(comp, ca[best[~up]])] = False  # nothing above the floor leaves these components
        if not up.any():
            break
        pairs, first = np.unique(np.stack([lo[best[up]], hi[best[up]]], 1), axis=0, return_index=True)
        ea.append(pairs[:, 0] + offset), eb.append(pairs[:, 1] + offset), ew.append(bw[best[up]][first])
        lab_c = components(p, comp[pairs[:, 0]], comp[pairs[:, 1]])
        comp = lab_c[comp]
    if not ea:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(ea), np.concatenate(eb), np.concatenate(ew)


def positions(perm: np.ndarray) -> np.ndarray:
    pos = np.empty(len(perm), np.int64)
    pos[perm] = np.arange(len(perm))
    return pos


def chains(kept: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Representative position of each position: itself when kept, else that of its most similar earlier one."""
    r = np.where(kept, np.arange(len(kept)), A)
    while True:  # pointer jumping: A[g] < g, so every chain ends at a kept position
        nxt = r[r]
        if np.array_equal(nxt, r):
            return r
        r = nxt


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) the lowest node of each node's connected component under edges (a, b)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(a), np.int8), (np.asarray(a), np.asarray(b))), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    low = np.full(lab.max() + 1 if n else 0, n, np.int64)
    np.minimum.at(low, lab, np.arange(n))
    return low[lab]
