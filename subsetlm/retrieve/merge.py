"""Per-query hit lists and their merge into one ranked list of corpus rows.

Every query's top-K hits form a flat :class:`Hits` table. :func:`merge_hits` keeps each
corpus row once, with its best hit: the lowest rank, then the highest score at that rank,
then the lowest query. Rows are ordered by that best rank, then score, then row id, so a
budget cap takes every query's first hit before anyone's second.

Example
-------
>>> h = Hits.from_lists([(np.array([4, 2]), np.array([0.9, 0.5])), (np.array([2]), np.array([0.8]))])
>>> u = merge_hits(h)
>>> u.index.tolist(), u.rank.tolist(), u.query.tolist(), u.n_queries.tolist()
([4, 2], [0, 0], [0, 1], [1, 2])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Hits:
    """Flat query → row hits: ``query`` (h,) int64, ``rank`` (h,) int64 (0 = best), ``index`` (h,) int64, ``score`` (h,) float64."""

    query: np.ndarray
    rank: np.ndarray
    index: np.ndarray
    score: np.ndarray

    @classmethod
    def from_lists(cls, per_query: Sequence[tuple[np.ndarray, np.ndarray]]) -> "Hits":
        """Hits from one ``(rows (k_q,), scores (k_q,))`` pair per query, each in rank order."""
        q, r, i, s = [], [], [], []
        for qi, (idx, sc) in enumerate(per_query):
            q.append(np.full(len(idx), qi, np.int64))
            r.append(np.arange(len(idx), dtype=np.int64))
            i.append(np.asarray(idx, np.int64))
            s.append(np.asarray(sc, np.float64))
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
        return cls(cat(q, np.int64), cat(r, np.int64), cat(i, np.int64), cat(s, np.float64))


@dataclass
class Merged:
    """Rows retrieved by any query, in merge order (best rank, then score, then row).

    ``index`` (u,) rows; ``rank``/``score``/``query`` (u,) their best hit; ``n_queries`` (u,) how many queries hit them.
    """

    index: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    query: np.ndarray
    n_queries: np.ndarray

    def take(self, m: int) -> "Merged":
        """The first ``m`` rows."""
        return Merged(*(getattr(self, f)[:m] for f in ("index", "rank", "score", "query", "n_queries")))


def merge_hits(h: Hits) -> Merged:
    """De-duplicate hits: each row keeps its best rank (highest score at that rank, then lowest query).

    Example
    -------
    >>> h = Hits(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([7, 3, 3, 9]), np.array([2., 1., 5., .5]))
    >>> u = merge_hits(h)
    >>> u.index.tolist(), u.rank.tolist(), u.n_queries.tolist()
    ([3, 7, 9], [0, 0, 1], [2, 1, 1])
    """
    if h.index.size == 0:
        z = np.zeros(0, np.int64)
        return Merged(z, z, np.zeros(0), z, z)
    o = np.lexsort((h.query, -h.score, h.rank, h.index))  # by row, then its best hit first
    idx = h.index[o]
    first = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    counts = np.diff(np.r_[first, len(idx)])
    best = o[first]
    rows, rank, score, query = h.index[best], h.rank[best], h.score[best], h.query[best]
    order = np.lexsort((rows, -score, rank))
    return Merged(rows[order], rank[order], score[order], query[order], counts[order].astype(np.int64))
