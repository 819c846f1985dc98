"""Selectors that compose: an objective × an optimizer × a sampling rule, under a constraint.

A :class:`Selector` holds only parameters (sklearn style); :meth:`Selector.fit` validates
them once, up front, against the one table below and the constraint, then runs:

    objective (:mod:`~.objectives`)   facility-location | fl-mi | graph-cut | log-det | disparity-min | disparity-sum
  × kernel                            auto | sparse | dense            (which ones each objective takes: its table)
  × optimizer (:mod:`~.greedy`)       naive | lazy | stochastic | lazier-than-lazy
  × sampling (:mod:`~.sampling`)      topk (the greedy order) | taylor-softmax (INGENIOUS gain sampling)
  × constraint (:mod:`~.constraints`) count / fraction | tokens (knapsack) | per-source quotas

What is supported is decided in :meth:`Selector.check`, nowhere else:

- knapsack and quota constraints: optimizers ``naive`` and ``lazy`` (the stochastic ones
  sample candidates without regard to the room left), objectives on our greedy
  (facility location, sparse fl-mi); submodlib's functions take a count only;
- taylor-softmax: any objective; greedy runs to ``pool`` elements (default: a full
  ordering, as INGENIOUS), the subset is drawn without replacement with p ∝ 1 + g + g²/2,
  skipping draws that no longer fit the constraint;
- certificates (an upper bound on the optimum) for the objectives on our greedy;
- per-sample coverage weights and a quality term (``coverage_weights``, ``quality``,
  ``quality_weight``): the objectives on our greedy only, any optimizer, sampling and
  constraint, so f(S) = Σ_i w_i max_{j∈S} max(s_ij, 0) + λ Σ_{j∈S} q_j (still monotone
  submodular: the certificate holds, :mod:`~.facility_location`).

Anything else raises ``ValueError`` naming the valid choices. Partitioning and the GreeDi
merge are wrappers that take any selector (:class:`~.partitioned.Partitioned`).

Example
-------
>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(200, 8)).astype("float32")
>>> X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> sel = Selector(budget=20, k=10).fit(X)
>>> len(sel.indices_), sel.objective_ <= sel.upper_bound_
(20, True)
>>> Selector(budget=20, optimizer="stochastic").fit(X, n_tokens=np.full(200, 5)).indices_.shape
(20,)
>>> q = np.linspace(0, 1, 200)   # a quality score per sample, e.g. from a classifier
>>> sel = Selector(budget=20, k=10, quality=q, quality_weight=2.0).fit(X)
>>> bool(q[sel.indices_].mean() > q.mean()), sel.objective_ <= sel.upper_bound_
(True, True)
>>> Selector(budget="tokens:50", optimizer="stochastic").fit(X, n_tokens=np.full(200, 5))
Traceback (most recent call last):
...
ValueError: optimizer='stochastic' does not take a token budget (knapsack); choose one of naive, lazy
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any

import numpy as np

from subsetlm.select.constraints import Constraint, from_budget
from subsetlm.select.greedy import CONSTRAINED_OPTIMIZERS, OPTIMIZERS
from subsetlm.select.objectives import KERNELS, OBJECTIVES, is_ours, resolve_kernel
from subsetlm.select.sampling import NORMALIZATIONS

logger = logging.getLogger(__name__)

__all__ = ["Selector", "NotFittedError", "SAMPLINGS", "certificate"]

SAMPLINGS = ("topk", "taylor-softmax")
_CONSTRAINT_NAMES = {"count": "count", "knapsack": "token budget (knapsack)", "quotas": "per-source quota"}


class NotFittedError(AttributeError):
    """A selector's results were read before :meth:`Selector.fit`."""


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {', '.join(map(str, choices))}")


class Selector:
    """objective × optimizer × sampling under a budget; see the module docstring.

    Parameters (keyword-only; stored as given, checked in :meth:`fit`)
    ----------
    budget : count, fraction, ``"25%"`` or ``"tokens:N"`` (needs ``n_tokens`` in :meth:`fit`).
    objective, kernel, optimizer, sampling : see the module docstring.
    k, index_kind : the kNN graph of sparse kernels.
    epsilon : the stochastic optimizers' accuracy, in (0, 1).
    seed : all randomness (stochastic optimizers, sampling, the random baseline).
    source_proportions : ``{source: share}``: per-source quotas of the budget (needs ``sources``).
    queries, eta : fl-mi's query embeddings (q, d) and relevance magnification.
    lambda_, metric, memory_limit_gb : submodlib functions' parameters.
    pool : taylor-softmax: greedy order length to sample from (default: the whole ground set).
    normalize, temperature : taylor-softmax gain normalisation (:mod:`~.sampling`).
    coverage_weights : (n,) floats >= 0, optional: the weight ``w_i`` of each sample in the
        coverage term (e.g. ``1 / |group|`` so a duplicate group counts once; per-domain weights).
    quality, quality_weight : (n,) scores ``q_j >= 0`` and ``λ >= 0`` (default 0: off): adds
        the modular term ``λ Σ_{j∈S} q_j``. Both are for facility location and sparse fl-mi.
    progress : tqdm bars.

    Attributes (after :meth:`fit`)
    ----------
    indices_ : (b,) int64 rows in selection order. gains_ : (b,) float64 marginal gains.
    weights_ : (b,) float64 ground points each element covers best (a count, whatever the
        coverage weights; 1.0 where undefined).
    objective_, upper_bound_ (None without a certificate), random_objective_, n_unassigned_,
    certificate_ : dict, constraint_ : the resolved constraint, info_ : dict.
    representative_, similarity_ : (n,) each sample's representative in the subset (its row,
        -1 when none) and their similarity: the facility-location assignment (for submodlib
        objectives, the most similar selected sample by cosine).
    """

    def __init__(self, *, budget: Any = 0.25, objective: str = "facility-location", kernel: str = "auto",
                 optimizer: str = "lazy", sampling: str = "topk", k: int = 32, index_kind: str = "auto",
                 epsilon: float = 0.01, seed: int = 0, source_proportions: dict[str, float] | None = None,
                 queries: np.ndarray | None = None, eta: float = 1.0, lambda_: float | None = None,
                 metric: str = "cosine", memory_limit_gb: float = 4.0, pool: int | None = None,
                 normalize: str = "none", temperature: float = 1.0, progress: bool = False,
                 coverage_weights: np.ndarray | None = None, quality: np.ndarray | None = None,
                 quality_weight: float = 0.0):
        self.budget, self.objective, self.kernel, self.optimizer = budget, objective, kernel, optimizer
        self.sampling, self.k, self.index_kind, self.epsilon, self.seed = sampling, k, index_kind, epsilon, seed
        self.source_proportions, self.queries, self.eta = source_proportions, queries, eta
        self.lambda_, self.metric, self.memory_limit_gb, self.pool = lambda_, metric, memory_limit_gb, pool
        self.normalize, self.temperature, self.progress = normalize, temperature, progress
        self.coverage_weights, self.quality, self.quality_weight = coverage_weights, quality, quality_weight

    _FITTED = ("indices_", "gains_", "weights_", "objective_", "upper_bound_", "n_unassigned_", "constraint_",
               "info_", "objective_fn_", "certificate_", "random_objective_", "representative_", "similarity_")

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (not the fitted attributes)."""
        return {k: v for k, v in vars(self).items() if k not in self._FITTED}

    def __getattr__(self, name: str) -> Any:  # only called for missing attributes
        if name in Selector._FITTED:
            raise NotFittedError(f"this Selector is not fitted yet; call fit(X) before reading {name}")
        raise AttributeError(name)

    def set_params(self, **params: Any) -> "Selector":
        """A copy with ``params`` changed (unknown names raise ValueError)."""
        unknown = sorted(set(params) - set(self.get_params()))
        if unknown:
            raise ValueError(f"unknown Selector parameter(s) {unknown}; valid: {', '.join(sorted(self.get_params()))}")
        new = copy.copy(self)
        for key in [k for k in vars(new) if k in self._FITTED]:
            delattr(new, key)
        for key, v in params.items():
            setattr(new, key, v)
        return new

    def __repr__(self) -> str:
        return f"Selector(objective={self.objective!r}, optimizer={self.optimizer!r}, sampling={self.sampling!r}, " \
               f"kernel={self.kernel!r}, budget={self.budget!r})"

    # ------------------------------------------------------------------ validation
    def check(self, constraint_kind: str = "count", *, queries_given: bool | None = None,
              weighting_given: bool | None = None) -> str:
        """Validate every parameter and the combination with a ``constraint_kind`` constraint.

        ``queries_given`` stands in for ``queries`` when they are loaded later (the CLI checks
        before reading them); ``weighting_given`` likewise for coverage weights / quality scores.
        Returns the resolved kernel. Raises ``ValueError`` (``TypeError`` for wrong types)
        naming the valid choices.
        """
        _choice("objective", self.objective, tuple(OBJECTIVES))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("sampling", self.sampling, SAMPLINGS)
        _choice("kernel", self.kernel, KERNELS)
        _choice("normalize", self.normalize, NORMALIZATIONS)
        for name in ("k",):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}={v!r}; the kNN graph needs an int k >= 1 (32 is a good default)")
        if not (isinstance(self.epsilon, (int, float)) and 0 < float(self.epsilon) < 1):
            raise ValueError(f"epsilon={self.epsilon!r} must lie in (0, 1) (stochastic greedy's accuracy)")
        if self.pool is not None and (isinstance(self.pool, bool) or int(self.pool) < 1):
            raise ValueError(f"pool={self.pool!r}; the taylor-softmax greedy order length must be >= 1 or None")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature={self.temperature!r}; expected a finite number > 0")
        if self.source_proportions is not None and not isinstance(self.source_proportions, dict):
            raise TypeError(f"source_proportions must be a dict {{source: share}}, got "
                            f"{type(self.source_proportions).__name__}")
        kernel = resolve_kernel(self.objective, self.kernel)
        has_queries = self.queries is not None if queries_given is None else queries_given
        if (self.objective == "fl-mi") != has_queries:
            raise ValueError("fl-mi selects samples that cover a query set: pass queries (--queries STORE_OR_NPY)"
                             if self.objective == "fl-mi" else
                             f"{self.objective} takes no queries; use objective='fl-mi' for query-focused selection")
        ours = is_ours(self.objective, kernel)
        self._check_weighting(ours, kernel, weighting_given)
        if ours and (self.lambda_ is not None or self.metric != "cosine"):
            raise ValueError(f"lambda_ and metric are submodlib parameters; {self.objective} on the {kernel} kernel "
                             "takes neither")
        if constraint_kind != "count":
            what = _CONSTRAINT_NAMES.get(constraint_kind, constraint_kind)
            if not ours:
                raise ValueError(f"{self.objective} ({kernel} kernel, through submodlib) takes a count or fraction "
                                 f"budget only, not a {what}; use facility-location or fl-mi with the sparse kernel")
            if self.optimizer not in CONSTRAINED_OPTIMIZERS:
                raise ValueError(f"optimizer={self.optimizer!r} does not take a {what}; choose one of "
                                 f"{', '.join(CONSTRAINED_OPTIMIZERS)}")
        return kernel

    def _check_weighting(self, ours: bool, kernel: str, given: bool | None) -> None:
        from subsetlm.select.facility_location import check_nonnegative

        lam = self.quality_weight
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)) \
                or not np.isfinite(lam) or lam < 0:
            raise ValueError(f"quality_weight={lam!r}; expected a finite number >= 0 (λ of the quality term "
                             "λ Σ_{j∈S} q_j; 0 = off)")
        for name in ("coverage_weights", "quality"):
            v = getattr(self, name)
            if v is not None:
                if np.ndim(v) != 1:
                    raise ValueError(f"{name}: expected a 1-D array, one value per sample; got shape {np.shape(v)}")
                check_nonnegative(v, len(v), name)
        if lam > 0 and self.quality is None and not given:
            raise ValueError(f"quality_weight={lam} but no quality scores: pass quality=(n,) scores >= 0 "
                             "(--quality FILE), or set quality_weight=0")
        has = self.coverage_weights is not None or self.quality is not None or bool(given)
        if has and not ours:
            raise ValueError(f"{self.objective} ({kernel} kernel, through submodlib) takes no coverage weights or "
                             "quality scores; use facility-location, or fl-mi on the sparse kernel")
        if self.quality is not None and lam == 0:
            warnings.warn("quality scores were given with quality_weight=0: the quality term is off (set "
                          "quality_weight > 0, e.g. 1.0)", UserWarning, stacklevel=3)

    def _weighting(self, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(coverage weights (n,), modular term λ q (n,))`` for a ground set of ``n`` (None when unused)."""
        from subsetlm.select.facility_location import check_nonnegative

        w = check_nonnegative(self.coverage_weights, n, "coverage_weights")
        q = check_nonnegative(self.quality, n, "quality")
        modular = None if q is None or float(self.quality_weight) == 0 else float(self.quality_weight) * q
        return w, modular

    def constraint(self, n: int, *, n_tokens: np.ndarray | None = None,
                   sources: np.ndarray | None = None) -> Constraint:
        """The budget (and quotas) resolved on a ground set of ``n`` samples."""
        return from_budget(self.budget, n, n_tokens=n_tokens, sources=sources,
                           source_proportions=self.source_proportions)

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, *, n_tokens: np.ndarray | None = None, sources: np.ndarray | None = None,
            graph: Any = None, constraint: Constraint | None = None) -> "Selector":
        """Select from the rows of ``X`` ((n, d), L2-normalised; a memmap is fine).

        ``n_tokens`` (n,) for token budgets; ``sources`` (n,) for ``source_proportions``;
        ``graph`` a precomputed kNN graph of X (sparse kernels); ``constraint`` overrides
        the budget (the partitioned wrapper passes each partition's share).
        """
        n = _check_X(X, graph)
        con = constraint if constraint is not None else self.constraint(n, n_tokens=n_tokens, sources=sources)
        self._fit(X, con, graph=graph)
        return self

    def select(self, X: Any, **kw: Any) -> np.ndarray:
        """Shorthand for ``fit(X, **kw).indices_``."""
        return self.fit(X, **kw).indices_

    def _fit(self, X: Any, con: Constraint, *, graph: Any = None, worker: bool = False) -> None:
        from subsetlm.select.objectives import build_objective

        kernel = self.check(con.kind)
        weights, modular = self._weighting(_check_X(X, graph) if X is None else int(X.shape[0]))
        fn = build_objective(self.objective, X, kernel=kernel, k=self.k, index_kind=self.index_kind, seed=self.seed,
                             graph=graph, queries=self.queries, eta=self.eta, lambda_=self.lambda_,
                             metric=self.metric, optimizer=self.optimizer, memory_limit_gb=self.memory_limit_gb,
                             worker=worker, progress=self.progress and not worker, weights=weights, modular=modular)
        ours = hasattr(fn, "gains")
        n = int(fn.n)
        if con.count < 1:
            raise ValueError(f"the budget selects nothing on this ground set of {n} samples ({con.describe()}); "
                             "raise it")
        info: dict[str, Any] = {"n": n, "constraint": con.describe()}
        if self.sampling == "topk":
            order, gains, objective, upper = self._greedy(fn, con, ours, info)
        else:
            order, gains, objective, upper = self._sample(fn, con, ours, info)
        if ours:
            from subsetlm.select.facility_location import assignment_of

            self.representative_, self.similarity_ = fn.representatives(order)
            w, unassigned = assignment_of(order, self.representative_)  # the same pass gives the weights
            weights = np.asarray(w, dtype=np.float64)
            self.representative_[np.asarray(order, np.int64)] = order  # a kept sample represents itself
        else:
            weights, unassigned = np.ones(len(order)), 0
            self.representative_, self.similarity_ = nearest_selected(X, order)
        self.indices_ = np.asarray(order, dtype=np.int64)
        self.gains_ = np.asarray(gains, dtype=np.float64)
        self.weights_ = weights
        self.objective_, self.upper_bound_ = float(objective), upper
        self.n_unassigned_ = int(unassigned)
        self.constraint_ = con
        self.info_ = info
        self.objective_fn_ = fn
        if ours and not worker:  # a partition's worker computes its own random baseline
            self.certificate_ = certificate(fn, self.indices_, self.objective_, upper, self.seed, constraint=con)
        else:
            self.certificate_ = {"objective": self.objective_, "upper_bound": upper,
                                 "ratio": None if upper is None else self.objective_ / upper if upper > 0 else 1.0,
                                 "random_objective": None}
            if not ours:
                self.certificate_["note"] = (f"{self.objective} ({kernel} kernel) runs through submodlib; no greedy "
                                             "bound recorded")
        self.random_objective_ = self.certificate_["random_objective"]

    def _greedy(self, fn: Any, con: Constraint, ours: bool, info: dict) -> tuple:
        if not ours:
            order, gains = fn.maximize(con.count, self.epsilon)
            return order, gains, fn.evaluate(order), None
        from subsetlm.select.greedy import greedy

        res = greedy(fn, None, optimizer=self.optimizer, seed=self.seed, epsilon=self.epsilon,
                     progress=self.progress, constraint=con)
        info["n_evaluations"] = int(res.n_evaluations)
        if res.info.get("best_singleton_won"):
            info["best_singleton_won"] = True
        return res.order, res.gains, res.objective, float(res.upper_bound)

    def _sample(self, fn: Any, con: Constraint, ours: bool, info: dict) -> tuple:
        from subsetlm.select.sampling import gumbel_top_k, taylor_softmax_probs

        n = int(fn.n)
        pool = n if self.pool is None else max(con.count, min(n, int(self.pool)))
        if ours:
            from subsetlm.select.greedy import greedy

            full = greedy(fn, pool, optimizer=self.optimizer, seed=self.seed, epsilon=self.epsilon,
                          progress=self.progress, record_bound=False)
            f_order, f_gains = full.order, full.gains
        else:
            f_order, f_gains = fn.maximize(pool, self.epsilon)
        p = taylor_softmax_probs(f_gains, normalize=self.normalize, temperature=self.temperature)
        draws = gumbel_top_k(np.log(p), len(p), self.seed)  # positions in the greedy order, in draw order
        taken = con.draw(f_order[draws])
        pos = np.empty(n, np.int64)
        pos[f_order] = np.arange(len(f_order))
        pick = np.sort(pos[taken])
        order, gains = f_order[pick], f_gains[pick]
        info["pool"] = int(pool)
        objective = fn.evaluate(order)
        upper = None
        if ours:
            upper = max(bound_at(fn, f_order[:con.count], con), float(objective))
        return order, gains, objective, upper


def nearest_selected(X: Any, order: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Each row's most similar selected row by cosine (``X`` rows L2-normalised): ``(rep (n,), sim (n,))``.

    O(n · b · d) time in row blocks, O(block · b) memory.
    """
    order = np.asarray(order, dtype=np.int64)
    n = int(X.shape[0])
    sorted_order = np.sort(order)
    S = np.asarray(X[sorted_order], dtype=np.float32)
    rep = np.empty(n, np.int64)
    sim = np.empty(n, np.float32)
    for s in range(0, n, block):
        P = np.asarray(X[s:s + block], dtype=np.float32) @ S.T
        j = np.argmax(P, axis=1)
        rep[s:s + block] = sorted_order[j]
        sim[s:s + block] = P[np.arange(len(j)), j]
    rep[order], sim[order] = order, 1.0
    return rep, sim


def bound_at(fn: Any, prefix: np.ndarray, con: Constraint) -> float:
    """OPT <= f(prefix) + the constraint's relaxed maximum of the exact gains w.r.t. ``prefix``."""
    fn.reset()
    for j in prefix:
        fn.update(int(j))
    rest = np.setdiff1d(np.arange(fn.n), prefix)
    if rest.size == 0:
        return float(fn.value)
    return float(fn.value + con.relaxed_max(np.maximum(fn.gains(rest), 0), rest))


def random_feasible(n: int, size: int, seed: int, constraint: Constraint | None = None) -> np.ndarray:
    """A seeded random subset that satisfies ``constraint``: a random order, taking what fits.

    For a count (or no constraint) it is :func:`~subsetlm.select.baselines.random_subset`
    of ``size``; for a token budget or quotas, the feasible subset drawn along a random
    permutation (random samples of any length, as many as fit).
    """
    from subsetlm.select.baselines import random_subset

    if constraint is None or constraint.kind == "count":
        return random_subset(n, size, seed)
    return constraint.draw(np.random.default_rng(seed).permutation(n))


def certificate(fn: Any, indices: np.ndarray, objective: float, upper_bound: float, seed: int,
                constraint: Constraint | None = None) -> dict[str, float]:
    """The certificate stored in every subset manifest.

    ``upper_bound`` is the greedy run's a-posteriori bound on the optimum
    (OPT <= f(S_t) + the b largest marginal gains w.r.t. S_t, or the constraint's
    relaxation of them), so ``ratio = objective / upper_bound`` is a proven lower bound on
    how close the subset is to optimal. ``random_objective`` is f of a seeded random
    subset under the same constraint (:func:`random_feasible`).
    """
    rand = random_feasible(fn.n, len(indices), seed, constraint)
    random_objective = float(fn.evaluate(rand))
    upper = max(float(upper_bound), float(objective))
    return {
        "objective": float(objective),
        "upper_bound": upper,
        "ratio": float(objective / upper) if upper > 0 else 1.0,
        "random_objective": random_objective,
        "lift_over_random": float(objective / random_objective) if random_objective > 0 else float("inf"),
    }


def _check_X(X: Any, graph: Any = None, block: int = 65536) -> int:
    """n of an (n, d) finite array (or of ``graph`` when X is None)."""
    if X is None:
        if graph is None:
            raise ValueError("nothing to select from: pass X (n, d) embeddings or a kNN graph")
        return int(np.asarray(graph.neighbors).shape[0])
    if getattr(X, "ndim", None) != 2:
        raise ValueError(f"embeddings must be a 2-D (n, d) array, got shape {getattr(X, 'shape', None)}")
    n = int(X.shape[0])
    if n == 0:
        raise ValueError("the ground set is empty (0 samples); embed a non-empty corpus first")
    for start in range(0, n, block):
        chunk = np.asarray(X[start:start + block])
        if not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise ValueError(f"embedding row {bad} contains NaN or inf; re-embed the corpus (subsetlm embed --force)")
    if graph is not None:
        nb = np.asarray(graph.neighbors)
        if nb.shape[0] != n:
            raise ValueError(f"the kNN graph has {nb.shape[0]} rows but X has {n}; build the graph on these "
                             "embeddings (subsetlm index STORE --force)")
        if nb.size and int(nb.max()) >= n:
            raise ValueError(f"the kNN graph names neighbour {int(nb.max())} but X has {n} rows; it was built on "
                             "other embeddings")
    return n
