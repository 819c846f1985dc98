"""A Hugging Face ``datasets.Dataset`` view of a subset (same columns as the export).

Without ``cache_file`` the rows are built in memory (fine up to a few million short
texts); with ``cache_file`` they are streamed to an Arrow IPC file in blocks and the
dataset memory-maps it, so memory stays O(block_size).

Example
-------
>>> ds = to_hf_dataset("runs/subset", "runs/store")      # doctest: +SKIP
>>> ds.column_names[:5]                                    # doctest: +SKIP
['id', 'doc_id', 'source', 'n_tokens', 'text']
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from subsetlm.subsets.export import (
    FIELD_TYPES,
    _open_subset,
    check_fields,
    iter_batches,
    open_store,
)
from subsetlm.subsets.format import SubsetFile

logger = logging.getLogger(__name__)


def _require_datasets() -> Any:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            "to_hf_dataset needs the Hugging Face `datasets` package: pip install datasets "
            "(it is a dependency of subsetlm; reinstall with `pip install subsetlm`)"
        ) from e
    return datasets


def to_hf_dataset(
    subset: str | Path | SubsetFile,
    store: str | Path | Any,
    *,
    include_fields: Sequence[str] | str | None = None,
    order: str = "rank",
    block_size: int = 1024,
    cache_file: str | Path | None = None,
) -> Any:
    """Return the subset's samples as a ``datasets.Dataset``.

    Parameters
    ----------
    subset : path or SubsetFile
        Validated against ``store`` first.
    store : path or EmbeddingStore
    include_fields : sequence of str, optional
        Columns (default: id, doc_id, source, n_tokens, text, index, rank, gain,
        weight, partition).
    order : {"rank", "index"}
        Selection order or store-row order.
    block_size : int
        Rows per text fetch.
    cache_file : path, optional
        Stream the rows into this Arrow IPC file (written atomically, replacing an
        existing one) and memory-map it.

    Returns
    -------
    datasets.Dataset
        ``len == subset.size``; row r is the r-th selected sample.

    Examples
    --------
    >>> ds = to_hf_dataset(sub, store, include_fields=["id", "text"])  # doctest: +SKIP
    >>> ds[0]["text"]                                                  # doctest: +SKIP
    """
    datasets = _require_datasets()
    fields = check_fields(include_fields)
    store = open_store(store)
    sub = _open_subset(subset, store)
    schema = pa.schema([pa.field(f, FIELD_TYPES[f]) for f in fields])
    batches = iter_batches(sub, store, fields, order=order, block_size=block_size)
    if cache_file is None:
        table = pa.Table.from_batches(list(batches), schema=schema)
        return datasets.Dataset(table)
    cache_file = Path(cache_file)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(cache_file.name + ".tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as w:
            for batch in batches:
                w.write_batch(batch)
        os.replace(tmp, cache_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote %d rows to %s", sub.size, cache_file)
    return datasets.Dataset.from_file(str(cache_file))
