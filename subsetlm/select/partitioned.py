"""Partitioned facility-location selection: split the budget over partitions, solve each alone.

The budget is split across partitions in proportion to their sizes with largest-remainder
rounding (the parts sum to the budget exactly; no partition gets more than its size). Each
partition gets its own kNN graph over its rows (``subsetlm.index.knn_graph``; dense
``max(X X^T, 0)`` when ``kernel="dense"`` or the partition has <= k rows) and its own greedy,
in ``n_jobs`` worker processes ("spawn" context, so FAISS/OpenMP state is never forked).
Partition p is seeded with ``SeedSequence([seed, p])`` so the result does not depend on
``n_jobs``. With ``sampling="taylor-softmax"`` (INGENIOUS) greedy runs to a full ordering
of each partition (or ``cap`` elements) and the partition's budget is drawn without
replacement with p ∝ 1 + g + g²/2 over the normalised gains
(:func:`subsetlm.select.sampling.taylor_softmax_sample`).

The objective and certificate are sums over partitions of the per-partition facility
location (each point is covered only by elements of its own partition).

Example
-------
>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
>>> X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> labels = np.arange(300) % 3
>>> res = partitioned_greedy(X, labels, 30, k=8, n_jobs=1)
>>> len(res.indices), res.budgets.tolist()
(30, [10, 10, 10])
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["PartitionedResult", "partitioned_greedy", "split_budget"]


@dataclass
class PartitionedResult:
    """Outcome of :func:`partitioned_greedy`.

    Attributes
    ----------
    indices : (b,) int64 global row indices, partition by partition (in label order), each
        partition's elements in greedy order.
    gains : (b,) float64 marginal gain of each element within its partition.
    partitions : (b,) int64 label of each element's partition.
    weights : (b,) int64 points of its partition whose best selected neighbour it is.
    labels : (P,) the distinct labels; ``budgets``, ``sizes``, ``objectives``,
        ``upper_bounds`` : (P,) per partition.
    objective, upper_bound : sums over partitions.
    n_unassigned : points whose kNN list holds no selected element.
    random_objective : sum over partitions of f(a seeded random subset of the same size).
    """

    indices: np.ndarray
    gains: np.ndarray
    partitions: np.ndarray
    weights: np.ndarray
    labels: np.ndarray
    budgets: np.ndarray
    sizes: np.ndarray
    objectives: np.ndarray
    upper_bounds: np.ndarray
    objective: float
    upper_bound: float
    n_unassigned: int = 0
    random_objective: float | None = None
    info: dict = field(default_factory=dict)

    @property
    def order(self) -> np.ndarray:
        """Alias of ``indices``."""
        return self.indices

    @property
    def ratio(self) -> float:
        return float(self.objective / self.upper_bound) if self.upper_bound > 0 else 1.0


def split_budget(sizes: Any, budget: int) -> np.ndarray:
    """Largest-remainder split of ``budget`` proportional to ``sizes``; ties to the lower index.

    >>> split_budget([5, 3, 2], 5).tolist()
    [3, 1, 1]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not 0 <= budget <= total:
        raise ValueError(f"budget={budget} must lie in [0, {total}] (the total partition size)")
    num = sizes * int(budget)  # exact integer arithmetic: quota = num / total
    out = num // total if total else np.zeros_like(sizes)
    rem = num - out * total
    left = int(budget) - int(out.sum())
    for p in np.lexsort((np.arange(len(sizes)), -rem)):  # largest remainder first
        if left == 0:
            break
        if out[p] < sizes[p]:
            out[p] += 1
            left -= 1
    return out


def _seed_for(seed: int, label: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(label) & 0xFFFFFFFF]).generate_state(1)[0])


def _load_rows(source: Any, rows: np.ndarray) -> np.ndarray:
    if isinstance(source, tuple) and source[0] == "npy":
        X = np.load(source[1], mmap_mode="r")
        return np.asarray(X[rows], dtype=np.float32)
    return np.asarray(source, dtype=np.float32)


def _build_fn(Xp: np.ndarray | None, graph: Any, k: int, kernel: str):
    from subsetlm.select.facility_location import DenseFacilityLocation, SparseFacilityLocation

    if graph is not None:
        return SparseFacilityLocation(graph)
    m = Xp.shape[0]
    if kernel == "dense" or m <= k:
        return DenseFacilityLocation(Xp, kernel="precompute" if m <= 8192 else None)
    try:
        from subsetlm.index import IndexConfig, knn_graph

        g = knn_graph(Xp, k=k, cfg=IndexConfig(k=k, kind="flat" if m <= 50_000 else "auto", n_threads=1,
                                                use_gpu=False, seed=0))
    except ImportError:  # pragma: no cover - fallback while subsetlm.index is unavailable
        import faiss
        from types import SimpleNamespace

        index = faiss.IndexFlatIP(Xp.shape[1])
        index.add(np.ascontiguousarray(Xp))
        D, I = index.search(np.ascontiguousarray(Xp), k)
        g = SimpleNamespace(neighbors=I.astype(np.int32), similarities=D.astype(np.float32))
    return SparseFacilityLocation(g)


def _bound_at(fn: Any, prefix: np.ndarray, b: int) -> float:
    """OPT_b <= f(prefix) + sum of the b largest exact marginal gains w.r.t. prefix."""
    fn.reset()
    for j in prefix:
        fn.update(int(j))
    rest = np.setdiff1d(np.arange(fn.n), prefix)
    if rest.size == 0:
        return float(fn.value)
    g = np.maximum(fn.gains(rest), 0)
    top = g if len(g) <= b else np.partition(g, len(g) - b)[len(g) - b:]
    return float(fn.value + top.sum())


def _solve(task: dict) -> dict:
    """Solve one partition (runs in a worker process)."""
    from subsetlm.select.greedy import greedy

    t0 = time.perf_counter()
    rows, b, seed = task["rows"], task["budget"], task["seed"]
    builder = task.get("builder")
    if builder is not None:
        fn = _build_fn(None, builder(rows), task["k"], task["kernel"])
    else:
        fn = _build_fn(_load_rows(task["source"], rows), None, task["k"], task["kernel"])
    m = len(rows)
    if task["sampling"] == "topk":
        res = greedy(fn, b, optimizer=task["optimizer"], seed=seed, epsilon=task["epsilon"])
        local, gains, obj, ub = res.order, res.gains, res.objective, res.upper_bound
    else:
        from subsetlm.select.sampling import taylor_softmax_sample

        full_len = m if task["cap"] is None else max(b, min(m, int(task["cap"])))
        full = greedy(fn, full_len, optimizer=task["optimizer"], seed=seed, epsilon=task["epsilon"],
                      record_bound=False)
        pick = taylor_softmax_sample(full.gains, b, seed, normalize=task["normalize"])
        pick = np.sort(np.asarray(pick, dtype=np.int64))
        local, gains = full.order[pick], full.gains[pick]
        obj = fn.evaluate(local)
        ub = max(_bound_at(fn, full.order[:b], b), obj)
    w, un = fn.assignment(local)
    rand = np.random.default_rng(seed).choice(m, b, replace=False)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MiB (Linux reports KiB)
    return {"random_objective": float(fn.evaluate(rand)), "label": task["label"], "indices": rows[np.asarray(local, dtype=np.int64)],
            "gains": np.asarray(gains, np.float64), "weights": w, "unassigned": un,
            "objective": float(obj), "upper_bound": float(ub), "seconds": time.perf_counter() - t0,
            "peak_rss_mib": peak, "rows": m}


def partitioned_greedy(X_or_graph_builder: Any, labels: Any, budget: int, *, k: int = 32,
                       optimizer: str = "lazy", n_jobs: int = 2, seed: int = 0, sampling: str = "topk",
                       epsilon: float = 0.01, kernel: str = "sparse", cap: int | None = None,
                       normalize: str = "none", progress: bool = False,
                       executor: Callable | None = None, merge_factor: float = 0.0) -> PartitionedResult:
    """Facility location per partition, budget split by partition size, solved in parallel.

    Parameters
    ----------
    X_or_graph_builder : (n, d) float array, ``np.memmap``/path of a ``.npy`` file (workers
        open it themselves and read only their rows), or a callable ``builder(rows) ->
        KNNGraph`` over those rows in local indexing (must be picklable when n_jobs > 1).
    labels : (n,) ints, the partition of each row.
    budget : int, total number of elements, 1 <= budget <= n.
    k : neighbours per row of each partition's kNN graph.
    optimizer : greedy optimizer (``naive``, ``lazy``, ``stochastic``, ``lazier-than-lazy``).
    n_jobs : worker processes (1 = in this process). The result does not depend on it.
    seed : base seed; partition p uses ``SeedSequence([seed, p])``.
    sampling : ``"topk"`` (greedy prefix) or ``"taylor-softmax"`` (INGENIOUS gain sampling).
    kernel : ``"sparse"`` (kNN graph) or ``"dense"`` (on-the-fly / small precomputed kernel).
    cap : with taylor-softmax, greedy order length per partition (default: the whole partition).
    normalize : gain normalisation for taylor-softmax (``none`` as in the INGENIOUS code,
        ``max``, ``minmax``; see :mod:`subsetlm.select.sampling`).
    progress : accepted for API symmetry; workers draw no bars (each partition's timing is
        in ``info['partition_seconds']``).
    executor : ``run(func, tasks) -> results`` in task order, to run the per-partition tasks
        elsewhere (``subsetlm.distributed.ray_backend.ray_executor``); ``None`` = local processes.
        The result does not depend on it.
    merge_factor : 0 = none; >= 1 = GreeDi: each partition picks ``merge_factor`` × its share,
        then one weighted facility-location greedy over the union of the winners picks the
        final ``budget`` (:mod:`subsetlm.select.greedi`); objective and certificate are the
        merge round's.

    Returns
    -------
    PartitionedResult
    """
    t0 = time.perf_counter()
    if sampling not in ("topk", "taylor-softmax"):
        raise ValueError(f"sampling={sampling!r}; expected 'topk' or 'taylor-softmax'")
    if kernel not in ("sparse", "dense"):
        raise ValueError(f"kernel={kernel!r}; expected 'sparse' or 'dense'")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise ValueError(f"n_jobs={n_jobs!r}; expected an int >= 1")
    builder: Callable | None = None
    source: Any = None
    X = X_or_graph_builder
    if isinstance(X, (str, Path)):
        X = np.load(str(X), mmap_mode="r")
    if callable(X) and not hasattr(X, "shape"):
        builder = X
    else:
        if not hasattr(X, "shape") or len(X.shape) != 2:
            raise ValueError(f"X: expected an (n, d) array, memmap or .npy path; got "
                             f"{getattr(X, 'shape', type(X).__name__)}")
        if isinstance(X, np.memmap) and str(X.filename or "").endswith(".npy"):
            if np.load(X.filename, mmap_mode="r").shape == X.shape:  # the whole file, not a view
                source = ("npy", str(X.filename))
    lab = np.asarray(labels).reshape(-1)
    n = len(lab) if builder is not None else int(X.shape[0])
    if lab.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},) (one partition label per row); got {lab.shape}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 1 <= budget <= n:
        raise ValueError(f"budget={budget!r} must be an int in [1, n={n}]")
    uniq, inv = np.unique(lab, return_inverse=True)
    sizes = np.bincount(inv, minlength=len(uniq))
    budgets = split_budget(sizes, int(budget))
    if merge_factor and (merge_factor < 1 or builder is not None or sampling != "topk"):
        raise ValueError(f"merge_factor={merge_factor}: the GreeDi merge needs merge_factor >= 1, embeddings "
                         f"(not a graph builder) and sampling='topk'")
    final_budgets = budgets
    if merge_factor:
        budgets = np.minimum(sizes, np.ceil(merge_factor * budgets).astype(np.int64))
    members = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    tasks = []
    for p, lbl in enumerate(uniq):
        if budgets[p] == 0:
            continue
        rows = members[starts[p]:starts[p + 1]].astype(np.int64)
        task = {"label": int(lbl), "rows": rows, "budget": int(budgets[p]), "seed": _seed_for(seed, int(lbl)),
                "k": int(min(k, len(rows))), "kernel": kernel, "optimizer": optimizer, "epsilon": epsilon,
                "sampling": sampling, "cap": cap, "builder": builder,
                "normalize": normalize}
        if builder is None:
            if source is not None:
                task["source"] = source
            else:
                Xp = np.asarray(X[rows], dtype=np.float32)
                if not np.all(np.isfinite(Xp)):
                    bad = int(rows[np.argwhere(~np.isfinite(Xp))[0, 0]])
                    raise ValueError(f"X contains NaN or inf (first at row {bad}); drop or re-embed those rows")
                task["source"] = Xp
        tasks.append(task)
    if executor is not None:
        results = list(executor(_solve, tasks))
    elif n_jobs == 1 or len(tasks) <= 1:
        results = [_solve(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=min(n_jobs, len(tasks)), mp_context=get_context("spawn")) as ex:
            results = list(ex.map(_solve, tasks))  # map keeps task order: deterministic output
    by_label = {r["label"]: r for r in results}
    objectives = np.array([by_label[int(l)]["objective"] if int(l) in by_label else 0.0 for l in uniq])
    uppers = np.array([by_label[int(l)]["upper_bound"] if int(l) in by_label else 0.0 for l in uniq])
    cat = lambda key, dt: np.concatenate([np.asarray(r[key], dt) for r in results]) if results \
        else np.zeros(0, dt)  # noqa: E731
    indices = cat("indices", np.int64)
    parts = np.concatenate([np.full(len(r["indices"]), r["label"], np.int64) for r in results])
    res = PartitionedResult(indices, cat("gains", np.float64), parts, cat("weights", np.int64), uniq, budgets,
                            sizes, objectives, uppers, float(objectives.sum()), float(uppers.sum()),
                            int(sum(r["unassigned"] for r in results)) + int(sizes[budgets == 0].sum()),
                            float(sum(r["random_objective"] for r in results)),
                            {"seconds": time.perf_counter() - t0, "n_jobs": int(n_jobs),
                             "partition_seconds": [r["seconds"] for r in results],
                             "partition_rows": [r["rows"] for r in results],
                             "partition_peak_rss_mib": [r["peak_rss_mib"] for r in results]})
    if merge_factor:
        res = _merged(res, X, int(budget), final_budgets, k=k, optimizer=optimizer, seed=seed)
    logger.info("partitioned greedy: %d partitions, %d picks, f=%.6g, bound=%.6g, %.2fs", len(uniq),
                len(indices), res.objective, res.upper_bound, res.info["seconds"])
    return res


def _merged(first: PartitionedResult, X: Any, budget: int, final_budgets: np.ndarray, *, k: int, optimizer: str,
            seed: int) -> PartitionedResult:
    """Replace the round-1 result by the GreeDi merge over its winners."""
    from subsetlm.select.greedi import greedi_merge

    m = greedi_merge(X, first.indices, first.weights, budget, k=k, optimizer=optimizer, seed=seed)
    info = dict(first.info, merge={"union": int(len(first.indices)), "round1_objective": first.objective,
                                   "round1_upper_bound": first.upper_bound,
                                   "scope": "weighted facility location over the union of partition winners"})
    return PartitionedResult(m["indices"], m["gains"], first.partitions[m["positions"]],
                             np.rint(m["weights"]).astype(np.int64), first.labels, final_budgets, first.sizes,
                             first.objectives, first.upper_bounds, m["objective"], m["upper_bound"],
                             first.n_unassigned, m["random_objective"], info)
