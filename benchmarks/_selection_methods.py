"""The selection methods compared by ``benchmarks/selection.py`` (private helper).

Each method is a function ``run(X, budget, k, seed) -> (order, phases, variant, extra)`` called
inside its own worker process, so its peak RSS is its own. ``X`` is the (n, d) float32
array (a read-only memmap of the ``.npy`` file); ``order`` the selected indices; ``phases``
a dict of seconds per phase (kNN / kernel building, optimisation); ``variant`` a short
description for the table; ``extra`` facts for the record (a callable ``extra["_post"]``
is run by the worker after the clock stops, e.g. to estimate the graph's recall). What
each timing includes is stated in the docs section.

Peers are configured as research.md says is fair: submodlib with ``sijs=`` (a float32
cosine kernel clipped at 0, never ``data=``); apricot with a precomputed cosine kernel
(not ``metric='cosine'``, which optimises cos^2) or with a FAISS kNN CSR matrix in
float64 **transposed** (apricot scores candidate j by row j).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from subsetlm.select.partitioned import split_budget

#: partition size INGENIOUS-style per-partition dense runs aim at
PARTITION_SIZE = 20000


def _cosine_kernel(X: np.ndarray, dtype=np.float32, block: int = 4096) -> np.ndarray:
    """Dense ``max(0, X X^T)`` in ``dtype``, built in row blocks (no float32 temporary of n^2)."""
    n = X.shape[0]
    K = np.empty((n, n), dtype=dtype)
    for s in range(0, n, block):
        B = X[s:s + block] @ X.T
        np.maximum(B, 0, out=B)
        K[s:s + block] = B
    return K


def _faiss_knn(X: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """FAISS inner-product kNN (self included) with the index subsetlm's ``auto`` picks.

    Exact ``IndexFlatIP`` up to 50,000 rows (as subsetlm's default), IVF-Flat beyond with
    subsetlm's default nlist (round(4 sqrt n), at most n / 39) but more probes
    (max(16, nlist // 64), subsetlm: max(12, nlist // 512)) and a larger seeded training
    sample (max(32 nlist, 65,536) rows, subsetlm: max(16 nlist, 65,536)), so apricot's graph
    is at least as good as subsetlm's default one (not the opt-in IVF self-join). Returns
    sims, ids, description.
    """
    import faiss

    n, d = X.shape
    if n <= 50000:
        index, desc = faiss.IndexFlatIP(d), "FAISS exact kNN"
    else:
        nlist = int(min(65536, max(1, n // 39), max(1, round(4 * math.sqrt(n)))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        train = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max(32 * nlist, 65536)),
                                                           replace=False))
        index.train(X[train])
        index.nprobe = min(nlist, max(16, nlist // 64))
        desc = f"FAISS IVF-Flat kNN (nlist {nlist}, nprobe {index.nprobe})"
    index.add(X)
    sims, ids = index.search(X, k)
    return sims, ids, desc


# ---------------------------------------------------------------- subsetlm
def _subsetlm(optimizer: str, graph_method: str = "auto") -> Callable:
    def run(X, budget, k, seed):
        from subsetlm.index import IndexConfig, estimate_recall, knn_graph
        from subsetlm.select.facility_location import SparseFacilityLocation
        from subsetlm.select.greedy import greedy

        t0 = time.perf_counter()
        graph = knn_graph(X, k=k, cfg=IndexConfig(graph_method=graph_method))
        t1 = time.perf_counter()
        fn = SparseFacilityLocation(graph)
        res = greedy(fn, budget, optimizer=optimizer, seed=seed)
        t2 = time.perf_counter()
        p = graph.params
        how = ("IVF self-join" if p.get("graph_method") == "join" else f"FAISS {p.get('kind', 'flat')}")
        variant = f"{how} kNN k={k} + {optimizer} greedy"

        def post() -> dict:  # after the clock: recall of the graph against exact search
            if p.get("kind") == "flat":
                return {"recall": 1.0}
            return {"recall": round(estimate_recall(X, graph, n_queries=1000, seed=seed), 4)}
        return (np.asarray(res.order, dtype=np.int64), {"knn_s": t1 - t0, "greedy_s": t2 - t1},
                variant, {"upper_bound": float(res.upper_bound), "graph_objective": float(res.objective),
                          "_post": post})
    return run


# ---------------------------------------------------------------- submodlib
def _submodlib_dense_one(Xp: np.ndarray, budget: int, phases: dict) -> np.ndarray:
    from submodlib import FacilityLocationFunction

    t0 = time.perf_counter()
    K = _cosine_kernel(Xp, np.float32)
    t1 = time.perf_counter()
    fl = FacilityLocationFunction(n=Xp.shape[0], mode="dense", sijs=K, separate_rep=False)
    picked = fl.maximize(budget=budget, optimizer="LazierThanLazyGreedy", stopIfZeroGain=False,
                         stopIfNegativeGain=False, epsilon=0.1, verbose=False, show_progress=False)
    t2 = time.perf_counter()
    del fl, K
    phases["kernel_s"] = phases.get("kernel_s", 0.0) + (t1 - t0)
    phases["greedy_s"] = phases.get("greedy_s", 0.0) + (t2 - t1)
    return np.array([i for i, _g in picked], dtype=np.int64)


def submodlib_run(X, budget, k, seed):
    """Dense lazier-than-lazy greedy; per random partition (~20k) when n is larger (INGENIOUS)."""
    n = X.shape[0]
    phases: dict = {}
    if n <= PARTITION_SIZE:
        order = _submodlib_dense_one(np.ascontiguousarray(X, dtype=np.float32), budget, phases)
        return order, phases, "dense kernel, lazier-than-lazy (eps=0.1)", {}
    n_parts = math.ceil(n / PARTITION_SIZE)
    t0 = time.perf_counter()
    labels = np.random.default_rng(seed).integers(0, n_parts, size=n)
    members = [np.flatnonzero(labels == p) for p in range(n_parts)]
    # per-partition budgets proportional to size, summing exactly to the budget (INGENIOUS uses
    # ceil(|p| / n * budget), a few extra points; the same total keeps the methods comparable)
    budgets = split_budget(np.array([len(m) for m in members]), budget)
    phases["partition_s"] = time.perf_counter() - t0
    out = []
    for p, (m, b) in enumerate(zip(members, budgets)):
        if b >= len(m):  # the whole partition: nothing to choose
            out.append(m)
        elif b > 0:
            Xp = np.ascontiguousarray(X[m], dtype=np.float32)
            out.append(m[_submodlib_dense_one(Xp, int(b), phases)])
        # read by the parent when the run hits the time cap
        print(f"PROGRESS {p + 1}/{n_parts} partitions {time.perf_counter() - t0:.1f}s", flush=True)
    variant = f"dense per partition: {n_parts} random partitions of ~{n // n_parts}, lazier-than-lazy"
    return np.concatenate(out), phases, variant, {"partitions": n_parts}


# ---------------------------------------------------------------- apricot
def apricot_dense_run(X, budget, k, seed):
    """apricot lazy greedy on a precomputed dense float64 cosine kernel clipped at 0."""
    from apricot import FacilityLocationSelection

    t0 = time.perf_counter()
    K = _cosine_kernel(np.ascontiguousarray(X, dtype=np.float32), np.float64)
    t1 = time.perf_counter()
    sel = FacilityLocationSelection(budget, metric="precomputed", optimizer="lazy", random_state=seed)
    sel.fit(K)
    t2 = time.perf_counter()
    return (np.asarray(sel.ranking, dtype=np.int64), {"kernel_s": t1 - t0, "greedy_s": t2 - t1},
            "dense float64 cosine kernel (precomputed), lazy", {})


def _apricot_sparse(optimizer: str, kwds: dict | None) -> Callable:
    def run(X, budget, k, seed):
        import scipy.sparse as sp
        from apricot import FacilityLocationSelection

        Xc = np.ascontiguousarray(X, dtype=np.float32)
        n = Xc.shape[0]
        t0 = time.perf_counter()
        sims, ids, desc = _faiss_knn(Xc, k, seed)
        del Xc
        ok = ids >= 0
        rows = np.repeat(np.arange(n, dtype=np.int32), k)[ok.ravel()]
        data = np.maximum(sims[ok], 0).astype(np.float64)
        # row i = neighbours of i; apricot scores candidate j by ROW j, so transpose
        A = sp.csr_matrix((data, (rows, ids[ok].astype(np.int32))), shape=(n, n))
        A = A.T.tocsr()
        A.indices = A.indices.astype(np.int32)
        A.indptr = A.indptr.astype(np.int32)
        del sims, ids
        t1 = time.perf_counter()
        sel = FacilityLocationSelection(budget, metric="precomputed", optimizer=optimizer,
                                        optimizer_kwds=dict(kwds or {}), random_state=seed)
        sel.fit(A)
        t2 = time.perf_counter()
        extra = f", eps={kwds['epsilon']}" if kwds else ""
        return (np.asarray(sel.ranking, dtype=np.int64), {"knn_s": t1 - t0, "greedy_s": t2 - t1},
                f"{desc} k={k}, CSR float64 transposed, {optimizer}{extra}", {})
    return run


#: name -> (runner, memory estimate in bytes given (n, d, k))
METHODS: dict[str, tuple[Callable, Callable[[int, int, int], float]]] = {
    "subsetlm-lazy": (_subsetlm("lazy"), lambda n, d, k: n * d * 4 * 2 + n * k * 40 + 4e8),
    "subsetlm-stochastic": (_subsetlm("stochastic"), lambda n, d, k: n * d * 4 * 2 + n * k * 40 + 4e8),
    "subsetlm-join": (_subsetlm("lazy", "join"), lambda n, d, k: n * d * 4 * 3 + n * k * 40 + 4e8),
    "submodlib": (submodlib_run, lambda n, d, k: 8.5 * min(n, PARTITION_SIZE) ** 2 + n * d * 8 + 3e8),
    "apricot-dense": (apricot_dense_run, lambda n, d, k: 12.5 * n * n + n * d * 8 + 3e8),
    "apricot-sparse": (_apricot_sparse("lazy", None), lambda n, d, k: n * d * 8 + n * k * 60 + 4e8),
    "apricot-stochastic": (_apricot_sparse("stochastic", {"epsilon": 0.1}),
                           lambda n, d, k: n * d * 8 + n * k * 60 + 4e8),
}
PEERS = ("submodlib", "apricot-dense", "apricot-sparse", "apricot-stochastic")
