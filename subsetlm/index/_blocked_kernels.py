"""Numba kernels of the blocked kNN (private): a filtered top-k' over raw score bits, and exact dots.

The low-precision product block arrives as the raw bits of its scores: bfloat16 viewed as
int16, or float32 viewed as int32. ``key(v) = v ^ ((v >> 31) & mask)`` maps those bits to an
integer of the same order as the floats they encode (non-negative floats keep their bits;
negative ones have the magnitude bits flipped), so the per-row filter is integer work that
LLVM vectorises: the max key of a chunk of ``width`` scores (``blocked.CHUNK``) is compared with the row's current
k'-th best, and only a chunk that beats it is looked at score by score (a bounded heap per
row, worst kept at the root, :mod:`subsetlm._heap`). Ties order by the smaller column id,
so the kept set does not depend on the order blocks come in.

"""

from __future__ import annotations

import numpy as np
from numba import njit

from subsetlm._heap import sift_down

_KEY_MIN = np.int32(-(2**31))  # the key of an empty heap slot: below every finite score's key


@njit(cache=True, inline="always")
def _first_worse(k_a, i_a, k_b, i_b, ctx):
    """Heap order: ``a`` nearer the root when it is the worse one (smaller key, or larger id on ties)."""
    return k_a < k_b or (k_a == k_b and i_a > i_b)


def empty_heaps(m: int, kc: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` rows of ``kc`` empty candidate slots: keys at the minimum, ids -1."""
    return np.full((m, kc), _KEY_MIN, dtype=np.int32), np.full((m, kc), -1, dtype=np.int32)


@njit(cache=True, nogil=True)
def _kth_largest(v, kth, work):
    """The ``kth`` largest (1-based) of ``v`` (1-D ints); ``work`` (len >= len(v)) is scratch. Quickselect."""
    n = v.shape[0]
    for i in range(n):
        work[i] = v[i]
    lo, hi, want = 0, n - 1, kth - 1  # position in descending order
    while lo < hi:
        pivot = work[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while work[i] > pivot:
                i += 1
            while work[j] < pivot:
                j -= 1
            if i <= j:
                work[i], work[j] = work[j], work[i]
                i += 1
                j -= 1
        if want <= j:
            hi = j
        elif want >= i:
            lo = i
        else:
            break
    return work[want]


@njit(cache=True, nogil=True)
def _merge_range(B, mask, col_ids, keys, ids, r, j0, j1, root):
    """Merge columns ``j0:j1`` of row ``r`` of ``B`` into one heap; return the new root key."""
    kc = keys.shape[0]
    for j in range(j0, j1):
        v = np.int32(B[r, j])
        kv = v ^ ((v >> 31) & mask)
        if kv < root:
            continue
        cid = np.int32(col_ids[j])
        if kv > root or cid < ids[0]:
            keys[0], ids[0] = kv, cid
            sift_down(keys, ids, kc, 0, _first_worse, 0)
            root = keys[0]
    return root


@njit(cache=True, nogil=True)
def merge_bits(B, CM, width, mask, col_ids, hk, hi, heap_rows, r0, r1):
    """Merge rows ``r0:r1`` of the score bits ``B`` (m, c) into the heaps ``hk`` / ``hi`` (rows, kc).

    Row ``r`` of ``B`` goes into heap row ``heap_rows[r]`` (e.g. ``arange(m)``).

    ``B``: int16 (bfloat16 bits, ``mask=0x7FFF``) or int32 (float32 bits, ``mask=0x7FFFFFFF``).
    ``CM`` (m, c // width): the max raw bits of each full chunk of ``width`` columns (the tail
    past the last full chunk is read score by score). ``col_ids`` (c,): each column's id.
    Threads take disjoint ``heap_rows``.

    Per row, while its heap's worst (the root) is still below zero (the first block), ``T`` =
    the kc-th largest chunk max is a lower bound of the row's kc-th best score in this block
    (kc chunks hold a score >= T each); later ``T`` = the root. Only chunks whose max reaches
    ``max(T, root)`` are read, and about kc of them do. Raw bits order as the scores do when
    non-negative; a row whose ``T`` is negative is read whole. Runs without the GIL.
    """
    c = B.shape[1]
    nch = CM.shape[1]
    kc = hk.shape[1]
    work = np.empty(max(nch, 1), dtype=np.int32)
    for r in range(r0, r1):
        keys = hk[heap_rows[r]]
        ids = hi[heap_rows[r]]
        root = keys[0]
        T = root  # a full heap's worst is already a bound; else find one from the chunk maxima
        if root < 0 and nch >= kc:
            T = max(root, np.int32(_kth_largest(CM[r], kc, work)))
        if T < 0:  # negative scores in play: read the whole row with exact keys
            _merge_range(B, mask, col_ids, keys, ids, r, 0, c, root)
            continue
        for ch in range(nch):
            m = np.int32(CM[r, ch])
            if m < T or m < root:
                continue
            root = _merge_range(B, mask, col_ids, keys, ids, r, ch * width, ch * width + width, root)
        root = _merge_range(B, mask, col_ids, keys, ids, r, nch * width, c, root)

