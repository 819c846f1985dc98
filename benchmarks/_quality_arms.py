"""The arms of ``benchmarks/selection_quality.py`` (private helper): subsets under one token cap, and their diagnostics.

Every arm of a (corpus, budget) gets the same token cap (``budget`` × the corpus's BPE
tokens) and trains the same number of steps, so arms differ only in *which* tokens they
see. Fixed arms are selected once with the library (seed 0) and cached as ``.npy`` row
lists; the random arm is drawn per training seed (in the worker); ``full`` and
``ingenious`` need no rows.

* ``fl-hashing`` / ``fl-minilm``: facility location on the kNN graph (k = 32) of hashed
  n-grams / MiniLM, knapsack budget in BPE tokens (``select_array(X, "tokens:CAP")``).
* ``semdedup``: SemDeDup (one partition, eps 0.05 on MiniLM, keep farthest from the
  centroid), then a random order of the kept rows up to the cap, filled with random
  dropped rows when the kept ones fall short ("+ random fill to the budget").
* ``d4``: D4 (SemDeDup to 75% of the rows, then prototype pruning to the budget's share of
  rows), then the kept rows in random order up to the cap, random fill.
* ``dsir``: DSIR importance resampling toward the corpus's target sample (hashed uni+bigram
  features), the Gumbel draw order up to the cap.
* ``weighted-fl``: facility location on MiniLM plus the quality term ``λ Σ q_j``, with q the
  DSIR log-importance per token min-max scaled to [0, 1] and λ = 1 (target-likeness
  traded against coverage).

Example
-------
>>> fill_to_cap(__import__("numpy").array([0, 1]), __import__("numpy").ones(4, int), 3, seed=0).size
3
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

FIXED_ARMS = ("fl-hashing", "fl-minilm", "semdedup", "d4", "dsir", "weighted-fl")
NEEDS_MINILM = ("fl-minilm", "semdedup", "d4", "weighted-fl")
SEMDEDUP_EPS = 0.05
K = 32


def fill_to_cap(kept: np.ndarray, n_tokens: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Kept rows in random order up to ``cap``; when they fall short, random other rows after them."""
    from benchmarks._quality_train import cap_prefix

    rng = np.random.default_rng([seed, 29])
    kept = rng.permutation(np.asarray(kept, np.int64))
    rest = np.setdiff1d(np.arange(len(n_tokens)), kept)
    return np.sort(cap_prefix(np.concatenate([kept, rng.permutation(rest)]), n_tokens, cap))


def dsir_scores(corpus) -> np.ndarray:
    """(n,) DSIR log importance of every row toward the corpus's target sample."""
    from subsetlm.select.dsir import dsir_importance

    return dsir_importance(corpus.texts, corpus.target)


def select_arm(arm: str, corpus, n_tokens: np.ndarray, cap: int, budget: float, emb: dict) -> np.ndarray:
    """Sorted rows of a fixed arm under ``cap`` tokens. ``emb``: model name -> (n, d) embeddings (lazy callables)."""
    from subsetlm.select.api import select_array

    if arm in ("fl-hashing", "fl-minilm"):
        X = emb["hashing" if arm == "fl-hashing" else "minilm"]()
        sel = select_array(X, f"tokens:{cap}", k=K, n_tokens=n_tokens, seed=0, n_jobs=1)
        return np.sort(sel.indices)
    if arm == "weighted-fl":
        q = dsir_scores(corpus) / np.maximum(n_tokens, 1)
        q = (q - q.min()) / max(float(q.max() - q.min()), 1e-12)
        sel = select_array(emb["minilm"](), f"tokens:{cap}", k=K, n_tokens=n_tokens, seed=0, n_jobs=1,
                           quality=q, quality_weight=1.0)
        return np.sort(sel.indices)
    if arm == "semdedup":
        from subsetlm.select.dedup import semdedup

        res = semdedup(emb["minilm"](), eps=SEMDEDUP_EPS)
        return fill_to_cap(res.indices, n_tokens, cap, seed=0)
    if arm == "d4":
        from subsetlm.select.dedup import d4

        res = d4(emb["minilm"](), dedup_ratio=0.75, ratio=min(budget, 0.75))
        return fill_to_cap(res.indices, n_tokens, cap, seed=0)
    if arm == "dsir":
        from benchmarks._quality_train import cap_prefix
        from subsetlm.select.sampling import gumbel_top_k

        logw = dsir_scores(corpus)
        return np.sort(cap_prefix(gumbel_top_k(logw, len(logw), 0), n_tokens, cap))
    raise ValueError(f"unknown fixed arm {arm!r}; choose one of {', '.join(FIXED_ARMS)}")


def cached_rows(root: Path, arm: str, corpus, n_tokens: np.ndarray, cap: int, budget: float, emb: dict) -> Path:
    """``root/rows-CORPUS-BUDGET-ARM.npy``, selected on first use."""
    path = root / f"rows-{corpus.name}-{budget:g}-{arm}.npy"
    if not path.is_file():
        rows = select_arm(arm, corpus, n_tokens, cap, budget, emb).astype(np.int64)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, rows)
        tmp.rename(path)
        logger.info("%s %s %g: %d rows, %d tokens (cap %d)", corpus.name, arm, budget, len(rows),
                    int(n_tokens[rows].sum()), cap)
    return path


def fl_objective(graph, rows: np.ndarray) -> float:
    """Facility location f(S) / n on a kNN graph: the mean best similarity of a row to the subset (0 if none in its list)."""
    nb, sm = graph
    inS = np.zeros(nb.shape[0] + 1, bool)
    inS[rows] = True
    hit = inS[np.where(nb < 0, nb.shape[0], nb)]
    best = np.where(hit, np.maximum(sm, 0.0), 0.0).max(axis=1)
    return float(best.mean())


def diagnostics(corpus, rows: np.ndarray, n_tokens: np.ndarray, graph=None) -> dict:
    """What a subset holds: rows, tokens, distinct source documents, redundant rows, source shares, f_MiniLM."""
    rows = np.asarray(rows, np.int64)
    distinct = int(len(np.unique(corpus.origin[rows])))
    src, cnt = np.unique(corpus.source[rows], return_counts=True)
    out = {"rows": int(len(rows)), "tokens": int(n_tokens[rows].sum()), "distinct_docs": distinct,
           "redundant_rows": int(len(rows) - distinct),
           "source_share": {str(s): round(float(c) / max(len(rows), 1), 4) for s, c in zip(src, cnt)}}
    if graph is not None:
        out["fl_minilm"] = round(fl_objective(graph, rows), 5)
    return out
