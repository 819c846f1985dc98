"""Greedy maximisation of a monotone submodular function under a cardinality or cost budget.

Optimizers (registry kind ``"optimizer"``):

- ``naive``: evaluate every remaining candidate at every step.
- ``lazy``: Minoux's accelerated greedy (priority queue of stale gains, which are upper
  bounds by submodularity). Ties are broken by the smallest index in both, so ``lazy``
  picks *exactly* what ``naive`` picks.
- ``stochastic``: Mirzasoleiman et al. (2015): each step scans a random sample of
  ``ceil(n / b * ln(1 / epsilon))`` remaining candidates; (1 - 1/e - epsilon) in expectation.
- ``lazier-than-lazy``: the same samples, scanned lazily with stale gains as upper bounds;
  it picks exactly what ``stochastic`` picks for the same seed, with fewer evaluations.

Certificate: for any prefix S_t and |S| <= b, OPT <= f(S_t) + sum of the b largest marginal
gains w.r.t. S_t (any upper bounds on those gains, e.g. stale lazy gains, keep it valid). It
needs only f monotone submodular, so it holds for weighted facility location with a
non-negative modular (quality) term too (proof: :mod:`subsetlm.select.facility_location`).
``upper_bound`` is the minimum over the prefixes where it was computed.

Cost-aware greedy (``costs`` + ``cost_budget``): picks by gain / cost among the candidates
that still fit, then returns the better of that set and the best single feasible element
(the "modified greedy"), which guarantees f >= (1 - 1/e) / 2 * OPT under the knapsack
constraint (Krause & Guestrin 2005; Leskovec et al. 2007). Its certificate is
f(S_t) + the fractional-knapsack maximum of the marginal-gain upper bounds.

Example
-------
>>> import numpy as np
>>> from subsetlm.select.facility_location import DenseFacilityLocation
>>> X = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
>>> res = greedy(DenseFacilityLocation(X), 10, optimizer="lazy")
>>> len(res.order), res.objective <= res.upper_bound
(10, True)
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from subsetlm.registry import get, register

logger = logging.getLogger(__name__)

__all__ = ["GreedyResult", "greedy", "OPTIMIZERS", "CONSTRAINED_OPTIMIZERS"]

OPTIMIZERS = ("naive", "lazy", "stochastic", "lazier-than-lazy")
CONSTRAINED_OPTIMIZERS = ("naive", "lazy")  # the ones that take a knapsack or quota constraint


@dataclass
class GreedyResult:
    """Outcome of :func:`greedy`.

    Attributes
    ----------
    order : (b,) int64, selected elements in selection order.
    gains : (b,) float64, marginal gain of each when it was selected.
    objective : f(order).
    upper_bound : certificate, >= OPT (``inf`` if no bound was recorded).
    n_evaluations : marginal-gain evaluations performed.
    optimizer : name of the optimizer.
    cost : total cost of ``order`` (cost-aware greedy only).
    info : extra diagnostics (timings, whether the best singleton won, ...).
    """

    order: np.ndarray
    gains: np.ndarray
    objective: float
    upper_bound: float
    n_evaluations: int
    optimizer: str = "lazy"
    cost: float | None = None
    info: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """objective / upper_bound: a proven lower bound on objective / OPT."""
        return float(self.objective / self.upper_bound) if self.upper_bound > 0 else 1.0


class _Bound:
    """Running minimum of f(S_t) + (sum of the b largest gain upper bounds)."""

    def __init__(self, b: int, enabled: bool):
        self.b, self.enabled, self.value, self.n = b, enabled, math.inf, 0

    def add(self, f_t: float, ub: np.ndarray) -> None:
        if not self.enabled:
            return
        ub = np.asarray(ub, dtype=np.float64)
        top = ub if len(ub) <= self.b else np.partition(ub, len(ub) - self.b)[len(ub) - self.b:]
        self.value = min(self.value, float(f_t) + float(np.maximum(top, 0).sum()))
        self.n += 1


def _schedule(b: int) -> set[int]:
    """Prefix sizes at which lazy optimizers compute the certificate: geometric + tenths + end."""
    pts, t = {0, b}, 1.0
    while t < b:
        pts.add(int(t))
        t *= 1.5
    pts.update(int(b * q / 10) for q in range(1, 10))
    return pts


def _pbar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pick")


def _is_sparse_fl(fn: Any) -> bool:
    from subsetlm.select.facility_location import SparseFacilityLocation

    return isinstance(fn, SparseFacilityLocation)


# ---------------------------------------------------------------------------------------
# optimizers: fn, budget, cands (sorted int64), ctx -> (order, gains, n_evals)
# ---------------------------------------------------------------------------------------
@register("optimizer", "naive")
def _naive(fn, b, cands, ctx):
    rem = cands.copy()
    order, gains, evals = [], [], 0
    bar = _pbar(ctx["progress"], b, "naive greedy")
    for t in range(b):
        g = fn.gains(rem)
        evals += len(rem)
        ctx["bound"].add(fn.value, g)
        p = int(np.argmax(g))  # first maximum = smallest index (rem is sorted)
        order.append(int(rem[p]))
        gains.append(float(g[p]))
        fn.update(rem[p])
        rem = np.delete(rem, p)
        if bar is not None:
            bar.update(1)
    if len(rem):
        ctx["bound"].add(fn.value, fn.gains(rem))
    if bar is not None:
        bar.close()
    return order, gains, evals


@register("optimizer", "lazy")
def _lazy(fn, b, cands, ctx):
    if _is_sparse_fl(fn):
        return _lazy_sparse(fn, b, cands, ctx)
    g0 = fn.gains(cands)
    evals = len(cands)
    bound, sched = ctx["bound"], _schedule(b)
    bound.add(fn.value, g0)
    heap = [(-float(g), int(j)) for g, j in zip(g0, cands)]
    heapq.heapify(heap)
    stamp = {}
    batch = max(1, int(getattr(fn, "lazy_batch", 1)))
    order, gains = [], []
    bar = _pbar(ctx["progress"], b, "lazy greedy")
    for t in range(b):
        if t in sched and t > 0 and bound.enabled:
            bound.add(fn.value, -np.fromiter((e[0] for e in heap), np.float64, len(heap)))
        while stamp.get(heap[0][1], 0) != t:
            # re-evaluate up to `batch` stale tops at once (one matrix product for dense FL);
            # refreshing extra bounds never changes which element is picked
            popped = []
            while heap and len(popped) < batch and stamp.get(heap[0][1], 0) != t:
                popped.append(heapq.heappop(heap)[1])
            g = fn.gains(np.asarray(popped, np.int64)) if len(popped) > 1 else [fn.gain(popped[0])]
            evals += len(popped)
            for jj, gj in zip(popped, g):
                stamp[jj] = t
                heapq.heappush(heap, (-float(gj), jj))
        negg, j = heapq.heappop(heap)
        order.append(j)
        gains.append(-negg)
        fn.update(j)
        if bar is not None:
            bar.update(1)
    if heap and bound.enabled:
        bound.add(fn.value, -np.fromiter((e[0] for e in heap), np.float64, len(heap)))
    if bar is not None:
        bar.close()
    return order, gains, evals


def _lazy_sparse(fn, b, cands, ctx):
    """Lazy greedy for SparseFacilityLocation: the heap loop runs in numba."""
    from subsetlm.select import _kernels as K

    keys = fn.gains(cands)
    idx = cands.copy()
    evals = len(cands)
    bound = ctx["bound"]
    bound.add(fn.value, keys)
    K.heapify(keys, idx)
    stamp = np.full(fn.n, -1, np.int64)
    stamp[cands] = 0
    order = np.empty(b, np.int64)
    gains = np.empty(b, np.float64)
    inset = np.zeros(fn.n, bool)
    cmask = np.zeros(fn.n, bool)
    cmask[cands] = True
    bonus = fn.modular  # the modular (quality) term, or None
    marks = sorted(_schedule(b)) if bound.enabled else [0, b]
    exact = {b * q // 10 for q in range(1, 11)}  # the minimum is usually near 0.2-0.4 b
    bar = _pbar(ctx["progress"], b, "lazy greedy")
    t, size = 0, len(idx)
    for stop in marks[1:]:
        done, size, ne = K.lazy_steps(stop - t, keys, idx, size, stamp, t, order, gains,
                                      fn.indptr, fn.rev_idx, fn.rev_sim, fn.cur, -np.inf, bonus)
        evals += ne
        inset[order[t:t + done]] = True
        t += done
        if bar is not None:
            bar.update(done)
        if bound.enabled and size > 0:
            f_t = fn.value_of_state(order[:t])
            if t in exact:  # exact gains of all remaining candidates: one O(nnz) pass
                bound.add(f_t, fn.gains(np.flatnonzero(cmask & ~inset)))
            else:  # the heap's keys are upper bounds on the current gains (stale or fresh)
                bound.add(f_t, keys[:size])
    if bar is not None:
        bar.close()
    fn.value = fn.value_of_state(order[:t])
    return order[:t], gains[:t], evals


def _sample_size(n_cands: int, b: int, epsilon: float) -> int:
    return max(1, min(n_cands, int(math.ceil(n_cands / b * math.log(1.0 / epsilon)))))


def _stochastic_common(fn, b, cands, ctx, lazy: bool):
    rng = np.random.default_rng(ctx["seed"])
    rem = cands.copy()
    s = _sample_size(len(cands), b, ctx["epsilon"])
    ub = np.full(fn.n, np.inf) if lazy else None
    order, gains, evals = [], [], 0
    bound, sched = ctx["bound"], _schedule(b)
    cheap = _is_sparse_fl(fn)
    bar = _pbar(ctx["progress"], b, f"{'lazier-than-lazy' if lazy else 'stochastic'} greedy")
    size = len(rem)
    for t in range(b):
        if cheap and bound.enabled and t in sched:
            bound.add(fn.value, fn.gains(rem[:size]))
        m = min(s, size)
        pos = rng.choice(size, m, replace=False) if m < size else np.arange(size)
        cand = rem[pos]
        if not lazy:
            g = fn.gains(cand)
            evals += m
            best_g = g.max()
            tie = np.flatnonzero(g == best_g)
            p = tie[np.argmin(cand[tie])]
        else:
            ordr = np.lexsort((cand, -ub[cand]))
            best_g, best_j, p = -np.inf, -1, -1
            for q in ordr:
                j = int(cand[q])
                u = ub[j]
                if u < best_g or (u == best_g and j > best_j):
                    break
                gj = fn.gain(j)
                evals += 1
                ub[j] = gj
                if gj > best_g or (gj == best_g and j < best_j):
                    best_g, best_j, p = gj, j, q
        j = int(cand[p])
        order.append(j)
        gains.append(float(best_g))
        fn.update(j)
        k = int(pos[p])
        size -= 1
        rem[k], rem[size] = rem[size], rem[k]
        if bar is not None:
            bar.update(1)
    if bound.enabled and size > 0:
        if lazy and not cheap and np.all(np.isfinite(ub[rem[:size]])):
            bound.add(fn.value, ub[rem[:size]])
        else:
            evals += size
            bound.add(fn.value, fn.gains(np.sort(rem[:size])))
    if bar is not None:
        bar.close()
    return order, gains, evals


@register("optimizer", "stochastic")
def _stochastic(fn, b, cands, ctx):
    return _stochastic_common(fn, b, cands, ctx, lazy=False)


@register("optimizer", "lazier-than-lazy")
def _lazier_than_lazy(fn, b, cands, ctx):
    return _stochastic_common(fn, b, cands, ctx, lazy=True)


def _knapsack_bound(f_t: float, ub: np.ndarray, c: np.ndarray, B: float) -> float:
    """f_t + max sum x_j ub_j s.t. sum x_j c_j <= B, 0 <= x <= 1 (fractional knapsack)."""
    ub = np.maximum(np.asarray(ub, np.float64), 0)
    o = np.argsort(-(ub / c), kind="stable")
    cc = np.cumsum(c[o])
    full = int(np.searchsorted(cc, B, side="right"))
    val = float(ub[o[:full]].sum())
    if full < len(o):
        left = B - (cc[full - 1] if full else 0.0)
        val += float(ub[o[full]] * max(left, 0.0) / c[o[full]])
    return f_t + val


def _constrained_greedy(fn, b, cands, ctx, con, lazy):
    """Lazy (or naive) greedy among the candidates that still fit the constraint ``con``.

    Knapsack: picks by gain / cost, then keeps the better of that set and the best
    feasible single element (the "modified greedy", >= (1 - 1/e) / 2 * OPT). Quotas: picks
    by gain among the groups that are not full (>= OPT / 2 on a partition matroid). A
    candidate that does not fit is dropped for good: the room left only shrinks.
    """
    knapsack = con.kind == "knapsack"
    costs = con.costs if knapsack else np.ones(fn.n, np.float64)
    g0 = fn.gains(cands)
    evals = len(cands)
    single = g0.copy()  # f({j}) = gain at the empty set
    bound = ctx["bound"]
    if bound.enabled:
        bound.value = min(bound.value, fn.value + con.relaxed_max(g0, cands))
    heap = [(-float(g) / costs[j], int(j)) for g, j in zip(g0, cands)]
    heapq.heapify(heap)
    stamp, gain_of = {}, dict(zip(cands.tolist(), g0.tolist()))
    order, gains, state = [], [], con.start()
    t = 0
    while heap and len(order) < b:
        if not lazy and stamp.get(heap[0][1], -1) != t:  # naive: refresh all once per pick
            alive = np.array([e[1] for e in heap], np.int64)
            g = fn.gains(alive)
            evals += len(alive)
            for j, gj in zip(alive.tolist(), g.tolist()):
                gain_of[j] = gj
                stamp[j] = t
            heap = [(-gj / costs[j], j) for j, gj in zip(alive.tolist(), g.tolist())]
            heapq.heapify(heap)
        negr, j = heap[0]
        if not con.fits(j, state):
            heapq.heappop(heap)  # never fits again: the remaining room only shrinks
            continue
        if stamp.get(j, 0) != t:
            gj = fn.gain(j)
            evals += 1
            stamp[j], gain_of[j] = t, gj
            heapq.heapreplace(heap, (-gj / costs[j], j))
            continue
        heapq.heappop(heap)
        order.append(j)
        gains.append(gain_of[j])
        con.take(j, state)
        fn.update(j)
        t += 1
    if bound.enabled:
        chosen = set(order)
        rest = np.array([j for j in cands.tolist() if j not in chosen], np.int64)
        if len(rest):  # stale gains (also of the dropped, unfitting ones) are upper bounds
            ubs = np.array([gain_of[j] for j in rest.tolist()])
            bound.value = min(bound.value, fn.value + con.relaxed_max(ubs, rest))
        else:
            bound.value = min(bound.value, fn.value)
    info = {"best_singleton_won": False}
    feasible = costs[cands] <= con.cap if knapsack else np.zeros(len(cands), bool)
    if feasible.any():
        js = int(cands[feasible][np.argmax(single[feasible])])
        if float(single[cands == js][0]) > fn.value + 1e-12:
            info["best_singleton_won"] = True
            fn.reset()
            fn.update(js)
            order, gains = [js], [float(single[cands == js][0])]
    spent = float(costs[np.asarray(order, np.int64)].sum()) if knapsack else None
    return order, gains, evals, spent, info


def _check_budget(budget: Any, n_cands: int, where: str) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"{where}: budget must be an int count of elements; got {budget!r} "
                        f"({type(budget).__name__}); resolve fractions/tokens with subsetlm.select.budget")
    if budget <= 0:
        raise ValueError(f"{where}: budget={budget} must be >= 1")
    if budget > n_cands:
        raise ValueError(f"{where}: budget={budget} > {n_cands} candidates; lower the budget")
    return int(budget)


def greedy(fn: Any, budget: int | None, optimizer: str | Callable = "lazy", costs: Any = None, seed: int = 0,
           epsilon: float = 0.01, candidates: Any = None, progress: bool = False, record_bound: bool = True, *,
           cost_budget: float | None = None, constraint: Any = None) -> GreedyResult:
    """Greedily maximise ``fn`` (facility location or any object with the same interface).

    Parameters
    ----------
    fn : SparseFacilityLocation, DenseFacilityLocation, or any object with ``n``, ``value``,
        ``reset()``, ``gain(j)``, ``gains(cands)``, ``update(j)``, ``evaluate(S)``. Its state
        is reset first and holds the selection afterwards.
    budget : int
        Number of elements (1 <= budget <= number of candidates). With ``costs`` it is a cap
        on the count and may be None (no cap).
    optimizer : ``naive`` | ``lazy`` | ``stochastic`` | ``lazier-than-lazy``, or a callable
        registered under kind ``"optimizer"`` with signature ``(fn, b, cands, ctx)``.
    costs : (n,) positive floats, optional. Enables cost-aware greedy with ``cost_budget``.
    seed, epsilon : for the stochastic optimizers (sample size ``n / b * ln(1 / epsilon)``).
    candidates : (m,) ints, optional. Restrict the selection to these elements.
    progress : tqdm progress bar.
    record_bound : compute the certificate ``upper_bound`` (else ``inf``).
    cost_budget : float, keyword-only. Total cost allowed with ``costs`` (e.g. a number of tokens).
    constraint : :mod:`~subsetlm.select.constraints` ``Knapsack`` or ``Quotas``, keyword-only
        (``costs`` + ``cost_budget`` is shorthand for ``Knapsack(costs, cost_budget)``). Only the
        ``naive`` and ``lazy`` optimizers take one; others raise ``ValueError``.

    Returns
    -------
    GreedyResult
    """
    t0 = time.perf_counter()
    n = int(fn.n)
    if candidates is None:
        cands = np.arange(n, dtype=np.int64)
    else:
        cands = np.unique(np.asarray(candidates, dtype=np.int64).reshape(-1))
        if cands.size == 0 or cands[0] < 0 or cands[-1] >= n:
            raise ValueError(f"candidates must be a non-empty set of indices in [0, {n}); got {cands.size} "
                             f"values in [{cands.min() if cands.size else None}, "
                             f"{cands.max() if cands.size else None}]")
    if not (0 < float(epsilon) < 1):
        raise ValueError(f"epsilon={epsilon} must lie in (0, 1)")
    name = optimizer if isinstance(optimizer, str) else getattr(optimizer, "__name__", "custom")
    opt = get("optimizer", optimizer) if isinstance(optimizer, str) else optimizer
    fn.reset()
    ctx = {"seed": seed, "epsilon": float(epsilon), "progress": progress}
    info: dict[str, Any] = {}
    cost = None
    if costs is not None:
        from subsetlm.select.constraints import Knapsack

        c = np.asarray(costs, dtype=np.float64).reshape(-1)
        if c.shape != (n,):
            raise ValueError(f"costs: expected shape ({n},) (one cost per element); got {c.shape}")
        if not np.all(np.isfinite(c)) or np.any(c <= 0):
            raise ValueError("costs must be finite and > 0 (e.g. token counts >= 1)")
        if cost_budget is None or not float(cost_budget) > 0:
            raise ValueError(f"cost_budget must be > 0 when costs are given; got {cost_budget!r}")
        if constraint is not None:
            raise ValueError("pass either costs + cost_budget or constraint=, not both")
        constraint = Knapsack(c, float(cost_budget))
    if constraint is not None and constraint.kind == "count" and budget is None:
        budget = int(constraint.count)
    if constraint is not None and constraint.kind != "count":
        if name not in CONSTRAINED_OPTIMIZERS:
            raise ValueError(f"optimizer={name!r} does not take a {constraint.kind} constraint; choose one of "
                             f"{', '.join(CONSTRAINED_OPTIMIZERS)}")
        if getattr(constraint, "costs", None) is not None and len(constraint.costs) != n:
            raise ValueError(f"costs: expected shape ({n},) (one cost per element); got {constraint.costs.shape}")
        b = len(cands) if budget is None else _check_budget(budget, len(cands), "greedy")
        ctx["bound"] = _Bound(b, record_bound)
        order, gains, evals, cost, info = _constrained_greedy(fn, b, cands, ctx, constraint, lazy=(name == "lazy"))
    else:
        b = _check_budget(budget, len(cands), "greedy")
        ctx["bound"] = _Bound(b, record_bound)
        order, gains, evals = opt(fn, b, cands, ctx)
    order = np.asarray(order, dtype=np.int64)
    gains = np.asarray(gains, dtype=np.float64)
    objective = float(fn.evaluate(order))
    ub = ctx["bound"].value
    if record_bound and ub < objective:  # rounding (float32 sims) can put the bound an ulp below f
        ub = objective
    info.update(seconds=time.perf_counter() - t0, n_bound_checks=ctx["bound"].n)
    logger.info("greedy %s: %d picks, f=%.6g, bound=%.6g, %d evaluations, %.2fs", name, len(order),
                objective, ub, evals, info["seconds"])
    return GreedyResult(order, gains, objective, float(ub), int(evals), name, cost, info)
