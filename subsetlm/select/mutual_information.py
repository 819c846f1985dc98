"""Query-focused facility location (FL mutual information) on a sparse kNN graph, O(m·k) memory.

With a query set Q (the task's training examples) and a candidate pool V (retrieved
corpus samples), submodlib's facility-location mutual information is

    I_f(S; Q) = Σ_{i∈V} min( max_{j∈S} s_ij , η · max_{q∈Q} s_iq )

Each pool point is covered by the selection, but never for more than its own relevance to
the task: irrelevant points are worth little however well they are covered, and two
near-duplicates of a relevant point are worth hardly more than one. Because
``min(max_j s_ij, c_i) = max_j min(s_ij, c_i)``, it *is* facility location on the
similarities clipped per row at ``c_i = η · rel_i``; on a kNN graph of the pool
(:func:`query_focused_graph`) it runs on :class:`~.facility_location.SparseFacilityLocation`
with the same greedy, lazy evaluations and certificate as plain facility location, in
O(m·k) memory instead of submodlib's dense m×m kernel. With ``k = m`` it equals
submodlib's ``FacilityLocationMutualInformationFunction`` exactly (tested).

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 8)).astype("float32"); X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> Q = X[:5] + 0.01
>>> res = flmi_select(X, query_relevance(X, Q), 10, k=16)
>>> len(res.order), res.upper_bound >= res.objective
(10, True)
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def query_relevance(X: np.ndarray, queries: np.ndarray, block_size: int = 65536) -> np.ndarray:
    """``rel_i = max(0, max_q <x_i, q>)``: (m,) float32 relevance of every row of ``X`` to the query set.

    ``X`` (m, d) and ``queries`` (q, d) are L2-normalised (cosine); exact (FAISS flat index over the queries).
    """
    from subsetlm.index import IndexConfig, build_index
    from subsetlm.index._arrays import iter_f32_blocks

    Q = np.ascontiguousarray(queries, dtype=np.float32)
    if Q.ndim != 2 or Q.shape[0] == 0:
        raise ValueError(f"queries must be a non-empty (q, d) array, got shape {Q.shape}")
    if Q.shape[1] != X.shape[1]:
        raise ValueError(f"queries have dimension {Q.shape[1]} but the pool has {X.shape[1]}; embed both with "
                         f"the same model")
    if not np.isfinite(Q).all():
        row = int(np.flatnonzero(~np.isfinite(Q).all(axis=1))[0])
        raise ValueError(f"queries row {row} contains NaN or inf; expected finite L2-normalised embeddings of "
                         f"the task examples. Fix: drop or re-embed that query")
    index = build_index(Q, IndexConfig(kind="flat", use_gpu=False))
    out = np.empty(X.shape[0], dtype=np.float32)
    for start, xb in iter_f32_blocks(X, block_size):
        D, _ = index.search(xb, 1)
        out[start:start + len(xb)] = D[:, 0]
    return np.maximum(out, 0.0)


def query_focused_graph(graph: Any, relevance: np.ndarray, eta: float = 1.0) -> SimpleNamespace:
    """The kNN graph with row i's similarities clipped to ``[0, η · rel_i]`` (see the module docstring)."""
    nb = np.asarray(graph.neighbors)
    rel = np.asarray(relevance, dtype=np.float32).reshape(-1)
    if rel.shape[0] != nb.shape[0]:
        raise ValueError(f"{rel.shape[0]} relevance values for a graph of {nb.shape[0]} rows")
    if not eta > 0:
        raise ValueError(f"eta={eta}; the relevance magnification must be > 0 (1.0 = submodlib's default)")
    sims = np.minimum(np.maximum(np.asarray(graph.similarities, dtype=np.float32), 0.0), (eta * rel)[:, None])
    sims[nb < 0] = 0.0
    return SimpleNamespace(neighbors=nb, similarities=sims.astype(np.float32))


def flmi_select(X: np.ndarray, relevance: np.ndarray, budget: int, *, k: int = 32, eta: float = 1.0,
                optimizer: str = "lazy", seed: int = 0, index_kind: str = "auto", progress: bool = False,
                weights: np.ndarray | None = None, modular: np.ndarray | None = None) -> Any:
    """Greedy maximisation of I_f(S; Q) over the rows of ``X`` (the candidate pool).

    Parameters
    ----------
    X : (m, d) L2-normalised pool embeddings.
    relevance : (m,) ``max_q s_iq`` of every pool row (:func:`query_relevance`).
    budget : samples to pick, 1 <= budget <= m.
    k : neighbours per row in the pool's kNN graph (``k >= m`` = exact).
    weights, modular : (m,) coverage weights ``w_i >= 0`` of the pool rows and a modular
        quality term ``λ q_j >= 0``: ``Σ_i w_i min(max_j s_ij, η rel_i) + Σ_{j∈S} λ q_j``, still
        monotone submodular (:mod:`~.facility_location`), same certificate.

    Returns
    -------
    GreedyResult with ``order`` (budget,) pool indices, ``gains``, ``objective``,
    ``upper_bound`` (the greedy certificate), plus ``weights`` (pool points each pick covers
    best) and ``random_objective`` (a seeded random subset of the same size).
    """
    from subsetlm.index import IndexConfig, knn_graph
    from subsetlm.select.baselines import random_subset
    from subsetlm.select.facility_location import SparseFacilityLocation
    from subsetlm.select.greedy import greedy

    m = int(X.shape[0])
    if not 1 <= int(budget) <= m:
        raise ValueError(f"budget={budget} must be in [1, {m}] (the candidate pool); enlarge the pool "
                         f"(--pool-factor) or lower --budget")
    kk = min(int(k), m)
    graph = knn_graph(X, k=kk, cfg=IndexConfig(k=kk, kind=index_kind, seed=seed), progress=progress)
    fn = SparseFacilityLocation(query_focused_graph(graph, relevance, eta), weights=weights, modular=modular)
    res = greedy(fn, int(budget), optimizer=optimizer, seed=seed, progress=progress)
    res.weights = np.asarray(fn.assign(res.order), dtype=np.float64)
    res.random_objective = float(fn.evaluate(random_subset(m, int(budget), seed)))
    logger.info("FL mutual information: %d of %d pool samples, I(S;Q)=%.4g (bound ratio %.4f, random %.4g)",
             len(res.order), m, res.objective, res.objective / max(res.upper_bound, 1e-12), res.random_objective)
    return res
