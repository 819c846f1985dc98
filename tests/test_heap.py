"""The shared numba heap (subsetlm._heap) under both orders that use it: popping it is a sort."""

from __future__ import annotations

import numpy as np
import pytest

from subsetlm import _heap
from subsetlm.index._topk import _MISSING, _worse
from subsetlm.select._kernels import _before


def _pop_all(keys, ids, first, ctx):
    """Heapify, then pop the root to the back until empty (a heap sort); return the pop order."""
    keys, ids = keys.copy(), ids.copy()
    _heap.heapify(keys, ids, first, ctx)
    for size in range(len(keys) - 1, 0, -1):
        keys[0], keys[size] = keys[size], keys[0]
        ids[0], ids[size] = ids[size], ids[0]
        _heap.sift_down(keys, ids, size, 0, first, ctx)
    return keys[::-1], ids[::-1]


@pytest.mark.parametrize("n", [1, 2, 7, 200])
def test_priority_queue_order_larger_key_then_smaller_index(n):
    rng = np.random.default_rng(n)
    keys = rng.integers(0, 5, n).astype(np.float64)  # many exact ties
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    got_k, got_i = _pop_all(keys, ids, _before, 0)
    ref = np.lexsort((ids, -keys))
    np.testing.assert_array_equal(got_k, keys[ref])
    np.testing.assert_array_equal(got_i, ids[ref])


@pytest.mark.parametrize("n", [1, 5, 64])
def test_topk_row_order_worst_first_with_self_and_missing(n):
    rng = np.random.default_rng(n)
    me = 3
    sims = (rng.integers(0, 4, n) / 3).astype(np.float32)
    ids = rng.integers(-1, 8, n).astype(np.int32)  # -1 = an empty slot; `me` is the row itself
    sims[ids < 0] = -np.inf
    got_s, got_i = _pop_all(sims, ids, _worse, me)
    tie = np.where(ids == me, -1, np.where(ids < 0, _MISSING, ids.astype(np.int64)))
    ref = np.lexsort((-tie, sims))  # worst first: lower similarity, then the larger tie key
    np.testing.assert_array_equal(got_s, sims[ref])
    np.testing.assert_array_equal(got_i, ids[ref])
