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
location (each point is covered only by elements of its own partition). A selector's
coverage weights and quality scores are given for all n rows and restricted to each
partition's rows (the sum of the per-partition weighted objectives is the weighted
objective of the union); the GreeDi merge weights each winner by the coverage weight it
carries (the sum of ``w_i`` over the points it represents) and keeps the quality term.

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
    objective, upper_bound : sums over partitions (``upper_bound`` None when the objective
        has no certificate, e.g. submodlib's functions).
    n_unassigned : points whose kNN list holds no selected element.
    random_objective : sum over partitions of f(a seeded random subset of the same size).
    coverage_mass : (b,) float64 sum of the coverage weights of the points each element
        represents in its partition (None without coverage weights): the GreeDi merge's weights.
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
    upper_bound: float | None
    n_unassigned: int = 0
    random_objective: float | None = None
    info: dict = field(default_factory=dict)
    coverage_mass: np.ndarray | None = None

    @property
    def order(self) -> np.ndarray:
        """Alias of ``indices``."""
        return self.indices

    @property
    def ratio(self) -> float | None:
        if self.upper_bound is None:
            return None
        return float(self.objective / self.upper_bound) if self.upper_bound > 0 else 1.0


def split_budget(sizes: Any, budget: int) -> np.ndarray:
    """Largest-remainder split of ``budget`` proportional to ``sizes``; ties to the lower index.

    >>> split_budget([5, 3, 2], 5).tolist()
    [3, 1, 1]
    """
    from subsetlm.select.budget import largest_remainder

    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not 0 <= budget <= total:
        raise ValueError(f"budget={budget} must lie in [0, {total}] (the total partition size)")
    return largest_remainder(sizes, int(budget))  # quota_p = budget * size_p / total <= size_p


def _seed_for(seed: int, label: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(label) & 0xFFFFFFFF]).generate_state(1)[0])


def _load_rows(source: Any, rows: np.ndarray) -> np.ndarray:
    if isinstance(source, tuple) and source[0] == "npy":
        X = np.load(source[1], mmap_mode="r")
        return np.asarray(X[rows], dtype=np.float32)
    return np.asarray(source, dtype=np.float32)


def _solve(task: dict) -> dict:
    """Solve one partition with the task's selector (runs in a worker process)."""
    t0 = time.perf_counter()
    rows, con, sel = task["rows"], task["constraint"], task["selector"]
    builder = task.get("builder")
    if builder is not None:
        sel._fit(None, con, graph=builder(rows), worker=True)
    else:
        sel._fit(_load_rows(task["source"], rows), con, worker=True)
    m, local = len(rows), sel.indices_
    if con.kind == "count":
        rand = np.random.default_rng(sel.seed).choice(m, len(local), replace=False)
    else:  # a random subset under the partition's own token share
        from subsetlm.select.selector import random_feasible

        rand = random_feasible(m, len(local), sel.seed, con)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MiB (Linux reports KiB)
    rep = np.where(sel.representative_ >= 0, rows[np.maximum(sel.representative_, 0)], -1)
    extra = {}
    if sel.coverage_weights is not None:  # the weight each pick carries: Σ w_i over the points it represents
        pos = np.full(m, -1, np.int64)
        pos[local] = np.arange(len(local))
        has = sel.representative_ >= 0
        extra["mass"] = np.bincount(pos[sel.representative_[has]], minlength=len(local),
                                    weights=np.asarray(sel.coverage_weights, np.float64)[has])
    return {**extra, "random_objective": float(sel.objective_fn_.evaluate(rand)), "label": task["label"],
            "rep": rep, "sim": sel.similarity_,
            "indices": rows[local], "gains": sel.gains_, "weights": np.rint(sel.weights_).astype(np.int64),
            "unassigned": sel.n_unassigned_, "objective": sel.objective_, "upper_bound": sel.upper_bound_,
            "seconds": time.perf_counter() - t0, "peak_rss_mib": peak, "rows": m}


class Partitioned:
    """Wrapper: one selector per partition, the budget split by partition size, optional GreeDi merge.

    Parameters
    ----------
    selector : any :class:`~subsetlm.select.selector.Selector` (its budget is the total).
    partitions : (n,) labels, or a number P > 1 of FAISS k-means partitions (seeded).
    merge : 0 = none; F >= 1 = GreeDi: each partition picks F × its share, then one round
        over the union of the winners picks the final budget (weighted facility location for
        facility location, :mod:`~.greedi`; the selector itself for other objectives).
    n_jobs : worker processes (1 = this process); the result does not depend on it.
    executor : ``run(func, tasks) -> results`` (``subsetlm.distributed.executor_for``); None = local.

    Budgets: a count is split with :func:`split_budget` (largest remainder); a token budget
    gives each partition the share of the cap proportional to its tokens (each partition then
    runs the cost-aware greedy under its share, so the total stays under the cap); per-source
    quotas are refused (they constrain one global problem).

    Attributes after :meth:`fit`: ``result_`` (:class:`PartitionedResult`) and, as for a
    selector, ``indices_``, ``gains_``, ``weights_``, ``partitions_``, ``certificate_``, ``info_``.
    """

    def __init__(self, selector: Any, *, partitions: Any = 0, merge: float = 0.0, n_jobs: int = 2,
                 executor: Callable | None = None):
        self.selector, self.partitions, self.merge, self.n_jobs, self.executor = \
            selector, partitions, merge, n_jobs, executor

    def check(self, constraint_kind: str = "count", *, queries_given: bool | None = None,
              weighting_given: bool | None = None) -> None:
        """Validate the wrapper's parameters with the selector's (ValueError naming the choices)."""
        self.selector.check(constraint_kind, queries_given=queries_given, weighting_given=weighting_given)
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, (int, np.integer)) or self.n_jobs < 1:
            raise ValueError(f"n_jobs={self.n_jobs!r}; expected an int >= 1")
        if self.merge and (self.merge < 1 or self.selector.sampling != "topk"):
            raise ValueError(f"merge_factor={self.merge}: the GreeDi merge needs merge_factor >= 1 and "
                             f"sampling='topk' (got {self.selector.sampling!r})")
        if constraint_kind == "quotas":
            raise ValueError("per-source proportions are quotas on one global problem; they cannot be combined "
                             "with partitions (drop --partitions or --source-proportions)")
        if self.merge and constraint_kind != "count":
            raise ValueError(f"the GreeDi merge (merge={self.merge}) takes a count or fraction budget; a token budget "
                             "is split over the partitions without a merge (drop --merge)")

    def fit(self, X: Any, *, n_tokens: np.ndarray | None = None, sources: np.ndarray | None = None,
            graph_builder: Callable | None = None, n: int | None = None) -> "Partitioned":
        """Select from the rows of ``X`` ((n, d) array, memmap or ``.npy`` path), or from
        ``graph_builder(rows) -> KNNGraph`` (local indexing) with ``X=None`` and ``n`` given."""
        from subsetlm.select.facility_location import check_nonnegative
        from subsetlm.select.selector import _check_X

        t0 = time.perf_counter()
        if isinstance(X, (str, Path)):
            X = np.load(str(X), mmap_mode="r")
        if X is None and graph_builder is None:
            raise ValueError("X: expected an (n, d) array, memmap or .npy path; got None")
        if X is not None and (not hasattr(X, "shape") or len(X.shape) != 2):
            raise ValueError(f"X: expected an (n, d) array, memmap or .npy path; got "
                             f"{getattr(X, 'shape', type(X).__name__)}")
        n = int(X.shape[0]) if X is not None else int(n if n is not None else len(np.asarray(self.partitions)))
        labels = self._labels(X, n)
        con = self.selector.constraint(n, n_tokens=n_tokens, sources=sources)
        self.check(con.kind)
        for name in ("coverage_weights", "quality"):  # given for all n rows, restricted per partition
            check_nonnegative(getattr(self.selector, name), n, name)
        if X is not None:
            _check_X(X)
        uniq, inv = np.unique(labels, return_inverse=True)
        sizes = np.bincount(inv, minlength=len(uniq))
        members = np.argsort(inv, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        parts = [members[starts[p]:starts[p + 1]].astype(np.int64) for p in range(len(uniq))]
        subs, final_budgets = self._split(con, parts, sizes)
        source = None
        if isinstance(X, np.memmap) and str(X.filename or "").endswith(".npy"):
            if np.load(X.filename, mmap_mode="r").shape == X.shape:  # the whole file, not a view
                source = ("npy", str(X.filename))
        tasks = []
        for p, lbl in enumerate(uniq):
            if subs[p] is None:
                continue
            rows = parts[p]
            sel = self.selector.set_params(seed=_seed_for(self.selector.seed, int(lbl)), progress=False,
                                           k=int(min(self.selector.k, len(rows))),
                                           **_weighting_of(self.selector, rows))
            task = {"label": int(lbl), "rows": rows, "constraint": subs[p], "selector": sel, "builder": graph_builder}
            if graph_builder is None:
                task["source"] = source if source is not None else np.asarray(X[rows], dtype=np.float32)
            tasks.append(task)
        results = self._run(tasks)
        res = self._result(results, uniq, sizes, final_budgets, subs, t0)
        rep, sim = np.full(n, -1, np.int64), np.full(n, np.nan, np.float32)
        for task, r in zip(tasks, results):
            rep[task["rows"]], sim[task["rows"]] = r["rep"], r["sim"]
        if self.merge:
            res = _merged(res, X, int(con.count), final_budgets, self.selector)
            rep, sim = _merged_representatives(X, rep, res.indices)
            if res.coverage_mass is not None:  # the merge weighted by mass: count the points from the final reps
                from subsetlm.select.facility_location import assignment_of

                res.weights = assignment_of(res.indices, rep)[0]
        self.result_ = res
        self.indices_, self.gains_ = res.indices, res.gains
        self.weights_, self.partitions_ = res.weights.astype(np.float64), res.partitions
        self.representative_, self.similarity_ = rep, sim
        self.certificate_ = _certificate(res)
        self.info_ = {"n": n, "constraint": con.describe(), "n_partitions": int(len(uniq))}
        if "merge" in res.info:
            self.info_["merge"] = {k: v for k, v in res.info["merge"].items() if k != "scope"}
        logger.info("partitioned selection: %d partitions, %d picks, f=%.6g, bound=%s, %.2fs", len(uniq),
                    len(res.indices), res.objective, res.upper_bound, res.info["seconds"])
        return self

    def _labels(self, X: Any, n: int) -> np.ndarray:
        if isinstance(self.partitions, (int, np.integer)) and not isinstance(self.partitions, bool):
            if int(self.partitions) <= 1:
                return np.zeros(n, np.int64)
            from subsetlm.index import kmeans_partitions

            return kmeans_partitions(X, int(self.partitions), seed=self.selector.seed)
        lab = np.asarray(self.partitions).reshape(-1)
        if lab.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},) (one partition label per row); got {lab.shape}")
        return lab

    def _split(self, con: Any, parts: list[np.ndarray], sizes: np.ndarray) -> tuple[list, np.ndarray]:
        """Each partition's constraint (None: nothing to pick there) and its final budget."""
        from subsetlm.select.budget import largest_remainder
        from subsetlm.select.constraints import Count

        if con.kind == "knapsack":
            totals = np.array([con.costs[r].sum() for r in parts])
            shares = largest_remainder(totals, int(con.cap))
            subs = [con.restrict(r, s) if s > 0 else None for r, s in zip(parts, shares)]
            subs = [c if c is not None and c.count > 0 else None for c in subs]
            return subs, np.array([0 if c is None else c.count for c in subs], np.int64)
        budgets = split_budget(sizes, int(con.count))
        first = np.minimum(sizes, np.ceil(self.merge * budgets).astype(np.int64)) if self.merge else budgets
        return [Count(int(b)) if b > 0 else None for b in first], budgets

    def _run(self, tasks: list[dict]) -> list[dict]:
        if self.executor is not None:
            return list(self.executor(_solve, tasks))
        if self.n_jobs == 1 or len(tasks) <= 1:
            return [_solve(t) for t in tasks]
        with ProcessPoolExecutor(max_workers=min(self.n_jobs, len(tasks)), mp_context=get_context("spawn")) as ex:
            return list(ex.map(_solve, tasks))  # map keeps task order: deterministic output

    def _result(self, results: list[dict], uniq: np.ndarray, sizes: np.ndarray, final_budgets: np.ndarray,
                subs: list, t0: float) -> PartitionedResult:
        by_label = {r["label"]: r for r in results}
        objectives = np.array([by_label[int(lbl)]["objective"] if int(lbl) in by_label else 0.0 for lbl in uniq])
        ub = [by_label[int(lbl)]["upper_bound"] if int(lbl) in by_label else 0.0 for lbl in uniq]
        uppers = np.array([np.nan if u is None else u for u in ub], dtype=np.float64)

        def cat(key: str, dt: Any) -> np.ndarray:
            return np.concatenate([np.asarray(r[key], dt) for r in results]) if results else np.zeros(0, dt)

        budgets = np.array([0 if c is None else c.count for c in subs], np.int64)
        parts = np.concatenate([np.full(len(r["indices"]), r["label"], np.int64) for r in results]) \
            if results else np.zeros(0, np.int64)
        upper = float(uppers.sum()) if not np.isnan(uppers).any() else None
        return PartitionedResult(cat("indices", np.int64), cat("gains", np.float64), parts, cat("weights", np.int64),
                                 uniq, budgets, sizes, objectives, uppers,
                                 float(objectives.sum()), upper,
                                 int(sum(r["unassigned"] for r in results)) + int(sizes[budgets == 0].sum()),
                                 float(sum(r["random_objective"] for r in results)),
                                 {"seconds": time.perf_counter() - t0, "n_jobs": int(self.n_jobs),
                                  "partition_seconds": [r["seconds"] for r in results],
                                  "partition_rows": [r["rows"] for r in results],
                                  "partition_peak_rss_mib": [r["peak_rss_mib"] for r in results]},
                                 cat("mass", np.float64) if results and "mass" in results[0] else None)


def _weighting_of(selector: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The selector's coverage weights / quality scores restricted to ``rows`` (only those it has)."""
    return {name: np.asarray(getattr(selector, name), np.float64)[rows]
            for name in ("coverage_weights", "quality") if getattr(selector, name, None) is not None}


def _merged_representatives(X: Any, rep1: np.ndarray, final: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """After a GreeDi merge: each point's round-1 representative's most similar final pick, and the
    point's cosine to it (computed, not composed)."""
    from subsetlm.select._dedup_kernels import row_cosines
    from subsetlm.select.selector import nearest_selected

    final = np.asarray(final, dtype=np.int64)
    winners = np.unique(rep1[rep1 >= 0])
    via, _ = nearest_selected(X[winners], np.searchsorted(winners, final[np.isin(final, winners)]))
    hop = np.full(int(rep1.max()) + 1 if rep1.size and rep1.max() >= 0 else 1, -1, np.int64)
    hop[winners] = winners[via]
    rep = np.where(rep1 >= 0, hop[np.maximum(rep1, 0)], -1)
    sim = np.full(len(rep1), np.nan, np.float32)
    has = np.flatnonzero(rep >= 0)
    sim[has] = row_cosines(X, has, rep[has])
    rep[final], sim[final] = final, 1.0
    return rep, sim


def _certificate(res: PartitionedResult) -> dict[str, Any]:
    ub = res.upper_bound
    return {"objective": float(res.objective),
            "upper_bound": None if ub is None else float(max(ub, res.objective)),
            "ratio": None if ub is None else (float(res.objective / ub) if ub > 0 else 1.0),
            "random_objective": res.random_objective,
            "scope": res.info["merge"]["scope"] if "merge" in res.info else
            "sum over partitions of per-partition facility location"}


def partitioned_greedy(X_or_graph_builder: Any, labels: Any, budget: int, *, k: int = 32,
                       optimizer: str = "lazy", n_jobs: int = 2, seed: int = 0, sampling: str = "topk",
                       epsilon: float = 0.01, kernel: str = "sparse", cap: int | None = None,
                       normalize: str = "none", progress: bool = False,
                       executor: Callable | None = None, merge_factor: float = 0.0) -> PartitionedResult:
    """Facility location per partition, budget split by partition size, solved in parallel.

    Shorthand for ``Partitioned(Selector(budget=budget, ...), partitions=labels, ...).fit(X).result_``.

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
    merge_factor : 0 = none; >= 1 = GreeDi: each partition picks ``merge_factor`` × its
        share, then one weighted facility-location greedy over the union of the winners picks the
        final ``budget`` (:mod:`subsetlm.select.greedi`); objective and certificate are the
        merge round's.

    Returns
    -------
    PartitionedResult
    """
    from subsetlm.select.selector import Selector

    builder = X_or_graph_builder if callable(X_or_graph_builder) and not hasattr(X_or_graph_builder, "shape") \
        else None
    X = None if builder is not None else X_or_graph_builder
    n = len(np.asarray(labels).reshape(-1)) if builder is not None else None
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"budget={budget!r} must be an int in [1, n]")
    if builder is not None and merge_factor:
        raise ValueError(f"merge_factor={merge_factor}: the GreeDi merge needs embeddings, not a graph builder")
    sel = Selector(budget=int(budget), k=k, optimizer=optimizer, seed=seed, sampling=sampling, epsilon=epsilon,
                   kernel=kernel, pool=cap, normalize=normalize, progress=progress)
    wrapper = Partitioned(sel, partitions=np.asarray(labels).reshape(-1), merge=merge_factor, n_jobs=n_jobs,
                          executor=executor)
    return wrapper.fit(X, graph_builder=builder, n=n).result_


def _merged(first: PartitionedResult, X: Any, budget: int, final_budgets: np.ndarray, selector: Any
            ) -> PartitionedResult:
    """Replace the round-1 result by the GreeDi merge over its winners."""
    if selector.objective == "facility-location":
        from subsetlm.select.greedi import greedi_merge

        # with coverage weights a winner weighs the total weight it represents, not the count
        mass = first.weights if first.coverage_mass is None else first.coverage_mass
        kw = {}
        if selector.quality is not None and selector.quality_weight:  # the quality term of the winners
            kw["modular"] = float(selector.quality_weight) * np.asarray(selector.quality, np.float64)[first.indices]
        m = greedi_merge(X, first.indices, mass, budget, k=selector.k, optimizer=selector.optimizer,
                         seed=selector.seed, **kw)
        scope = "weighted facility location over the union of partition winners"
    else:  # the selector's own objective over the union (GreeDi's original merge)
        from subsetlm.select.constraints import Count

        union = first.indices
        sel = selector.set_params(progress=False, k=int(min(selector.k, len(union))),
                                  **_weighting_of(selector, np.sort(union)))
        sel._fit(np.asarray(X[np.sort(union)], dtype=np.float32), Count(budget))
        pos = np.argsort(union)[sel.indices_]
        m = {"indices": union[pos], "positions": pos, "gains": sel.gains_, "weights": sel.weights_,
             "objective": sel.objective_, "upper_bound": sel.upper_bound_, "random_objective": sel.random_objective_}
        scope = f"{selector.objective} over the union of partition winners"
    info = dict(first.info, merge={"union": int(len(first.indices)), "round1_objective": first.objective,
                                   "round1_upper_bound": first.upper_bound, "scope": scope})
    ub = m["upper_bound"]
    return PartitionedResult(m["indices"], m["gains"], first.partitions[m["positions"]],
                             np.rint(m["weights"]).astype(np.int64), first.labels, final_budgets, first.sizes,
                             first.objectives, first.upper_bounds, m["objective"], ub,
                             first.n_unassigned, m["random_objective"], info,
                             np.asarray(m["weights"], np.float64) if first.coverage_mass is not None else None)
