"""Fixtures: a tiny embedding store on disk in the documented format, and a fake opener.

``FakeStore`` implements the documented ``EmbeddingStore`` interface
(docs/internals.md) by reading the same files, so these tests do not depend on
``subsetlm.embed``; ``tests/subsets/test_subset_real_store.py`` re-runs the key
checks with the real ``EmbeddingStore`` (on a store written by ``embed_corpus`` and on
this fixture's directory).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from subsetlm._io import SUCCESS, dumps_json, read_json, sha256_file


def write_store_dir(path: Path, n: int = 60, dim: int = 8, seed: int = 0) -> Path:
    """Write an embedding store directory exactly as docs/formats.md describes it."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(path / "embeddings.npy", x.astype(np.float16))
    doc = [f"doc{seed}-{i // 2}" for i in range(n)]
    ids = [f"{d}#{i % 2}" for i, d in enumerate(doc)]
    texts = [f"text of sample {i} (seed {seed}) é ünïcode \"quoted\"\nline 2" for i in range(n)]
    pq.write_table(
        pa.table(
            {
                "id": pa.array(ids, pa.string()),
                "doc_id": pa.array(doc, pa.string()),
                "source": pa.array(["pubmed" if i % 3 else "sotu" for i in range(n)], pa.string()),
                "n_tokens": pa.array([5 + i % 7 for i in range(n)], pa.int32()),
            }
        ),
        path / "ids.parquet",
    )
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), path / "texts.parquet")
    manifest = {
        "format": "subsetlm.embedding_store",
        "version": 1,
        "model": {"name": "toy-model", "dim": dim},
        "dim": dim,
        "dtype": "float16",
        "pooling": "mean",
        "normalized": True,
        "count": n,
        "corpus_fingerprint": f"corpus{seed}".ljust(64, "0"),
        "embedding_fingerprint": sha256_file(path / "embeddings.npy"),
        "chunking": {"max_tokens": 256},
        "config": {},
    }
    (path / "manifest.json").write_text(dumps_json(manifest))
    (path / SUCCESS).write_text("")
    return path


class FakeStore:
    """Minimal reader with the documented EmbeddingStore interface."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.manifest = read_json(self.path / "manifest.json")
        t = pq.read_table(self.path / "ids.parquet")
        self.ids = np.asarray(t.column("id").to_pylist())
        self.n_tokens = t.column("n_tokens").to_numpy().astype(np.int64)
        self.sources = np.asarray(t.column("source").to_pylist())
        self.embeddings = np.load(self.path / "embeddings.npy", mmap_mode="r")
        self.n, self.dim = self.embeddings.shape
        self.fingerprint = self.manifest["embedding_fingerprint"]
        self.texts_calls = 0

    @classmethod
    def open(cls, path: Path) -> "FakeStore":
        return cls(path)

    def texts(self, indices) -> list[str]:
        self.texts_calls += 1
        col = pq.read_table(self.path / "texts.parquet").column("text")
        return [col[int(i)].as_py() for i in indices]


@pytest.fixture
def store(tmp_path) -> FakeStore:
    return FakeStore.open(write_store_dir(tmp_path / "store", n=60, seed=0))


@pytest.fixture
def other_store(tmp_path) -> FakeStore:
    """A different store (other embeddings, other ids)."""
    return FakeStore.open(write_store_dir(tmp_path / "store2", n=60, seed=1))


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
