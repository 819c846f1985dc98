"""``assignment.parquet``: why each ground-set sample was kept or dropped, beside the subset.

One row per ground-set sample, in store-row order:

==============  =======  ==============================================================
column          type     meaning
==============  =======  ==============================================================
index           int64    the store row (0 .. n-1)
status          string   ``kept`` (in the subset), ``covered`` (represented by a selected
                         sample: facility location), ``uncovered`` (no selected sample in
                         its kNN list), ``duplicate`` (dropped as a near-duplicate of
                         ``representative``), ``pruned`` (dropped by D4's prototypicality
                         pruning), ``not_drawn`` (a sampling selector did not draw it)
representative  int64    the store row of the subset sample that represents it (itself when
                         kept; -1 when none)
similarity      float32  cosine between the sample and its representative (for a kept sample
                         its own coverage: 1, or less where the objective caps it, e.g.
                         fl-mi; NaN when none)
group           int64    duplicate group (the store row of the group's kept member), -1 when
                         the selector forms no groups
duplicate_of    int64    the sample a ``duplicate`` matched above the threshold (why it was
                         dropped; with chained duplicates it differs from the kept
                         ``representative``), -1 otherwise
==============  =======  ==============================================================

For facility location ``Σ_i w_i · max(similarity_i, 0)`` over the rows with a
representative equals f(S) (``w_i`` the coverage weights, 1 by default): the file is the
objective, sample by sample. Written through
``write_subset(..., extra_tables={ASSIGNMENT_FILE: assignment_table(...)})``.

Example
-------
>>> import numpy as np
>>> t = assignment_table(4, np.array([0, 2]), representative=np.array([0, 0, 2, -1]),
...                      similarity=np.array([1.0, 0.9, 1.0, np.nan]))
>>> t.column("status").to_pylist()
['kept', 'covered', 'kept', 'uncovered']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ASSIGNMENT_FILE = "assignment.parquet"
STATUSES = ("kept", "covered", "uncovered", "duplicate", "pruned", "not_drawn")
SCHEMA = pa.schema([("index", pa.int64()), ("status", pa.string()), ("representative", pa.int64()),
                    ("similarity", pa.float32()), ("group", pa.int64()), ("duplicate_of", pa.int64())])


def assignment_table(n: int, selected: np.ndarray, *, representative: np.ndarray, similarity: np.ndarray,
                     status: np.ndarray | None = None, group: np.ndarray | None = None,
                     duplicate_of: np.ndarray | None = None) -> pa.Table:
    """The assignment table of a subset of ``n`` ground-set samples.

    Parameters
    ----------
    selected : (b,) store rows in the subset (their status is ``kept``, their
        representative themselves).
    representative, similarity : (n,) per ground row; -1 / NaN when none.
    status : (n,) strings from :data:`STATUSES`; default: ``kept`` for selected rows,
        ``covered`` where a representative exists, else ``uncovered``.
    group : (n,) duplicate-group ids (-1 default). duplicate_of : (n,) see the table (-1 default).
    """
    sel = np.asarray(selected, dtype=np.int64)
    rep = np.asarray(representative, dtype=np.int64).reshape(-1)
    sim = np.asarray(similarity, dtype=np.float32).reshape(-1)
    if rep.shape != (n,) or sim.shape != (n,):
        raise ValueError(f"representative and similarity need one value per ground row ({n}); got "
                         f"{rep.shape} and {sim.shape}")
    if status is None:
        status = np.where(rep >= 0, "covered", "uncovered").astype(object)
    status = np.asarray(status, dtype=object).copy()
    status[sel] = "kept"
    rep, sim = rep.copy(), sim.copy()
    rep[sel] = sel
    sim[sel] = np.where(np.isnan(sim[sel]), 1.0, sim[sel])  # a kept sample's own coverage (1 unless capped)
    bad = sorted(set(status.tolist()) - set(STATUSES))
    if bad:
        raise ValueError(f"unknown assignment status {bad}; expected one of {', '.join(STATUSES)}")
    grp = np.full(n, -1, np.int64) if group is None else np.asarray(group, dtype=np.int64).reshape(-1)
    dup = np.full(n, -1, np.int64) if duplicate_of is None else np.asarray(duplicate_of, dtype=np.int64).reshape(-1)
    return pa.Table.from_arrays([pa.array(np.arange(n, dtype=np.int64)), pa.array(status.tolist(), pa.string()),
                                 pa.array(rep), pa.array(sim), pa.array(grp), pa.array(dup)], schema=SCHEMA)


def read_assignment(subset: Any) -> pa.Table:
    """The ``assignment.parquet`` of a subset (a :class:`~.format.SubsetFile` or its directory).

    Raises ``FileNotFoundError`` naming how to get one when the subset has none.
    """
    import pyarrow.parquet as pq

    path = Path(getattr(subset, "path", subset)) / ASSIGNMENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the subset was written without an assignment file "
                                "(re-run the selection with this version of subsetlm, --force)")
    return pq.read_table(path)
