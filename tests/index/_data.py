"""Synthetic embeddings for the index tests (no I/O, deterministic)."""

from __future__ import annotations

import numpy as np


def normed(X: np.ndarray) -> np.ndarray:
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def gaussian(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Isotropic unit vectors: no ties with probability 1."""
    return normed(np.random.default_rng(seed).standard_normal((n, d)))


def clustered(n: int, d: int = 32, n_centres: int = 200, sigma: float = 0.6, seed: int = 0):
    """Unit vectors around ``n_centres`` random unit centres; returns (X, labels)."""
    rng = np.random.default_rng(seed)
    C = normed(rng.standard_normal((n_centres, d)))
    lab = rng.integers(0, n_centres, n)
    X = C[lab] + sigma * rng.standard_normal((n, d)) / np.sqrt(d)
    return normed(X), lab


def brute_topk(X: np.ndarray, k: int):
    """Exact top-k by a dense numpy product (small n only): (ids, sims) sorted decreasing."""
    X = X.astype(np.float64)
    S = X @ X.T
    ids = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(S, ids, 1)
