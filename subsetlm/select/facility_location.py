"""Facility location, sparse (kNN graph, O(n k) memory) and dense (on the fly or a kernel).

    f(S) = sum_i w_i max_{j in S} max(sim(i, j), 0)  +  sum_{j in S} m_j

Similarities are **clipped at 0**: a negative similarity counts as 0. ``w_i >= 0`` are
per-sample coverage weights (default 1: plain facility location; e.g. ``1 / |group|`` so a
duplicate group counts once, or per-domain weights) and ``m_j = λ q_j >= 0`` an optional
modular term (a quality score per candidate; default none).

Why the greedy certificate stays valid with weights and a modular term. Each
``g_i(S) = max_{j∈S} max(s_ij, 0)`` (``g_i(∅) = 0``) is monotone and submodular: adding ``j``
raises it by ``max(0, s_ij - g_i(S))``, which only shrinks as S grows. A non-negative
combination ``Σ_i w_i g_i`` of monotone submodular functions is monotone submodular, and
``Σ_{j∈S} m_j`` with ``m_j >= 0`` is modular (gains ``m_j`` independent of S) and monotone,
so ``f`` is monotone submodular with ``f(∅) = 0``. Then for any feasible T and any greedy
prefix S_t: ``f(T) <= f(T ∪ S_t) <= f(S_t) + Σ_{j∈T\S_t} Δ(j | S_t)`` (monotonicity, then
submodularity), and the right side is at most ``f(S_t) +`` the constraint's relaxed maximum
of the gains (the b largest for a count, the fractional knapsack for tokens, per-group top
caps for quotas): ``OPT <= f(S_t) + Σ top-b Δ(j | S_t)`` holds as without weights
(:mod:`subsetlm.select.greedy`), as do the greedy's (1 - 1/e) and (1 - 1/e)/2 guarantees.
A negative ``w_i`` or ``q_j`` would break monotonicity (first inequality), so both are refused.

Both classes share the interface the optimizers in :mod:`subsetlm.select.greedy` use:

- ``n``: ground-set size; ``value``: f of the current (incremental) selection;
- ``reset()``, ``gain(j)``, ``gains(candidates) -> (m,) float64``, ``update(j)``;
- ``evaluate(S) -> float``: f of any subset, stateless (does not touch the selection);
- ``assign(order) -> (b,) int64`` weights and ``assignment(order) -> (weights, n_unassigned)``;
- ``representatives(order) -> (rep (n,), sim (n,))``: ``Σ_{rep_i >= 0} w_i max(sim_i, 0) +
  Σ_{j∈S} m_j == evaluate(order)`` up to float rounding.

Example
-------
>>> import numpy as np
>>> from subsetlm.select.facility_location import DenseFacilityLocation
>>> X = np.eye(3, dtype=np.float32)
>>> fn = DenseFacilityLocation(X)
>>> fn.gains(np.arange(3)).tolist(), fn.evaluate([0, 1])
([1.0, 1.0, 1.0], 2.0)
>>> fn = DenseFacilityLocation(X, weights=[2.0, 1.0, 0.0], modular=[0.0, 0.5, 0.25])
>>> fn.gains(np.arange(3)).tolist(), fn.evaluate([0, 1])
([2.0, 1.5, 0.25], 3.5)
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from subsetlm.select import _kernels as K

logger = logging.getLogger(__name__)

__all__ = ["SparseFacilityLocation", "DenseFacilityLocation", "as_graph_arrays", "check_nonnegative"]


def check_nonnegative(values: Any, n: int, name: str) -> np.ndarray | None:
    """``values`` as an ``(n,)`` float64 array of finite numbers >= 0 (None stays None).

    Raises ``ValueError`` naming ``name``, what was received and how to fix it.

    >>> check_nonnegative([1, 0.5], 2, "weights").tolist()
    [1.0, 0.5]
    """
    if values is None:
        return None
    v = np.asarray(values)
    if v.dtype == object or not (np.issubdtype(v.dtype, np.number) or v.dtype == bool):
        raise TypeError(f"{name}: expected numbers, one per sample; got dtype {v.dtype}")
    v = v.astype(np.float64).reshape(-1) if v.ndim <= 1 else v
    if v.shape != (n,):
        raise ValueError(f"{name}: expected one value per sample, shape ({n},); got shape {np.shape(values)}")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ValueError(f"{name}: {bad.size} value(s) are NaN or inf (first at row {int(bad[0])}: {v[bad[0]]}); "
                         "give every sample a finite value >= 0")
    neg = np.flatnonzero(v < 0)
    if neg.size:
        raise ValueError(f"{name}: {neg.size} value(s) are negative (first at row {int(neg[0])}: {v[neg[0]]}); "
                         "a negative value breaks monotonicity (and the certificate): shift or clip to >= 0")
    return np.ascontiguousarray(v)


def as_graph_arrays(graph: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(neighbors (n, k) int32, similarities (n, k) float32)`` from a graph.

    Accepts any object with ``.neighbors`` / ``.similarities`` (e.g.
    :class:`subsetlm.index.KNNGraph`), or a scipy sparse matrix whose row i holds i's
    neighbours (converted to padded arrays, ``-1`` for missing).
    """
    if hasattr(graph, "neighbors") and hasattr(graph, "similarities"):
        nb = np.asarray(graph.neighbors)
        sm = np.asarray(graph.similarities)
    else:
        try:
            import scipy.sparse as sp
        except ImportError:  # pragma: no cover - scipy is a dependency
            sp = None
        if sp is None or not sp.issparse(graph):
            raise TypeError(f"graph: expected a KNNGraph-like object (.neighbors, .similarities) or a scipy "
                            f"sparse matrix whose row i holds i's neighbours; got {type(graph).__name__}")
        csr = sp.csr_matrix(graph)
        if csr.shape[0] != csr.shape[1]:
            raise ValueError(f"graph: a sparse graph must be square (n, n); got shape {csr.shape}")
        lengths = np.diff(csr.indptr)
        kk = max(int(lengths.max()) if len(lengths) else 0, 1)
        nb = np.full((csr.shape[0], kk), -1, np.int32)
        sm = np.zeros((csr.shape[0], kk), np.float32)
        rows = np.repeat(np.arange(csr.shape[0]), lengths)
        cols = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], lengths)
        nb[rows, cols] = csr.indices
        sm[rows, cols] = csr.data
    if nb.ndim != 2 or sm.shape != nb.shape:
        raise ValueError(f"graph: neighbors and similarities must both be (n, k); got {nb.shape} and {sm.shape}")
    if not np.issubdtype(nb.dtype, np.integer):
        raise TypeError(f"graph.neighbors: expected an integer array, got dtype {nb.dtype}")
    n = nb.shape[0]
    if nb.size and (nb.max() >= n or nb.min() < -1):
        raise ValueError(f"graph.neighbors: indices must lie in [-1, {n - 1}] (row i = neighbours of i, -1 = "
                         f"missing); got min {nb.min()}, max {nb.max()}")
    sm = np.ascontiguousarray(sm, dtype=np.float32)
    if not np.all(np.isfinite(sm)):
        raise ValueError("graph.similarities contains NaN or inf; rebuild the kNN graph from finite embeddings")
    return np.ascontiguousarray(nb, dtype=np.int32), sm


def _check_subset(S: Any, n: int, where: str) -> np.ndarray:
    S = np.asarray(S, dtype=np.int64).reshape(-1)
    if S.size and (S.min() < 0 or S.max() >= n):
        raise ValueError(f"{where}: indices must lie in [0, {n}); got min {S.min()}, max {S.max()}")
    return S


class SparseFacilityLocation:
    """Facility location on a kNN similarity graph; memory O(n k).

    The marginal gain of a candidate ``j`` sums over the points ``i`` that list ``j`` among
    their neighbours (the reverse kNN lists, i.e. the transpose of "row i = neighbours of
    i"): ``gain(j) = sum_{i in rev(j)} max(0, w_i sim(i, j) - cur[i]) + m_j`` with ``cur[i]``
    the best weighted similarity of ``i`` to the current selection. A pair (i, j) missing
    from the graph has similarity 0.

    Parameters
    ----------
    graph : KNNGraph-like (``neighbors (n, k)`` int, -1 = missing; ``similarities (n, k)``)
        or a scipy sparse ``(n, n)`` matrix whose row i holds i's neighbours.
    weights : (n,) float >= 0, optional (keyword-only). Coverage weight ``w_i`` of each
        ground point: row i's similarities are scaled by it (in float64, rounded to float32).
    modular : (n,) float >= 0, optional (keyword-only). ``m_j`` added to f for each selected
        ``j`` (``λ q_j``: a quality term).

    Memory: reverse lists of ``nnz <= n k`` int32 + float32 entries, ``(n+1,)`` int64
    offsets, and the ``(n,)`` float32 state; with ``weights`` also the unscaled similarities
    (``4 nnz`` bytes, for :meth:`representatives`) and ``(n,)`` float64 weights.

    Example
    -------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> g = SimpleNamespace(neighbors=np.array([[0, 1], [1, 0], [2, -1]], np.int32),
    ...                     similarities=np.array([[1, .5], [1, .5], [1, 0]], np.float32))
    >>> fn = SparseFacilityLocation(g)
    >>> fn.gains(np.arange(3)).tolist()
    [1.5, 1.5, 1.0]
    >>> SparseFacilityLocation(g, weights=[1, 0, 2], modular=[0, 0, .25]).gains(np.arange(3)).tolist()
    [1.0, 0.5, 2.25]
    """

    def __init__(self, graph: Any, *, weights: Any = None, modular: Any = None):
        nb, sm = as_graph_arrays(graph)
        self.n = int(nb.shape[0])
        self.k = int(nb.shape[1])
        self.weights = check_nonnegative(weights, self.n, "coverage weights")
        self.modular = check_nonnegative(modular, self.n, "modular (quality) term")
        self.indptr, self.rev_idx, self.rev_sim = K.reverse_lists(nb, sm, self.n)
        self.rev_sim_raw = self.rev_sim  # unweighted similarities: who represents whom
        if self.weights is not None:
            self.rev_sim = K.scale_lists(self.rev_idx, self.rev_sim_raw, self.weights)
        self.cur = np.zeros(self.n, np.float32)
        self.value = 0.0

    @property
    def nbytes(self) -> int:
        """Bytes held by the reverse lists and the state."""
        extra = 0 if self.weights is None else self.rev_sim_raw.nbytes + self.weights.nbytes
        extra += 0 if self.modular is None else self.modular.nbytes
        return int(self.indptr.nbytes + self.rev_idx.nbytes + self.rev_sim.nbytes + self.cur.nbytes + extra)

    def reset(self) -> None:
        """Forget the current selection."""
        self.cur[:] = 0.0
        self.value = 0.0

    def gain(self, j: int) -> float:
        """Marginal gain of ``j`` w.r.t. the current selection."""
        g = K.gain_one(int(j), self.indptr, self.rev_idx, self.rev_sim, self.cur)
        if self.modular is not None:
            g = g + self.modular[int(j)]
        return float(g)

    def gains(self, candidates: Any = None) -> np.ndarray:
        """Marginal gains ``(m,) float64`` of ``candidates`` (default: all n)."""
        c = np.arange(self.n, dtype=np.int64) if candidates is None else \
            np.ascontiguousarray(candidates, dtype=np.int64).reshape(-1)
        g = K.gains_many(c, self.indptr, self.rev_idx, self.rev_sim, self.cur)
        if self.modular is not None:
            g += self.modular[c]
        return g

    def update(self, j: int) -> None:
        """Add ``j`` to the current selection."""
        g = self.gain(j)
        K.update(int(j), self.indptr, self.rev_idx, self.rev_sim, self.cur)
        self.value += g

    def value_of_state(self, selected: np.ndarray) -> float:
        """f of the current state (``cur``), whose elements are ``selected``; the lazy kernel's running value."""
        val = float(self.cur.astype(np.float64).sum())
        if self.modular is not None:
            val += float(self.modular[np.asarray(selected, np.int64)].sum())
        return val

    def evaluate(self, S: Sequence[int]) -> float:
        """f(S) for any subset ``S`` (stateless)."""
        S = _check_subset(S, self.n, "evaluate(S)")
        val, _ = K.evaluate(S, self.indptr, self.rev_idx, self.rev_sim, self.n)
        return _plus_modular(float(val), self.modular, S)

    def assignment(self, order: Sequence[int]) -> tuple[np.ndarray, int]:
        """``(weights (b,) int64, n_unassigned)``: points whose best selected neighbour is each element.

        A point with no selected element in its kNN list is unassigned;
        ``weights.sum() == n - n_unassigned`` (counts of points, whatever the coverage weights).
        """
        order = _check_subset(order, self.n, "assign(order)")
        w, un = K.assign(order, self.indptr, self.rev_idx, self.rev_sim_raw, self.n)
        return w, int(un)

    def assign(self, order: Sequence[int]) -> np.ndarray:
        """Weights ``(b,) int64``; see :meth:`assignment` (also sets ``n_unassigned_``)."""
        w, self.n_unassigned_ = self.assignment(order)
        return w

    def representatives(self, order: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Each point's representative: ``(rep (n,) int64, sim (n,) float32)``.

        ``rep[i]`` is the selected element with the highest (clipped, unweighted) similarity
        in i's kNN list (earliest in ``order`` on ties), -1 when none; ``sim[i]`` that
        similarity (NaN when none). ``Σ_{rep >= 0} w_i sim_i + Σ_{j in order} m_j ==
        evaluate(order)`` up to float rounding.
        """
        order = _check_subset(order, self.n, "representatives(order)")
        best, owner = K.best_owner(order, self.indptr, self.rev_idx, self.rev_sim_raw, self.n)
        return _rep_sim(order, best, owner)


def _plus_modular(val: float, modular: np.ndarray | None, S: np.ndarray) -> float:
    """``val + Σ_{j in set(S)} m_j`` (``val`` unchanged without a modular term)."""
    if modular is None:
        return val
    return val + float(modular[np.unique(S)].sum())


def _counts(owner: np.ndarray, b: int) -> tuple[np.ndarray, int]:
    """``(points per selected element (b,) int64, points with none)`` from each point's owner position."""
    return np.bincount(owner[owner >= 0], minlength=b).astype(np.int64), int((owner < 0).sum())


def assignment_of(order: np.ndarray, rep: np.ndarray) -> tuple[np.ndarray, int]:
    """:meth:`SparseFacilityLocation.assignment` derived from :meth:`representatives`' ``rep`` (no second pass)."""
    pos = np.full(len(rep), -1, np.int64)
    pos[np.asarray(order, np.int64)] = np.arange(len(order))
    return _counts(np.where(rep >= 0, pos[np.maximum(rep, 0)], -1), len(order))


def _rep_sim(order: np.ndarray, best: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rep = np.where(owner >= 0, np.asarray(order, np.int64)[np.maximum(owner, 0)], -1).astype(np.int64)
    sim = np.where(owner >= 0, best, np.nan).astype(np.float32)
    return rep, sim


class DenseFacilityLocation:
    """Facility location with the dense cosine/dot kernel ``sim = X X^T`` (clipped at 0),
    optionally weighted per point and with a modular term (see the module docstring).

    Without ``kernel`` no ``n x n`` matrix is ever formed: a gain needs one similarity row,
    ``X @ X[j]``, computed on the fly (in blocks of ``block_size`` candidates), so memory is
    O(n d + block_size n). Rows are multiplied in float64 and rounded to float32, so a row is
    the same value whether it is computed alone or in a block (exact lazy == naive).
    The float64 copy of X costs ``8 n d`` bytes: fine up to a few 100k rows on a CPU; beyond,
    use the sparse graph, partitions or :func:`subsetlm.select.torch_greedy.torch_greedy`.

    Parameters
    ----------
    X : (n, d) float array, optional
        Embeddings (rows usually L2-normalised). Not needed when ``kernel`` is an array.
    kernel : None, ``"precompute"`` or (n, n) array
        ``"precompute"`` forms ``max(X X^T, 0)`` once (fast for small n); an array is used
        as the similarity matrix; row ``j`` holds candidate j's similarity to every point
        (``K[j, i] = sim(i, j)``; symmetric kernels need not care).
    block_size : int
        Candidates per similarity block in :meth:`gains` (lowered so that a block of float64
        rows stays under ``block_bytes``, default 256 MiB).
    max_kernel_bytes : int
        A kernel larger than this (``4 n^2`` bytes) raises ``MemoryError``-like ValueError.
    weights, modular : (n,) float >= 0, optional (keyword-only): coverage weight ``w_i`` of each
        point (column i of every similarity row is scaled by it, in float64 rounded to float32,
        as the sparse class scales its lists) and ``m_j`` added per selected element.

    Example
    -------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    >>> fn = DenseFacilityLocation(X)
    >>> fn.gains([0, 1]).shape
    (2,)
    """

    def __init__(self, X: Any = None, kernel: Any = None, *, weights: Any = None, modular: Any = None,
                 block_size: int = 1024, max_kernel_bytes: int = 2 * 1024**3, block_bytes: int = 256 * 1024**2):
        if int(block_size) < 1:
            raise ValueError(f"block_size must be >= 1; got {block_size}")
        self.block_size = int(block_size)
        self.block_bytes = int(block_bytes)
        self.K = None
        self.X = None
        if isinstance(kernel, np.ndarray) or (kernel is not None and not isinstance(kernel, str)):
            Kmat = np.asarray(kernel)
            if Kmat.ndim != 2 or Kmat.shape[0] != Kmat.shape[1]:
                raise ValueError(f"kernel: expected a square (n, n) array; got shape {Kmat.shape}")
            self._check_kernel_size(Kmat.shape[0], max_kernel_bytes)
            if not np.all(np.isfinite(Kmat)):
                raise ValueError("kernel contains NaN or inf")
            self.K = np.ascontiguousarray(np.maximum(Kmat, 0), dtype=np.float32)
            self.n = int(Kmat.shape[0])
        else:
            if kernel not in (None, "precompute"):
                raise ValueError(f"kernel: expected None, 'precompute' or an (n, n) array; got {kernel!r}")
            X = self._check_X(X)
            self.n = int(X.shape[0])
            self.X = X.astype(np.float64)
            if kernel == "precompute":
                self._check_kernel_size(self.n, max_kernel_bytes)
                self.block_size = max(1, min(self.block_size, self.block_bytes // (8 * self.n)))
                self.K = np.zeros((self.n, self.n), np.float32)
                for s in range(0, self.n, self.block_size):
                    self.K[s:s + self.block_size] = self._sims_from_X(np.arange(s, min(s + self.block_size, self.n)))
                self.X = None
        # rows per similarity block: at most block_size, and at most block_bytes of float64 rows
        self.block_size = max(1, min(self.block_size, self.block_bytes // (8 * self.n)))
        self.weights = check_nonnegative(weights, self.n, "coverage weights")
        self.modular = check_nonnegative(modular, self.n, "modular (quality) term")
        self.cur = np.zeros(self.n, np.float32)
        self.value = 0.0
        # lazy greedy re-evaluates this many stale candidates per product (reads X once)
        self.lazy_batch = 1 if self.K is not None else 8

    @staticmethod
    def _check_X(X: Any) -> np.ndarray:
        if X is None:
            raise ValueError("DenseFacilityLocation needs X (n, d) embeddings or an (n, n) kernel array")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X: expected a non-empty 2-D (n, d) array; got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.floating):
            raise TypeError(f"X: expected a float array; got dtype {X.dtype}")
        if not np.all(np.isfinite(X)):
            bad = int(np.argwhere(~np.isfinite(X))[0, 0])
            raise ValueError(f"X contains NaN or inf (first at row {bad}); drop or re-embed those rows")
        return X

    @staticmethod
    def _check_kernel_size(n: int, max_kernel_bytes: int) -> None:
        need = 4 * n * n
        if need > max_kernel_bytes:
            raise ValueError(f"a dense kernel for n={n} needs {need / 2**30:.1f} GiB (> max_kernel_bytes="
                             f"{max_kernel_bytes / 2**30:.1f} GiB); use kernel=None (on-the-fly gains), "
                             f"SparseFacilityLocation on a kNN graph, or partitioned_greedy")

    def _sims_from_X(self, rows: np.ndarray) -> np.ndarray:
        S = self.X[rows] @ self.X.T
        np.maximum(S, 0.0, out=S)
        return S.astype(np.float32)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """Unweighted similarity rows (who represents whom)."""
        if self.K is not None:
            return self.K[rows]
        return self._sims_from_X(rows)

    def _wrows(self, rows: np.ndarray) -> np.ndarray:
        """Weighted similarity rows (the coverage term): ``float32(float64(s_ij) * w_i)``."""
        r = self._rows(rows)
        if self.weights is None:
            return r
        return (r.astype(np.float64) * self.weights).astype(np.float32)

    def reset(self) -> None:
        """Forget the current selection."""
        self.cur[:] = 0.0
        self.value = 0.0

    def gain(self, j: int) -> float:
        """Marginal gain of ``j`` w.r.t. the current selection."""
        return float(self.gains([int(j)])[0])

    def gains(self, candidates: Any = None) -> np.ndarray:
        """Marginal gains ``(m,) float64`` of ``candidates`` (default: all n), in blocks."""
        c = np.arange(self.n, dtype=np.int64) if candidates is None else \
            np.asarray(candidates, dtype=np.int64).reshape(-1)
        out = np.empty(len(c), np.float64)
        for s in range(0, len(c), self.block_size):
            out[s:s + self.block_size] = K.dense_gains(self._wrows(c[s:s + self.block_size]), self.cur)
        if self.modular is not None:
            out += self.modular[c]
        return out

    def update(self, j: int) -> None:
        """Add ``j`` to the current selection."""
        row = self._wrows(np.array([int(j)]))[0]
        g = K.dense_gains(row[None, :], self.cur)[0]
        if self.modular is not None:
            g = g + self.modular[int(j)]
        self.value += float(g)
        K.dense_update(row, self.cur)

    def evaluate(self, S: Sequence[int]) -> float:
        """f(S) for any subset ``S`` (stateless)."""
        S = _check_subset(S, self.n, "evaluate(S)")
        cur = np.zeros(self.n, np.float32)
        for s in range(0, len(S), self.block_size):
            cur = np.maximum(cur, self._wrows(S[s:s + self.block_size]).max(axis=0))
        return _plus_modular(float(cur.astype(np.float64).sum()), self.modular, S)

    def assignment(self, order: Sequence[int]) -> tuple[np.ndarray, int]:
        """``(weights (b,) int64, n_unassigned)``; with a dense kernel every point is assigned
        (to its most similar selected element, earliest on ties) once ``order`` is non-empty."""
        order = _check_subset(order, self.n, "assign(order)")
        return _counts(self._owners(order)[1], len(order))

    def representatives(self, order: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Each point's most similar selected element and that (clipped) similarity; see the sparse class."""
        order = _check_subset(order, self.n, "representatives(order)")
        return _rep_sim(order, *self._owners(order))

    def _owners(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(best, owner)`` as :func:`subsetlm.select._kernels.best_owner` gives for the sparse graph."""
        best = np.full(self.n, -1.0, np.float32)
        owner = np.full(self.n, -1, np.int64)
        for s in range(0, len(order), self.block_size):
            K.dense_assign(self._rows(order[s:s + self.block_size]), s, best, owner)
        return best, owner

    def assign(self, order: Sequence[int]) -> np.ndarray:
        """Weights ``(b,) int64``; see :meth:`assignment` (also sets ``n_unassigned_``)."""
        w, self.n_unassigned_ = self.assignment(order)
        return w
