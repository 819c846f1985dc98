"""``select_array``: a selection on an in-memory (or memmapped) ``(n, d)`` array, partitioned when asked.

The array-level entry point of the selection stage (:mod:`subsetlm.select.api` is the
store-level stage): builds a :class:`~subsetlm.select.selector.Selector`, wraps it in
:class:`~subsetlm.select.partitioned.Partitioned` when partitions are asked for, and
returns a :class:`Selection`.

Example
-------
>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(500, 16)).astype("float32")
>>> X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> sel = select_array(X, budget=50, k=10)
>>> len(sel.indices), sel.certificate["upper_bound"] >= sel.certificate["objective"]
(50, True)
>>> sub = select_array(X, budget=10, k=10, rows=np.arange(0, 500, 2))   # only among the even rows
>>> bool((sub.indices % 2 == 0).all()), int(sub.representative[1])
(True, -1)
>>> q = np.random.default_rng(1).uniform(size=500)   # quality scores >= 0
>>> good = select_array(X, budget=50, k=10, quality=q, quality_weight=5.0)
>>> bool(q[good.indices].mean() > q[sel.indices].mean())
True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from subsetlm.select.selector import Selector

__all__ = ["Selection", "select_array"]


@dataclass
class Selection:
    """What a selection produced (all arrays in selection order).

    indices : (b,) int64 row indices into the ground set
    gains : (b,) float64 marginal gains (or sampled gains)
    weights : (b,) float64 ground points each element represents (1.0 where undefined)
    partitions : (b,) int32 partition of each element (0 without partitions)
    certificate : {objective, upper_bound, ratio, random_objective}
    representative, similarity : (n,) per ground-set row: its representative in the subset
        (-1 when none) and their similarity (:mod:`subsetlm.subsets.assignment`)
    """

    indices: np.ndarray
    gains: np.ndarray
    weights: np.ndarray
    partitions: np.ndarray
    certificate: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)
    representative: np.ndarray | None = None
    similarity: np.ndarray | None = None


def select_array(
    X: np.ndarray,
    budget: int | float | str,
    *,
    k: int | None = None,
    optimizer: str = "lazy",
    kernel: str = "auto",
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
    function: str = "facility-location",
    queries: np.ndarray | None = None,
    sources: np.ndarray | None = None,
    source_proportions: dict[str, float] | None = None,
    rows: np.ndarray | None = None,
    coverage_weights: np.ndarray | None = None,
    quality: np.ndarray | None = None,
    quality_weight: float = 0.0,
) -> Selection:
    """Select a subset of the rows of ``X``: a :class:`~.selector.Selector`, partitioned when asked.

    Every option is honoured or refused (``ValueError`` naming the valid choices); see
    :mod:`subsetlm.select.selector` for what combines with what.

    Parameters
    ----------
    X : (n, d) float16/float32 array or memmap, rows L2-normalised.
    budget : count, fraction in (0, 1], ``"25%"`` or ``"tokens:N"`` (needs ``n_tokens``).
    function : the objective (default facility location; :data:`FUNCTIONS`).
    k : neighbours per row of the kNN graph built for sparse kernels (default 32); with
        ``graph=`` it must be the graph's own k (default: the graph's).
    graph : a precomputed :class:`~subsetlm.index.KNNGraph` of X (skips the FAISS search;
        one global problem only): ``graph.n`` must equal ``len(X)`` (or X None) and its
        neighbours must be rows of X.
    partitions : 0 or 1 = none, P > 1 k-means partitions, or a precomputed ``(n,)`` label array.
    executor : where partitions are solved (see :class:`~.partitioned.Partitioned`).
    queries : (q, d) query embeddings for ``fl-mi``.
    sources, source_proportions : per-source quotas (``{source: share}`` of the budget).
    rows : select only among these rows of ``X`` (e.g. the rows a dedup subset kept): they are
        the ground set, so a fraction budget is a fraction of them; ``n_tokens``, ``sources``
        and ``partitions`` labels are given for all of ``X`` and restricted here; ``indices``
        are rows of ``X``; ``representative`` is -1 outside ``rows``.
    coverage_weights : (n,) floats >= 0: each row's weight in the coverage term (weighted
        facility location; e.g. ``1 / |group|``, or a duplicate group's size for its kept member).
    quality, quality_weight : (n,) scores ``q >= 0`` and ``λ >= 0`` (default 0, off): adds
        ``λ Σ_{j∈S} q_j`` to the objective, f(S) = Σ_i w_i max_{j∈S} max(s_ij, 0) + λ Σ_{j∈S} q_j.
        Like ``n_tokens``, these are given for all of ``X`` and restricted to ``rows`` and partitions.

    Returns
    -------
    Selection
    """
    from subsetlm.select.partitioned import Partitioned

    k = _check_graph(X, graph, k)
    _check_partitions(X, partitions)
    if rows is not None:
        return _within_rows(X, budget, np.asarray(rows), graph=graph, n_tokens=n_tokens, sources=sources,
                            partitions=partitions, k=k, optimizer=optimizer, kernel=kernel, sampling=sampling,
                            n_jobs=n_jobs, epsilon=epsilon, seed=seed, index_kind=index_kind, progress=progress,
                            executor=executor, merge=merge, function=function, queries=queries,
                            source_proportions=source_proportions, coverage_weights=coverage_weights,
                            quality=quality, quality_weight=quality_weight)
    sel = Selector(budget=budget, objective=function, kernel=kernel, optimizer=optimizer, sampling=sampling, k=k,
                   index_kind=index_kind, epsilon=epsilon, seed=seed, source_proportions=source_proportions,
                   queries=queries, progress=progress, coverage_weights=coverage_weights, quality=quality,
                   quality_weight=quality_weight)
    labels = partitions
    if isinstance(partitions, np.ndarray) and len(np.unique(partitions)) <= 1:
        labels = 0
    split = isinstance(labels, np.ndarray) or int(labels) > 1
    if not split and merge:
        raise ValueError(f"merge={merge}: the GreeDi merge combines partitions; pass partitions > 1 or merge=0")
    if split:
        if graph is not None:
            raise ValueError("graph= is one global kNN graph, but partitions build their own: drop graph= or "
                             "partitions=")
        w = Partitioned(sel, partitions=labels, merge=merge, n_jobs=n_jobs, executor=executor)
        w.fit(X, n_tokens=n_tokens, sources=sources)
        info = dict(w.info_)
        with warnings.catch_warnings():  # the same budget Partitioned resolved (and warned about) above
            warnings.simplefilter("ignore")
            cons = sel.constraint(int(X.shape[0]), n_tokens=n_tokens, sources=sources)
        info.update(_budget_info(cons))
        info.pop("constraint", None)
        return Selection(np.asarray(w.indices_, np.int64), np.asarray(w.gains_, np.float64), w.weights_,
                         np.asarray(w.partitions_, np.int32), w.certificate_, info, w.representative_,
                         w.similarity_)
    sel.fit(X, n_tokens=n_tokens, sources=sources, graph=graph)
    info = {"n": int(X.shape[0]), **_budget_info(sel.constraint_)}
    for key in ("n_evaluations", "best_singleton_won", "pool"):
        if key in sel.info_:
            info[key] = sel.info_[key]
    if sel.constraint_.kind == "quotas":
        info["quotas"] = sel.constraint_.describe()["caps"]
    return Selection(sel.indices_, sel.gains_, sel.weights_, np.zeros(len(sel.indices_), np.int32),
                     sel.certificate_, info, sel.representative_, sel.similarity_)


def _check_graph(X: Any, graph: Any, k: int | None) -> int:
    """The k to use: ``k`` (default 32), or the graph's own, which ``k`` must match when both are given."""
    if graph is None:
        return 32 if k is None else k
    nb = getattr(graph, "neighbors", None)
    if nb is None or np.ndim(nb) != 2:
        raise TypeError(f"graph= must be a KNNGraph (neighbors and similarities of shape (n, k)), got "
                        f"{type(graph).__name__}")
    n_graph, k_graph = (int(v) for v in np.shape(nb))
    if X is not None and getattr(X, "ndim", None) == 2 and n_graph != int(X.shape[0]):
        raise ValueError(f"the kNN graph has {n_graph} rows but X has {int(X.shape[0])}: graph= was built on other "
                         "embeddings; build it on these (knn_graph(X, k)) or drop graph=")
    if k is not None and int(k) != k_graph:
        raise ValueError(f"graph= has k={k_graph} neighbours per row but k={k} was asked; pass k={k_graph} "
                         f"(or leave k out), or build the graph with k={k}")
    return k_graph


def _check_partitions(X: Any, partitions: Any) -> None:
    """``partitions``: an int >= 0 or an ``(n,)`` array of labels."""
    if isinstance(partitions, np.ndarray):
        if X is not None and getattr(X, "ndim", None) == 2 and partitions.shape != (int(X.shape[0]),):
            raise ValueError(f"partitions: a label array needs one label per row of X, shape ({int(X.shape[0])},); "
                             f"got shape {partitions.shape}")
        return
    if isinstance(partitions, bool) or not isinstance(partitions, (int, np.integer)) or partitions < 0:
        raise ValueError(f"partitions={partitions!r}; expected 0 or 1 (one global problem), a count P > 1 of "
                         "k-means partitions, or an (n,) array of labels")


def _budget_info(con: Any) -> dict[str, Any]:
    """The budget as earlier manifests recorded it: the count cap and the token cap (or None)."""
    return {"budget_count": int(con.count), "cost_budget": float(con.cap) if con.kind == "knapsack" else None}


def _within_rows(X: Any, budget: Any, rows: np.ndarray, *, graph: Any, n_tokens: Any, sources: Any, partitions: Any,
                 coverage_weights: Any, quality: Any, **kw: Any) -> Selection:
    """``select_array`` on ``X[rows]``, mapped back to rows of ``X``."""
    n = int(X.shape[0])
    rows = np.unique(rows.astype(np.int64))
    if rows.size == 0 or rows[0] < 0 or rows[-1] >= n:
        raise ValueError(f"rows must be a non-empty set of row indices in [0, {n}); got {rows.size} rows")
    if graph is not None:
        raise ValueError("graph= is a kNN graph of all of X; with rows= the graph of the rows is built: drop graph=")

    def take(a: Any, name: str = "") -> Any:
        if a is not None and name and np.shape(a) != (n,):
            raise ValueError(f"{name}: expected one value per row of X, shape ({n},) (restricted to rows= here); "
                             f"got shape {np.shape(a)}")
        return None if a is None else np.asarray(a)[rows]

    parts = take(partitions) if isinstance(partitions, np.ndarray) else partitions
    sub = select_array(np.asarray(X[rows]), budget, n_tokens=take(n_tokens), sources=take(sources),
                       partitions=parts, coverage_weights=take(coverage_weights, "coverage_weights"),
                       quality=take(quality, "quality"), **kw)
    rep = np.full(n, -1, np.int64)
    sim = np.full(n, np.nan, np.float32)
    if sub.representative is not None:
        has = sub.representative >= 0
        rep[rows[has]] = rows[sub.representative[has]]
        sim[rows] = sub.similarity
    info = dict(sub.info, ground_rows=int(rows.size))
    return Selection(rows[sub.indices], sub.gains, sub.weights, sub.partitions, sub.certificate, info, rep, sim)
