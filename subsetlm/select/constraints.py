"""Selection constraints: a count, a token knapsack, or per-group quotas (a partition matroid).

A constraint says which subsets are feasible. Every optimizer and sampler asks it the
same four questions, so an option is either honoured everywhere or refused up front:

- ``fits(j, state)`` / ``take(j, state)``: may element ``j`` still be added, and add it
  (the lazy greedy drops a candidate that no longer fits: the remaining room only shrinks);
- ``relaxed_max(ub, cands)``: with ``ub`` aligned to ``cands``, an upper bound on
  ``max Σ_{j∈T} ub_j`` over feasible sets ``T ⊆ cands``, so ``OPT <= f(S_t) + relaxed_max(gains w.r.t. S_t)`` is a certificate
  (top-b sum for a count; the fractional knapsack for tokens; per-group top-``cap_g`` sums
  for quotas);
- ``draw(order)``: the feasible subset taken greedily along a random order (Taylor-softmax
  sampling under the constraint: sequential draws without replacement, skipping what no
  longer fits);
- ``restrict(rows, share)``: the constraint of one partition (its rows' costs and its share
  of the budget), for the partitioned wrapper.

``satisfied(indices)`` checks a result (the combination-matrix test uses it).

Example
-------
>>> import numpy as np
>>> c = Knapsack(np.array([3.0, 5.0, 2.0, 4.0]), 7.0)
>>> c.draw(np.array([1, 0, 2, 3])).tolist()   # 5 fits, 3 does not, 2 fits
[1, 2]
>>> Quotas(np.array([0, 0, 1, 1]), np.array([1, 2])).draw(np.arange(4)).tolist()
[0, 2, 3]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Constraint", "Count", "Knapsack", "Quotas", "from_budget"]


def _top_sum(v: np.ndarray, b: int) -> float:
    v = np.maximum(np.asarray(v, dtype=np.float64), 0.0)
    if b <= 0 or v.size == 0:
        return 0.0
    top = v if v.size <= b else np.partition(v, v.size - b)[v.size - b:]
    return float(top.sum())


class Constraint:
    """Base class; see the module docstring for the protocol."""

    kind = "none"
    count: int  # the most elements a feasible set can hold (count: exactly this many)

    def start(self) -> dict:
        return {"n": 0}

    def fits(self, j: int, state: dict) -> bool:
        raise NotImplementedError

    def take(self, j: int, state: dict) -> None:
        state["n"] += 1

    def relaxed_max(self, ub: np.ndarray, cands: np.ndarray) -> float:
        raise NotImplementedError

    def satisfied(self, indices: np.ndarray) -> bool:
        raise NotImplementedError

    def restrict(self, rows: np.ndarray, share: Any) -> "Constraint":
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def draw(self, order: np.ndarray) -> np.ndarray:
        """The elements of ``order`` taken in turn while they fit (positions into ``order`` kept in order)."""
        state, out = self.start(), []
        for j in np.asarray(order, dtype=np.int64):
            if state["n"] >= self.count:
                break
            if self.fits(int(j), state):
                self.take(int(j), state)
                out.append(int(j))
        return np.asarray(out, dtype=np.int64)


@dataclass
class Count(Constraint):
    """Exactly ``count`` elements."""

    count: int
    kind = "count"

    def fits(self, j: int, state: dict) -> bool:
        return state["n"] < self.count

    def relaxed_max(self, ub: np.ndarray, cands: np.ndarray) -> float:
        return _top_sum(ub, self.count)

    def satisfied(self, indices: np.ndarray) -> bool:
        return len(indices) == self.count and len(np.unique(indices)) == len(indices)

    def restrict(self, rows: np.ndarray, share: Any) -> "Count":
        return Count(int(share))

    def describe(self) -> dict[str, Any]:
        return {"kind": "count", "count": int(self.count)}

    def draw(self, order: np.ndarray) -> np.ndarray:
        """The first ``count`` elements of ``order`` (every element fits until then: the base loop's result)."""
        return np.asarray(order[:max(0, int(self.count))], dtype=np.int64)


@dataclass
class Knapsack(Constraint):
    """Elements whose ``costs`` (e.g. token counts, all > 0) sum to at most ``cap``."""

    costs: np.ndarray
    cap: float
    count: int = field(init=False)
    kind = "knapsack"

    def __post_init__(self) -> None:
        self.costs = np.asarray(self.costs, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(self.costs)) or np.any(self.costs <= 0):
            raise ValueError("knapsack costs must be finite and > 0 (token counts >= 1)")
        if not float(self.cap) > 0:
            raise ValueError(f"knapsack cap must be > 0, got {self.cap!r}")
        self.cap = float(self.cap)
        # the most elements that can fit: the cheapest ones first
        self.count = int(np.searchsorted(np.cumsum(np.sort(self.costs)), self.cap, side="right"))

    def start(self) -> dict:
        return {"n": 0, "spent": 0.0}

    def fits(self, j: int, state: dict) -> bool:
        return self.costs[j] <= self.cap - state["spent"]

    def take(self, j: int, state: dict) -> None:
        state["n"] += 1
        state["spent"] += float(self.costs[j])

    def relaxed_max(self, ub: np.ndarray, cands: np.ndarray) -> float:
        from subsetlm.select.greedy import _knapsack_bound

        return _knapsack_bound(0.0, ub, self.costs[np.asarray(cands, dtype=np.int64)], self.cap)

    def satisfied(self, indices: np.ndarray) -> bool:
        idx = np.asarray(indices, dtype=np.int64)
        return len(np.unique(idx)) == len(idx) and float(self.costs[idx].sum()) <= self.cap + 1e-9

    def restrict(self, rows: np.ndarray, share: Any) -> "Knapsack":
        return Knapsack(self.costs[np.asarray(rows, dtype=np.int64)], float(share))

    def describe(self) -> dict[str, Any]:
        return {"kind": "tokens", "cap": int(self.cap) if float(self.cap).is_integer() else self.cap}


@dataclass
class Quotas(Constraint):
    """At most ``caps[g]`` elements of each group ``g`` (``groups``: (n,) ints in [0, G)), ``sum(caps)`` in all.

    Greedy under this partition matroid keeps f >= OPT / 2; ``relaxed_max`` sums each
    group's ``caps[g]`` largest gain bounds.
    """

    groups: np.ndarray
    caps: np.ndarray
    names: list[str] | None = None
    count: int = field(init=False)
    kind = "quotas"

    def __post_init__(self) -> None:
        self.groups = np.asarray(self.groups, dtype=np.int64).reshape(-1)
        self.caps = np.asarray(self.caps, dtype=np.int64).reshape(-1)
        if self.groups.size and (self.groups.min() < 0 or self.groups.max() >= len(self.caps)):
            raise ValueError(f"group labels must lie in [0, {len(self.caps)}) (one cap per group)")
        if (self.caps < 0).any():
            raise ValueError("quota caps must be >= 0")
        sizes = np.bincount(self.groups, minlength=len(self.caps))
        over = np.flatnonzero(self.caps > sizes)
        if over.size:
            g = int(over[0])
            name = self.names[g] if self.names else g
            raise ValueError(f"quota of {int(self.caps[g])} for group {name!r}, which has only {int(sizes[g])} "
                             "samples; lower its share or the budget")
        self.count = int(self.caps.sum())

    def start(self) -> dict:
        return {"n": 0, "used": np.zeros(len(self.caps), np.int64)}

    def fits(self, j: int, state: dict) -> bool:
        g = self.groups[j]
        return state["used"][g] < self.caps[g]

    def take(self, j: int, state: dict) -> None:
        state["n"] += 1
        state["used"][self.groups[j]] += 1

    def relaxed_max(self, ub: np.ndarray, cands: np.ndarray) -> float:
        ub = np.asarray(ub, dtype=np.float64)
        g = self.groups[np.asarray(cands, dtype=np.int64)]
        return float(sum(_top_sum(ub[g == q], int(self.caps[q])) for q in np.unique(g)))

    def satisfied(self, indices: np.ndarray) -> bool:
        idx = np.asarray(indices, dtype=np.int64)
        used = np.bincount(self.groups[idx], minlength=len(self.caps))
        return len(np.unique(idx)) == len(idx) and bool(np.all(used == self.caps))

    def restrict(self, rows: np.ndarray, share: Any) -> "Quotas":
        raise ValueError("per-source quotas apply to one global problem; they cannot be combined with partitions")

    def describe(self) -> dict[str, Any]:
        names = self.names or [str(g) for g in range(len(self.caps))]
        return {"kind": "quotas", "caps": {str(nm): int(c) for nm, c in zip(names, self.caps)}}


def from_budget(budget: Any, n: int, *, n_tokens: np.ndarray | None = None, sources: np.ndarray | None = None,
                source_proportions: dict[str, float] | None = None) -> Constraint:
    """The constraint a user budget asks for on a ground set of ``n`` samples.

    Parameters
    ----------
    budget : a count, a fraction, ``"25%"`` or ``"tokens:N"`` (:func:`~subsetlm.select.budget.parse_budget`).
    n_tokens : (n,) token counts; needed for a token budget.
    sources, source_proportions : per-source quotas: the budget's count split over
        ``sources`` by ``source_proportions`` (largest remainder; sources left out get 0).

    Returns
    -------
    Count, Knapsack or Quotas.
    """
    from subsetlm.select.budget import parse_budget, split_budget_by_source

    resolved = parse_budget(budget).resolve(n, n_tokens)
    if source_proportions:
        if resolved.tokens is not None:
            raise ValueError("a token budget and per-source proportions cannot be combined; give a count or "
                             "fraction budget with --source-proportions, or drop the proportions")
        if sources is None:
            raise ValueError("source_proportions needs each sample's source (the store's `source` column)")
        counts = split_budget_by_source(np.asarray(sources), resolved.count, dict(source_proportions))
        names = sorted(counts)
        code = {s: i for i, s in enumerate(names)}
        groups = np.array([code[str(s)] for s in np.asarray(sources).astype(str)], dtype=np.int64)
        return Quotas(groups, np.array([counts[s] for s in names], dtype=np.int64), names)
    if resolved.tokens is not None and not resolved.covers_all:
        return Knapsack(resolved.costs, float(resolved.tokens))
    return Count(int(resolved.count))
