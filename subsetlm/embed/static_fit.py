"""Fit static token vectors to a teacher's sentence embeddings on a corpus sample (ridge regression).

model2vec's distillation embeds every token *on its own*; a sentence's static embedding is
then the mean of those context-free vectors, which keeps only part of what MiniLM does with
context. Given a sample of corpus texts and their MiniLM embeddings ``Y`` (the teacher),
:func:`fit_token_vectors` finds the token table ``T`` whose bag-of-tokens means best
reproduce them, pulled towards the distilled vectors ``T0`` where the sample says little::

    min_T  || A T - Y ||^2  +  lam * || T - s T0 ||^2

``A`` (n, V) holds each text's token counts divided by its length (the mean), ``s`` the
least-squares scale of ``A T0`` onto ``Y``. The normal equations ``(A'A + lam I) T = A'Y +
lam s T0`` are solved by conjugate gradients, all output columns at once, for a fixed
number of iterations (deterministic). Before solving, ``Y`` and ``T0`` are rotated onto
the top ``dims`` principal axes of ``Y`` (uncentred, so cosines are kept): a linear
regression commutes with that projection, and the solve is cheaper.

This is the linear core of model2vec's *tokenlearn* idea (train the static vectors on a
teacher's outputs), solved in closed form instead of by gradient descent.

Example
-------
>>> import scipy.sparse as sp
>>> A = sp.csr_matrix(np.array([[0.5, 0.5, 0], [0, 0.5, 0.5]], dtype=np.float32))
>>> Y = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
>>> T = fit_token_vectors(A, Y, np.zeros((3, 2), np.float32), lam=1e-6, iters=50)
>>> np.round(A @ T, 2).tolist()
[[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def bag_of_tokens(ids: np.ndarray, indptr: np.ndarray, vocab_size: int) -> Any:
    """(n, V) CSR float32: each row the token counts of one text divided by its length (empty rows stay 0)."""
    import scipy.sparse as sp

    n = len(indptr) - 1
    lens = np.maximum(np.diff(indptr), 1).astype(np.float32)
    data = np.repeat(1.0 / lens, np.diff(indptr)).astype(np.float32)
    A = sp.csr_matrix((data, ids, indptr), shape=(n, vocab_size))
    A.sum_duplicates()
    return A


def principal_axes(Y: np.ndarray, dims: int) -> np.ndarray:
    """(d, dims) float32: the top ``dims`` eigenvectors of ``Y'Y`` (uncentred), signs fixed (largest entry > 0)."""
    Y64 = np.asarray(Y, dtype=np.float64)
    w, V = np.linalg.eigh(Y64.T @ Y64)
    V = V[:, ::-1][:, :dims]
    signs = np.sign(V[np.argmax(np.abs(V), axis=0), np.arange(V.shape[1])])
    signs[signs == 0] = 1.0
    return (V * signs).astype(np.float32)


def fit_token_vectors(A: Any, Y: np.ndarray, T0: np.ndarray, lam: float = 1e-3, iters: int = 60) -> np.ndarray:
    """Ridge-regress the token table on teacher embeddings (see the module docstring).

    Parameters
    ----------
    A : (n, V) scipy sparse, float32 (:func:`bag_of_tokens`)
    Y : (n, d) float32, the teacher's embeddings of the n texts
    T0 : (V, d) float32, the prior (distilled) token vectors in the same d-space
    lam : float, ridge strength (A's rows sum to 1: ``lam`` ~ 1e-3 trusts tokens seen a few times)
    iters : int, conjugate-gradient iterations (fixed: the result is deterministic)

    Returns
    -------
    (V, d) float32
    """
    t0 = time.perf_counter()
    A = A.tocsr().astype(np.float32)
    At = A.T.tocsr()
    Y = np.asarray(Y, dtype=np.float32)
    P0 = A @ T0
    s = float(np.sum(P0 * Y) / max(float(np.sum(P0 * P0)), 1e-30))
    prior = (s * T0).astype(np.float32)

    def op(X: np.ndarray) -> np.ndarray:
        return np.asarray(At @ (A @ X), dtype=np.float32) + np.float32(lam) * X

    B = np.asarray(At @ Y, dtype=np.float32) + np.float32(lam) * prior
    X = prior.copy()
    R = B - op(X)
    P = R.copy()
    rs = np.einsum("ij,ij->j", R, R, dtype=np.float64)
    rs0 = float(rs.sum())
    for _ in range(int(iters)):
        AP = op(P)
        alpha = rs / np.maximum(np.einsum("ij,ij->j", P, AP, dtype=np.float64), 1e-30)
        X += P * alpha.astype(np.float32)
        R -= AP * alpha.astype(np.float32)
        rs_new = np.einsum("ij,ij->j", R, R, dtype=np.float64)
        P = R + P * (rs_new / np.maximum(rs, 1e-30)).astype(np.float32)
        rs = rs_new
    logger.info("fitted %d x %d token vectors to %d teacher embeddings in %.1f s (prior scale %.3f, residual %.2e "
                "of the start)", X.shape[0], X.shape[1], A.shape[0], time.perf_counter() - t0, s,
                float(rs.sum()) / max(rs0, 1e-30))
    return X
