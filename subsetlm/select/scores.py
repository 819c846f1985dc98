"""Per-sample score files for the selection stage: quality scores and coverage weights.

A score file gives one number per sample of an embedding store:

- ``.npy``: a 1-D numeric array aligned with the store's rows (row i = sample i);
- ``.parquet``, ``.jsonl`` (``.jsonl.gz``): an ``id`` field and a named numeric column,
  joined on the store's sample ids (or, for a chunked store, on its document ids when every
  document id is found and not every sample id is: one score per document, shared by its
  chunks). Ids in the file that the store lacks are ignored (a corpus-wide score file serves
  any store of that corpus); a store sample missing from the file is an error naming the file.

Every value must be finite and >= 0 (facility location's weights and quality term need it
for the certificate). :func:`read_scores` returns the values and a record for the manifest
(the path, the column, the file's sha256 and the sha256 of the values used, which is what
the subset's identity holds).

:func:`group_size_weights` turns a deduplicated subset's ``assignment.parquet`` into coverage
weights: each kept sample weighted by the total weight of its duplicate group.

Example
-------
>>> import numpy as np, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "q.jsonl").write_text('{"id": "b", "score": 0.5}\\n{"id": "a", "score": 2}\\n')
>>> values, record = read_scores(d / "q.jsonl", np.array(["a", "b"], dtype=object), column="score")
>>> values.tolist(), record["column"], len(record["sha256"])
([2.0, 0.5], 'score', 64)
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from subsetlm._io import sha256_file

logger = logging.getLogger(__name__)

__all__ = ["read_scores", "group_size_weights", "values_sha256", "SUFFIXES"]

SUFFIXES = (".npy", ".parquet", ".jsonl", ".jsonl.gz")




def values_sha256(values: np.ndarray) -> str:
    """sha256 of ``values`` as little-endian float64 bytes: what a subset's identity records."""
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f8").tobytes()).hexdigest()


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), path.suffix.lower())


def _read_table(path: Path, column: str, what: str, flag: str) -> tuple[list, np.ndarray]:
    """(ids, values) of a .parquet / .jsonl[.gz] score file."""
    import pyarrow as pa

    if _suffix(path) == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
    else:
        import pyarrow.json as pj

        try:
            with pa.input_stream(str(path), compression="detect") as fh:
                table = pj.read_json(fh)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{what} {path}: not valid JSON lines, one object per line ({e})") from None
        names = table.column_names
    for need in ("id", column):
        if need not in names:
            raise ValueError(f"{what} {path}: no column {need!r}; the file has {', '.join(names) or 'none'} "
                             f"(give the score column with {flag})")
    if _suffix(path) == ".parquet":
        table = pq.read_table(path, columns=["id", column])
    ids, vals = table.column("id"), table.column(column)
    if ids.null_count or vals.null_count:
        raise ValueError(f"{what} {path}: {max(ids.null_count, vals.null_count)} row(s) lack an id or a value in "
                         f"{column!r}; give every row both")
    try:
        values = vals.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise ValueError(f"{what} {path}: column {column!r} holds {vals.type}, not numbers") from None
    return [str(i) for i in ids.to_pylist()], np.asarray(values, dtype=np.float64)


def _join(path: Path, file_ids: list, values: np.ndarray, store_ids: np.ndarray, doc_ids: np.ndarray | None,
          what: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    fid = pa.array(file_ids, pa.string())
    if len(pc.unique(fid)) != len(fid):
        vc = pc.value_counts(fid)
        dup = [v["values"] for v in vc.to_pylist() if v["counts"] > 1][:3]
        raise ValueError(f"{what} {path}: duplicate ids (e.g. {', '.join(map(repr, dup))}); give one score per id")

    def locate(keys: np.ndarray) -> np.ndarray:
        """Position in the file of each key, NaN where the file lacks it."""
        idx = pc.index_in(pa.array([str(k) for k in keys], pa.string()), value_set=fid)
        return np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.float64)

    pos = locate(store_ids)
    missing = np.isnan(pos)
    if missing.any() and doc_ids is not None and not np.array_equal(doc_ids, store_ids):
        by_doc = locate(doc_ids)
        if not np.isnan(by_doc).any():
            logger.info("%s %s: joined on the store's document ids (one score per document, shared by its chunks)",
                        what, path)
            return values[by_doc.astype(np.int64)]
    if missing.any():
        first = [str(s) for s in np.asarray(store_ids)[missing][:3]]
        hint = ""
        if first[0].startswith("sha1:"):
            hint = (" (the store's ids are content hashes: its corpus records had no 'id' field, or it was embedded "
                    "with --id-field @hash or by an older subsetlm; re-embed with --id-field NAME, or score the "
                    "store's own samples)")
        raise ValueError(f"{what} {path}: {int(missing.sum())} of {len(store_ids)} store samples have no score "
                         f"(e.g. ids {', '.join(map(repr, first))}); the file needs a row for every sample id of "
                         f"the store (or a .npy aligned with its rows){hint}")
    return values[pos.astype(np.int64)]


def read_scores(path: str | Path, store_ids: np.ndarray, *, column: str | None = None,
                doc_ids: np.ndarray | None = None, what: str = "--quality",
                nonnegative: bool = True, column_flag: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One score per store sample from ``path`` (see the module docstring).

    Parameters
    ----------
    path : ``.npy`` (aligned with the store's rows), ``.parquet`` or ``.jsonl[.gz]`` (``id`` + ``column``).
    store_ids : (n,) the store's sample ids; ``doc_ids`` (n,) its document ids (chunked stores).
    column : the score column of a tabular file (ignored for ``.npy``).
    what : the flag named in errors (``--quality``, ``--coverage-weights``).
    column_flag : the flag that names the column (default: ``--quality-column`` for
        ``--quality``, ``--coverage-column`` for ``--coverage-weights``).
    nonnegative : refuse negative values (facility location's weights and quality need
        ``>= 0``; a score only ranked, e.g. dedup's keep policy, may pass False).

    Returns
    -------
    values : (n,) float64, finite (and >= 0 when ``nonnegative``).
    record : ``{"path", "column", "sha256", "values_sha256"}`` for the manifest.
    """
    path = Path(path)
    n = len(store_ids)
    flag = column_flag or f"--{what.strip('-').split('-')[0]}-column"
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file")
    kind = _suffix(path)
    if kind not in SUFFIXES:
        raise ValueError(f"{what} {path}: unsupported file type {kind!r}; expected one of {', '.join(SUFFIXES)}")
    if kind == ".npy":
        raw = np.load(path, allow_pickle=False)
        if raw.ndim != 1 or raw.shape[0] != n:
            raise ValueError(f"{what} {path}: a .npy score file must be 1-D with one value per store row ({n},); "
                             f"got shape {raw.shape}")
        if not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
            raise ValueError(f"{what} {path}: expected numbers; got dtype {raw.dtype}")
        values, column = raw.astype(np.float64), None
    else:
        if not column:
            raise ValueError(f"{what} {path}: name the score column of this table ({flag} COL)")
        ids, vals = _read_table(path, column, what, flag)
        values = _join(path, ids, vals, np.asarray(store_ids), doc_ids, what)
    bad = np.flatnonzero(~np.isfinite(values) | ((values < 0) if nonnegative else False))
    if bad.size:
        need = "finite and >= 0 (shift or clip them, e.g. use a probability)" if nonnegative else "finite"
        raise ValueError(f"{what} {path}: {bad.size} score(s) are {'negative, ' if nonnegative else ''}NaN or inf "
                         f"(first: store id {store_ids[bad[0]]!r} = {values[bad[0]]}); scores must be {need}")
    record = {"path": str(path), "column": column, "sha256": sha256_file(path), "values_sha256": values_sha256(values)}
    return values, record


def group_size_weights(assignment: Any, base: np.ndarray | None = None, *, where: str = "--within") -> np.ndarray:
    """Coverage weights from a deduplicated subset's assignment: each sample's duplicate group total.

    ``assignment`` is an ``assignment.parquet`` table (:mod:`subsetlm.subsets.assignment`)
    whose ``group`` column names, for every store row, the row kept for its duplicate group
    (-1: no group, the row stands for itself). Returns ``(n,)`` float64: for a kept row r,
    ``Σ base_i`` over the rows i of its group (``base`` = 1 by default: the group's size), so a
    selection among the kept rows covers the corpus as the full corpus weighs it.

    >>> import pyarrow as pa
    >>> t = pa.table({"group": [0, 0, 2, 0, -1]})
    >>> group_size_weights(t).tolist()
    [3.0, 0.0, 1.0, 0.0, 1.0]
    """
    group = np.asarray(assignment.column("group").to_numpy(), dtype=np.int64)
    n = len(group)
    if (group < 0).all():
        raise ValueError(f"{where}: the subset's assignment.parquet forms no duplicate groups (its group column is "
                         "all -1); weighting by group size needs a dedup subset (subsetlm dedup)")
    base = np.ones(n) if base is None else np.asarray(base, dtype=np.float64)
    g = np.where(group >= 0, group, np.arange(n))
    return np.bincount(g, weights=base, minlength=n).astype(np.float64)
