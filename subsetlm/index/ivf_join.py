"""Approximate all-pairs kNN by an IVF self-join: cluster, then compare list against lists.

Opt-in: ``IndexConfig(graph_method="join")`` (``subsetlm index --graph-method join``). When
the queries *are* the database, group them by IVF list and compute one BLAS product per
pair of neighbouring lists: every candidate list is read once per query list instead of
once per query, every pair's similarities once, and they are exact. Measured at n = 20k / 100k,
d = 384 (docs/benchmarks.md, section selection) it builds the graph about 5x faster than
FAISS's exact or IVF search of every row, at recall@32 0.99 on clustered synthetic data
with nlist = sqrt(n), nprobe = 4, but only 0.64 on MiniLM embeddings of PubMed.

Steps: spherical k-means centroids on a seeded sample (FAISS), assign every row to its
nearest centroid (blocked), sort rows by list (one float32 copy when it fits in
``float32_max_bytes``, else in the input dtype), pair each list with the lists of its
``nprobe`` nearest centroids, symmetrically (L and M are paired when either is among the
other's), then per list L: one single-threaded BLAS product of its rows against its own
rows and those of its partners M > L, merged by numba bounded heaps (``_topk``, no GIL)
into the rows of L and, transposed, into the rows of each M: every pair's block is
computed once. One list per thread, a lock per list's rows. A row's own list is always
joined, so every row finds itself. The result does not depend on the thread count.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from ._arrays import as_f32_block, sample_rows, take_f32, warn_if_not_normalised
from ._topk import empty_rows, finish_rows, merge_block
from .faiss_index import _faiss

logger = logging.getLogger(__name__)

# S = queries x candidates similarity block, in float32 elements (~16 MB per thread).
_MAX_SIM_ELEMS = 1 << 22


def _train_centroids(X, nlist: int, train_size: int, seed: int, niter: int = 10) -> np.ndarray:
    faiss = _faiss()
    rows = sample_rows(X.shape[0], train_size, seed)
    xt = take_f32(X, rows)
    warn_if_not_normalised(xt)
    km = faiss.Kmeans(X.shape[1], nlist, niter=niter, seed=int(seed), spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(1, -(-len(xt) // nlist)))
    km.train(xt)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def _assign(X, centroids: np.ndarray, pool, block: int = 2048) -> np.ndarray:
    """Nearest centroid (largest inner product; ties to the smaller id) of every row.

    Blocks of ``block`` rows on ``pool``; checks every row for NaN/inf (``as_f32_block``).
    """
    n = X.shape[0]
    out = np.empty(n, dtype=np.int64)

    def one(start: int) -> None:
        xb = as_f32_block(X, start, min(n, start + block))
        out[start:start + len(xb)] = np.argmax(xb @ centroids.T, axis=1)

    list(pool.map(one, range(0, n, block)))
    return out


def _pairs(probes: np.ndarray, sizes: np.ndarray) -> list[list[int]]:
    """``up[L]``: the non-empty lists M > L paired with L (either among the other's probes), sorted."""
    nlist = len(sizes)
    up: list[set] = [set() for _ in range(nlist)]
    for L in range(nlist):
        if sizes[L] == 0:
            continue
        for M in probes[L]:
            if M >= 0 and M != L and sizes[M] > 0:
                up[min(L, M)].add(int(max(L, M)))
    return [sorted(u) for u in up]


def ivf_join_knn(X, k: int, nlist: int, nprobe: int, train_size: int, seed: int = 0,
                 block_size: int = 16384, progress: bool = False, float32_max_bytes: float = 2**30,
                 n_threads: int | None = None, niter: int = 10):
    """Top-k neighbours of every row of ``X`` (self included) by IVF self-join.

    Returns ``(neighbors (n, k) int32, sims (n, k) float32, info dict)``, rows sorted as
    ``knn_graph`` sorts them (decreasing similarity, self first among ties, then smaller
    id; -1 / 0.0 padding when a list and its probes hold fewer than k rows). Every row
    finds itself: its own list is always probed. ``float32_max_bytes``: the sorted copy of
    the rows is float32 up to this size (converted once), else in the input dtype
    (float16 stays float16, converted list by list).
    """
    faiss = _faiss()
    n, d = X.shape
    n_threads = n_threads or len(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    # BLAS single-threaded throughout, our threads run one block or list each: two pools
    # (OpenBLAS's and ours) taking turns on the same cores lose time to each other's
    # spin-waits, and each list's similarity block stays in its core's cache
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(n_threads) as pool:
        if X.dtype != np.float32 and n * d * 4 <= float32_max_bytes:
            X = np.ascontiguousarray(X, dtype=np.float32)  # convert once (checked in _assign)
        with threadpool_limits(None, user_api="blas"):  # FAISS k-means: its own threads
            centroids = _train_centroids(X, nlist, train_size, seed, niter=niter)
        t_train = time.perf_counter() - t0
        assign = _assign(X, centroids, pool)
        t_assign = time.perf_counter() - t0 - t_train
        order = np.argsort(assign, kind="stable")
        sizes = np.bincount(assign, minlength=nlist)
        offsets = np.zeros(nlist + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        del assign
        Xs = np.empty((n, d), dtype=np.float16 if X.dtype == np.float16 else np.float32)
        for s in range(0, n, block_size):
            np.take(X, order[s:s + block_size], axis=0, out=Xs[s:s + block_size])
        del X  # (the float32 copy, if one was made)
        # centroid-level probes, made symmetric: lists L and M are joined when either is among
        # the other's nprobe nearest; each such pair's block is computed once and merged into
        # the rows of both (the similarity of a pair is one number, seen from both sides)
        cq = faiss.IndexFlatIP(d)
        cq.add(centroids)
        probes = cq.search(centroids, min(nprobe, nlist))[1]
        up = _pairs(probes, sizes)
        t_prep = time.perf_counter() - t0 - t_train - t_assign
        neighbors, sims = empty_rows(n, k)
        locks = [threading.Lock() for _ in range(nlist)]

        def join_list(L: int) -> None:
            a, b = offsets[L], offsets[L + 1]
            if a == b:
                return
            own = [L] + up[L]  # the diagonal block, then the pairs (L, M > L)
            cand = np.concatenate([Xs[offsets[j]:offsets[j + 1]] for j in own]).astype(np.float32, copy=False)
            cand_ids = np.concatenate([order[offsets[j]:offsets[j + 1]] for j in own])
            ends = np.cumsum([0] + [sizes[j] for j in own])
            step = max(1, _MAX_SIM_ELEMS // len(cand_ids))
            for qa in range(a, b, step):
                qb = min(b, qa + step)
                S = Xs[qa:qb].astype(np.float32, copy=False) @ cand.T
                rows = order[qa:qb]
                with locks[L]:
                    merge_block(S, rows, cand_ids, neighbors, sims)
                for i, M in enumerate(own[1:], 1):
                    with locks[M]:
                        merge_block(S[:, ends[i]:ends[i + 1]].T, cand_ids[ends[i]:ends[i + 1]], rows,
                                    neighbors, sims)

        done = pool.map(join_list, range(nlist))
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            done = tqdm(done, total=nlist, desc="kNN (IVF join)", unit="list")
        list(done)
        list(pool.map(lambda s: finish_rows(neighbors, sims, s, min(n, s + 4096)), range(0, n, 4096)))
    per_row = sizes.astype(np.int64)  # candidates of a row of each list: its list and the partners'
    for L in range(nlist):
        for M in up[L]:
            per_row[L] += sizes[M]
            per_row[M] += sizes[L]
    n_cand_total = int((sizes * per_row).sum())
    timings = {"train": round(t_train, 2), "assign": round(t_assign, 2), "prepare": round(t_prep, 2),
               "join": round(time.perf_counter() - t0 - t_train - t_assign - t_prep, 2)}
    # only deterministic facts go to the manifest; timings are logged
    info = {"method": "ivf-join", "mean_candidates": round(n_cand_total / n, 1),
            "max_list": int(sizes.max()), "empty_lists": int((sizes == 0).sum())}
    logger.info("IVF join n=%d nlist=%d nprobe=%d: %s, seconds %s", n, nlist, nprobe, info, timings)
    return neighbors, sims, info
