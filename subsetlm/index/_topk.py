"""Numba top-k merging of similarity blocks into the kNN graph's rows (private).

``np.argpartition`` over a (queries x candidates) block costs as much as the BLAS product
that made it, and the rows still have to be sorted afterwards. Here every graph row is a
bounded heap (:mod:`subsetlm._heap`, the worst kept at the root) of its k best
(similarity, id) so far, kept in the graph arrays themselves: a block is merged in one
pass (most candidates fall below the row's current k-th best and cost one compare),
blocks can arrive in any order, and :func:`finish_rows` sorts the heaps into graph rows
at the end. The kept set is the top-k under a strict order, so it does not depend on the
order the blocks came in.

Order, as :func:`subsetlm.index.knn._fix_rows` defines it: decreasing similarity, the row
itself first among ties, then smaller id; missing neighbours (-1, similarity 0) last.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from subsetlm._heap import sift_down

_MISSING = np.int64(1) << 62  # tie key of an empty heap slot (id -1): worse than any id


@njit(cache=True, inline="always")
def _key(cid, me):
    return np.int64(-1) if cid == me else (np.int64(cid) if cid >= 0 else _MISSING)


@njit(cache=True, inline="always")
def _better(s_a, t_a, s_b, t_b):
    return s_a > s_b or (s_a == s_b and t_a < t_b)


@njit(cache=True, inline="always")
def _worse(s_a, c_a, s_b, c_b, me):
    """The row heaps' order (subsetlm._heap): the worst kept neighbour of row ``me`` at the root."""
    return _better(s_b, _key(c_b, me), s_a, _key(c_a, me))


@njit(cache=True, nogil=True)
def merge_block(S, rows, cand_ids, neighbors, sims):
    """Merge similarities ``S`` (m, c) of graph rows ``rows`` (m,) to ``cand_ids`` (c,) into the row heaps.

    ``neighbors`` (n, k) int32 / ``sims`` (n, k) float32 hold one min-heap per row (slot 0
    the worst kept), started by :func:`empty_rows`. ``S`` may be any 2-D float32 view
    (``S.T`` merges a block into the candidates' rows). Runs without the GIL; rows merged
    by two threads at once need a lock.
    """
    m, c = S.shape
    k = neighbors.shape[1]
    for r in range(m):
        me = rows[r]
        hs = sims[me]
        hi = neighbors[me]
        for j in range(c):
            s = S[r, j]
            if s < hs[0]:
                continue  # the common case once a row has k good ones: one compare
            cid = cand_ids[j]
            if _better(s, _key(cid, me), hs[0], _key(hi[0], me)):
                hs[0], hi[0] = s, cid
                sift_down(hs, hi, k, 0, _worse, me)


def empty_rows(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row heaps with every slot empty (id -1, similarity -inf)."""
    return np.full((n, k), -1, dtype=np.int32), np.full((n, k), -np.inf, dtype=np.float32)


@njit(cache=True, nogil=True)
def finish_rows(neighbors, sims, start, stop):
    """Sort the heaps of rows ``start:stop`` best first; empty slots become -1 / 0.0."""
    k = neighbors.shape[1]
    for me in range(start, stop):
        hs = sims[me]
        hi = neighbors[me]
        for last in range(k - 1, 0, -1):  # pop the worst to the back
            s, c0 = hs[0], hi[0]
            hs[0], hi[0] = hs[last], hi[last]
            sift_down(hs, hi, last, 0, _worse, me)
            hs[last], hi[last] = s, c0
        for q in range(k):
            if hi[q] < 0:
                hs[q] = 0.0


@njit(cache=True, nogil=True, fastmath=True)
def _dot_any_order(x, q):
    """``(sum_t x[t] q[t], sum_t |x[t] q[t]|)`` in float64, summed in whatever order vectorises."""
    s = 0.0
    a = 0.0
    for t in range(q.shape[0]):
        p = np.float64(x[t]) * np.float64(q[t])
        s += p
        a += abs(p)
    return s, a


@njit(cache=True, nogil=True, fastmath=True)
def _dot_any_order_half(h, q, lut):
    s = 0.0
    a = 0.0
    for t in range(q.shape[0]):
        p = lut[h[t]] * np.float64(q[t])
        s += p
        a += abs(p)
    return s, a


@njit(cache=True, nogil=True)
def _rounds_alike(s, a, d):
    """True when every float64 within ``2 d 2^-53 a`` of ``s`` rounds to the same float32 as ``s``.

    ``a`` = sum of |terms|: any order of summing d exact float64 products lands within
    ``d 2^-53 a`` of the exact sum, so the float32 of the exact sum, of the sum in index
    order and of ``s`` are then one and the same (rounding is monotone).
    """
    e = 2.0 * d * 2.0 ** -53 * a
    return np.float32(s - e) == np.float32(s + e)


@njit(cache=True, nogil=True)
def exact_dots(X, I, xq, out):
    """``out[r, j] = float32(sum_t X[I[r, j], t] * xq[r, t])`` accumulated in float64 in index order (no
    fastmath: the same bits on any machine and thread count); ``-inf`` where ``I`` is -1.

    ``X`` (n, d) float32 rows, read in place; ``I`` (b, c) int64 rows of ``X``; ``xq`` (b, d) float32.
    Computed fast: a vectorised float64 sum, used when its float32 is provably that of the sum in
    index order (:func:`_rounds_alike`; all but about one in 10^7 dots), else the sum in order.
    """
    b, c = I.shape
    d = xq.shape[1]
    for r in range(b):
        q = xq[r]
        for j in range(c):
            p = I[r, j]
            if p < 0:
                out[r, j] = -np.inf
                continue
            s, a = _dot_any_order(X[p], q)
            if not _rounds_alike(s, a, d):
                s = 0.0
                for t in range(d):
                    s += np.float64(X[p, t]) * np.float64(q[t])
            out[r, j] = np.float32(s)


@njit(cache=True, nogil=True)
def exact_dots_half(H, I, xq, out, lut):
    """:func:`exact_dots` for float16 rows given as their uint16 bits ``H`` (a store's memmap, read in
    place), ``lut`` = :func:`half_table` (each value exact in float64: the same sums as float32 rows)."""
    b, c = I.shape
    d = xq.shape[1]
    for r in range(b):
        q = xq[r]
        for j in range(c):
            p = I[r, j]
            if p < 0:
                out[r, j] = -np.inf
                continue
            s, a = _dot_any_order_half(H[p], q, lut)
            if not _rounds_alike(s, a, d):
                s = 0.0
                for t in range(d):
                    s += lut[H[p, t]] * np.float64(q[t])
            out[r, j] = np.float32(s)


_HALF: np.ndarray | None = None


def half_table() -> np.ndarray:
    """(65536,) float64: the value of every float16 bit pattern (exact), for :func:`exact_dots`."""
    global _HALF
    if _HALF is None:
        _HALF = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float64)
    return _HALF
