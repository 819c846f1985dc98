"""Baselines that a selected subset must beat: random, and DSIR importance resampling.

- :func:`random_subset`: a uniform sample without replacement, in draw order, so every
  prefix is itself a uniform random subset (useful for nested-budget comparisons).
- :func:`dsir_select`: DSIR (Xie et al., 2023, "Data Selection for Language Models via
  Importance Resampling"). Each document is a bag of hashed unigrams and bigrams
  (sklearn ``HashingVectorizer``); a smoothed bag-of-n-grams distribution is fitted to
  the target texts (p_t) and to the raw corpus (p_r); a document's log importance weight
  is Σ_f c(f) (log p_t(f) − log p_r(f)) over its n-gram counts c; ``budget`` documents are
  drawn without replacement with probability ∝ weight by Gumbel top-k.

As in DSIR, weights are not length-normalised: long on-target documents get larger
weights. Tokenisation is sklearn's lowercased ``\\b\\w+\\b`` words.

Example
-------
>>> target = ["protein binding assay", "gene expression in cells"] * 5
>>> raw = ["gene protein cells assay"] * 5 + ["football match score goal"] * 5
>>> sorted(dsir_select(raw, target, 5, seed=0).tolist())
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

import logging
from typing import Iterable, Iterator

import numpy as np

from subsetlm.select.sampling import gumbel_top_k

logger = logging.getLogger(__name__)


def _check_count(name: str, value: object, low: int, high: int, hint: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name}={value} must be in [{low}, {high}]; {hint}")
    return int(value)


def random_subset(n: int, budget: int, seed: int = 0) -> np.ndarray:
    """Uniform random subset of ``range(n)`` without replacement.

    Parameters
    ----------
    n : int
        Ground-set size, >= 0.
    budget : int
        0 <= budget <= n.
    seed : int
        Seed for ``np.random.default_rng``.

    Returns
    -------
    np.ndarray
        (budget,) int64 distinct indices in draw order (not sorted): the first m of them
        are a uniform random m-subset for every m <= budget.

    Examples
    --------
    >>> random_subset(10, 3, seed=0).tolist() == random_subset(10, 3, seed=0).tolist()
    True
    """
    n = _check_count("n", n, 0, np.iinfo(np.int64).max, "n is the ground-set size")
    budget = _check_count("budget", budget, 0, n, f"lower --budget (n={n} samples)")
    rng = np.random.default_rng(seed)
    return rng.permutation(n)[:budget].astype(np.int64)


def _vectorizer(n_features: int):
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=n_features, ngram_range=(1, 2), alternate_sign=False, norm=None,
                             lowercase=True, token_pattern=r"(?u)\b\w+\b", dtype=np.float32)


def _batches(texts: Iterable[str], batch_size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        batch.append(t)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _log_model(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """log p(f) of an add-``smoothing`` bag-of-n-grams model over hashed features."""
    c = counts.astype(np.float64) + smoothing
    return np.log(c) - np.log(c.sum())


def dsir_importance(texts: Iterable[str], target_texts: Iterable[str], *, n_features: int = 2 ** 18,
                    smoothing: float = 1.0, batch_size: int = 8192) -> np.ndarray:
    """DSIR log importance weight of every raw document toward the target distribution.

    Parameters
    ----------
    texts : iterable of str
        The raw corpus (n documents). A list (or any re-iterable) is read twice; a one-shot
        iterator is read once and its sparse n-gram rows are kept in memory (about 8 bytes
        per distinct n-gram per document).
    target_texts : iterable of str
        Texts from the target distribution (e.g. the downstream task's training inputs).
    n_features : int
        Hash buckets, 2**16 .. 2**20 (DSIR uses 10k; more buckets, fewer collisions).
    smoothing : float
        Add-``smoothing`` (Laplace) pseudo-count per bucket, > 0.
    batch_size : int
        Documents vectorised at a time.

    Returns
    -------
    np.ndarray
        (n,) float64 log weights Σ_f c_x(f) (log p_t(f) − log p_r(f)).

    Raises
    ------
    ValueError
        Empty corpus or target, ``n_features`` outside [2**16, 2**20], ``smoothing <= 0``.
    """
    if not (2 ** 16 <= int(n_features) <= 2 ** 20):
        raise ValueError(f"n_features={n_features} must be in [2**16, 2**20] (65536 .. 1048576)")
    if not smoothing > 0:
        raise ValueError(f"smoothing={smoothing} must be > 0 (add-one smoothing is 1.0)")
    vec = _vectorizer(int(n_features))
    t_counts = np.zeros(n_features, dtype=np.float64)
    n_target = 0
    for batch in _batches(target_texts, batch_size):
        t_counts += np.asarray(vec.transform(batch).sum(axis=0), dtype=np.float64).ravel()
        n_target += len(batch)
    if n_target == 0:
        raise ValueError("target_texts is empty; DSIR needs example texts of the target distribution")
    one_shot = iter(texts) is texts
    kept = []
    r_counts = np.zeros(n_features, dtype=np.float64)
    n = 0
    for batch in _batches(texts, batch_size):
        M = vec.transform(batch)
        r_counts += np.asarray(M.sum(axis=0), dtype=np.float64).ravel()
        n += len(batch)
        if one_shot:
            kept.append(M)
    if n == 0:
        raise ValueError("texts is empty; nothing to select from")
    delta = _log_model(t_counts, smoothing) - _log_model(r_counts, smoothing)
    logger.info("DSIR: %d raw documents, %d target documents, %d hash buckets", n, n_target, n_features)
    parts = kept if one_shot else (vec.transform(b) for b in _batches(texts, batch_size))
    out = np.concatenate([np.asarray(M @ delta, dtype=np.float64).ravel() for M in parts])
    if out.shape[0] != n:
        raise ValueError(f"texts yielded {out.shape[0]} documents on the second pass but {n} on the first; "
                         "pass a list or a one-shot iterator, not an iterable that changes between passes")
    return out


def dsir_select(texts: Iterable[str], target_texts: Iterable[str], budget: int, seed: int = 0, *,
                n_features: int = 2 ** 18, smoothing: float = 1.0, batch_size: int = 8192) -> np.ndarray:
    """Select ``budget`` raw documents by DSIR hashed n-gram importance resampling.

    Parameters
    ----------
    texts, target_texts, n_features, smoothing, batch_size
        See :func:`dsir_importance`.
    budget : int
        Number of documents, 0 <= budget <= n.
    seed : int
        Seed for the Gumbel noise (``np.random.default_rng``); same seed, same indices.

    Returns
    -------
    np.ndarray
        (budget,) int64 distinct indices into ``texts``, in draw order (the most
        "target-like" tend to come first).

    Examples
    --------
    >>> dsir_select(["a b", "c d"], ["a b"], 1, seed=0).tolist()
    [0]
    """
    logw = dsir_importance(texts, target_texts, n_features=n_features, smoothing=smoothing,
                           batch_size=batch_size)
    budget = _check_count("budget", budget, 0, logw.size, f"lower --budget (n={logw.size} documents)")
    return gumbel_top_k(logw, budget, seed)
