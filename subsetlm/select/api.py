"""The selection stage end to end: an embedding store in, a subset file out.

Two public entry points:

* :func:`select_array` — library call on an in-memory (or memmapped) ``(n, d)`` array;
  returns a :class:`Selection` (indices in selection order, gains, weights, certificate).
* :func:`select` — the CLI's stage function: opens an :class:`~subsetlm.embed.EmbeddingStore`,
  builds or reuses its kNN graph / partitions, selects, and writes a subset file.

Example
-------
>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(500, 16)).astype("float32")
>>> X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> sel = select_array(X, budget=50, k=10)
>>> len(sel.indices), sel.certificate["upper_bound"] >= sel.certificate["objective"]
(50, True)
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FUNCTIONS = ("facility-location", "graph-cut", "log-det", "disparity-min", "disparity-sum", "fl-mi")
SAMPLINGS = ("topk", "taylor-softmax")
KERNELS = ("sparse", "dense")


@dataclass
class SelectConfig:
    """Configuration of ``subsetlm select`` (one field per CLI flag).

    budget : ``"0.25"`` (fraction), ``"5000"`` (count) or ``"tokens:2e6"`` (token budget,
        cost-aware greedy with each sample's token count as its cost).
    function : one of :data:`FUNCTIONS`; facility location runs on the sparse kNN graph;
        the others go through submodlib on a dense kernel and are size-limited.
    kernel : ``sparse`` (kNN graph, O(n·k) memory, default) or ``dense`` (exact
        similarities computed on the fly from the embeddings; O(n·d) memory, slower).
    partitions : 0 or 1 = one global problem; P > 1 = FAISS k-means partitions, budget
        split by partition size, solved in ``n_jobs`` processes.
    sampling : ``topk`` (greedy order) or ``taylor-softmax`` (INGENIOUS gain sampling).
    queries : for ``fl-mi``: a store directory or ``.npy`` file of query embeddings.
    source_proportions : optional ``{source: fraction}`` of the budget per corpus source.
    merge : with partitions: 0 = none, F >= 1 = GreeDi merge (each partition picks F × its
        share, a weighted facility-location greedy over the winners picks the final subset).
    backend : ``local`` (worker processes) or ``ray`` (one Ray task per partition, on the
        cluster at ``ray_address``: ``auto``, ``HOST:PORT``, or None for ``RAY_ADDRESS`` / a
        local instance); needs ``partitions > 1``. Same subset file either way.
    """

    store: str = ""
    out: str = ""
    budget: str = "0.25"
    function: str = "facility-location"
    optimizer: str = "lazy"
    sampling: str = "topk"
    kernel: str = "sparse"
    k: int = 32
    index_kind: str = "auto"
    partitions: int = 0
    n_jobs: int = 2
    epsilon: float = 0.01
    seed: int = 0
    queries: str | None = None
    source_proportions: dict[str, float] | None = None
    merge: float = 0.0
    backend: str = "local"
    ray_address: str | None = None
    force: bool = False

    def validate(self) -> None:
        if self.function not in FUNCTIONS:
            raise ValueError(f"function={self.function!r}; choose one of {', '.join(FUNCTIONS)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling={self.sampling!r}; choose one of {', '.join(SAMPLINGS)}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel={self.kernel!r}; choose one of {', '.join(KERNELS)}")
        if self.k < 1:
            raise ValueError(f"k={self.k}; the kNN graph needs k >= 1 (32 is a good default)")
        if self.partitions < 0:
            raise ValueError(f"partitions={self.partitions}; use 0 for none or a positive count")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"backend={self.backend!r}; choose local or ray")
        if self.backend == "ray" and (self.partitions <= 1 or self.function != "facility-location"):
            raise ValueError("the ray backend runs one task per partition of facility location: pass "
                             "--partitions P (P > 1), or use --backend local")
        if self.function == "fl-mi" and not self.queries:
            raise ValueError("function='fl-mi' selects samples that cover a query set: pass --queries STORE_OR_NPY")


@dataclass
class Selection:
    """What a selection produced (all arrays in selection order).

    indices : (b,) int64 row indices into the ground set
    gains : (b,) float64 marginal gains (or sampled gains)
    weights : (b,) float64 ground points each element represents (1.0 where undefined)
    partitions : (b,) int32 partition of each element (0 without partitions)
    certificate : {objective, upper_bound, ratio, random_objective}
    """

    indices: np.ndarray
    gains: np.ndarray
    weights: np.ndarray
    partitions: np.ndarray
    certificate: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


def select_array(
    X: np.ndarray,
    budget: int | float | str,
    *,
    k: int = 32,
    optimizer: str = "lazy",
    kernel: str = "sparse",
    sampling: str = "topk",
    partitions: int | np.ndarray = 0,
    n_tokens: np.ndarray | None = None,
    n_jobs: int = 2,
    epsilon: float = 0.01,
    seed: int = 0,
    index_kind: str = "auto",
    graph: Any = None,
    progress: bool = False,
    executor: Any = None,
    merge: float = 0.0,
) -> Selection:
    """Select a facility-location subset of the rows of ``X``.

    Parameters
    ----------
    X : (n, d) float16/float32 array or memmap, rows L2-normalised.
    budget : count, fraction in (0, 1], or ``"tokens:N"`` (needs ``n_tokens``).
    graph : a precomputed :class:`~subsetlm.index.KNNGraph` (skips the FAISS search).
    partitions : number of k-means partitions, or a precomputed ``(n,)`` label array.
    executor : where partitions are solved (see :func:`~.partitioned.partitioned_greedy`).

    Returns
    -------
    Selection
    """
    from subsetlm.select.budget import parse_budget

    n = int(X.shape[0])
    if n == 0:
        raise ValueError("the ground set is empty (0 samples); embed a non-empty corpus first")
    _check_finite(X)
    resolved = parse_budget(budget).resolve(n, n_tokens)
    count, cost_budget = _count_and_costs(resolved)
    labels = _labels(X, partitions, seed, progress)
    info: dict[str, Any] = {"n": n, "budget_count": count, "cost_budget": cost_budget}

    if labels is not None and len(np.unique(labels)) > 1:
        return _select_partitioned(X, labels, count, k=k, optimizer=optimizer, sampling=sampling,
                                   n_jobs=n_jobs, epsilon=epsilon, seed=seed, progress=progress, info=info,
                                   executor=executor, merge=merge)

    fn = _facility_location(X, kernel=kernel, k=k, index_kind=index_kind, graph=graph, seed=seed, progress=progress)
    costs = None if cost_budget is None else np.asarray(n_tokens, dtype=np.float64)
    if sampling == "taylor-softmax":
        from subsetlm.select.greedy import greedy
        from subsetlm.select.sampling import taylor_softmax_sample

        full = greedy(fn, n if count == n else min(n, max(count, 2 * count)), optimizer=optimizer, seed=seed,
                      epsilon=epsilon, progress=progress)
        pick = np.sort(taylor_softmax_sample(full.gains, count, seed))
        indices, gains = full.order[pick], full.gains[pick]
        objective = float(fn.evaluate(indices))
        upper = float(full.upper_bound)
    else:
        from subsetlm.select.greedy import greedy

        res = greedy(fn, count, optimizer=optimizer, costs=costs, cost_budget=cost_budget, seed=seed,
                     epsilon=epsilon, progress=progress) if costs is not None else \
            greedy(fn, count, optimizer=optimizer, seed=seed, epsilon=epsilon, progress=progress)
        indices, gains = res.order, res.gains
        objective, upper = float(res.objective), float(res.upper_bound)
        info["n_evaluations"] = int(res.n_evaluations)
    weights = np.asarray(fn.assign(indices), dtype=np.float64)
    cert = certificate(fn, indices, objective, upper, seed)
    return Selection(np.asarray(indices, np.int64), np.asarray(gains, np.float64), weights,
                     np.zeros(len(indices), np.int32), cert, info)


def certificate(fn: Any, indices: np.ndarray, objective: float, upper_bound: float, seed: int) -> dict[str, float]:
    """The certificate stored in every subset manifest.

    ``upper_bound`` is the greedy run's a-posteriori bound on the optimum
    (OPT <= f(S_t) + sum of the b largest marginal gains w.r.t. S_t), so
    ``ratio = objective / upper_bound`` is a proven lower bound on how close the subset
    is to optimal. ``random_objective`` is f of a seeded random subset of the same size.
    """
    from subsetlm.select.baselines import random_subset

    rand = random_subset(fn.n, len(indices), seed)
    random_objective = float(fn.evaluate(rand))
    upper = max(float(upper_bound), float(objective))
    return {
        "objective": float(objective),
        "upper_bound": upper,
        "ratio": float(objective / upper) if upper > 0 else 1.0,
        "random_objective": random_objective,
        "lift_over_random": float(objective / random_objective) if random_objective > 0 else float("inf"),
    }


def select(cfg: SelectConfig, progress: bool = False) -> Path:
    """Run ``subsetlm select``: store -> (kNN graph, partitions) -> subset file. Returns its path."""
    from subsetlm import _io
    from subsetlm.embed import EmbeddingStore
    from subsetlm.subsets import read_subset, write_subset

    cfg.validate()
    if not cfg.out:
        raise ValueError("no output given: pass --out SUBSET_DIR")
    out = Path(cfg.out)
    store = EmbeddingStore.open(cfg.store)
    config = asdict(cfg)
    for volatile in ("force", "out", "n_jobs", "backend", "ray_address"):  # where and how, not what: same manifests
        config.pop(volatile)
    if not cfg.merge:  # added after schema 1 subsets were written: keep their configs comparable
        config.pop("merge")
    if out.exists() and not cfg.force:
        if _io.is_complete(out):
            existing = read_subset(out, store=store)
            if existing.manifest.get("config") == _portable(config):
                logger.info("subset %s is complete and matches this config; skipping (use --force to redo)", out)
                return out
        raise FileExistsError(f"{out} already exists with a different selection; pass --force to replace it")

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if cfg.function == "facility-location":
        from subsetlm.distributed import executor_for

        graph = None
        if cfg.kernel == "sparse" and not cfg.source_proportions and cfg.partitions <= 1:
            # one global problem: the store's cached graph (partitions build their own, smaller ones)
            from subsetlm.index import IndexConfig, build_store_graph, load_store_graph

            t = time.perf_counter()
            build_store_graph(store, IndexConfig(k=cfg.k, kind=cfg.index_kind, seed=cfg.seed), progress=progress)
            graph = load_store_graph(store, cfg.k)
            timings["knn_graph_s"] = time.perf_counter() - t
        labels: int | np.ndarray = 0
        if cfg.source_proportions:
            labels = _source_labels(store.sources, cfg.source_proportions)
        elif cfg.partitions > 1:
            from subsetlm.index import build_store_partitions

            t = time.perf_counter()
            labels = build_store_partitions(store, cfg.partitions, seed=cfg.seed,
                                            executor=executor_for(cfg.backend, cfg.ray_address))
            timings["partitions_s"] = time.perf_counter() - t
        t = time.perf_counter()
        sel = select_array(store.embeddings, cfg.budget, k=cfg.k, optimizer=cfg.optimizer, kernel=cfg.kernel,
                           sampling=cfg.sampling, partitions=labels, n_tokens=store.n_tokens, n_jobs=cfg.n_jobs,
                           epsilon=cfg.epsilon, seed=cfg.seed, index_kind=cfg.index_kind, graph=graph,
                           progress=progress, executor=executor_for(cfg.backend, cfg.ray_address), merge=cfg.merge)
        timings["select_s"] = time.perf_counter() - t
    else:
        t = time.perf_counter()
        sel = _select_submodlib(store, cfg)
        timings["select_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    manifest = {
        "config": _portable(config),
        "seed": cfg.seed,
        "function": cfg.function,
        "certificate": sel.certificate,
        "selection": {k: v for k, v in sel.info.items() if not isinstance(v, float) or np.isfinite(v)},
    }
    path = write_subset(out, store=store, indices=sel.indices, gains=sel.gains, weights=sel.weights,
                        partitions=sel.partitions, manifest=manifest, stats={"timings": timings},
                        overwrite=cfg.force)
    c = sel.certificate
    logger.info("selected %d of %d samples: f(S)=%.4g, bound ratio %.4f, %.2fx random, in %.1fs -> %s",
                len(sel.indices), store.n, c["objective"], c["ratio"], c.get("lift_over_random", float("nan")),
                timings["total_s"], path)
    return path


# ---------------------------------------------------------------------------- helpers

def _portable(config: dict[str, Any]) -> dict[str, Any]:
    """JSON round trip so configs compare equal to what a manifest holds."""
    import json

    from subsetlm._io import dumps_json

    return json.loads(dumps_json(config))


def _check_finite(X: np.ndarray, block: int = 65536) -> None:
    if X.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (n, d) array, got shape {X.shape}")
    for start in range(0, X.shape[0], block):
        chunk = np.asarray(X[start:start + block])
        if not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise ValueError(f"embedding row {bad} contains NaN or inf; re-embed the corpus (subsetlm embed --force)")


def _count_and_costs(resolved: Any) -> tuple[int, float | None]:
    """(count cap, token budget or None) from a ResolvedBudget."""
    count = int(getattr(resolved, "count"))
    tokens = getattr(resolved, "tokens", None)
    return count, (float(tokens) if tokens is not None else None)


def _labels(X: np.ndarray, partitions: int | np.ndarray, seed: int, progress: bool) -> np.ndarray | None:
    if isinstance(partitions, np.ndarray):
        if partitions.shape != (X.shape[0],):
            raise ValueError(f"partition labels have shape {partitions.shape}, expected ({X.shape[0]},)")
        return partitions.astype(np.int32)
    if int(partitions) <= 1:
        return None
    from subsetlm.index import kmeans_partitions

    return kmeans_partitions(X, int(partitions), seed=seed, progress=progress)


def _facility_location(X, *, kernel, k, index_kind, graph, seed, progress):
    from subsetlm.select.facility_location import DenseFacilityLocation, SparseFacilityLocation

    if kernel == "dense":
        return DenseFacilityLocation(np.asarray(X, dtype=np.float32))
    if graph is None:
        from subsetlm.index import IndexConfig, knn_graph

        graph = knn_graph(X, k=min(k, X.shape[0]), cfg=IndexConfig(k=min(k, X.shape[0]), kind=index_kind, seed=seed),
                          progress=progress)
    return SparseFacilityLocation(graph)


def _select_partitioned(X, labels, count, *, k, optimizer, sampling, n_jobs, epsilon, seed, progress, info,
                        executor=None, merge=0.0):
    from subsetlm.select.partitioned import partitioned_greedy

    res = partitioned_greedy(X, labels, count, k=k, optimizer=optimizer, n_jobs=n_jobs, seed=seed,
                             sampling=sampling, epsilon=epsilon, progress=progress, executor=executor,
                             merge_factor=merge)
    info["n_partitions"] = int(len(np.unique(labels)))
    cert = {
        "objective": float(res.objective),
        "upper_bound": float(max(res.upper_bound, res.objective)),
        "ratio": float(res.objective / res.upper_bound) if res.upper_bound > 0 else 1.0,
        "random_objective": getattr(res, "random_objective", None),
        "scope": res.info["merge"]["scope"] if "merge" in res.info else
        "sum over partitions of per-partition facility location",
    }
    if "merge" in res.info:
        info["merge"] = {k: v for k, v in res.info["merge"].items() if k != "scope"}
    weights = np.asarray(getattr(res, "weights", np.ones(len(res.indices))), dtype=np.float64)
    return Selection(np.asarray(res.indices, np.int64), np.asarray(res.gains, np.float64), weights,
                     np.asarray(res.partitions, np.int32), cert, info)


def _source_labels(sources: np.ndarray, proportions: dict[str, float]) -> np.ndarray:
    known = sorted(set(map(str, np.unique(sources))))
    unknown = sorted(set(proportions) - set(known))
    if unknown:
        raise ValueError(f"source_proportions names unknown sources {unknown}; the store has {known}")
    code = {s: i for i, s in enumerate(known)}
    return np.array([code[str(s)] for s in sources], dtype=np.int32)


def _select_submodlib(store, cfg: SelectConfig) -> Selection:
    from subsetlm.select.budget import parse_budget
    from subsetlm.select.submodlib_functions import submodlib_select

    n = store.n
    count, _ = _count_and_costs(parse_budget(cfg.budget).resolve(n, None))
    X = store.block(0, n)
    queries = None
    if cfg.function == "fl-mi":
        queries = _load_queries(cfg.queries)
    res = submodlib_select(cfg.function, X, count, queries=queries, seed=cfg.seed)
    cert = {"objective": float(res.objective), "upper_bound": None, "ratio": None,
            "random_objective": None,
            "note": f"{cfg.function} is not monotone-submodular facility location; no greedy bound recorded"}
    b = len(res.order)
    return Selection(np.asarray(res.order, np.int64), np.asarray(res.gains, np.float64), np.ones(b),
                     np.zeros(b, np.int32), cert, {"n": n, "budget_count": count})


def _load_queries(spec: str) -> np.ndarray:
    p = Path(spec)
    if p.suffix == ".npy":
        return np.load(p).astype(np.float32)
    from subsetlm.embed import EmbeddingStore

    qs = EmbeddingStore.open(p)
    return qs.block(0, qs.n)
