"""Dense retrieval: query embeddings searched over a store's embeddings through a FAISS index.

Scores are inner products of L2-normalised vectors (cosine). The queries are embedded by
the caller (:func:`subsetlm.retrieve.run.retrieve` uses the store's own embedder).

Example
-------
>>> X = np.eye(4, dtype=np.float32)
>>> h = dense_search(X, X[[2]], k=1, index_kind="flat")
>>> h.index.tolist(), h.score.tolist()
([2], [1.0])
"""

from __future__ import annotations

import numpy as np

from subsetlm.retrieve.merge import Hits


def dense_search(X: np.ndarray, queries: np.ndarray, k: int, *, exclude: np.ndarray | None = None,
                 index_kind: str = "auto", seed: int = 0, block_size: int = 4096, progress: bool = False) -> Hits:
    """Top-``k`` cosine hits of every query (q, d) over the rows of ``X`` (n, d) through a FAISS index.

    Excluded rows (``exclude`` (n,) bool) are dropped after the search (each query asks for
    ``k`` + their count), or, when there are more of them than ``k``, left out of the index.
    """
    from subsetlm.index import IndexConfig, build_index

    Q = np.ascontiguousarray(queries, dtype=np.float32)
    if Q.ndim != 2 or Q.shape[1] != X.shape[1]:
        raise ValueError(f"queries have shape {Q.shape}; expected (q, {X.shape[1]}) like the store's embeddings")
    n_ex = int(exclude.sum()) if exclude is not None else 0
    rows = None
    if n_ex > k:  # many excluded rows: index only the others rather than over-fetch k + n_ex per query
        rows = np.flatnonzero(~exclude)
        X, exclude, n_ex = np.asarray(X[rows], dtype=np.float32), None, 0
    kk = min(int(X.shape[0]), k + n_ex)
    index = build_index(X, IndexConfig(k=kk, kind=index_kind, seed=seed), progress=progress)
    out = []
    starts = range(0, len(Q), block_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="dense queries", unit="block")
    for s in starts:
        D, I = index.search(Q[s:s + block_size], kk)
        for d, i in zip(D, I):
            ok = i >= 0
            if exclude is not None:
                ok &= ~exclude[np.maximum(i, 0)]
            i, d = i[ok].astype(np.int64), d[ok].astype(np.float64)
            if rows is not None:
                i = rows[i]
            order = np.lexsort((i, -d))[:k]
            out.append((i[order], d[order]))
    return Hits.from_lists(out)
