"""Selection budgets: a count, a fraction of the ground set, or a number of tokens.

A budget is written the way a user types it (``--budget``) and resolved against the
ground set only when its size (and, for token budgets, the per-sample token counts)
is known.

Accepted forms of :func:`parse_budget`
--------------------------------------
==================  =========================================================
``5000`` / ``"5000"``  count: exactly 5000 samples (an ``int``, or digits only)
``"5e3"``            count as well: a float spelling of a whole number > 1
``0.25`` / ``"0.25"``  fraction in (0, 1]: round(0.25 * n) samples (at least 1)
``"25%"``            fraction 0.25
``"tokens:2e6"``     token budget: samples whose ``n_tokens`` sum to <= 2,000,000
==================  =========================================================

``"1"`` is a count of one sample; ``"1.0"`` is the fraction 1.0 (everything).

Per-source budgets: :func:`split_budget_by_source` splits a sample count over corpus
sources (proportional to their sizes, or to user proportions) with largest-remainder
rounding, so the parts sum to the count exactly.

Example
-------
>>> b = parse_budget("25%")
>>> b
Budget(kind='fraction', value=0.25)
>>> b.resolve(10).count
3
>>> parse_budget("tokens:100").resolve(4, np.array([30, 40, 50, 60])).count
2
>>> split_budget_by_source(np.array(["a", "a", "a", "b"]), 2, None)
{'a': 2, 'b': 0}
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

BudgetKind = Literal["count", "fraction", "tokens"]

ACCEPTED_FORMS = ("a count ('5000' or 5000), a fraction in (0, 1] ('0.25'), "
                  "a percentage ('25%') or a token budget ('tokens:2e6')")

_INT_RE = re.compile(r"^[+-]?\d[\d_]*$")


@dataclass(frozen=True)
class ResolvedBudget:
    """A budget resolved against a ground set of ``n`` samples.

    Attributes
    ----------
    kind : ``"count"``, ``"fraction"`` or ``"tokens"`` (copied from the :class:`Budget`).
    count : int
        Number of samples to select for count/fraction budgets. For a token budget, an
        upper bound on how many samples can fit: the number of cheapest samples whose
        token counts sum to at most ``tokens`` (the token cap binds first).
    tokens : int or None
        The token cap (cost budget) for token budgets, else None.
    costs : np.ndarray or None
        (n,) float64 per-sample costs (``n_tokens``, zeros raised to 1) for token
        budgets, else None. Pass as ``greedy(fn, ..., costs=costs)``.
    n : int
        Size of the ground set.
    covers_all : bool
        True when the budget selects the whole ground set.
    """

    kind: str
    count: int
    tokens: int | None
    costs: np.ndarray | None
    n: int
    covers_all: bool


@dataclass(frozen=True)
class Budget:
    """A parsed, not yet resolved, selection budget.

    Parameters
    ----------
    kind : ``"count"`` | ``"fraction"`` | ``"tokens"``
    value : float
        Sample count (whole number >= 1), fraction in (0, 1], or token cap (>= 1).
    """

    kind: BudgetKind
    value: float

    def __str__(self) -> str:
        if self.kind == "count":
            return str(int(self.value))
        if self.kind == "fraction":
            return repr(float(self.value))
        return f"tokens:{int(self.value)}"

    def resolve(self, n: int, n_tokens: np.ndarray | None = None) -> ResolvedBudget:
        """Resolve against a ground set of ``n`` samples.

        Parameters
        ----------
        n : int
            Ground-set size, >= 1.
        n_tokens : np.ndarray, optional
            (n,) per-sample token counts; required for token budgets, ignored otherwise.

        Returns
        -------
        ResolvedBudget

        Raises
        ------
        ValueError
            ``n < 1``; a count above ``n``; a token budget without (or with malformed, or
            all-zero) token counts, or smaller than the cheapest sample.

        Warns
        -----
        UserWarning
            A token budget that covers every token (everything is selected); some (not all)
            samples with 0 tokens (each counted as 1).
        """
        n = int(n)
        if n < 1:
            raise ValueError(f"cannot resolve budget {self} on an empty ground set (n={n})")
        if self.kind == "count":
            count = int(self.value)
            if count > n:
                raise ValueError(f"budget={count} > n={n} samples; lower --budget or use a fraction "
                                 f"(e.g. --budget 0.25)")
            return ResolvedBudget("count", count, None, None, n, count == n)
        if self.kind == "fraction":
            # round half up (Python's round() is half-to-even); a positive fraction never gives 0
            count = min(n, max(1, int(math.floor(self.value * n + 0.5))))
            return ResolvedBudget("fraction", count, None, None, n, count == n)
        return self._resolve_tokens(n, n_tokens)

    def _resolve_tokens(self, n: int, n_tokens: np.ndarray | None) -> ResolvedBudget:
        if n_tokens is None:
            raise ValueError(f"token budget {self} needs per-sample token counts (n_tokens), got None; "
                             "use a store with an n_tokens column or a count/fraction budget")
        costs = np.asarray(n_tokens)
        if costs.shape != (n,):
            raise ValueError(f"n_tokens has shape {costs.shape}, expected ({n},) (one count per sample)")
        if not np.issubdtype(costs.dtype, np.number) or not np.isfinite(costs).all():
            raise ValueError(f"n_tokens must be finite numbers, got dtype {costs.dtype} with non-finite values")
        if (costs < 0).any():
            i = int(np.flatnonzero(costs < 0)[0])
            raise ValueError(f"n_tokens[{i}] = {costs[i]} is negative; token counts must be >= 0")
        costs = costs.astype(np.float64)
        zeros = costs == 0
        if zeros.all():
            raise ValueError(f"token budget {self}: all {n} samples have n_tokens == 0, so there are no token "
                             "counts to budget; re-embed the corpus (the store's n_tokens column) or give a count "
                             "or fraction budget")
        if zeros.any():
            first = ", ".join(str(i) for i in np.flatnonzero(zeros)[:3])
            warnings.warn(f"{int(zeros.sum())} of {n} samples have n_tokens == 0 (e.g. rows {first}); counting "
                          "each as 1 token", UserWarning, stacklevel=3)
            costs[zeros] = 1.0
        cap = int(self.value)
        total = float(costs.sum())
        if cap >= total:
            warnings.warn(f"token budget {self} >= total tokens {int(total)} in the ground set; "
                          "this selects everything", UserWarning, stacklevel=3)
            return ResolvedBudget("tokens", n, int(total), costs, n, True)
        cheapest = np.sort(costs)
        if cap < cheapest[0]:
            raise ValueError(f"token budget {self} is smaller than the cheapest sample "
                             f"({int(cheapest[0])} tokens); nothing could be selected; raise the budget")
        count = int(np.searchsorted(np.cumsum(cheapest), cap, side="right"))
        return ResolvedBudget("tokens", count, cap, costs, n, False)


def _bad(spec: object, why: str) -> ValueError:
    return ValueError(f"budget {spec!r}: {why}; accepted forms: {ACCEPTED_FORMS}")


def _from_number(spec: object, v: float) -> Budget:
    if math.isnan(v) or math.isinf(v):
        raise _bad(spec, "not a finite number")
    if v <= 0:
        raise _bad(spec, "must be > 0")
    if v <= 1:
        return Budget("fraction", float(v))
    if float(v).is_integer():
        return Budget("count", float(int(v)))
    raise _bad(spec, f"{v} is neither a fraction in (0, 1] nor a whole number of samples")


def parse_budget(spec: str | int | float | Budget) -> Budget:
    """Parse a user budget specification.

    Parameters
    ----------
    spec : str, int, float or Budget
        See the module docstring for the accepted forms. An ``int`` is a count, a
        ``float`` in (0, 1] a fraction; a :class:`Budget` is returned unchanged.

    Returns
    -------
    Budget

    Raises
    ------
    ValueError
        Unparsable strings, zero or negative budgets, fractions/percentages above 1/100%,
        non-finite numbers; the message lists the accepted forms.
    TypeError
        Any other type (bool included).

    Examples
    --------
    >>> parse_budget("5000"), parse_budget(0.25), parse_budget("tokens:2e6")
    (Budget(kind='count', value=5000.0), Budget(kind='fraction', value=0.25), Budget(kind='tokens', value=2000000.0))
    """
    if isinstance(spec, Budget):
        return spec
    if isinstance(spec, (bool, np.bool_)):
        raise TypeError(f"budget must be a str, int or float, got bool {spec!r}")
    if isinstance(spec, (int, np.integer)):
        if spec <= 0:
            raise _bad(spec, "a count must be >= 1")
        return Budget("count", float(int(spec)))
    if isinstance(spec, (float, np.floating)):
        return _from_number(spec, float(spec))
    if not isinstance(spec, str):
        raise TypeError(f"budget must be a str, int or float, got {type(spec).__name__} {spec!r}")
    s = spec.strip().lower()
    if not s:
        raise _bad(spec, "empty string")
    if s.startswith("tokens:"):
        try:
            v = float(s[len("tokens:"):].strip().replace("_", ""))
        except ValueError:
            raise _bad(spec, "the token count after 'tokens:' is not a number") from None
        if math.isnan(v) or math.isinf(v) or v < 1:
            raise _bad(spec, "a token budget must be a finite number >= 1")
        return Budget("tokens", float(math.floor(v)))
    if s.endswith("%"):
        try:
            pct = float(s[:-1].strip())
        except ValueError:
            raise _bad(spec, "the part before '%' is not a number") from None
        if not (0 < pct <= 100):
            raise _bad(spec, f"a percentage must be in (0, 100], got {pct}")
        return Budget("fraction", pct / 100.0)
    if _INT_RE.match(s):
        v = int(s.replace("_", ""))
        if v <= 0:
            raise _bad(spec, "a count must be >= 1")
        return Budget("count", float(v))
    try:
        v = float(s)
    except ValueError:
        raise _bad(spec, "not understood") from None
    return _from_number(spec, v)


def largest_remainder(weights: Any, total: int) -> np.ndarray:
    """Integer parts of ``total`` proportional to ``weights`` that sum to ``total`` exactly.

    Each part is floor(total * w / sum(w)); the parts left over go, one each, to the largest
    remainders, ties to the lower index (so the result is deterministic). The one budget
    split of the package: partitions (:func:`~subsetlm.select.partitioned.split_budget`),
    sources, token shares.

    >>> largest_remainder([5, 3, 2], 5).tolist()
    [3, 1, 1]
    >>> largest_remainder([1, 1, 1], 2).tolist()
    [1, 1, 0]
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    total = int(total)
    s = float(w.sum())
    if w.size == 0 or s <= 0:
        if total:
            raise ValueError(f"cannot split {total} over weights summing to {s}")
        return np.zeros(w.size, np.int64)
    if np.all(w == np.floor(w)) and s * max(total, 1) < 2.0 ** 62:  # whole weights: exact integer arithmetic
        wi = w.astype(np.int64)
        num = wi * total
        base = num // int(s)
        rem = (num - base * int(s)).astype(np.float64)  # remainders over the same denominator: exact order
    else:
        quotas = total * w / s
        base = np.floor(quotas).astype(np.int64)
        rem = quotas - base
    short = total - int(base.sum())
    if short > 0:
        base[np.lexsort((np.arange(w.size), -rem))[:short]] += 1  # largest remainder first, ties by index
    return base


def split_budget_by_source(sources: np.ndarray, budget_count: int,
                           proportions: dict[str, float] | None = None) -> dict[str, int]:
    """Split a sample count over corpus sources.

    Parameters
    ----------
    sources : np.ndarray
        (n,) source name of every sample (``EmbeddingStore.sources``).
    budget_count : int
        Total number of samples to select, 0 <= budget_count <= n.
    proportions : dict[str, float], optional
        Share of the budget per source. None = proportional to each source's size.
        Sources left out get 0. Proportions that do not sum to 1 are normalised, with a
        warning (they are relative weights, e.g. ``{"pubmed": 3, "wiki": 1}``).

    Returns
    -------
    dict[str, int]
        Every known source (sorted by name) -> its count; the counts sum to
        ``budget_count`` exactly (largest-remainder rounding, ties by name).

    Raises
    ------
    ValueError
        Unknown source names (the message lists the known ones), negative or all-zero
        proportions, a budget above n, or a source whose share exceeds its size.

    Examples
    --------
    >>> split_budget_by_source(np.array(["a"] * 6 + ["b"] * 4), 5, {"a": 0.2, "b": 0.8})
    {'a': 1, 'b': 4}
    """
    sources = np.asarray(sources)
    if sources.ndim != 1:
        raise ValueError(f"sources must be a 1-D array of names, got shape {sources.shape}")
    n = sources.shape[0]
    budget_count = int(budget_count)
    if budget_count < 0 or budget_count > n:
        raise ValueError(f"budget={budget_count} is outside [0, n={n}]; lower --budget")
    names_arr, sizes = np.unique(sources.astype(str), return_counts=True)
    names = [str(s) for s in names_arr]
    if proportions is None:
        weights = sizes
    else:
        unknown = sorted(set(map(str, proportions)) - set(names))
        if unknown:
            raise ValueError(f"source proportions name unknown source(s) {unknown}; known sources: {names}")
        w = np.array([float(proportions.get(s, 0.0)) for s in names], dtype=np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"source proportions must be finite and >= 0, got {dict(proportions)}")
        total_w = float(w.sum())
        if total_w <= 0:
            raise ValueError(f"source proportions sum to {total_w}; give at least one source a positive share")
        if abs(total_w - 1.0) > 1e-6:
            warnings.warn(f"source proportions sum to {total_w:g}, not 1; normalising them "
                          f"to {dict(zip(names, np.round(w / total_w, 6).tolist()))}", UserWarning, stacklevel=2)
        weights = w
    counts = largest_remainder(weights, budget_count)  # names are sorted: ties go to the first name
    over = np.flatnonzero(counts > sizes)
    if over.size:
        i = int(over[0])
        raise ValueError(f"source {names[i]!r} would get {int(counts[i])} samples of the budget but has only "
                         f"{int(sizes[i])}; lower its proportion to <= {sizes[i] / budget_count:.4g} "
                         "or lower the budget")
    return {s: int(c) for s, c in zip(names, counts)}
