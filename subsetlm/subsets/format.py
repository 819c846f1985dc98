"""The subset file: write, read and validate a selected subset of an embedding store.

A subset is a directory ``SUBSET/``::

    subset.parquet   id str, index int64, rank int64, gain float64, weight float64,
                     partition int32  (one row per selected sample, in selection order)
    manifest.json    schema_version, kind, size, n_ground, store {...}, config, seed,
                     certificate {...}, versions {...}, checksums {file: "xxh3_64:HEX"}
                     (deterministic: no timestamps; the checksums bind the tables to it)
    stats.json       timings (free-form; the only file that differs between reruns)
    _SUCCESS         written last

``index`` is the row of the sample in the embedding store it was selected from, so
``store.ids[index] == id``. ``read_subset`` also accepts the flat layout
``NAME.parquet`` + ``NAME.json`` (the same table and manifest side by side).
The format is documented for readers without subsetlm in ``docs/formats.md``.

Example
-------
>>> import numpy as np, tempfile, pathlib
>>> from types import SimpleNamespace
>>> store = SimpleNamespace(path="store", n=4, dim=2, fingerprint="f" * 64,
...     manifest={"corpus_fingerprint": "c" * 64, "model": "toy"},
...     ids=np.array(["a", "b", "c", "d"]))
>>> out = pathlib.Path(tempfile.mkdtemp()) / "subset"
>>> _ = write_subset(out, store=store, indices=np.array([2, 0]),
...     gains=np.array([1.5, 0.5]), weights=None, partitions=None,
...     manifest={"config": {}, "seed": 0})
>>> sub = read_subset(out, store=store)
>>> sub.ids.tolist(), sub.indices.tolist(), sub.weights.tolist()
(['c', 'a'], [2, 0], [1.0, 1.0])
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from subsetlm._io import SUCCESS, IntegrityError, atomic_dir, dumps_json, file_checksum, read_json, verify_checksums
from subsetlm._mirror import display, local_copy
from subsetlm._remote import is_url
from subsetlm.subsets._schema import (  # noqa: F401  (re-exported: the public names live in this module)
    _PARQUET_KW,
    KIND,
    MANIFEST_FILE,
    RESERVED_KEYS,
    SCHEMA,
    SCHEMA_VERSION,
    STATS_FILE,
    TABLE_FILE,
    SubsetError,
    SubsetStoreMismatch,
    _check_table,
)
from subsetlm.subsets._util import _path_from_subset, duplicates, library_versions, strict_json

logger = logging.getLogger(__name__)

@dataclass
class SubsetFile:
    """A subset read from disk: the manifest and the validated Arrow table.

    Attributes
    ----------
    path : Path
        The subset directory (or the ``NAME.parquet`` file of the flat layout).
    manifest : dict
        ``manifest.json`` as a dict (``schema_version``, ``store``, ``certificate``, ...).
    table : pyarrow.Table
        The rows in selection order with the columns of :data:`SCHEMA`.
    """

    path: Path
    manifest: dict
    table: pa.Table

    def _col(self, name: str, dtype: Any) -> np.ndarray:
        return self.table.column(name).to_numpy().astype(dtype, copy=False)

    @property
    def size(self) -> int:
        """Number of selected samples ``b``."""
        return self.table.num_rows

    @property
    def ids(self) -> np.ndarray:
        """(b,) object array of sample ids, in selection order."""
        return self.table.column("id").to_numpy(zero_copy_only=False).astype(object, copy=False)

    @property
    def indices(self) -> np.ndarray:
        """(b,) int64 store row indices, in selection order."""
        return self._col("index", np.int64)

    @property
    def ranks(self) -> np.ndarray:
        """(b,) int64, always ``0..b-1``."""
        return self._col("rank", np.int64)

    @property
    def gains(self) -> np.ndarray:
        """(b,) float64 marginal gains at the time each sample was picked."""
        return self._col("gain", np.float64)

    @property
    def weights(self) -> np.ndarray:
        """(b,) float64 importance weights (ground points represented; 1.0 if unknown)."""
        return self._col("weight", np.float64)

    @property
    def partitions(self) -> np.ndarray:
        """(b,) int32 partition of each sample (0 without partitioning)."""
        return self._col("partition", np.int32)

    @property
    def store_fingerprint(self) -> str:
        """The embedding fingerprint of the store this subset was selected from."""
        return str(self.manifest.get("store", {}).get("fingerprint", ""))

    @property
    def store_path(self) -> str | None:
        """The store this subset was selected from, as a path usable from the current directory.

        The manifest records the path as it was given to ``select`` (relative to the working
        directory of that run) and the same store relative to the subset directory; the first
        that exists from here wins (``None`` when the manifest records no store path)::

            cd project && subsetlm select st --out sub   # path "st", path_from_subset "../st"
            cd elsewhere && subsetlm export ../project/sub --out x.jsonl   # finds ../project/st
        """
        rec = self.manifest.get("store") or {}
        given, rel = rec.get("path"), rec.get("path_from_subset")
        if given is None or is_url(given) or Path(given).exists() or rel is None:
            return given
        if is_url(rel):
            return rel
        here = self.path if self.path.is_dir() else self.path.parent
        found = os.path.normpath(here / rel)
        return found if Path(found).exists() else given

    def __len__(self) -> int:
        return self.size


# ----------------------------------------------------------------------------- write


def _as_1d(name: str, x: Any, dtype: Any, b: int | None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise SubsetError(f"write_subset: {name} must be 1-D, got shape {arr.shape}")
    if b is not None and arr.shape[0] != b:
        raise SubsetError(
            f"write_subset: {name} has length {arr.shape[0]} but indices has length {b}; "
            f"pass one {name} value per selected index"
        )
    if dtype is np.int64 or dtype is np.int32:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise SubsetError(f"write_subset: {name} must be integers, got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def _check_finite(name: str, arr: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise SubsetError(
            f"write_subset: {name}[{i}] = {arr[i]} is not finite ({bad.size} non-finite "
            f"values in all); the selector produced NaN/inf, check its similarities"
        )


def write_subset(
    path: str | Path,
    *,
    store: Any,
    indices: np.ndarray,
    gains: np.ndarray,
    weights: np.ndarray | None = None,
    partitions: np.ndarray | None = None,
    manifest: dict,
    stats: dict | None = None,
    overwrite: bool = False,
    extra_tables: dict[str, pa.Table] | None = None,
) -> Path:
    """Write a subset directory atomically (``_SUCCESS`` last).

    Parameters
    ----------
    path : str or Path
        Destination directory ``SUBSET/``.
    store : EmbeddingStore
        The store the subset was selected from (``path``, ``n``, ``dim``, ``ids``,
        ``fingerprint``, ``manifest`` are used).
    indices : (b,) int array
        Store row indices in selection order; unique, in ``[0, store.n)``.
    gains : (b,) float array
        Marginal gain of each pick; finite.
    weights : (b,) float array or None
        Importance weights (finite, >= 0); ``None`` writes 1.0.
    partitions : (b,) int array or None
        Partition id of each pick; ``None`` writes 0.
    manifest : dict
        Selector metadata: ``config``, ``seed``, ``certificate`` {objective, upper_bound,
        ratio, random_objective}, ... Keys in :data:`RESERVED_KEYS` are filled here and
        may not be passed; a ``versions`` dict is merged with the library versions;
        ``ratio`` is filled from objective / upper_bound when missing; non-finite
        floats are written as ``null`` (strict JSON).
    stats : dict or None
        Free-form timings for ``stats.json`` (not part of the deterministic output).
    overwrite : bool
        Replace an existing ``path``; otherwise it raises ``FileExistsError``.
    extra_tables : {file name: pyarrow.Table}, optional
        More Parquet files written into the directory with the same deterministic
        settings (``subsetlm retrieve`` adds ``provenance.parquet``).

    Returns
    -------
    Path
        ``path``. Identical inputs give byte-identical ``subset.parquet`` and
        ``manifest.json`` (same library versions).

    Examples
    --------
    See the module docstring.
    """
    t0 = time.perf_counter()
    path = Path(path)
    n = int(store.n)
    idx = _as_1d("indices", indices, np.int64, None)
    b = idx.shape[0]
    g = _as_1d("gains", gains, np.float64, b)
    w = np.ones(b) if weights is None else _as_1d("weights", weights, np.float64, b)
    p = np.zeros(b, np.int32) if partitions is None else _as_1d("partitions", partitions, np.int32, b)

    if b and (idx.min() < 0 or idx.max() >= n):
        i = int(np.flatnonzero((idx < 0) | (idx >= n))[0])
        raise SubsetError(
            f"write_subset: indices[{i}] = {idx[i]} is outside the store's rows [0, {n}) "
            f"(store {store.path}); indices must be rows of this store"
        )
    dups = duplicates(idx)
    if dups.size:
        dup = int(dups[0])
        pos = np.flatnonzero(idx == dup)[:2].tolist()
        raise SubsetError(
            f"write_subset: index {dup} is selected twice (positions {pos}); "
            f"{dups.size} duplicate(s) in all; a subset must not repeat a sample"
        )
    _check_finite("gains", g)
    _check_finite("weights", w)
    if b and w.min() < 0:
        i = int(np.argmin(w))
        raise SubsetError(f"write_subset: weights[{i}] = {w[i]} is negative; weights must be >= 0")
    if not isinstance(manifest, dict):
        raise TypeError(f"write_subset: manifest must be a dict, got {type(manifest).__name__}")
    clash = sorted(set(manifest) & set(RESERVED_KEYS))
    if clash:
        raise SubsetError(
            f"write_subset: manifest keys {clash} are filled by write_subset itself; "
            f"remove them from the manifest you pass"
        )

    ids = np.asarray(store.ids)[idx]
    table = pa.Table.from_arrays(
        [
            pa.array([str(s) for s in ids], pa.string()),
            pa.array(idx, pa.int64()),
            pa.array(np.arange(b, dtype=np.int64), pa.int64()),
            pa.array(g, pa.float64()),
            pa.array(w, pa.float64()),
            pa.array(p, pa.int32()),
        ],
        schema=SCHEMA,
    )
    smf = dict(getattr(store, "manifest", {}) or {})
    out_manifest: dict[str, Any] = {k: v for k, v in manifest.items() if k != "versions"}
    cert = out_manifest.get("certificate")
    if isinstance(cert, dict) and "ratio" not in cert:
        obj, ub = cert.get("objective"), cert.get("upper_bound")
        cert = dict(cert, ratio=(float(obj) / float(ub)) if obj is not None and ub else None)
        out_manifest["certificate"] = cert
    out_manifest.update(
        schema_version=SCHEMA_VERSION,
        kind=KIND,
        size=b,
        n_ground=n,
        store={
            "path": display(store.path),
            # the same store seen from the subset directory: found from any working directory
            "path_from_subset": _path_from_subset(store.path, path),
            "fingerprint": str(store.fingerprint),
            "corpus_fingerprint": smf.get("corpus_fingerprint"),
            "model": smf.get("model"),
            "dim": int(store.dim),
            **({"ids": smf["ids"]} if smf.get("ids") else {}),  # where the store's ids came from
        },
        versions={**dict(manifest.get("versions") or {}), **library_versions()},
    )
    # strict JSON for other tools (jq, JS): NaN/inf become null. Fails here, before
    # anything is written, if the manifest is not JSON-able.
    manifest_obj = strict_json(out_manifest)
    dumps_json(manifest_obj)

    with atomic_dir(path, overwrite=overwrite) as tmp:  # published last when ``path`` mirrors a URL
        pq.write_table(table, tmp / TABLE_FILE, **_PARQUET_KW)
        for name, extra in (extra_tables or {}).items():
            if Path(name).name != name or name in (TABLE_FILE, MANIFEST_FILE, STATS_FILE, SUCCESS):
                raise SubsetError(f"write_subset: extra table name {name!r} must be a new plain file name")
            pq.write_table(extra, tmp / name, **_PARQUET_KW)
        names = sorted([TABLE_FILE, *(extra_tables or {})])
        manifest_text = dumps_json({**manifest_obj, "checksums": {f: file_checksum(tmp / f) for f in names}})
        (tmp / MANIFEST_FILE).write_text(manifest_text, encoding="utf-8")
        st = dict(stats or {})
        st.setdefault("write_seconds", time.perf_counter() - t0)
        (tmp / STATS_FILE).write_text(dumps_json(st), encoding="utf-8")
    logger.info("wrote subset of %d / %d samples to %s", b, n, display(path))
    return path



# ------------------------------------------------------------------------------ read


def _locate(path: Path) -> tuple[Path, Path, Path]:
    """Return (display path, table file, manifest file) for either layout."""
    if path.is_dir():
        if not (path / SUCCESS).is_file():
            raise SubsetError(
                f"{path} is not a complete subset directory (no {SUCCESS} marker): the "
                f"writer was interrupted; re-run `subsetlm select`"
            )
        return path, path / TABLE_FILE, path / MANIFEST_FILE
    if path.suffix in (".parquet", ".json"):
        table_file, manifest_file = path.with_suffix(".parquet"), path.with_suffix(".json")
        for f in (table_file, manifest_file):
            if not f.is_file():
                raise SubsetError(
                    f"subset {path}: flat layout needs {table_file.name} and "
                    f"{manifest_file.name} side by side, but {f} does not exist"
                )
        return table_file, table_file, manifest_file
    if path.with_suffix(".parquet").is_file():
        return _locate(path.with_suffix(".parquet"))
    raise FileNotFoundError(
        f"no subset at {path}: expected a directory with {TABLE_FILE} and {MANIFEST_FILE}, "
        f"or NAME.parquet + NAME.json"
    )


_RERUN = ("rebuild it: re-run the command that wrote it (`subsetlm select`, `dedup`, `dsir` or `retrieve`) with "
          "--force (or pass --no-verify to skip this check)")


def _verify(where: Path, table_file: Path, manifest: dict) -> None:
    """The manifest's ``checksums`` against the tables beside it (subset.parquet, or NAME.parquet of
    the flat layout; extra tables such as assignment.parquet); none recorded: a warning."""
    recorded = manifest.get("checksums")
    if not isinstance(recorded, dict) or not recorded:
        return verify_checksums(where, None, what="subset", fix=_RERUN)
    for name, want in recorded.items():
        f = table_file if name == TABLE_FILE else where / name
        verify_checksums(f.parent, {f.name: want}, what="subset", fix=_RERUN)


def read_subset(path: str | Path, store: Any = None, verify: bool | None = None) -> SubsetFile:
    """Read and validate a subset file; check it against ``store`` when given.

    Parameters
    ----------
    path : str or Path
        A subset directory, or ``NAME.parquet`` / ``NAME.json`` of the flat layout.
    store : EmbeddingStore, optional
        When given: its fingerprint must equal the manifest's store fingerprint, every
        index must be ``< store.n`` and ``ids == store.ids[indices]``.
    verify : bool, optional
        Check the tables against the manifest's ``checksums`` (so a ``subset.parquet``
        altered, or swapped for another selection, is refused); default True, or as
        ``store`` was opened. A subset written before checksums existed is read with a
        warning.

    Returns
    -------
    SubsetFile

    Raises
    ------
    SubsetError
        Bad schema version, kind, columns, types, ranks, indices; the message names
        the file and the field.
    SubsetStoreMismatch
        The subset does not belong to ``store``.
    IntegrityError
        A table does not match its recorded checksum (a ValueError naming the file).

    Examples
    --------
    >>> sub = read_subset("runs/subset")            # doctest: +SKIP
    >>> sub.indices[:3], sub.manifest["certificate"]["ratio"]   # doctest: +SKIP
    """
    path = local_copy(path, "subset", SubsetError)  # a URL: its mirror (changed files fetched; no _SUCCESS: refused)
    where, table_file, manifest_file = _locate(path)
    try:
        manifest = read_json(manifest_file)
    except (ValueError, UnicodeDecodeError) as e:
        raise SubsetError(f"{manifest_file}: not valid JSON ({e}); {_RERUN}") from None
    if not isinstance(manifest, dict):
        raise SubsetError(f"{manifest_file}: expected a JSON object, got {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SubsetError(
            f"{manifest_file}: schema_version {version!r} is not supported; this subsetlm "
            f"reads schema_version {SCHEMA_VERSION}; re-run `subsetlm select` with this "
            f"version or upgrade subsetlm"
        )
    if manifest.get("kind") != KIND:
        raise SubsetError(f"{manifest_file}: kind {manifest.get('kind')!r}, expected {KIND!r}")
    if getattr(store, "verify", True) if verify is None else verify:
        _verify(where if where.is_dir() else table_file.parent, table_file, manifest)
    try:
        raw = pq.read_table(table_file)
    except FileNotFoundError:
        raise SubsetError(f"{table_file}: missing; {_RERUN}") from None
    except (OSError, pa.ArrowException) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise IntegrityError(f"{table_file}: unreadable ({msg}): the file is corrupt; "
                             f"{_RERUN}") from None
    table = _check_table(raw, table_file)
    sub = SubsetFile(path=where, manifest=manifest, table=table)

    b = sub.size
    if manifest.get("size", b) != b:
        raise SubsetError(
            f"{manifest_file}: size = {manifest.get('size')} but {table_file.name} has {b} rows"
        )
    ranks = sub.ranks
    if not np.array_equal(ranks, np.arange(b)):
        i = int(np.flatnonzero(ranks != np.arange(b))[0])
        raise SubsetError(
            f"{table_file}: column 'rank' must be 0..{b - 1} in row order; row {i} has "
            f"rank {ranks[i]}"
        )
    idx = sub.indices
    n_ground = manifest.get("n_ground")
    if b and (idx.min() < 0 or (n_ground is not None and idx.max() >= n_ground)):
        i = int(np.flatnonzero((idx < 0) | (idx >= (n_ground or np.iinfo(np.int64).max)))[0])
        raise SubsetError(
            f"{table_file}: row {i} has index {idx[i]} outside [0, n_ground={n_ground})"
        )
    dups = duplicates(idx)
    if dups.size:
        raise SubsetError(
            f"{table_file}: column 'index' has {dups.size} duplicate(s), e.g. {int(dups[0])}"
        )
    if store is not None:
        check_against_store(sub, store)
    return sub


def check_against_store(sub: SubsetFile, store: Any) -> None:
    """Raise :class:`SubsetStoreMismatch` unless ``sub`` was selected from ``store``."""
    want, have = sub.store_fingerprint, str(store.fingerprint)
    if want != have:
        raise SubsetStoreMismatch(
            f"subset {sub.path} was selected from a store with fingerprint {want[:12]}… "
            f"but {store.path} has {have[:12]}…; re-run subsetlm select on this store"
        )
    idx = sub.indices
    n = int(store.n)
    if idx.size and idx.max() >= n:
        i = int(np.argmax(idx))
        raise SubsetStoreMismatch(
            f"subset {sub.path}: row {i} has index {idx[i]} but store {store.path} has only "
            f"{n} rows; re-run subsetlm select on this store"
        )
    have = pa.array(np.asarray(store.ids)[idx], pa.string())
    want = sub.table.column("id").combine_chunks()
    bad = np.flatnonzero(pc.not_equal(have, want).to_numpy(zero_copy_only=False))
    if bad.size:
        i = int(bad[0])
        have_ids, want_ids = have.to_pylist(), want.to_pylist()
        raise SubsetStoreMismatch(
            f"subset {sub.path}: row {i} has id {str(want_ids[i])!r} at index {idx[i]} but "
            f"store {store.path} has id {str(have_ids[i])!r} there ({bad.size} mismatched rows); the "
            f"store was rebuilt; re-run subsetlm select on this store"
        )
