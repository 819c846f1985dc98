"""Numba kernels for sparse facility location (private).

All kernels work on the *reverse* kNN lists in CSR form: for candidate ``j`` the
entries ``rev_idx[indptr[j]:indptr[j+1]]`` are the ground points ``i`` that list ``j``
among their neighbours, with similarity ``rev_sim[...]`` (float32, clipped at 0).
``cur[i]`` (float32) is the best similarity of ``i`` to the selected set so far.

Every gain is summed in float64 in the order of the reverse list, by the same loop
(:func:`_gain`) whether it is computed alone or in a batch, so a gain is bit-for-bit
the same value wherever it is computed; this is what makes lazy greedy pick exactly what
naive greedy picks (ties broken by the smallest index).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from subsetlm import _heap


@njit(cache=True)
def reverse_lists(neighbors, sims, n):
    """Transpose "row i = neighbours of i" into CSR reverse lists (counting sort, O(n k)).

    ``neighbors`` (n, k) int, ``-1`` = missing; ``sims`` (n, k) float32.
    Returns ``indptr (n+1,) int64, rev_idx (nnz,) int32, rev_sim (nnz,) float32``; entries of
    each reverse list are sorted by ground index ``i`` (deterministic). A neighbour listed twice
    in one row is kept once, with the larger similarity.
    """
    m, k = neighbors.shape
    counts = np.zeros(n + 1, np.int64)
    for i in range(m):
        for t in range(k):
            j = neighbors[i, t]
            if j >= 0:
                counts[j + 1] += 1
    for j in range(n):
        counts[j + 1] += counts[j]
    indptr = counts.copy()
    nnz = indptr[n]
    rev_idx = np.empty(nnz, np.int32)
    rev_sim = np.empty(nnz, np.float32)
    pos = indptr[:n].copy()
    n_dup = 0
    for i in range(m):
        for t in range(k):
            j = neighbors[i, t]
            if j >= 0:
                s = sims[i, t]
                s = s if s > 0.0 else np.float32(0.0)
                p = pos[j]
                if p > indptr[j] and rev_idx[p - 1] == i:  # j listed twice by i: keep the max
                    if s > rev_sim[p - 1]:
                        rev_sim[p - 1] = s
                    n_dup += 1
                    continue
                rev_idx[p] = i
                rev_sim[p] = s
                pos[j] = p + 1
    if n_dup == 0:
        return indptr, rev_idx, rev_sim
    # compact the lists (duplicates left unused slots at the end of their list)
    new_ptr = np.zeros(n + 1, np.int64)
    for j in range(n):
        new_ptr[j + 1] = new_ptr[j] + (pos[j] - indptr[j])
    out_idx = np.empty(new_ptr[n], np.int32)
    out_sim = np.empty(new_ptr[n], np.float32)
    for j in range(n):
        q = new_ptr[j]
        for p in range(indptr[j], pos[j]):
            out_idx[q] = rev_idx[p]
            out_sim[q] = rev_sim[p]
            q += 1
    return new_ptr, out_idx, out_sim


@njit(cache=True, inline="always")
def _gain(j, indptr, rev_idx, rev_sim, cur):
    g = 0.0
    for p in range(indptr[j], indptr[j + 1]):
        d = rev_sim[p] - cur[rev_idx[p]]
        if d > 0.0:
            g += d
    return g


@njit(cache=True)
def gain_one(j, indptr, rev_idx, rev_sim, cur):
    """Marginal gain of candidate ``j`` (float64)."""
    return _gain(j, indptr, rev_idx, rev_sim, cur)


@njit(cache=True)
def gains_many(cands, indptr, rev_idx, rev_sim, cur):
    """Marginal gains of ``cands`` (m,) int64 -> (m,) float64.

    Sequential on purpose: most calls are small (stochastic samples), where thread start-up
    costs more than it saves, and a parallel kernel triples the one-off JIT time.
    """
    out = np.empty(cands.shape[0], np.float64)
    for t in range(cands.shape[0]):
        out[t] = _gain(cands[t], indptr, rev_idx, rev_sim, cur)
    return out


@njit(cache=True)
def update(j, indptr, rev_idx, rev_sim, cur):
    """Add ``j`` to the selected set: ``cur[i] = max(cur[i], sim(i, j))``."""
    for p in range(indptr[j], indptr[j + 1]):
        i = rev_idx[p]
        if rev_sim[p] > cur[i]:
            cur[i] = rev_sim[p]


@njit(cache=True)
def evaluate(order, indptr, rev_idx, rev_sim, n):
    """f(S) for ``order`` (any subset) from scratch; returns (value, cur)."""
    cur = np.zeros(n, np.float32)
    for t in range(order.shape[0]):
        update(order[t], indptr, rev_idx, rev_sim, cur)
    tot = 0.0
    for i in range(n):
        tot += cur[i]
    return tot, cur


@njit(cache=True)
def scale_lists(rev_idx, rev_sim, weights):
    """Weighted reverse lists: ``out[p] = float32(float64(rev_sim[p]) * weights[rev_idx[p]])``.

    Row i of the graph (the entries whose ground point is i) scaled by ``weights[i]``
    (float64 >= 0): the coverage term ``w_i max_j s_ij`` as plain facility location on the
    scaled similarities (``max_j w_i s_ij = w_i max_j s_ij`` for ``w_i >= 0``).
    """
    out = np.empty(rev_sim.shape[0], np.float32)
    for p in range(rev_sim.shape[0]):
        out[p] = np.float32(np.float64(rev_sim[p]) * weights[rev_idx[p]])
    return out


@njit(cache=True)
def best_owner(order, indptr, rev_idx, rev_sim, n):
    """Each ground point's best selected neighbour: ``(best (n,) float32, owner (n,) int64)``.

    ``owner[i]`` is the position in ``order`` of the selected element with the highest
    similarity to i (earliest in ``order`` on ties), -1 when none of i's neighbours is
    selected; ``best[i]`` is that similarity (-1 when none).
    """
    best = np.full(n, -1.0, np.float32)
    owner = np.full(n, -1, np.int64)
    for t in range(order.shape[0]):
        j = order[t]
        for p in range(indptr[j], indptr[j + 1]):
            i = rev_idx[p]
            if rev_sim[p] > best[i]:
                best[i] = rev_sim[p]
                owner[i] = t
    return best, owner


@njit(cache=True)
def assign(order, indptr, rev_idx, rev_sim, n):
    """Weights: how many ground points have each selected element as their best neighbour.

    Points with no selected element among their neighbours are unassigned. Returns
    ``(weights (b,) int64, n_unassigned)``; see :func:`best_owner`.
    """
    best, owner = best_owner(order, indptr, rev_idx, rev_sim, n)
    w = np.zeros(order.shape[0], np.int64)
    un = 0
    for i in range(n):
        if owner[i] >= 0:
            w[owner[i]] += 1
        else:
            un += 1
    return w, un


# --------------------------------------------------------------------------------------
# The lazy greedy's priority queue: a heap (subsetlm._heap) on (key float64, index int64),
# larger key first, smaller index on ties.
# --------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _before(ka, ia, kb, ib, _ctx):
    return ka > kb or (ka == kb and ia < ib)


@njit(cache=True)
def heapify(keys, idx):
    """Arrange ``keys`` (m,) float64 / ``idx`` (m,) int64 as the priority queue, in place."""
    _heap.heapify(keys, idx, _before, 0)


@njit(cache=True)
def lazy_steps(n_steps, keys, idx, size, stamp, step0, order, gains, indptr, rev_idx, rev_sim, cur,
               min_gain, bonus):
    """Run up to ``n_steps`` lazy-greedy steps on the heap (keys, idx, size).

    ``stamp[j]`` = step at which ``keys`` for j was computed (fresh iff == current step).
    ``bonus`` (n,) float64 or None: a modular term added to every gain (``gain(j) = _gain(j)
    + bonus[j]``, the same float64 addition as :meth:`SparseFacilityLocation.gains`). With
    None, numba compiles a specialisation without it (dead-branch pruning on ``is None``): a
    plain lazy greedy runs the same machine code, at the same speed, as before the term existed.
    Writes the picks into ``order[step0:]`` / ``gains[step0:]``. Stops early if the heap
    empties or the best gain is < ``min_gain``. Returns ``(steps_done, size, n_evals)``.
    """
    n_evals = 0
    done = 0
    while done < n_steps and size > 0:
        step = step0 + done
        while True:
            j = idx[0]
            if stamp[j] == step:
                break
            g = _gain(j, indptr, rev_idx, rev_sim, cur)
            if bonus is not None:  # None: numba prunes the branch (the code of a plain lazy greedy)
                g += bonus[j]
            n_evals += 1
            stamp[j] = step
            keys[0] = g
            _heap.sift_down(keys, idx, size, 0, _before, 0)
        g = keys[0]
        if g < min_gain:
            break
        order[step] = j
        gains[step] = g
        size -= 1
        keys[0] = keys[size]
        idx[0] = idx[size]
        _heap.sift_down(keys, idx, size, 0, _before, 0)
        update(j, indptr, rev_idx, rev_sim, cur)
        done += 1
    return done, size, n_evals


# --------------------------------------------------------------------------------------
# Dense rows: gains from a block of similarity rows (m, n) float32.
# --------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _dense_gain(rows, t, cur):
    g = 0.0
    for i in range(rows.shape[1]):
        d = rows[t, i] - cur[i]
        if d > 0.0:
            g += d
    return g


@njit(cache=True)
def _dense_gains_seq(rows, cur):
    out = np.empty(rows.shape[0], np.float64)
    for t in range(rows.shape[0]):
        out[t] = _dense_gain(rows, t, cur)
    return out


@njit(cache=True, parallel=True)
def _dense_gains_par(rows, cur):
    out = np.empty(rows.shape[0], np.float64)
    for t in prange(rows.shape[0]):
        out[t] = _dense_gain(rows, t, cur)
    return out


def dense_gains(rows, cur):
    """``out[t] = sum_i max(0, rows[t, i] - cur[i])`` summed in float64 in index order.

    Threads only for big blocks: a parallel region per lazy evaluation (one row) costs more
    than it saves, and far more on a loaded machine. Both paths give identical values.
    """
    if rows.shape[0] * rows.shape[1] >= 1 << 20:
        return _dense_gains_par(rows, cur)
    return _dense_gains_seq(rows, cur)


@njit(cache=True)
def dense_update(row, cur):
    for i in range(row.shape[0]):
        if row[i] > cur[i]:
            cur[i] = row[i]


@njit(cache=True)
def dense_assign(rows, t0, best, owner):
    """Fold a block of selected rows (positions t0.., shape (m, n)) into best/owner."""
    m, n = rows.shape
    for t in range(m):
        for i in range(n):
            s = rows[t, i]
            if s > best[i]:
                best[i] = s
                owner[i] = t0 + t
