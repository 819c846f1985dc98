"""The objectives a selector can maximise, and the kernels each one runs on.

==================  =======================  ==========================================================
objective           kernels                  implementation
==================  =======================  ==========================================================
facility-location   sparse (default), dense  ours: :class:`~.facility_location.SparseFacilityLocation` on
                                             the kNN graph, or :class:`~.facility_location.DenseFacilityLocation`
                                             (exact similarities on the fly); every optimizer, every
                                             constraint, a certificate
fl-mi               sparse (default), dense  sparse: ours (facility location on the query-focused kNN
                                             graph, :mod:`~.mutual_information`); dense: submodlib
graph-cut           dense                    submodlib (dense n×n kernel, size-limited)
log-det             dense                    submodlib
disparity-min       dense                    submodlib (not submodular: a greedy heuristic)
disparity-sum       dense                    submodlib
==================  =======================  ==========================================================

``kernel="auto"`` resolves to the first kernel listed. The objectives on our greedy also take
per-sample coverage weights and a modular quality term (``weights=``, ``modular=``: weighted
facility location, :mod:`~.facility_location`); submodlib's refuse them. :func:`build_objective` returns either
an object with our greedy interface (``n, value, reset, gain, gains, update, evaluate,
assignment``) or a :class:`~.submodlib_functions.SubmodlibObjective` (``n, maximize,
evaluate``); :func:`is_ours` tells which.

Example
-------
>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(60, 8)).astype("float32")
>>> X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> fn = build_objective("facility-location", X, kernel="sparse", k=8)
>>> type(fn).__name__, fn.n
('SparseFacilityLocation', 60)
>>> resolve_kernel("log-det", "auto")
'dense'
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["OBJECTIVES", "KERNELS", "build_objective", "is_ours", "resolve_kernel"]

# objective -> kernels it runs on (the first is the default), and whether the sparse/dense kernel is ours
OBJECTIVES: dict[str, dict[str, str]] = {
    "facility-location": {"sparse": "ours", "dense": "ours"},
    "fl-mi": {"sparse": "ours", "dense": "submodlib"},
    "graph-cut": {"dense": "submodlib"},
    "log-det": {"dense": "submodlib"},
    "disparity-min": {"dense": "submodlib"},
    "disparity-sum": {"dense": "submodlib"},
}
KERNELS = ("auto", "sparse", "dense")
# our optimizer names -> submodlib's
SUBMODLIB_OPTIMIZERS = {"naive": "NaiveGreedy", "lazy": "LazyGreedy", "stochastic": "StochasticGreedy",
                        "lazier-than-lazy": "LazierThanLazyGreedy"}


def resolve_kernel(objective: str, kernel: str) -> str:
    """The kernel ``objective`` runs on: ``auto`` -> its default; an unsupported kernel -> ValueError."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r}; choose one of {', '.join(KERNELS)}")
    kernels = OBJECTIVES[objective]
    if kernel == "auto":
        return next(iter(kernels))
    if kernel not in kernels:
        raise ValueError(f"{objective} runs on a {' or '.join(kernels)} kernel (through submodlib, O(n²) memory), "
                         f"not {kernel!r}; pass kernel='{next(iter(kernels))}' (--kernel {next(iter(kernels))}) "
                         f"or use facility-location, which runs on the sparse kNN graph")
    return kernel


def is_ours(objective: str, kernel: str) -> bool:
    """True when ``objective`` on ``kernel`` runs on our greedy (with a certificate), False for submodlib."""
    return OBJECTIVES[objective][resolve_kernel(objective, kernel)] == "ours"


def _graph(X: np.ndarray, k: int, index_kind: str, seed: int, worker: bool, progress: bool) -> Any:
    from subsetlm.index import IndexConfig, knn_graph

    m = int(X.shape[0])
    kk = min(int(k), m)
    if worker:  # one partition in a worker process: single-threaded, exact while cheap
        cfg = IndexConfig(k=kk, kind="flat" if m <= 50_000 else "auto", n_threads=1, use_gpu=False, seed=0)
    else:
        cfg = IndexConfig(k=kk, kind=index_kind, seed=seed)
    return knn_graph(X, k=kk, cfg=cfg, progress=progress)


def build_objective(objective: str, X: Any, *, kernel: str = "auto", k: int = 32, index_kind: str = "auto",
                    seed: int = 0, graph: Any = None, queries: np.ndarray | None = None, eta: float = 1.0,
                    lambda_: float | None = None, metric: str = "cosine", optimizer: str = "lazy",
                    memory_limit_gb: float = 4.0, worker: bool = False, progress: bool = False,
                    weights: np.ndarray | None = None, modular: np.ndarray | None = None) -> Any:
    """Build ``objective`` over the rows of ``X``.

    Parameters
    ----------
    X : (n, d) float array or memmap, rows L2-normalised (may be None with a ``graph`` for
        sparse facility location).
    kernel : ``auto`` | ``sparse`` | ``dense`` (see the module table).
    k, index_kind : the kNN graph built when ``graph`` is None (sparse kernels).
    graph : a precomputed :class:`~subsetlm.index.KNNGraph` over the rows of X.
    queries : (q, d) query embeddings (fl-mi).
    eta : fl-mi's relevance magnification. ``lambda_``, ``metric``: submodlib parameters.
    optimizer : our optimizer name; submodlib objectives are built for it (their stochastic
        optimizers run on a seeded permutation).
    worker : building one partition inside a worker (small exact graphs, one thread; tiny
        partitions, ``n <= k``, get the dense kernel).
    weights : (n,) coverage weights ``w_i >= 0``; ``modular`` : (n,) ``λ q_j >= 0`` per candidate
        (facility location and sparse fl-mi only; see :mod:`~.facility_location`).

    Returns
    -------
    SparseFacilityLocation | DenseFacilityLocation | SubmodlibObjective
    """
    from subsetlm.select.facility_location import DenseFacilityLocation, SparseFacilityLocation

    kernel = resolve_kernel(objective, kernel)
    if objective == "fl-mi" and queries is None:
        raise ValueError("fl-mi selects samples that cover a query set: pass queries=(q, d) embeddings "
                         "(--queries STORE_OR_NPY)")
    if objective != "fl-mi" and queries is not None:
        raise ValueError(f"{objective} takes no queries; use objective='fl-mi' for query-focused selection")
    if not is_ours(objective, kernel):
        from subsetlm.select.submodlib_functions import SubmodlibObjective

        if weights is not None or modular is not None:
            raise ValueError(f"{objective} ({kernel} kernel) runs through submodlib, which takes no coverage weights "
                             "or quality term; use facility-location (or fl-mi on the sparse kernel)")

        return SubmodlibObjective(objective, np.asarray(X, dtype=np.float32), queries=queries,
                                  optimizer=SUBMODLIB_OPTIMIZERS[optimizer], metric=metric, lambda_=lambda_,
                                  eta=eta, seed=seed, memory_limit_gb=memory_limit_gb)
    if lambda_ is not None or metric != "cosine":
        raise ValueError(f"lambda_ and metric are submodlib parameters; {objective} on the {kernel} kernel "
                         "uses cosine similarity and takes neither")
    if objective == "facility-location" and kernel == "dense":
        Xf = np.asarray(X, dtype=np.float32)
        return DenseFacilityLocation(Xf, kernel="precompute" if worker and len(Xf) <= 8192 else None,
                                     weights=weights, modular=modular)
    if worker and graph is None and X.shape[0] <= k and objective == "facility-location":
        return DenseFacilityLocation(np.asarray(X, dtype=np.float32), kernel="precompute", weights=weights,
                                     modular=modular)
    if graph is None:
        graph = _graph(X, k, index_kind, seed, worker, progress)
    if objective == "fl-mi":
        from subsetlm.select.mutual_information import query_focused_graph, query_relevance

        return SparseFacilityLocation(query_focused_graph(graph, query_relevance(X, queries), eta), weights=weights,
                                      modular=modular)
    return SparseFacilityLocation(graph, weights=weights, modular=modular)
