"""Other submodular functions through submodlib, on dense kernels for small ground sets.

Facility location (the default, on a sparse kNN graph) lives in ``facility_location.py``.
This module exposes submodlib's dense-kernel functions behind one entry point,
:func:`submodlib_select`, and registers each under ``subsetlm.registry`` kind
``"function"``:

==============  ========================================================================
name            f(S) as submodlib computes it (s = similarity, L = kernel)
==============  ========================================================================
graph-cut       Σ_{i∈V, j∈S} s_ij − λ Σ_{i∈S, j∈S} s_ij  (ordered pairs, i = j included);
                monotone for λ < 0.5 (default 0.4)
log-det         log det(L_S + λ I)  (default λ = 1.0, as INGENIOUS' code)
disparity-min   min_{i≠j∈S} (1 − s_ij); 0 for |S| <= 1 (not submodular; greedy heuristic)
disparity-sum   Σ_{i<j∈S} (1 − s_ij)  (each unordered pair once)
fl-mi           Σ_{i∈V} min(max_{j∈S} s_ij, η max_{q∈Q} s_iq)  (query-focused; default η = 1)
==============  ========================================================================

Kernels are computed here with numpy in float32 and passed to submodlib as precomputed
matrices (``sijs=`` / ``ggsijs=`` / ``data_sijs=``): submodlib's ``data=`` path builds the
kernel through n² Python lists in its C++ binding and fails near n = 20k.

- ``metric="cosine"``: s = cosine similarity (rows L2-normalised first).
- ``metric="rbf"``: s = exp(−‖x−y‖² / mean‖x−y‖²) over the ground set, in (0, 1].

Negative similarities are clipped to 0 for every function except log-det: graph cut and
facility location are submodular only for s >= 0, and submodlib's disparity functions
require s in [0, 1]. Log-det keeps the raw kernel, because clipping a cosine Gram matrix
can make it indefinite (and ``L_S + λI`` then may have no real log-determinant).

Memory: every function here holds dense n×n kernels, and submodlib copies them through
Python lists (``ndarray.tolist()``: one Python float object per entry) before its C++ core
stores its own copy. :func:`estimate_memory_bytes` uses the per-entry cost measured on
this submodlib version, and :func:`submodlib_select` refuses inputs above
``memory_limit_gb`` before building anything.

Example
-------
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(40, 8)).astype(np.float32)
>>> res = submodlib_select("log-det", X, 5)
>>> res.order.shape, len(set(res.order.tolist()))
((5,), 5)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from subsetlm.registry import register

logger = logging.getLogger(__name__)

OPTIMIZERS = ("NaiveGreedy", "LazyGreedy", "StochasticGreedy", "LazierThanLazyGreedy")
METRICS = ("cosine", "rbf")

# Peak resident bytes per dense kernel entry during construction + maximize (the growth of
# ru_maxrss over the process baseline, divided by n²), measured with submodlib-py 0.0.3 on
# CPython 3.11, 2-core x86 machine, d=64, budget n/10, n = 1000, 2000, 4000:
#   log-det 53.1/52.5/52.3, graph-cut 57.0/56.5/56.3, disparity-sum 53.1/52.5/52.3,
#   fl-mi (q=20) 54.0/53.0/52.6.
# That is the numpy float32 kernel (4 B) + its ``tolist()`` copy (8 B pointer + 24 B Python
# float) + submodlib's C++ copy + list overheads; graph-cut keeps one more n×n array.
# The estimates round these up.
BYTES_PER_ENTRY = {"graph-cut": 58.0, "log-det": 54.0, "disparity-min": 54.0, "disparity-sum": 54.0,
                   "fl-mi": 55.0}


@dataclass(frozen=True)
class _Spec:
    name: str
    cls_name: str
    clip: bool
    default_lambda: float | None
    n2_kernels: int  # how many n×n kernels submodlib is handed
    needs_queries: bool = False


_SPECS: dict[str, _Spec] = {
    "graph-cut": _Spec("graph-cut", "GraphCutFunction", True, 0.4, 1),
    "log-det": _Spec("log-det", "LogDeterminantFunction", False, 1.0, 1),
    "disparity-min": _Spec("disparity-min", "DisparityMinFunction", True, None, 1),
    "disparity-sum": _Spec("disparity-sum", "DisparitySumFunction", True, None, 1),
    "fl-mi": _Spec("fl-mi", "FacilityLocationMutualInformationFunction", True, None, 1, needs_queries=True),
}
FUNCTIONS = tuple(_SPECS)


@dataclass(frozen=True)
class SubmodlibResult:
    """Result of :func:`submodlib_select`.

    Attributes
    ----------
    order : np.ndarray
        (b,) int64 selected ground-set indices in greedy order.
    gains : np.ndarray
        (b,) float64 marginal gains, as submodlib reports them, aligned with ``order``.
    objective : float
        f(selected set), evaluated by submodlib.
    function : str
        The function name.
    params : dict
        The resolved parameters (lambda_, eta, metric, optimizer, epsilon, seed).
    """

    order: np.ndarray
    gains: np.ndarray
    objective: float
    function: str = ""
    params: dict = field(default_factory=dict)


def estimate_memory_bytes(function: str, n: int, n_queries: int = 0) -> float:
    """Estimated peak bytes :func:`submodlib_select` needs for ``n`` samples.

    Parameters
    ----------
    function : str
        One of :data:`FUNCTIONS`.
    n : int
        Ground-set size.
    n_queries : int
        Number of queries (fl-mi only; adds an n×q kernel).

    Returns
    -------
    float
        ``BYTES_PER_ENTRY[function] * (n² + n * q)``.
    """
    spec = _spec(function)
    return BYTES_PER_ENTRY[spec.name] * (float(n) * n * spec.n2_kernels + float(n) * n_queries)


def max_n_for_limit(function: str, memory_limit_gb: float) -> int:
    """Largest ground set whose estimate fits ``memory_limit_gb`` (queries ignored)."""
    spec = _spec(function)
    return max(1, int(math.sqrt(memory_limit_gb * 1e9 / (BYTES_PER_ENTRY[spec.name] * spec.n2_kernels))))


def _spec(function: str) -> _Spec:
    if function not in _SPECS:
        raise ValueError(f"unknown submodlib function {function!r}; choose one of: {', '.join(FUNCTIONS)} "
                         "(facility location runs on the sparse kNN graph in subsetlm.select.facility_location)")
    return _SPECS[function]


def _check_matrix(name: str, A: Any) -> np.ndarray:
    A = np.asarray(A)
    if A.ndim != 2 or A.shape[0] < 1 or A.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty 2-D (rows, d) array, got shape {A.shape}")
    if not np.issubdtype(A.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {A.dtype}")
    A = A.astype(np.float32, copy=False)
    if not np.isfinite(A).all():
        row = int(np.flatnonzero(~np.isfinite(A).all(axis=1))[0])
        raise ValueError(f"{name} row {row} contains NaN or inf; fix or drop that sample")
    return A


def _l2_normalize(A: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    return A / np.maximum(norms, np.float32(1e-12))


def similarity(A: np.ndarray, B: np.ndarray, metric: str = "cosine", *, gamma: float | None = None) -> np.ndarray:
    """Dense (len(A), len(B)) float32 similarity matrix.

    Parameters
    ----------
    A, B : np.ndarray
        (m, d) and (p, d) arrays.
    metric : ``"cosine"`` | ``"rbf"``
    gamma : float, optional
        RBF scale: s = exp(−gamma ‖a−b‖²); required for ``"rbf"``.
    """
    if metric == "cosine":
        return (_l2_normalize(A) @ _l2_normalize(B).T).astype(np.float32, copy=False)
    if metric == "rbf":
        assert gamma is not None
        d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
        np.maximum(d2, 0.0, out=d2)
        np.multiply(d2, -gamma, out=d2)
        return np.exp(d2, out=d2).astype(np.float32, copy=False)
    raise ValueError(f"metric={metric!r}; choose one of {', '.join(METRICS)}")


def _rbf_gamma(X: np.ndarray) -> float:
    # mean over all ordered pairs of ‖x_i − x_j‖² = 2 (mean‖x‖² − ‖mean x‖²), in O(n d)
    X64 = X.astype(np.float64)
    mean_d2 = 2.0 * (float((X64 * X64).sum(1).mean()) - float((X64.mean(0) ** 2).sum()))
    return 1.0 / mean_d2 if mean_d2 > 0 else 1.0


def _build(spec: _Spec, X: np.ndarray, queries: np.ndarray | None, metric: str, lam: float | None,
           eta: float) -> Any:
    import submodlib

    n = X.shape[0]
    gamma = _rbf_gamma(X) if metric == "rbf" else None
    K = similarity(X, X, metric, gamma=gamma)
    if spec.clip:
        np.maximum(K, 0.0, out=K)
    cls = getattr(submodlib, spec.cls_name)
    if spec.name == "graph-cut":
        return cls(n=n, mode="dense", lambdaVal=lam, ggsijs=K)
    if spec.name == "log-det":
        return cls(n=n, mode="dense", lambdaVal=lam, sijs=K)
    if spec.name in ("disparity-min", "disparity-sum"):
        np.minimum(K, 1.0, out=K)  # float32 rounding can give 1.0000001 on the diagonal
        return cls(n=n, mode="dense", sijs=K)
    assert queries is not None
    Q = np.maximum(similarity(X, queries, metric, gamma=gamma), 0.0)
    return cls(n=n, num_queries=queries.shape[0], data_sijs=K, query_sijs=Q, magnificationEta=eta)


def submodlib_select(function: str, X: np.ndarray, budget: int, *, queries: np.ndarray | None = None,
                     optimizer: str = "LazyGreedy", metric: str = "cosine", lambda_: float | None = None,
                     eta: float = 1.0, epsilon: float = 0.01, seed: int = 0,
                     memory_limit_gb: float = 4.0) -> SubmodlibResult:
    """Select ``budget`` samples by maximising a submodlib function on a dense kernel.

    Parameters
    ----------
    function : str
        ``"graph-cut"``, ``"log-det"``, ``"disparity-min"``, ``"disparity-sum"`` or ``"fl-mi"``
        (definitions in the module docstring).
    X : np.ndarray
        (n, d) embeddings (any float dtype; converted to float32).
    budget : int
        Number of samples, 1 <= budget <= n.
    queries : np.ndarray, optional
        (q, d) query embeddings; required for ``"fl-mi"`` and rejected by the others.
    optimizer : str
        submodlib optimizer: ``"NaiveGreedy"``, ``"LazyGreedy"`` (default; same picks as
        naive for these functions), ``"StochasticGreedy"``, ``"LazierThanLazyGreedy"``.
    metric : ``"cosine"`` | ``"rbf"``
    lambda_ : float, optional
        graph-cut λ (default 0.4) or log-det diagonal λ (default 1.0); rejected otherwise.
    eta : float
        fl-mi query-relevance magnification η (default 1.0).
    epsilon : float
        Accuracy of the stochastic optimizers (sample size (n/b) log(1/ε)).
    seed : int
        submodlib seeds its stochastic optimizers with a fixed internal seed; to make
        ``seed`` matter (and stay reproducible) the ground set is permuted with
        ``np.random.default_rng(seed)`` before the stochastic optimizers run, and indices
        are mapped back. Deterministic optimizers ignore ``seed``.
    memory_limit_gb : float
        Refuse inputs whose estimated peak (:func:`estimate_memory_bytes`) exceeds this.

    Returns
    -------
    SubmodlibResult
        ``order`` (budget,) int64 distinct indices into X, ``gains`` (budget,) float64,
        ``objective`` = f(selected set).

    Raises
    ------
    ValueError
        Unknown function/optimizer/metric, a bad budget, missing or unexpected queries,
        NaN/inf rows, or an input too large for ``memory_limit_gb`` (the message says
        how many partitions would fit).

    Examples
    --------
    >>> X = np.eye(6, dtype=np.float32)
    >>> submodlib_select("disparity-sum", X, 3).objective
    3.0
    """
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an int sample count, got {type(budget).__name__} {budget!r}; "
                        "resolve fractions with subsetlm.select.budget.parse_budget(...).resolve(n)")
    obj = SubmodlibObjective(function, X, queries=queries, optimizer=optimizer, metric=metric, lambda_=lambda_,
                             eta=eta, seed=seed, memory_limit_gb=memory_limit_gb)
    budget = int(budget)
    if not 1 <= budget <= obj.n:
        raise ValueError(f"budget={budget} must be in [1, n={obj.n}] samples; lower --budget or use a fraction")
    order, gains = obj.maximize(budget, epsilon)
    return SubmodlibResult(order, gains, obj.evaluate(order), obj.function, dict(obj.params, epsilon=epsilon))


class SubmodlibObjective:
    """One submodlib function built on the dense kernel of ``X``: maximise and evaluate.

    Parameters are those of :func:`submodlib_select` (validated here, before any kernel is
    built). ``n`` is the ground-set size; :meth:`maximize` returns the greedy order in the
    rows of ``X`` (the stochastic optimizers run on a seeded permutation, mapped back);
    :meth:`evaluate` takes rows of ``X`` too.
    """

    def __init__(self, function: str, X: np.ndarray, *, queries: np.ndarray | None = None,
                 optimizer: str = "LazyGreedy", metric: str = "cosine", lambda_: float | None = None,
                 eta: float = 1.0, seed: int = 0, memory_limit_gb: float = 4.0):
        spec = _spec(function)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}; choose one of {', '.join(METRICS)}")
        X = _check_matrix("X", X)
        n = X.shape[0]
        if spec.needs_queries:
            if queries is None:
                raise ValueError("fl-mi (query-focused facility location) needs queries=(q, d) query embeddings")
            queries = _check_matrix("queries", queries)
            if queries.shape[1] != X.shape[1]:
                raise ValueError(f"queries have dimension {queries.shape[1]} but X has {X.shape[1]}; "
                                 "embed both with the same model")
        elif queries is not None:
            raise ValueError(f"{function} takes no queries; use function='fl-mi' for query-focused selection")
        if lambda_ is not None and spec.default_lambda is None:
            raise ValueError(f"{function} has no lambda_ parameter (only graph-cut and log-det do)")
        lam = spec.default_lambda if lambda_ is None else float(lambda_)
        if spec.name == "log-det" and not lam > 0:
            raise ValueError(f"log-det needs lambda_ > 0 (added to the kernel diagonal), got {lam}")
        n_q = 0 if queries is None else queries.shape[0]
        need = estimate_memory_bytes(function, n, n_q)
        if need > memory_limit_gb * 1e9:
            n_max = max_n_for_limit(function, memory_limit_gb)
            parts = math.ceil(n / n_max)
            raise ValueError(
                f"{function} on n={n:,} needs ~{need / 1e9:,.1f} GB for its dense n×n kernel "
                f"(limit {memory_limit_gb} GB); select within partitions (--partitions {parts}, each <= "
                f"{n_max:,} samples) or use facility-location, which runs on a sparse kNN graph")
        stochastic = optimizer in ("StochasticGreedy", "LazierThanLazyGreedy")
        self.perm = np.random.default_rng(seed).permutation(n) if stochastic else None
        Xp = X[self.perm] if self.perm is not None else X
        logger.info("submodlib %s: n=%d d=%d optimizer=%s (~%.2f GB)", function, n, X.shape[1], optimizer, need / 1e9)
        self.function, self.n, self.optimizer = spec.name, n, optimizer
        self._obj = _build(spec, Xp, queries, metric, lam, eta)
        self._inv = None if self.perm is None else np.argsort(self.perm)
        self.params = {"metric": metric, "optimizer": optimizer, "seed": seed}
        if spec.default_lambda is not None:
            self.params["lambda_"] = lam
        if spec.needs_queries:
            self.params["eta"] = eta

    def maximize(self, budget: int, epsilon: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
        """Greedy order of ``budget`` rows of X (int64) and their marginal gains (float64)."""
        order, gains = _maximize(self._obj, self.n, int(budget), self.optimizer, epsilon)
        if self.perm is not None:
            order = self.perm[order]
        return np.asarray(order, dtype=np.int64), np.asarray(gains, dtype=np.float64)

    def evaluate(self, S: Any) -> float:
        """f(S) for rows ``S`` of X."""
        S = np.asarray(S, dtype=np.int64)
        if self._inv is not None:
            S = self._inv[S]
        return float(self._obj.evaluate({int(i) for i in S}))


def _maximize(obj: Any, n: int, budget: int, optimizer: str, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Run submodlib's maximize; it refuses budget >= n, so the last element of a full
    ordering is appended by hand with gain f(V) − f(V \\ {last})."""
    inner = min(budget, n - 1)
    pairs = []
    if inner > 0:
        pairs = obj.maximize(budget=inner, optimizer=optimizer, stopIfZeroGain=False, stopIfNegativeGain=False,
                             epsilon=epsilon, verbose=False, show_progress=False)
    order = [int(i) for i, _ in pairs]
    gains = [float(g) for _, g in pairs]
    if budget == n:
        chosen = set(order)
        last = next(i for i in range(n) if i not in chosen)
        before = float(obj.evaluate(chosen)) if chosen else 0.0
        order.append(last)
        gains.append(float(obj.evaluate(chosen | {last})) - before)
    if len(order) != budget or len(set(order)) != budget:
        raise RuntimeError(f"submodlib returned {len(order)} picks ({len(set(order))} distinct) for budget {budget}")
    return np.asarray(order, dtype=np.int64), np.asarray(gains, dtype=np.float64)


for _name in FUNCTIONS:
    register("function", _name)(partial(submodlib_select, _name))
