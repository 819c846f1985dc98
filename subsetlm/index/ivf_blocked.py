"""The blocked kNN restricted by an IVF partition, with the probes chosen for a target recall.

For large n the blocked method (:mod:`~subsetlm.index.blocked`) compares each row with the
rows of a few IVF lists instead of all rows. Spherical k-means centroids on a seeded sample
(:func:`spherical_kmeans`, assignments by the same bfloat16 products); each row probes the
``nprobe`` lists whose centroids are nearest to it (the first is its own list), as FAISS's IVF
search does. The work is grouped by list: for list M, the rows that probe M (gathered by
each thread for its share) against M's rows, one low-precision product per thread, merged
into those rows' bounded heaps of k' candidates (``_blocked_kernels.merge_bits``); at the end
every row's k' candidates are re-scored exactly (float64 sums, the graph order).

``nprobe`` is chosen per data set, not fixed: real MiniLM embeddings need more probes than
clustered synthetic data for the same recall (the opt-in IVF join got 0.64 at nprobe 4 on
PubMed). On a seeded sample of rows the exact top-k is computed (blocked products against all
rows, re-scored), and the rank of each true neighbour's list among the row's probes gives the
recall of every nprobe at once; the smallest nprobe whose sample recall reaches
``target_recall + PROBE_SLACK`` is used. The recall of the graph actually built is then
measured on a second, independent sample against exact (float32) search and returned; the
graph manifest records it. When the chosen probes cover more than ``MAX_PAIR_FRACTION`` of all
pairs, the all-pairs blocked method runs instead (it is then as cheap, and exact-quality).
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._arrays import sample_rows, take_f32
from .blocked import MARGIN, Blocks, check_recall, n_cores, resolve_precision, torch_threads
from .faiss_index import default_nlist

logger = logging.getLogger(__name__)

PROBE_SLACK = 0.003  # aim this far above the target: the sample's recall is an estimate
MAX_PAIR_FRACTION = 0.4  # above this share of all pairs, compare all pairs instead
_ROWS = 16384  # rows per block of the assignment and of the final re-scoring


def choose_nprobe(centroid_ranks: np.ndarray, truth_lists: np.ndarray, target: float) -> tuple[int, float]:
    """The smallest nprobe whose recall on a sample reaches ``target``; and that recall.

    ``truth_lists`` (m, k): the list of each exact neighbour of each sampled row (-1: none);
    ``centroid_ranks`` (m, nlist): the rank of each list among the sampled row's probes. A
    true neighbour is found when its list ranks below nprobe.
    """
    valid = truth_lists >= 0
    r = np.take_along_axis(centroid_ranks, np.where(valid, truth_lists, 0), axis=1)[valid]
    r = np.sort(r)
    need = min(len(r), max(1, math.ceil(min(1.0, target) * len(r))))
    nprobe = int(r[need - 1]) + 1
    return nprobe, float(np.mean(r < nprobe))


def _keys(bits: np.ndarray, mask: int) -> np.ndarray:
    """The order keys of raw score bits (as ``_blocked_kernels.merge_bits`` compares them), int32;
    ``mask``: the magnitude bits of the precision (``Blocks.prod.mask``)."""
    v = bits.astype(np.int32)
    return v ^ ((v >> 31) & mask)


def _ranks(bits: np.ndarray, mask: int) -> np.ndarray:
    """(m, nlist) int32: the rank of each list by decreasing score (ties: the smaller list first)."""
    order = np.argsort(-_keys(bits, mask).astype(np.int64), axis=1, kind="stable")
    ranks = np.empty(order.shape, dtype=np.int32)
    np.put_along_axis(ranks, order, np.arange(order.shape[1], dtype=np.int32)[None, :], axis=1)
    return ranks


def spherical_kmeans(bl, X, nlist: int, train_size: int, seed: int, niter: int = 10) -> np.ndarray:
    """(nlist, d) float32 unit centroids: spherical k-means on a seeded sample of rows, assignments by
    the blocked products (ties: the smaller centroid). Seeded: random distinct sample rows as the
    start; a centroid left empty restarts at a random sample row."""
    n, d = X.shape
    rng = np.random.default_rng(seed)
    xt = take_f32(X, sample_rows(n, train_size, seed))
    T = bl.prod.encode(xt)
    C = xt[np.sort(rng.choice(len(xt), nlist, replace=False))].copy()
    for _ in range(niter):
        a = _probes(bl, T, bl.prod.encode(C), 1)[:, 0]
        order = np.argsort(a, kind="stable")
        counts = np.bincount(a, minlength=nlist)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.add.reduceat(xt[order], starts[counts > 0], axis=0)
        C[counts > 0] = sums
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            C[empty] = xt[rng.choice(len(xt), empty.size, replace=False)]
        C /= np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    return C.astype(np.float32)


def _probes(bl, L, C, nprobe: int) -> np.ndarray:
    """(n, nprobe) int32: each row's nprobe best centroids by the product scores, best first."""
    from ._blocked_kernels import empty_heaps  # noqa: PLC0415

    n, nlist = L.shape[0], C.shape[0]
    hk, hi = empty_heaps(n, nprobe)
    cols = np.arange(nlist, dtype=np.int32)
    for s in range(0, n, _ROWS):
        e = min(n, s + _ROWS)
        bl.merge(L[s:e], C, cols, hk, hi, np.arange(s, e, dtype=np.int64))
    order = np.lexsort((hi, -hk.astype(np.int64)), axis=-1)  # best first: larger key, then smaller list
    return np.take_along_axis(hi, order, axis=1)


def ivf_blocked_knn(X, k: int, target_recall: float = 0.99, nlist: int | None = None,
                    train_size: int | None = None, seed: int = 0, precision: str = "auto",
                    margin: int = MARGIN, recall_queries: int = 1000, n_threads: int | None = None,
                    progress: bool = False):
    """Top-``k`` neighbours of every row (self included) by the IVF-restricted blocked method.

    Parameters
    ----------
    X : ndarray or memmap (n, d), float16 or float32, L2-normalised
    k : int
    target_recall : float
        Recall@k the probes are chosen for (on a sample).
    nlist, train_size : int, optional
        IVF lists (default as FAISS IVF: round(4 sqrt n), at most n / 39) and k-means training
        rows (default 16 per list, at least 32,768).
    seed : int
        k-means and both samples.
    precision, margin, n_threads : as in :func:`~subsetlm.index.blocked.blocked_knn`.
    recall_queries : int
        Rows of each sample (the probe choice, then the recall check).

    Returns
    -------
    (neighbors (n, k) int32, similarities (n, k) float32, info dict)
        ``info``: ``method`` (``ivf``, or ``all-pairs`` when the probes would cover most
        pairs), ``nlist``, ``nprobe``, ``probe_recall`` (the sample's, at that nprobe),
        ``recall`` (the independent check) and ``recall_queries``.
    """
    from ._blocked_kernels import empty_heaps  # noqa: PLC0415
    from .blocked import blocked_knn  # noqa: PLC0415

    n, d = X.shape
    prec = resolve_precision(precision)
    nlist = min(n, nlist or default_nlist(n))
    train_size = min(n, train_size or max(16 * nlist, 32768))
    kc = min(n, k + max(0, int(margin)))
    nt = n_threads or n_cores()
    t0 = time.perf_counter()
    with torch_threads(1) as torch, ThreadPoolExecutor(nt) as pool:
        bl = Blocks(torch, prec, nt, pool)
        centroids = spherical_kmeans(bl, X, nlist, train_size, seed)
        C = bl.prod.encode(centroids)
        L = bl.prod.encode_all(X)
        t_train = time.perf_counter() - t0
        # nprobe: exact neighbours of a seeded sample, and where their lists rank among its probes
        rows = sample_rows(n, recall_queries, seed)
        truth, _ = bl.topk(X, L, rows, k, kc)
        own = _probes(bl, L[torch.from_numpy(np.maximum(truth, 0).ravel())], C, 1)[:, 0]  # their own lists
        truth_lists = np.where(truth >= 0, own.reshape(truth.shape), -1)
        ranks = _ranks(bl.prod.scores(L[torch.from_numpy(rows)], C)[0], bl.prod.mask)
        nprobe, est = choose_nprobe(ranks, truth_lists, target_recall + PROBE_SLACK)
        # every row's probes: its nprobe nearest centroids, best first (ties: the smaller list)
        probes = _probes(bl, L, C, nprobe)
        t_probe = time.perf_counter() - t0 - t_train
        sizes = np.bincount(probes[:, 0], minlength=nlist)
        pairs = float((sizes[probes]).sum())
        logger.info("IVF probes: nprobe=%d of %d lists for sample recall %.4f (target %.3f), %.2f%% of all pairs "
                    "(%.1fs)", nprobe, nlist, est, target_recall, 100 * pairs / float(n) ** 2, time.perf_counter() - t0)
        info = {"method": "ivf", "nlist": int(nlist), "nprobe": int(nprobe), "train_size": int(train_size),
                "target_recall": target_recall, "probe_recall": round(est, 4),
                "pair_fraction": round(pairs / float(n) ** 2, 4)}
        if pairs > MAX_PAIR_FRACTION * float(n) ** 2:
            logger.info("IVF probes for recall %.3f cover %.0f%% of all pairs: comparing all pairs",
                        target_recall, 100 * pairs / float(n) ** 2)
            del L, probes
            neighbors, sims, inf2 = blocked_knn(X, k, prec, margin, n_threads=nt, recall_queries=recall_queries,
                                                seed=seed + 1, progress=progress)
            info.update(inf2, method="all-pairs")
            return neighbors, sims, info
        # list by list: the rows probing list M against M's rows, merged into those rows' heaps
        members = np.argsort(probes[:, 0], kind="stable")  # each list's rows, ascending
        moff = np.zeros(nlist + 1, dtype=np.int64)
        np.cumsum(sizes, out=moff[1:])
        flat = probes.ravel()
        by_list = np.argsort(flat, kind="stable")  # (row, probe) pairs grouped by list, rows ascending
        qoff = np.zeros(nlist + 1, dtype=np.int64)
        np.cumsum(np.bincount(flat, minlength=nlist), out=qoff[1:])
        qrows = (by_list // nprobe).astype(np.int64)
        del probes, flat, by_list
        hk, hi = empty_heaps(n, kc)
        lists = range(nlist)
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            lists = tqdm(lists, desc=f"kNN (IVF, {nprobe} probes)", unit="list")
        for M in lists:
            if moff[M] == moff[M + 1]:
                continue
            cols = members[moff[M]:moff[M + 1]]
            q = qrows[qoff[M]:qoff[M + 1]]
            bl.merge(L, L[torch.from_numpy(cols)], cols.astype(np.int32), hk, hi, q, q_rows=q)
        del L, qrows, hk
        t_join = time.perf_counter() - t0 - t_train - t_probe
        neighbors = np.empty((n, k), dtype=np.int32)
        sims = np.empty((n, k), dtype=np.float32)
        for s in range(0, n, _ROWS):  # list by list: a list's candidates stay in cache for its rows
            ids = members[s:s + _ROWS]
            neighbors[ids], sims[ids] = bl.finish(X, take_f32(X, ids), hi[ids].astype(np.int64), ids, k,
                                                  tie_scan=False)
        del hi
        t_exact = time.perf_counter() - t0 - t_train - t_probe - t_join
        # the recall of the graph built, on an independent sample, against exact (float32) search
        recall, nq = check_recall(X, neighbors, recall_queries, seed + 1, pool, nt)
        info.update(recall=round(recall, 4), recall_queries=nq, precision=prec, margin=int(kc - k),
                    self_inserted=bl.inserted)
    logger.info("IVF blocked kNN n=%d k=%d nlist=%d nprobe=%d (%.2f%% of pairs; sample recall %.4f, checked %.4f): "
                "%.1fs (k-means + encoding %.1fs, probes %.1fs, join %.1fs, re-scoring %.1fs, recall check %.1fs; "
                "thread-seconds %s)", n, k, nlist, nprobe, 100 * pairs / float(n) ** 2, est, info["recall"],
                time.perf_counter() - t0, t_train, t_probe, t_join, t_exact,
                time.perf_counter() - t0 - t_train - t_probe - t_join - t_exact,
                {a: round(b, 1) for a, b in bl.seconds.items()})
    return neighbors, sims, info
