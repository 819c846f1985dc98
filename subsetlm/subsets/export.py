"""Export the selected samples (with their text) as JSONL(.gz) or Parquet.

Rows come out in selection order (``order="rank"``) or store order
(``order="index"``); texts are fetched from the store in blocks, so memory is
O(block_size) texts whatever the subset size. The subset is validated against the
store (fingerprint, ids) before anything is written, and the output appears
atomically (written to ``OUT.tmp``, then renamed).

Example
-------
>>> export_subset("runs/subset", "runs/store", "subset.jsonl.gz")   # doctest: +SKIP
PosixPath('subset.jsonl.gz')
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from subsetlm._mirror import display, publish, url_of
from subsetlm._remote import RemotePath
from subsetlm._stage import Stage, check_out
from subsetlm.subsets.format import SubsetFile, read_subset

logger = logging.getLogger(__name__)

#: Every field an export can carry, and its Arrow type.
FIELD_TYPES: dict[str, pa.DataType] = {
    "id": pa.string(),
    "doc_id": pa.string(),
    "source": pa.string(),
    "n_tokens": pa.int64(),
    "text": pa.string(),
    "index": pa.int64(),
    "rank": pa.int64(),
    "gain": pa.float64(),
    "weight": pa.float64(),
    "partition": pa.int32(),
}
DEFAULT_FIELDS: tuple[str, ...] = tuple(FIELD_TYPES)


def open_store(store: Any, verify: bool = True) -> Any:
    """``store`` itself when it is already an opened store, else ``EmbeddingStore.open``."""
    if isinstance(store, (str, os.PathLike)):
        from subsetlm.embed import EmbeddingStore

        return EmbeddingStore.open(store, verify=verify)
    return store


def _open_subset(subset: Any, store: Any) -> SubsetFile:
    if isinstance(subset, SubsetFile):
        from subsetlm.subsets.format import check_against_store

        check_against_store(subset, store)
        return subset
    return read_subset(subset, store=store)


def _doc_ids(store: Any) -> np.ndarray:
    """The store's ``doc_id`` column (``store.doc_ids`` if present, else ids.parquet)."""
    doc_ids = getattr(store, "doc_ids", None)
    if doc_ids is not None:
        return np.asarray(doc_ids)
    ids_file = Path(store.path) / "ids.parquet"
    if not ids_file.is_file():
        raise FileNotFoundError(
            f"field 'doc_id' needs {ids_file}, which does not exist; leave 'doc_id' out of "
            f"include_fields"
        )
    col = pq.read_table(ids_file, columns=["doc_id"]).column("doc_id")
    return np.asarray(col.to_pylist(), dtype=object)


def check_fields(include_fields: Sequence[str] | None) -> tuple[str, ...]:
    """Validate and normalise ``include_fields`` (``None`` = :data:`DEFAULT_FIELDS`)."""
    if include_fields is None:
        return DEFAULT_FIELDS
    if isinstance(include_fields, str):
        include_fields = [f.strip() for f in include_fields.split(",") if f.strip()]
    fields = tuple(include_fields)
    unknown = [f for f in fields if f not in FIELD_TYPES]
    if unknown or not fields or len(set(fields)) != len(fields):
        raise ValueError(
            f"include_fields={list(fields)}: unknown or repeated field(s) {unknown}; choose "
            f"a non-empty subset of {list(FIELD_TYPES)}"
        )
    return fields


def iter_batches(
    subset: SubsetFile,
    store: Any,
    fields: Sequence[str] = DEFAULT_FIELDS,
    *,
    order: str = "rank",
    block_size: int = 1024,
) -> Iterator[pa.RecordBatch]:
    """Yield the export rows as Arrow record batches of at most ``block_size`` rows.

    ``subset`` must already be validated against ``store``.
    """
    if order not in ("rank", "index"):
        raise ValueError(f"order={order!r}; expected 'rank' (selection order) or 'index' (store order)")
    if block_size < 1:
        raise ValueError(f"block_size={block_size}; expected >= 1")
    schema = pa.schema([pa.field(f, FIELD_TYPES[f]) for f in fields])
    rows = np.arange(subset.size)
    if order == "index":
        rows = np.argsort(subset.indices, kind="stable")
    cols = {
        "index": subset.indices,
        "rank": subset.ranks,
        "gain": subset.gains,
        "weight": subset.weights,
        "partition": subset.partitions,
    }
    ids = subset.ids
    store_cols: dict[str, Any] = {}
    if "source" in fields:
        store_cols["source"] = np.asarray(store.sources)
    if "n_tokens" in fields:
        store_cols["n_tokens"] = np.asarray(store.n_tokens)
    if "doc_id" in fields:
        store_cols["doc_id"] = _doc_ids(store)
    for start in range(0, rows.size, block_size):
        r = rows[start : start + block_size]
        idx = cols["index"][r]
        arrays = []
        for f in fields:
            if f == "id":
                values: Any = [str(s) for s in ids[r]]
            elif f == "text":
                values = store.texts(idx)
            elif f in store_cols:
                values = store_cols[f][idx]
                if FIELD_TYPES[f] == pa.string():
                    values = [str(s) for s in values]
            else:
                values = cols[f][r]
            arrays.append(pa.array(values, FIELD_TYPES[f]))
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _jsonl_lines(batch: pa.RecordBatch) -> bytes:
    buf = io.StringIO()
    for row in batch.to_pylist():
        buf.write(json.dumps(row, ensure_ascii=False))
        buf.write("\n")
    return buf.getvalue().encode("utf-8")


def export_subset(
    subset_path: str | Path | SubsetFile,
    store_path: str | Path | Any | None,
    out: str | Path,
    *,
    format: str | None = None,
    include_fields: Sequence[str] | str | None = None,
    order: str = "rank",
    block_size: int = 1024,
    overwrite: bool = False,
    progress: bool = False,
    verify: bool = True,
) -> Path:
    """Write the selected samples with their text to ``out``.

    Parameters
    ----------
    subset_path : path or SubsetFile
        The subset (validated against the store first).
    store_path : path, EmbeddingStore or None
        The store the subset was selected from (``None``: the path its manifest records).
    out : path or URL
        Output file. ``.jsonl`` / ``.jsonl.gz`` (gzip, deterministic header) or
        ``.parquet``. At a URL (``s3://bucket/sel.jsonl.gz``) it is written to a local
        mirror and uploaded as one object at the end (the returned path is that mirror).
    format : {"jsonl", "parquet"}, optional
        Default: ``"parquet"`` when ``out`` ends in ``.parquet``, else ``"jsonl"``.
        JSONL is gzip-compressed when ``out`` ends in ``.gz``.
    include_fields : sequence of str or comma-separated str, optional
        Columns, in this order; default :data:`DEFAULT_FIELDS` = id, doc_id, source,
        n_tokens, text, index, rank, gain, weight, partition.
    order : {"rank", "index"}
        Selection order or store-row order.
    block_size : int
        Rows per text fetch (and per Parquet row group).
    overwrite : bool
        Replace an existing ``out``; otherwise ``FileExistsError``.
    progress : bool
        Show a tqdm bar.
    verify : bool
        Check the subset's and the store's files against their checksums (``--no-verify``).

    Returns
    -------
    Path
        ``out``.

    Examples
    --------
    >>> export_subset("runs/subset", "runs/store", "sel.parquet",
    ...               include_fields=["id", "text"])        # doctest: +SKIP
    PosixPath('sel.parquet')
    """
    out = check_out(out)  # a URL: its local mirror, uploaded at the end
    fmt = output_format(out, format)
    fields = check_fields(include_fields)
    url = url_of(out)
    if (RemotePath(url).exists() if url else out.exists()) and not overwrite:
        raise FileExistsError(f"{url or out} already exists; pass --force (overwrite=True) to replace it or choose "
                              f"another --out")
    if store_path is None:  # the store its manifest records: read the subset now (once), check it below
        subset_path = subset_path if isinstance(subset_path, SubsetFile) else read_subset(subset_path, verify=verify)
        store_path = subset_path.store_path
    store = open_store(store_path, verify=verify)
    subset = _open_subset(subset_path, store)
    batches: Iterator[pa.RecordBatch] = iter_batches(
        subset, store, fields, order=order, block_size=block_size
    )
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=-(-subset.size // block_size), desc="export", unit="block")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        if fmt == "parquet":
            schema = pa.schema([pa.field(f, FIELD_TYPES[f]) for f in fields])
            with pq.ParquetWriter(tmp, schema, compression="zstd", store_schema=False) as w:
                for batch in batches:
                    w.write_batch(batch, row_group_size=block_size)
        else:
            with open(tmp, "wb") as raw:
                fh: Any = (
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
                    if out.suffix == ".gz"
                    else raw
                )
                for batch in batches:
                    fh.write(_jsonl_lines(batch))
                if fh is not raw:
                    fh.close()
        os.replace(tmp, out)
        publish(out)  # an export at a URL: one upload, atomic per object
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("exported %d samples (%s) to %s", subset.size, fmt, url or out)
    return out


SUFFIXES = {"jsonl": (".jsonl", ".jsonl.gz"), "parquet": (".parquet",)}


def output_format(out: str | Path, format: str | None = None) -> str:
    """The export format of ``out``: from ``format``, else from its suffix; a mismatch or an unknown suffix is refused.

    >>> output_format("sel.jsonl.gz"), output_format("sel.parquet")
    ('jsonl', 'parquet')
    >>> output_format("sel.csv")
    Traceback (most recent call last):
    ...
    ValueError: --out sel.csv: an export is .jsonl, .jsonl.gz or .parquet; choose one of those names
    """
    name = Path(out).name
    by_suffix = next((f for f, sufs in SUFFIXES.items() if name.endswith(sufs)), None)
    if format is not None and format not in SUFFIXES:
        raise ValueError(f"format={format!r}; expected 'jsonl' or 'parquet'")
    if by_suffix is None:
        raise ValueError(f"--out {out}: an export is .jsonl, .jsonl.gz or .parquet; choose one of those names")
    if format is not None and format != by_suffix:
        raise ValueError(f"--format {format} but --out {out} names a {by_suffix} file; make them agree")
    return by_suffix


@dataclass
class ExportConfig:
    """Configuration of ``subsetlm export`` (one field per CLI flag).

    subset : the subset directory. out : the file to write (.jsonl, .jsonl.gz or .parquet).
    store : the store the subset was selected from (default: the path its manifest records).
    format : ``jsonl`` | ``parquet`` (default: from the ``out`` suffix; they must agree).
    fields : columns to write, in order (default: every field, :data:`DEFAULT_FIELDS`).
    order : ``rank`` (selection order) or ``index`` (store order).
    force : replace an existing ``out`` (an export records no identity, so it is never skipped).
    verify : check the subset's and the store's files against their checksums (``--no-verify``: trust them).
    """

    VOLATILE: ClassVar[tuple[str, ...]] = ("force", "verify")

    subset: str = ""
    out: str = ""
    store: str | None = None
    format: str | None = None
    fields: list[str] | None = None
    order: str = "rank"
    force: bool = False
    verify: bool = True  # check store / graph / subset checksums on open (--no-verify: trust them)

    def validate(self) -> None:
        if not self.subset:
            raise ValueError("no subset given: pass SUBSET (a directory written by `subsetlm select`)")
        if not self.out:
            raise ValueError("no output given: pass --out FILE (.jsonl, .jsonl.gz or .parquet)")
        output_format(self.out, self.format)
        check_fields(self.fields)
        if self.order not in ("rank", "index"):
            raise ValueError(f"order={self.order!r}; choose rank or index")


def run_export(cfg: ExportConfig, progress: bool = False) -> Path:
    """Run ``subsetlm export``: the subset's samples with their text, written atomically to ``cfg.out``."""
    cfg.validate()
    return export_subset(cfg.subset, cfg.store or None, check_out(cfg.out), format=cfg.format,
                         include_fields=cfg.fields, order=cfg.order, overwrite=cfg.force, progress=progress,
                         verify=cfg.verify)


def summary(path: Path) -> str:
    """The line ``subsetlm export`` prints."""
    return f"wrote {display(path)}"


STAGE = Stage("export", ExportConfig, run_export, summary)
