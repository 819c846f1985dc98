"""The subset file's fixed parts: schema, file names, writer settings, errors, table check.

Split from :mod:`subsetlm.subsets.format` (which re-exports every name here).

Example
-------
>>> from subsetlm.subsets._schema import SCHEMA
>>> SCHEMA.names
['id', 'index', 'rank', 'gain', 'weight', 'partition']
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

SCHEMA_VERSION = 1
KIND = "subsetlm.subset"
TABLE_FILE = "subset.parquet"
MANIFEST_FILE = "manifest.json"
STATS_FILE = "stats.json"

#: The exact Arrow schema of ``subset.parquet`` (column order included).
SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("rank", pa.int64(), nullable=False),
        pa.field("gain", pa.float64(), nullable=False),
        pa.field("weight", pa.float64(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
    ]
)

# Fixed writer settings: together with a fixed pyarrow version they make the bytes of
# subset.parquet a function of the table alone.
_PARQUET_KW = dict(
    compression="zstd",
    compression_level=3,
    row_group_size=1 << 20,
    write_statistics=True,
    use_dictionary=False,
    version="2.6",
    data_page_version="1.0",
    store_schema=False,
)

#: Manifest keys that ``write_subset`` fills itself; callers may not pass them.
RESERVED_KEYS = ("schema_version", "kind", "size", "n_ground", "store", "checksums")


class SubsetError(ValueError):
    """A subset file is malformed, or its inputs to ``write_subset`` are invalid."""


class SubsetStoreMismatch(SubsetError):
    """A subset file does not belong to the embedding store it is used with."""


def _check_table(table: pa.Table, where: Path) -> pa.Table:
    names = table.column_names
    missing = [f.name for f in SCHEMA if f.name not in names]
    if missing:
        raise SubsetError(
            f"{where}: missing column(s) {missing}; found {names}, expected "
            f"{SCHEMA.names}; the file was not written by subsetlm.subsets.write_subset"
        )
    cols = []
    for f in SCHEMA:
        col = table.column(f.name)
        t = col.type
        ok = (
            (f.name == "id" and (pa.types.is_string(t) or pa.types.is_large_string(t)))
            or (pa.types.is_integer(f.type) and pa.types.is_integer(t))
            or (pa.types.is_floating(f.type) and (pa.types.is_floating(t) or pa.types.is_integer(t)))
        )
        if not ok:
            raise SubsetError(
                f"{where}: column {f.name!r} has type {t}, expected {f.type}"
            )
        if col.null_count:
            raise SubsetError(f"{where}: column {f.name!r} has {col.null_count} null value(s)")
        cols.append(col.cast(f.type))
    return pa.Table.from_arrays(cols, schema=SCHEMA)
