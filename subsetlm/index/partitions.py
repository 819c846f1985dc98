"""Spherical k-means partitions of the embeddings (FAISS), for partitioned selection.

The centroids are fitted on a seeded sample (default ``256 * n_partitions`` rows, at most
1,048,576); every row is then assigned to its most similar centroid in blocks.

Empty partitions: FAISS k-means re-splits clusters that go empty during training; if a
centroid still receives no row in the final assignment it is dropped and the labels
are renumbered contiguously (``0..P'-1``, keeping centroid order), so every returned
label has at least one row; a warning is logged when ``P' < n_partitions``.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = np.concatenate([rng.normal(c, 0.01, (50, 4)) for c in np.eye(4)]).astype(np.float32)
>>> X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> labels = kmeans_partitions(X, 4, seed=0)
>>> len(np.unique(labels))
4
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ._arrays import as_f32_block, check_matrix, sample_rows, take_f32, task_spans
from .faiss_index import _faiss, num_gpus

logger = logging.getLogger(__name__)

MAX_SAMPLE = 1 << 20


@dataclass
class KMeansResult:
    """Output of ``kmeans_partitions(..., return_centroids=True)``.

    Attributes
    ----------
    labels : ndarray (n,) int32
        Partition of every row, in ``0..n_partitions'-1``, none empty.
    centroids : ndarray (n_partitions', d) float32
        Unit-norm centroids; ``centroids[p]`` belongs to label p.
    sizes : ndarray (n_partitions',) int64
        Rows per partition.
    objective : float
        Sum over rows of the cosine to the assigned centroid.
    n_dropped : int
        Centroids dropped because no row was assigned to them.
    """

    labels: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    objective: float
    n_dropped: int = 0


def _kmeanspp(xt: np.ndarray, P: int, seed: int, max_rows_per_centroid: int = 32) -> np.ndarray:
    """Seeded k-means++ initial centroids (on at most ``32 * P`` sampled rows).

    FAISS initialises with P random rows, which often puts two seeds in one blob and
    none in another (a local optimum Lloyd iterations do not escape); k-means++ spreads
    them out. Cost O(P * min(n, 32P) * d).
    """
    rng = np.random.default_rng(seed + 1)
    if len(xt) > max_rows_per_centroid * P:
        xt = xt[np.sort(rng.choice(len(xt), max_rows_per_centroid * P, replace=False))]
    sq = np.einsum("ij,ij->i", xt, xt)
    idx = [int(rng.integers(len(xt)))]
    d2 = np.maximum(sq + sq[idx[0]] - 2 * xt @ xt[idx[0]], 0)
    for _ in range(1, P):
        total = float(d2.sum())
        j = int(rng.choice(len(xt), p=d2 / total)) if total > 0 else int(rng.integers(len(xt)))
        idx.append(j)
        np.minimum(d2, np.maximum(sq + sq[j] - 2 * xt @ xt[j], 0), out=d2)
    return np.ascontiguousarray(xt[idx], dtype=np.float32)


def kmeans_partitions(X, n_partitions: int, seed: int = 0, sample_size: int | None = None,
                      niter: int = 20, progress: bool = False, return_centroids: bool = False,
                      use_gpu="auto", block_size: int = 65536, nredo: int = 1, executor=None):
    """Partition the rows of ``X`` with spherical k-means (cosine).

    Parameters
    ----------
    X : ndarray or memmap, shape (n, d), float16 or float32
        L2-normalised embeddings.
    n_partitions : int
        Number of clusters, ``1 <= n_partitions <= n``.
    seed : int
        Seeds the training sample and FAISS k-means; same seed => same labels.
    sample_size : int, optional
        Rows used to fit the centroids; default ``min(n, 256 * n_partitions, 2**20)``.
    niter : int
        k-means iterations. Default 20.
    progress : bool
        tqdm bar over the assignment blocks.
    return_centroids : bool
        Return a :class:`KMeansResult` instead of the bare labels.
    use_gpu : {"auto", True, False}
        Fit on GPU when FAISS sees one (``auto``).
    block_size : int
        Rows per assignment block.
    nredo : int
        1 (default): one run from a seeded k-means++ initialisation (random FAISS
        initialisation when P is so large that k-means++ would cost > 2e10 flops). > 1: that
        many FAISS runs from random initialisations, the best objective wins.
    executor : optional ``run(func, tasks) -> results`` (e.g. the Ray backend's): the
        assignment of all rows to the fitted centroids runs as tasks of 16 blocks each,
        reading their rows from the memory-mapped ``.npy`` (``X`` must be one); same labels.

    Returns
    -------
    ndarray (n,) int32 or KMeansResult
        Labels in ``0..P'-1`` with no empty partition (see the module note; ``P' <=
        n_partitions``).

    Example
    -------
    >>> import numpy as np
    >>> X = np.eye(6, dtype=np.float32)
    >>> kmeans_partitions(X, 2, seed=0).shape
    (6,)
    """
    X = check_matrix(X)
    n, d = X.shape
    if isinstance(n_partitions, bool) or not isinstance(n_partitions, (int, np.integer)):
        raise TypeError(f"n_partitions must be an int; got {n_partitions!r}.")
    if not 1 <= n_partitions <= n:
        raise ValueError(
            f"n_partitions={n_partitions}; expected 1 <= n_partitions <= n={n}. "
            f"Fix: choose fewer partitions (--partitions)."
        )
    size = sample_size if sample_size is not None else min(n, 256 * int(n_partitions), MAX_SAMPLE)
    if size < n_partitions:
        raise ValueError(f"sample_size={size} < n_partitions={n_partitions}; k-means needs one row per centroid.")
    faiss = _faiss()
    t0 = time.perf_counter()
    rows = sample_rows(n, size, seed)
    xt = take_f32(X, rows)
    gpu = use_gpu is True or (use_gpu == "auto" and num_gpus() > 0)
    km = faiss.Kmeans(d, int(n_partitions), niter=int(niter), nredo=int(nredo), seed=int(seed), spherical=True,
                      gpu=bool(gpu), verbose=False, min_points_per_centroid=1,
                      max_points_per_centroid=max(1, -(-len(xt) // int(n_partitions))))
    P = int(n_partitions)
    # k-means++ costs P * min(n, 32P) * d; beyond ~2e10 (P > ~1,300 at d=384) use FAISS's random init
    use_pp = nredo == 1 and P * min(len(xt), 32 * P) * d <= 2e10
    init = _kmeanspp(xt, P, seed) if use_pp else None
    km.train(xt, init_centroids=init)
    del xt
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    logger.info("k-means P=%d fitted on %d rows in %.1fs (%s)", n_partitions, len(rows),
                time.perf_counter() - t0, "gpu" if gpu else "cpu")
    if executor is not None and isinstance(X, np.memmap) and str(X.filename or "").endswith(".npy"):
        labels, objective = _assign_distributed(str(X.filename), n, centroids, block_size, executor)
    else:
        labels, objective = _assign_local(X, n, centroids, block_size, progress)
    sizes = np.bincount(labels, minlength=len(centroids))
    n_dropped = int((sizes == 0).sum())
    if n_dropped:
        keep = np.flatnonzero(sizes > 0)
        remap = np.full(len(centroids), -1, dtype=np.int32)
        remap[keep] = np.arange(len(keep), dtype=np.int32)
        labels = remap[labels]
        centroids, sizes = centroids[keep], sizes[keep]
        logger.warning("k-means: %d of %d partitions received no row and were dropped; labels renumbered 0..%d",
                       n_dropped, n_partitions, len(keep) - 1)
    logger.info("k-means partitions: %d non-empty, sizes %d..%d, in %.1fs", len(sizes), sizes.min(),
                sizes.max(), time.perf_counter() - t0)
    if return_centroids:
        return KMeansResult(labels, centroids, sizes.astype(np.int64), objective, n_dropped)
    return labels


def _assign_rows(X, start: int, stop: int, centroids: np.ndarray, block_size: int) -> tuple[np.ndarray, float]:
    """Nearest centroid (inner product) of rows ``start:stop``, searched in ``block_size`` blocks."""
    faiss = _faiss()
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    labels = np.empty(stop - start, dtype=np.int32)
    objective = 0.0
    for s in range(start, stop, block_size):
        xb = as_f32_block(X, s, min(stop, s + block_size))
        D, I = index.search(xb, 1)
        labels[s - start:s - start + len(xb)] = I[:, 0]
        objective += float(D[:, 0].astype(np.float64).sum())
    return labels, objective


def _assign_local(X, n: int, centroids: np.ndarray, block_size: int, progress: bool) -> tuple[np.ndarray, float]:
    if block_size <= 0:
        raise ValueError(f"block_size={block_size}; expected a positive number of rows (e.g. 65536).")
    labels = np.empty(n, dtype=np.int32)
    objective = 0.0
    starts = range(0, n, block_size)
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        starts = tqdm(starts, desc="k-means assign", unit="block")
    for s in starts:
        lab, obj = _assign_rows(X, s, min(n, s + block_size), centroids, block_size)
        labels[s:s + len(lab)] = lab
        objective += obj
    return labels, objective


def _assign_task(task: dict) -> tuple[np.ndarray, float]:
    X = np.load(task["path"], mmap_mode="r")
    return _assign_rows(X, task["start"], task["stop"], task["centroids"], task["block_size"])


def _assign_distributed(path: str, n: int, centroids: np.ndarray, block_size: int,
                        executor) -> tuple[np.ndarray, float]:
    """The same blocks as :func:`_assign_local`, 16 per task (so the labels are identical)."""
    tasks = [{"path": path, "start": a, "stop": b, "centroids": centroids, "block_size": block_size}
             for a, b in task_spans(n, block_size)]
    out = executor(_assign_task, tasks)
    return np.concatenate([lab for lab, _ in out]), float(sum(obj for _, obj in out))
