"""GreeDi merge: a second greedy over the union of the partition winners, with a global view.

Partitioned selection solves each partition alone, so two near-identical samples in two
partitions can both be picked. GreeDi (Mirzasoleiman et al., 2013) fixes this with a
merge round: every partition first picks ``merge_factor`` × its share of the budget, then
one greedy over the union U of those winners picks the final ``budget``. Here the merge
maximises the **weighted** facility location of the union,

    f̃(S) = Σ_{u∈U} w_u · max_{j∈S} max(s_uj, 0),

where ``w_u`` is the number of ground points ``u`` covered best in its partition: U with
those weights is a coreset of the ground set, so f̃ stands in for the global objective
without a global kNN graph. It runs on a kNN graph of U (O(|U|·k) memory) whose row ``u``
is scaled by ``w_u`` — exactly weighted facility location, on the same sparse greedy and
certificate (the certificate bounds f̃'s optimum over U).

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 8)).astype("float32"); X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> m = greedi_merge(X, np.arange(0, 200, 4), np.full(50, 4), 10, k=8)
>>> len(m["indices"]), m["objective"] <= m["upper_bound"] + 1e-9
(10, True)
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _weighted_assignment(nb: np.ndarray, sims: np.ndarray, weights: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For each pick, the total weight of the union points whose most similar pick (in their kNN list) it is."""
    pos = np.full(nb.shape[0], -1, np.int64)
    pos[order] = np.arange(len(order))
    out = np.zeros(len(order), np.float64)
    cand = np.where(nb >= 0, pos[np.maximum(nb, 0)], -1)
    s = np.where(cand >= 0, sims, -np.inf)
    best = np.argmax(s, axis=1)
    has = np.isfinite(s[np.arange(len(s)), best])
    np.add.at(out, cand[np.arange(len(s)), best][has], weights[has])
    return out


def greedi_merge(X: Any, union: np.ndarray, weights: np.ndarray, budget: int, *, k: int = 32,
                 optimizer: str = "lazy", seed: int = 0, index_kind: str = "auto",
                 modular: np.ndarray | None = None) -> dict:
    """The merge round: weighted facility location over ``union`` rows of ``X``.

    Parameters
    ----------
    X : (n, d) embeddings (array or memmap); only the ``union`` rows are read.
    union : (u,) int64 ground rows (the partition winners).
    weights : (u,) ground points each winner covered in its partition (>= 0).
    budget : final subset size, 1 <= budget <= u.
    modular : (u,) ``λ q >= 0`` of the union rows, optional: the quality term, kept in the merge.

    Returns
    -------
    dict with ``indices`` (budget,) ground rows in greedy order, ``positions`` (their index in
    ``union``), ``gains``, ``weights`` (ground points each pick represents, through the union),
    ``objective``, ``upper_bound``, ``random_objective``.
    """
    from subsetlm.index import IndexConfig, knn_graph
    from subsetlm.select.baselines import random_subset
    from subsetlm.select.facility_location import SparseFacilityLocation
    from subsetlm.select.greedy import greedy

    union = np.asarray(union, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    u = len(union)
    if w.shape != (u,) or (w < 0).any():
        raise ValueError(f"weights must be {u} values >= 0 (one per union row), got shape {w.shape}")
    if not 1 <= int(budget) <= u:
        raise ValueError(f"budget={budget} must be in [1, {u}] (the union of partition winners); raise the "
                         f"merge factor")
    by_row = np.argsort(union, kind="stable")  # read rows in file order
    Xu = np.empty((u, X.shape[1]), dtype=np.float32)
    Xu[by_row] = np.asarray(X[union[by_row]], dtype=np.float32)
    kk = min(int(k), u)
    g = knn_graph(Xu, k=kk, cfg=IndexConfig(k=kk, kind=index_kind, seed=seed))
    sims = np.maximum(np.asarray(g.similarities, dtype=np.float32), 0.0)
    nb = np.asarray(g.neighbors)
    fn = SparseFacilityLocation(SimpleNamespace(neighbors=nb, similarities=(sims * w[:, None]).astype(np.float32)),
                                modular=modular)
    res = greedy(fn, int(budget), optimizer=optimizer, seed=seed)
    rep = _weighted_assignment(nb, sims, w, res.order)
    rnd = float(fn.evaluate(random_subset(u, int(budget), seed)))
    logger.info("GreeDi merge: %d of %d partition winners, weighted f=%.6g (bound ratio %.4f)", len(res.order), u,
             res.objective, res.objective / max(res.upper_bound, 1e-12))
    return {"indices": union[res.order], "positions": np.asarray(res.order, np.int64),
            "gains": np.asarray(res.gains, np.float64), "weights": rep, "objective": float(res.objective),
            "upper_bound": float(max(res.upper_bound, res.objective)), "random_objective": rnd}
