"""Baselines that a selected subset must beat: random, and DSIR importance resampling.

- :func:`random_subset`: a uniform sample without replacement, in draw order, so every
  prefix is itself a uniform random subset (useful for nested-budget comparisons).
- :func:`dsir_select` / :func:`dsir_importance`: DSIR (Xie et al., 2023, "Data Selection for
  Language Models via Importance Resampling"), defined in :mod:`subsetlm.select.dsir` (hashed
  n-gram models, weights, KL reduction; the ``subsetlm dsir`` stage is
  :mod:`subsetlm.select.dsir_run`) and importable from here as well.

Example
-------
>>> random_subset(10, 3, seed=0).tolist()
[4, 6, 2]
>>> dsir_select(["heart blood", "goal match"], ["blood heart"], 1, seed=0).tolist()
[0]
"""

from __future__ import annotations

import logging

import numpy as np

from subsetlm.select.dsir import dsir_importance, dsir_select

logger = logging.getLogger(__name__)

__all__ = ["dsir_importance", "dsir_select", "random_subset"]


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
