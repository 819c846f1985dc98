"""Seeded test data shared by the selection tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def clustered(n: int, d: int = 8, seed: int = 0, n_centers: int = 5) -> np.ndarray:
    """(n, d) float32 rows around ``n_centers`` Gaussian centres, L2-normalised."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(n_centers, d))
    X = C[rng.integers(0, n_centers, n)] + 0.7 * rng.normal(size=(n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def knn(X: np.ndarray, k: int) -> SimpleNamespace:
    """Exact top-k graph by brute force: row i = the k most similar rows to i.

    Similarities are rounded like DenseFacilityLocation's (float64 product -> float32).
    """
    X64 = X.astype(np.float64)
    S = (X64 @ X64.T).astype(np.float32)
    nb = np.argsort(-S, axis=1, kind="stable")[:, :k].astype(np.int32)
    return SimpleNamespace(neighbors=nb, similarities=np.take_along_axis(S, nb, 1).astype(np.float32))
