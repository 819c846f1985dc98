"""Test helper: write a small embedding store directory as docs/formats.md describes it.

Cheaper than running ``embed_corpus`` (no embedder), and opened with the real
``subsetlm.embed.EmbeddingStore``. Importable from any test as ``from _stores import
write_store_dir`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from subsetlm._io import SUCCESS, dumps_json, sha256_file


def write_store_dir(path: Path, n: int = 60, dim: int = 8, seed: int = 0, embeddings=None) -> Path:
    """Write an embedding store directory exactly as docs/formats.md describes it.

    ``embeddings`` (n, dim), if given, are stored (as float16) instead of seeded random unit
    vectors; ``n`` and ``dim`` then come from its shape.
    """
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    if embeddings is None:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    else:
        x = np.asarray(embeddings, dtype=np.float32)
        n, dim = x.shape
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
