"""Token clusters for C-RTS, built from corpus statistics (no generator network).

C-RTS (research.md §3) replaces a token by one from a cluster chosen by an adaptive
count matrix, so it needs a token -> cluster map. We build it from the training corpus:

1. symmetric co-occurrence counts of token ids within a window (default ±2) over the
   tokenised corpus, a sparse (V, V) matrix;
2. ``log1p`` of the counts, truncated SVD (scikit-learn) to ``dim`` components, rows L2-normalised;
3. spherical k-means (FAISS, :func:`subsetlm.index.kmeans_partitions`) of the tokens that
   occur, into ``n_clusters`` clusters (100 by default, as in the authors' code).

Special tokens get cluster -1 (never replaced, never sampled). Tokens that never occur
in the corpus are spread over the clusters by a seeded draw (they have no statistics).
The map is saved beside the tokenizer as ``token_clusters.npy`` (+ ``.json``).

Example
-------
>>> import numpy as np
>>> seqs = [np.array([5, 6, 7, 5, 6, 7]), np.array([8, 9, 8, 9])]
>>> c = token_clusters(seqs, vocab_size=10, special_ids=[0, 1], n_clusters=2, dim=2)
>>> c.shape, int(c[0]), int(c[1])
((10,), -1, -1)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

CLUSTERS_FILE = "token_clusters.npy"


def cooccurrence(seqs: Sequence[np.ndarray], vocab_size: int, window: int = 2):
    """Symmetric (V, V) scipy CSR matrix of token co-occurrence counts within ``window``."""
    import scipy.sparse as sp

    rows, cols = [], []
    for s in seqs:
        s = np.asarray(s, dtype=np.int64)
        for o in range(1, window + 1):
            if len(s) > o:
                rows.append(s[:-o])
                cols.append(s[o:])
    if not rows:
        return sp.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    r, c = np.concatenate(rows), np.concatenate(cols)
    m = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(vocab_size, vocab_size)).tocsr()
    return (m + m.T).tocsr()


def token_clusters(seqs: Sequence[np.ndarray], vocab_size: int, special_ids: Sequence[int], n_clusters: int = 100,
                   dim: int = 64, window: int = 2, seed: int = 0) -> np.ndarray:
    """Cluster every token id from corpus co-occurrence statistics.

    Parameters
    ----------
    seqs : sequence of (len,) int arrays, the tokenised corpus (no special tokens needed).
    vocab_size : int
    special_ids : ids that get cluster -1.
    n_clusters : int, default 100 (fewer when the vocabulary has fewer usable tokens).
    dim : SVD components.

    Returns
    -------
    (vocab_size,) int32 cluster of each token id, -1 for special tokens, clusters ``0..C-1`` all non-empty.
    """
    from sklearn.decomposition import TruncatedSVD

    from subsetlm.index import kmeans_partitions

    if n_clusters < 2:
        raise ValueError(f"n_clusters={n_clusters}; C-RTS needs at least 2 token clusters (default 100)")
    special = np.zeros(vocab_size, dtype=bool)
    special[np.asarray(list(special_ids), dtype=np.int64)] = True
    counts = cooccurrence(seqs, vocab_size, window)
    seen = (np.asarray(counts.sum(axis=1)).ravel() > 0) & ~special
    ids_seen = np.flatnonzero(seen)
    labels = np.full(vocab_size, -1, dtype=np.int32)
    normal = np.flatnonzero(~special)
    if len(ids_seen) < 4:
        raise ValueError(f"only {len(ids_seen)} distinct non-special tokens occur in the corpus; C-RTS needs a "
                         f"larger corpus to build token clusters")
    C = int(min(n_clusters, len(ids_seen) // 2))
    M = counts[ids_seen][:, ids_seen].astype(np.float64)
    M.data = np.log1p(M.data)
    k = int(min(dim, max(1, len(ids_seen) - 1)))
    Z = TruncatedSVD(n_components=k, random_state=seed, algorithm="randomized", n_iter=7).fit_transform(M)
    Z = Z.astype(np.float32)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    lab = kmeans_partitions(Z, C, seed=seed)
    labels[ids_seen] = lab
    C = int(lab.max()) + 1
    unseen = np.setdiff1d(normal, ids_seen)
    if len(unseen):
        labels[unseen] = np.random.default_rng(seed).integers(0, C, size=len(unseen)).astype(np.int32)
    logger.info("token clusters: %d clusters over %d tokens (%d seen in the corpus, %d special)", C, vocab_size,
             len(ids_seen), int(special.sum()))
    return labels


def save_clusters(path: str | Path, labels: np.ndarray, meta: dict) -> None:
    """Write ``token_clusters.npy`` and ``token_clusters.json`` into the tokenizer folder ``path``."""
    from subsetlm._io import write_bytes_atomic, write_json_atomic
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(labels, dtype=np.int32))
    write_bytes_atomic(Path(path) / CLUSTERS_FILE, buf.getvalue())
    write_json_atomic(Path(path) / "token_clusters.json", {**meta, "n_clusters": int(labels.max()) + 1})


def load_clusters(path: str | Path) -> np.ndarray:
    """Read the map saved by :func:`save_clusters` (error names the folder when it is missing)."""
    f = Path(path) / CLUSTERS_FILE
    if not f.is_file():
        raise ValueError(f"{path}: no {CLUSTERS_FILE}; C-RTS needs the token clusters saved with its tokenizer "
                         f"(train a crts run, which builds them)")
    return np.load(f)
