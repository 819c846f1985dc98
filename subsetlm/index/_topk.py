"""Numba top-k of similarity blocks, written straight into the kNN graph's rows (private).

``np.argpartition`` over a (queries x candidates) block costs as much as the BLAS product
that made it, and the rows still have to be sorted afterwards. A bounded heap per row
scans each candidate once (most fall below the current k-th best and cost one compare),
keeps the k best and sorts them.

Row order, as :func:`subsetlm.index.knn._fix_rows` defines it: decreasing similarity, the
row itself first among ties, then smaller id; missing neighbours (-1, similarity 0) last.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _better(s_a, t_a, s_b, t_b):
    # t = -1 for the row itself, else the candidate id: ties go to self, then the smaller id
    return s_a > s_b or (s_a == s_b and t_a < t_b)


@njit(cache=True, inline="always")
def _sift_down(hs, ht, size, pos):
    s, t = hs[pos], ht[pos]
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and _better(hs[c], ht[c], hs[c + 1], ht[c + 1]):
            c += 1  # the worse child
        if _better(s, t, hs[c], ht[c]):
            hs[pos], ht[pos] = hs[c], ht[c]
            pos = c
        else:
            break
    hs[pos], ht[pos] = s, t


@njit(cache=True, nogil=True)
def scatter_topk(S, cand_ids, rows, k, neighbors, sims):
    """Write the top-``k`` candidates of query ``r`` into graph row ``rows[r]``.

    Runs without the GIL, so threads can each work on their own IVF list.

    Parameters
    ----------
    S : (m, c) float32
        Similarities of the queries to the candidates ``cand_ids`` (c,) int64, distinct.
    rows : (m,) int64
        The graph row of each query.
    neighbors : (n, k) int32, sims : (n, k) float32
        Output; a row with fewer than ``k`` candidates is padded with -1 / 0.0.
    """
    m, c = S.shape
    kk = min(k, c)
    hs = np.empty(kk, np.float32)  # a min-heap: hs[0] is the worst kept
    ht = np.empty(kk, np.int64)
    for r in range(m):
        me = rows[r]
        size = 0
        for j in range(c):
            s = S[r, j]
            if size == kk and s < hs[0]:
                continue  # the common case once the heap is full: one compare
            cid = cand_ids[j]
            t = -1 if cid == me else cid
            if size < kk:
                pos = size
                size += 1
                while pos > 0:
                    parent = (pos - 1) // 2
                    if _better(hs[parent], ht[parent], s, t):
                        hs[pos], ht[pos] = hs[parent], ht[parent]
                        pos = parent
                    else:
                        break
                hs[pos], ht[pos] = s, t
            elif _better(s, t, hs[0], ht[0]):
                hs[0], ht[0] = s, t
                _sift_down(hs, ht, size, 0)
        # pop the worst to the back: the row comes out best first
        for last in range(kk - 1, -1, -1):
            s, t = hs[0], ht[0]
            hs[0], ht[0] = hs[last], ht[last]
            _sift_down(hs, ht, last, 0)
            neighbors[me, last] = me if t == -1 else t
            sims[me, last] = s
        for q in range(kk, k):
            neighbors[me, q] = -1
            sims[me, q] = 0.0
