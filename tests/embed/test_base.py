"""Embedder plumbing: length batching, device resolution, registry specs."""

from __future__ import annotations

import numpy as np
import pytest

from subsetlm.embed import resolve_device
from subsetlm.embed.base import l2_normalize, length_batches
from subsetlm.registry import names


def test_length_batches_cover_all_sorted_and_bounded():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=257)
    batches = list(length_batches(lengths, 16, max_batch_tokens=1024))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(257))
    assert (np.diff(lengths[flat]) <= 0).all()  # decreasing length
    for b in batches:
        assert len(b) <= 16 and (len(b) == 1 or len(b) * lengths[b].max() <= 1024)


def test_length_batches_stable_ties():
    assert [b.tolist() for b in length_batches([2, 2, 2, 2, 2], 2)] == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="batch_size=0"):
        list(length_batches([1], 0))


def test_resolve_device():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


def test_l2_normalize_zero_rows():
    X = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(X, [[0.6, 0.8], [0.0, 0.0]])


def test_registry_names():
    from subsetlm.embed.base import _ensure_backends

    _ensure_backends()
    assert {"minilm", "hashing", "hf"} <= set(names("embedder"))
