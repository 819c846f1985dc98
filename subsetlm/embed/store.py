"""The embedding store: a directory of row-aligned embeddings, ids and texts.

Layout (``docs/internals.md``)::

    STORE/
      embeddings.npy    (n, dim) float16 (default) or float32, a real .npy: np.load(mmap_mode="r")
      ids.parquet       id str, doc_id str, source str, n_tokens int32   (row i <-> embeddings[i])
      texts.parquet     text str                                          (row-aligned)
      manifest.json     format, version, model, dim, dtype, pooling, normalized, count,
                        corpus_fingerprint, embedding_fingerprint, chunking, config,
                        checksums {file: "xxh3_64:HEX"} of the data files (verified on open)
      stats.json        timings (the only file that differs between identical runs)
      embedder_state/   fitted state of embedders that need it (hashing: idf.npy)
      _SUCCESS          written last

While a run is in progress everything lives in ``STORE.tmp/``; finished shards are
``STORE.tmp/shards/NNNNN.npy`` + ``NNNNN.parquet`` (the .parquet, written second and
atomically, marks the shard as finished). Parquet files are written without pandas
metadata, with fixed compression and row groups, so identical inputs give identical
bytes whether or not the run was interrupted.

Example
-------
>>> store = EmbeddingStore.open("runs/pubmed-minilm")           # doctest: +SKIP
>>> store.n, store.dim, store.dtype                              # doctest: +SKIP
(33272, 384, dtype('float16'))
>>> for start, X in store.iter_blocks(65536):                    # doctest: +SKIP
...     pass   # X: (<=65536, 384) float32
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from subsetlm._io import (IntegrityError, checksums, data_files, dumps_json, file_checksum, is_complete, load_npy,
                          read_json, verify_checksums, write_bytes_atomic)

logger = logging.getLogger(__name__)

FORMAT = "subsetlm.embedding_store"
VERSION = 1
DTYPES = ("float16", "float32")
ROW_GROUP = 65536           # rows per parquet row group in the final files (fixed => same bytes)
COMPRESSION = "zstd"
_ID_COLS = ("id", "doc_id", "source", "n_tokens")


class StoreError(ValueError):
    """A directory is not a (complete, compatible) embedding store."""


def rebuild_hint(path: Path) -> str:
    """How to rebuild a damaged store (the messages of :class:`StoreError` and checksum mismatches)."""
    from subsetlm._mirror import display

    return (f"rebuild it: re-run the `subsetlm embed ... --out {display(path)}` command that wrote it with --force "
            f"(or pass --no-verify to skip this check)")


def store_checksums(tmp: Path, known: dict[str, str] | None = None) -> dict[str, str]:
    """The ``checksums`` of a store's manifest: every data file in ``tmp`` except the manifest, stats.json,
    the stage's bookkeeping and the caches (graphs/, partitions/). ``known``: digests already computed."""
    known = dict(known or {})
    names = [f for f in data_files(tmp, skip=("manifest.json", "stats.json", "stage.json", "_SUCCESS", "_FAILED",
                                                "plan.json"))
             if f.split(os.sep)[0] not in ("graphs", "partitions", "shards", "chunks") and f not in known]
    return dict(sorted({**checksums(tmp, names), **known}.items()))


def _ids_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("doc_id", pa.string()), ("source", pa.string()),
                      ("n_tokens", pa.int32())])


def _texts_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("text", pa.string())])


def _parquet_writer(path: Path, schema: Any) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetWriter(str(path), schema, compression=COMPRESSION, use_dictionary=False,
                            write_statistics=False, store_schema=False)


def check_embeddings(X: Any, dim: int, where: str) -> np.ndarray:
    """Validate an embedder's output before it is written; return it as float32.

    Raises ``ValueError`` on a wrong shape or non-finite values (naming the first bad row).
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != dim:
        raise ValueError(f"{where}: embedder returned shape {X.shape}; expected (n, {dim}). "
                         f"The embedder's dim attribute and its output disagree")
    X = X.astype(np.float32, copy=False)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{where}: {len(rows)} embedding row(s) contain NaN/inf (first: row {rows[0]}); "
                         f"nothing was finalised. Check the model (fp16 overflow? a broken checkpoint?) "
                         f"or use precision='fp32'")
    return X


def samples_table(samples: Sequence[Any]) -> Any:
    """The columns of a shard's samples as a pyarrow table: id, doc_id, source, n_tokens (int32), text."""
    import pyarrow as pa

    return pa.table({
        "id": pa.array([s.id for s in samples], pa.string()),
        "doc_id": pa.array([s.doc_id for s in samples], pa.string()),
        "source": pa.array([s.source for s in samples], pa.string()),
        "n_tokens": pa.array([s.n_tokens for s in samples], pa.int32()),
        "text": pa.array([s.text for s in samples], pa.string()),
    })


def write_table_atomic(table: Any, path: Path) -> None:
    """``table`` -> ``path`` (zstd parquet) through a temporary name, so ``path`` exists only when complete."""
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, str(tmp), compression=COMPRESSION)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------
class ShardWriter:
    """Writes and finds the finished shards of a run in ``TMP/shards/``.

    Parameters
    ----------
    tmp : Path
        The run's temporary directory (``STORE.tmp``).
    dim : int
    dtype : {"float16", "float32"}
    """

    def __init__(self, tmp: Path, dim: int, dtype: str) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}; expected one of {', '.join(DTYPES)}")
        self.dir = Path(tmp) / "shards"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)

    def done(self) -> dict[int, int]:
        """``{shard_no: n_rows}`` of every finished shard (executors that run shards in parallel leave gaps)."""
        ks = sorted(int(p.name[:-len(".parquet")]) for p in self.dir.glob("[0-9]*.parquet")
                    if p.name[:-len(".parquet")].isdigit())
        return {k: self.rows(k) for k in ks if self.is_finished(k)}

    def rows(self, k: int) -> int:
        """Rows of finished shard ``k``."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.dir / f"{k:05d}.parquet").metadata.num_rows

    def is_finished(self, k: int) -> bool:
        """Whether shard ``k`` is written (its .parquet exists, written after its .npy)."""
        return (self.dir / f"{k:05d}.parquet").is_file() and (self.dir / f"{k:05d}.npy").is_file()

    def write_table(self, k: int, X: np.ndarray, table: Any) -> None:
        """Write shard ``k`` from a :func:`samples_table` (columns id, doc_id, source, n_tokens, text)."""
        X = check_embeddings(X, self.dim, f"shard {k}")
        if len(X) != len(table):
            raise ValueError(f"shard {k}: {len(X)} embeddings for {len(table)} samples; the embedder must "
                             f"return one row per text")
        npy = self.dir / f"{k:05d}.npy"
        tmp = npy.with_name(npy.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.lib.format.write_array(fh, np.ascontiguousarray(X.astype(self.dtype)), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, npy)
        write_table_atomic(table, self.dir / f"{k:05d}.parquet")  # the shard counts as finished from here on

    def assemble(self, tmp: Path, done: dict[int, int]) -> tuple[int, str]:
        """Concatenate the finished shards ``done`` (:meth:`done`: shard -> rows, consecutive from 0) into
        ``tmp/embeddings.npy``, ``ids.parquet``, ``texts.parquet``.

        Streams shard by shard (memory: one shard + one row group). Returns
        ``(n_rows, sha256 of embeddings.npy)``; ``self.embeddings_checksum`` is its
        :func:`~subsetlm._io.file_checksum`, from the same read.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        shards = sorted(done.items())
        if [k for k, _ in shards] != list(range(len(shards))):
            raise ValueError(f"{self.dir}: shards {[k for k, _ in shards][:8]} are not consecutive from 0")
        n = sum(c for _, c in shards)
        emb_path = Path(tmp) / "embeddings.npy"
        mm = np.lib.format.open_memmap(emb_path, mode="w+", dtype=self.dtype, shape=(n, self.dim))
        ids_w = _parquet_writer(Path(tmp) / "ids.parquet", _ids_schema())
        txt_w = _parquet_writer(Path(tmp) / "texts.parquet", _texts_schema())
        pending: list[Any] = []
        n_pending = 0

        def flush(final: bool) -> None:
            nonlocal pending, n_pending
            if not pending:
                return
            t = pa.concat_tables(pending).combine_chunks()
            cut = len(t) if final else (len(t) // ROW_GROUP) * ROW_GROUP
            for s in range(0, cut, ROW_GROUP):
                part = t.slice(s, min(ROW_GROUP, cut - s))
                ids_w.write_table(part.select(list(_ID_COLS)), row_group_size=ROW_GROUP)
                txt_w.write_table(part.select(["text"]), row_group_size=ROW_GROUP)
            rest = t.slice(cut)
            pending, n_pending = ([rest], len(rest)) if len(rest) else ([], 0)

        try:
            row = 0
            for k, c in shards:
                X = np.load(self.dir / f"{k:05d}.npy", mmap_mode="r")
                mm[row:row + c] = X
                row += c
                pending.append(pq.read_table(self.dir / f"{k:05d}.parquet"))
                n_pending += c
                if n_pending >= ROW_GROUP:
                    flush(final=False)
            flush(final=True)
            mm.flush()
        finally:
            del mm
            ids_w.close()
            txt_w.close()
        sha = hashlib.sha256()
        self.embeddings_checksum = file_checksum(emb_path, also=sha)
        return n, sha.hexdigest()

    def remove(self, done: dict[int, int]) -> None:
        """Delete the shards ``done``, last first (an interrupted delete still leaves a resumable prefix)."""
        for k in sorted(done, reverse=True):
            (self.dir / f"{k:05d}.parquet").unlink()
            (self.dir / f"{k:05d}.npy").unlink()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------
class EmbeddingStore:
    """Read access to a finished embedding store directory (see the module docstring).

    Use :meth:`open`; arrays are loaded lazily (embeddings as a read-only memmap).

    Attributes
    ----------
    path : Path
    manifest : dict
    n, dim : int
    dtype : np.dtype
    fingerprint : str   (the manifest's embedding_fingerprint, sha256 of embeddings.npy)
    embeddings : np.memmap (n, dim)
    ids, sources : np.ndarray of str (n,)
    n_tokens : np.ndarray int64 (n,)
    stats : dict        (stats.json: docs, samples, dim, seconds, docs_per_s, ...)
    """

    def __init__(self, path: Path, manifest: dict[str, Any], verify: bool = True) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.verify = bool(verify)  # also checks the graphs and subsets opened with this store
        self._emb: np.ndarray | None = None
        self._ids: Any = None
        self._cols: dict[str, np.ndarray] = {}

    @staticmethod
    def is_store(path: str | Path) -> bool:
        """True when ``path`` looks like an embedding store directory (its manifest names the store format).

        Used to tell a store from corpus files where a command accepts either; :meth:`open`
        then checks it fully.
        """
        from subsetlm._remote import as_path

        try:  # a URL: one small read of the remote manifest
            return json.loads((as_path(path) / "manifest.json").read_bytes()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            return False

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> "EmbeddingStore":
        """Open a complete store; raise :class:`StoreError` (a ValueError) explaining what is wrong.

        ``verify``: check every data file against the checksums in the manifest first (once per
        process; ~0.1 s per GB from the page cache), so a file altered after ``_SUCCESS`` is
        refused (:class:`~subsetlm._io.IntegrityError`, naming the file) instead of used. A
        store written before checksums existed is opened with a warning. ``verify=False``
        (``--no-verify``) trusts the files, e.g. a huge store on trusted storage.

        A URL (``s3://bucket/store``) is mirrored into the cache first (only files that
        changed are downloaded; a remote without ``_SUCCESS`` is refused), then opened.
        """
        from subsetlm._mirror import local_copy

        p = local_copy(path, "embedding store", StoreError)
        if not p.is_dir():
            tmp = p.with_name(p.name + ".tmp")
            hint = (f"; {tmp} holds an unfinished run: rerun the same `subsetlm embed` command to resume it"
                    if tmp.is_dir() else "; create it with `subsetlm embed`")
            raise StoreError(f"{p}: no such embedding store{hint}")
        if not (p / "manifest.json").is_file():
            raise StoreError(f"{p}: not an embedding store (no manifest.json); expected a directory written by "
                             f"`subsetlm embed`")
        if not is_complete(p):
            raise StoreError(f"{p}: incomplete embedding store (no _SUCCESS marker); rerun `subsetlm embed` "
                             f"with --force to rebuild it")
        try:
            m = read_json(p / "manifest.json")
        except (ValueError, UnicodeDecodeError) as e:
            raise StoreError(f"{p}/manifest.json: not valid JSON ({e}); the store is corrupt: "
                             f"{rebuild_hint(p)}") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            m = m if isinstance(m, dict) else {}
            raise StoreError(f"{p}/manifest.json: format={m.get('format')!r}; expected {FORMAT!r}")
        if m.get("version") != VERSION:
            raise StoreError(f"{p}/manifest.json: store version {m.get('version')!r}, this subsetlm reads version "
                             f"{VERSION}; re-embed with --force or use a matching subsetlm release")
        if verify:
            verify_checksums(p, m.get("checksums"), what="embedding store", fix=rebuild_hint(p))
        return cls(p, m, verify=verify)

    # -- metadata ---------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.manifest["count"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["embedding_fingerprint"])

    @property
    def stats(self) -> dict[str, Any]:
        f = self.path / "stats.json"
        return read_json(f) if f.is_file() else {}

    def summary(self) -> str:
        """One line for the CLI: counts, dims, time and throughput of the run that wrote the store."""
        s = self.stats
        return (f"{s.get('docs', '?')} docs ({self.n} samples) -> {self.dim}-d {self.dtype.name} with "
                f"{self.manifest['model'].get('name')} in {s.get('seconds', float('nan')):.1f} s "
                f"({s.get('docs_per_s', float('nan')):.1f} docs/s): {self.location}")

    @property
    def location(self) -> str:
        """Where the store is, as the user named it: its URL when it is the mirror of one, else its path."""
        from subsetlm._mirror import display

        return display(self.path)

    # -- arrays -----------------------------------------------------------------------
    @property
    def embeddings(self) -> np.ndarray:
        """Read-only memmap (n, dim) of the stored dtype."""
        if self._emb is None:
            X = load_npy(self.path / "embeddings.npy", "r", fix=rebuild_hint(self.path))
            if X.shape != (self.n, self.dim):
                raise StoreError(f"{self.path}/embeddings.npy has shape {X.shape}; the manifest says "
                                 f"({self.n}, {self.dim}). The store is corrupt: rebuild with --force")
            self._emb = X
        return self._emb

    def _id_table(self) -> Any:
        if self._ids is None:
            self._ids = _read_parquet(self.path / "ids.parquet", self.path)
            if len(self._ids) != self.n:
                raise StoreError(f"{self.path}/ids.parquet has {len(self._ids)} rows; expected {self.n}")
        return self._ids

    def _str_column(self, name: str) -> np.ndarray:
        if name not in self._cols:
            self._cols[name] = np.asarray(self._id_table().column(name).to_pylist(), dtype=object)
        return self._cols[name]

    @property
    def ids(self) -> np.ndarray:
        """Sample ids, object array of str (n,); row i <-> embeddings[i]."""
        return self._str_column("id")

    @property
    def doc_ids(self) -> np.ndarray:
        return self._str_column("doc_id")

    @property
    def sources(self) -> np.ndarray:
        return self._str_column("source")

    @property
    def n_tokens(self) -> np.ndarray:
        return self._id_table().column("n_tokens").to_numpy().astype(np.int64)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a float32 array (a copy)."""
        return np.asarray(self.embeddings[start:stop], dtype=np.float32)

    def iter_blocks(self, block_size: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, float32 block)`` over all rows, ``block_size`` rows at a time."""
        if block_size < 1:
            raise ValueError(f"block_size={block_size}; expected a positive integer")
        for s in range(0, self.n, block_size):
            yield s, self.block(s, min(s + block_size, self.n))

    def texts(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """The texts of rows ``indices`` (in the given order), read from texts.parquet.

        Only the row groups holding the requested rows are read, so a few texts from a
        large store cost a few row groups, not the whole file.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"row indices must be in [0, {self.n}); got min {idx.min()}, max {idx.max()}")
        f = self.path / "texts.parquet"
        try:
            pf = pq.ParquetFile(f)
        except (OSError, pa.ArrowException) as e:
            raise IntegrityError(f"{f}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                                 f"{rebuild_hint(self.path)}") from None
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        group = np.searchsorted(starts, idx, side="right") - 1
        out: list[str] = [""] * len(idx)
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(len(sizes) + 1))
        for g in range(len(sizes)):
            pos = order[bounds[g]:bounds[g + 1]]
            if len(pos):
                try:
                    col = pf.read_row_group(g, columns=["text"]).column("text")
                except (OSError, pa.ArrowException) as e:
                    raise IntegrityError(f"{f}: row group {g} is unreadable ({str(e).splitlines()[0]}); "
                                         f"{rebuild_hint(self.path)}") from None
                for p, t in zip(pos, col.take(pa.array(idx[pos] - starts[g])).to_pylist()):
                    out[int(p)] = t
        return out

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}, n={self.n}, dim={self.dim}, dtype={self.dtype.name})"


def _read_parquet(f: Path, store: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(f)
    except FileNotFoundError:
        raise IntegrityError(f"{f}: missing; {rebuild_hint(store)}") from None
    except (OSError, pa.ArrowException) as e:
        raise IntegrityError(f"{f}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}): it is "
                             f"corrupt; {rebuild_hint(store)}") from None


def write_manifest(tmp: Path, manifest: dict[str, Any]) -> None:
    write_bytes_atomic(Path(tmp) / "manifest.json", dumps_json(manifest).encode("utf-8"))


def open_rows(inputs: list[str], *, text_field: str = "text", id_field: str | None = None,
              limit: int | None = None, verify: bool = True) -> Any:
    """A ground set of rows: the store when ``inputs`` is one store directory, else the corpus files in order.

    Returns an :class:`EmbeddingStore` (rows = its samples) or a
    :class:`~subsetlm.corpus.rows.CorpusRows` (rows = documents; the same attributes a subset
    file needs). ``limit`` (documents) applies to corpus files only: a store's rows are fixed.
    """
    from subsetlm.corpus.rows import CorpusRows

    if len(inputs) == 1 and EmbeddingStore.is_store(inputs[0]):
        if limit is not None:
            raise ValueError(f"--limit {limit} applies to corpus files; {inputs[0]} is a store, whose rows are fixed "
                             f"(embed a smaller store with `subsetlm embed ... --limit N`)")
        return EmbeddingStore.open(inputs[0], verify=verify)
    return CorpusRows.read(inputs, text_field=text_field, id_field=id_field, limit=limit)
