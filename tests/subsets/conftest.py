"""Fixtures: tiny real embedding stores written in the documented format (no embedder run).

``write_store_dir`` (tests/_stores.py) writes the files exactly as docs/formats.md
describes them; the fixtures open them with the real ``EmbeddingStore``, so the format
the docs promise and the reader the package ships are checked together.
"""

from __future__ import annotations

import numpy as np
import pytest

from _stores import write_store_dir
from subsetlm.embed import EmbeddingStore


@pytest.fixture
def store(tmp_path) -> EmbeddingStore:
    return EmbeddingStore.open(write_store_dir(tmp_path / "store", n=60, seed=0))


@pytest.fixture
def other_store(tmp_path) -> EmbeddingStore:
    """A different store (other embeddings, other ids)."""
    return EmbeddingStore.open(write_store_dir(tmp_path / "store2", n=60, seed=1))


def example_inputs(n: int = 60, b: int = 12, seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=b, replace=False).astype(np.int64)
    gains = np.sort(rng.random(b))[::-1] * 10
    weights = rng.integers(1, 9, size=b).astype(np.float64)
    parts = rng.integers(0, 3, size=b).astype(np.int32)
    manifest = {
        "config": {"function": "facility_location", "k": 8, "optimizer": "lazy"},
        "seed": 0,
        "certificate": {"objective": 41.5, "upper_bound": 50.0, "random_objective": 30.25},
    }
    return dict(indices=idx, gains=gains, weights=weights, partitions=parts, manifest=manifest)
