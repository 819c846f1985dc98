"""Binary heaps in numba over two parallel arrays, ordered by the caller's comparison (private).

A heap here is ``keys[:size]`` with ``ids[:size]`` beside it (e.g. gains and candidate
indices, or similarities and neighbour ids). The caller passes the order as an njit
function ``first(key_a, id_a, key_b, id_b, ctx) -> bool``: True when ``a`` belongs nearer
the root than ``b``; ``ctx`` is any extra value the order needs (or an unused 0). Numba
compiles one specialisation per order, so the comparison is a direct, inlined call.

Two users: the lazy greedy's priority queue (``subsetlm.select._kernels``: the largest
gain first, the smaller index on ties) and the kNN graph's bounded top-k rows
(``subsetlm.index._topk``: the *worst* kept neighbour at the root, so a new candidate is
compared with it once).

tests/test_heap.py checks both orders against a sort.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def sift_down(keys, ids, size, pos, first, ctx):
    """Move the entry at ``pos`` down until no child of it comes ``first``; O(log size).

    Picks the child that comes first (the left one when neither does) and moves the
    entry past it while that child comes strictly first, so equal entries never move.
    """
    k, i = keys[pos], ids[pos]
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and first(keys[c + 1], ids[c + 1], keys[c], ids[c], ctx):
            c += 1
        if first(keys[c], ids[c], k, i, ctx):
            keys[pos], ids[pos] = keys[c], ids[c]
            pos = c
        else:
            break
    keys[pos], ids[pos] = k, i


@njit(cache=True)
def heapify(keys, ids, first, ctx):
    """Arrange all of ``keys`` / ``ids`` as a heap in place (Floyd's bottom-up build, O(n))."""
    size = keys.shape[0]
    for pos in range(size // 2 - 1, -1, -1):
        sift_down(keys, ids, size, pos, first, ctx)
