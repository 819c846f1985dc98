"""Per-format streaming record readers (private helper of :mod:`subsetlm.corpus.readers`).

Each reader yields ``(location, text_value, id_value, metadata)`` one record at a time
and raises :class:`CorpusError` with the file, the 1-based line (JSONL) or the
0-based row (Parquet / Arrow), the field, and how to fix it. Validation of the
values (types, emptiness) happens in :func:`_record` so every format shares it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

MISSING = object()


class CorpusError(ValueError):
    """Bad corpus input; the message names the file, the line or row, the field and a fix."""


Record = tuple[str, Any, Any, dict[str, Any]]  # (location, text, id, metadata)


def _remote(path: Any) -> bool:
    """A :class:`subsetlm._remote.RemotePath` (opened through fsspec) rather than a local path."""
    return getattr(path, "is_remote", False)


def _open_binary(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed (.gz, .zst); a local path or a RemotePath (fsspec) alike."""
    name = path.name.lower()
    try:
        raw = path.open("rb")
        if name.endswith(".gz"):
            gz = gzip.GzipFile(fileobj=raw, mode="rb")
            gz.myfileobj = raw  # closed with the GzipFile
            return gz  # type: ignore[return-value]
        if name.endswith(".zst"):
            return io.BufferedReader(_ZstdFrames(raw), buffer_size=1 << 20)
        return raw  # type: ignore[return-value]
    except OSError as e:
        raise CorpusError(f"{path}: cannot open ({e.strerror or e}); check the path and its permissions") from e


def _parquet_schema(path: Path) -> pa.Schema:
    with path.open("rb") as fh:  # a local path or a RemotePath alike
        return pq.read_schema(fh)


@contextlib.contextmanager
def _arrow_source(path: Path) -> Iterator[Any]:
    """An Arrow IPC stream's bytes: memory-mapped locally, a file object through fsspec."""
    src = path.open("rb") if _remote(path) else pa.memory_map(str(path), "r")
    try:
        yield src
    finally:
        src.close()


class _ZstdFrames(io.RawIOBase):
    """A ``.zst`` file decompressed frame after frame (concatenated frames, as ``pzstd`` writes,
    are all read); a file that ends inside a frame raises ``EOFError`` and corrupt data ``OSError``
    (zstandard's ``stream_reader`` returns a truncated frame's data, or nothing, without a word)."""

    def __init__(self, raw: io.BufferedReader) -> None:
        import zstandard

        self._raw, self._zstd = raw, zstandard
        self._obj: Any = None          # the frame being decompressed; None between frames
        self._pending = b""            # input after the end of the last frame
        self._out, self._pos = b"", 0  # decompressed bytes not yet returned

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._pos >= len(self._out):
            data = self._pending or self._raw.read(1 << 20)
            self._pending = b""
            if not data:
                if self._obj is not None:
                    raise EOFError("the zstd stream ends inside a frame")
                return 0
            if self._obj is None:
                self._obj = self._zstd.ZstdDecompressor().decompressobj()
            try:
                self._out, self._pos = self._obj.decompress(data), 0
            except self._zstd.ZstdError as e:
                raise OSError(f"zstd: {e}") from None
            if self._obj.eof:
                self._pending, self._obj = self._obj.unused_data, None
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _decode(raw: bytes, path: Path, line_no: int, line_offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        where = "decompressed byte" if path.name.lower().endswith((".gz", ".zst")) else "byte"
        raise CorpusError(
            f"{path}:{line_no}: invalid UTF-8 at {where} offset {line_offset + e.start} "
            f"(column {e.start + 1} of the line, byte 0x{raw[e.start]:02x}); corpus files must be UTF-8. "
            f"Re-encode the file, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
        ) from None


def read_jsonl(path: Path, fields: tuple[str, str | None, tuple[str, ...]]) -> Iterator[Record]:
    """JSON Lines (optionally .gz / .zst); blank lines are ignored."""
    text_field, id_field, meta_fields = fields
    offset = 0
    with _open_binary(path) as fh:
        try:
            for line_no, raw in enumerate(fh, 1):
                start = offset
                offset += len(raw)
                if not raw.strip():
                    continue
                line = _decode(raw, path, line_no, start).rstrip("\r\n")
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusError(
                        f"{path}:{line_no}: malformed JSON at column {e.colno}: {e.msg}; "
                        f"each line must be one complete JSON object (JSON Lines), got {line[:80]!r}"
                    ) from None
                if not isinstance(obj, dict):
                    raise CorpusError(
                        f"{path}:{line_no}: expected a JSON object per line, got {type(obj).__name__} "
                        f"{line[:60].strip()!r}; wrap each record as {{\"{text_field}\": ...}}"
                    )
                loc = f"{path}:{line_no}"
                rec = _record(loc, obj, text_field, id_field, meta_fields, what="line")
                if "\\u" in line:  # only a \uXXXX escape can put a lone surrogate into valid UTF-8 JSON
                    _check_surrogates(rec, text_field, id_field)
                yield rec
        except (OSError, EOFError, zlib.error) as e:  # truncated or corrupt gzip / zstd stream, I/O error
            what = "decompressed bytes" if path.name.lower().endswith((".gz", ".zst")) else "bytes"
            raise CorpusError(f"{path}: read failed after {offset} {what} ({e}); the file looks truncated "
                              f"or corrupt, re-create or re-download it") from None


def _check_surrogates(rec: Record, text_field: str, id_field: str | None) -> None:
    """Refuse a text or id holding a lone UTF-16 surrogate (``"\\ud800"``: valid JSON, not valid Unicode)."""
    loc, text, doc_id, _ = rec
    for name, value in ((text_field, text), (id_field, doc_id)):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise CorpusError(
                    f"{loc}: field {name!r} holds a lone UTF-16 surrogate escape \\u{ord(value[e.start]):04x} at "
                    f"character {e.start}, which is not a Unicode character; fix or drop the escape (a surrogate "
                    f"pair such as \\ud83d\\ude00 is fine), e.g. re-export the file from a UTF-8 source"
                ) from None


def _record(loc: str, obj: dict[str, Any], text_field: str, id_field: str | None,
            meta_fields: tuple[str, ...], what: str) -> Record:
    text = obj.get(text_field, MISSING)
    if text is MISSING:
        present = ", ".join(sorted(map(str, obj))) or "(none)"
        raise CorpusError(
            f"{loc}: no text field {text_field!r} in this {what}; fields present: {present}. "
            f"Choose the text field with --text-field (CorpusConfig(text_field=...))"
        )
    if text is not None and not isinstance(text, str):
        raise CorpusError(f"{loc}: field {text_field!r} must be a string, got {type(text).__name__} "
                          f"{str(text)[:40]!r}; point --text-field at a string field")
    doc_id = None
    if id_field is not None:
        doc_id = obj.get(id_field, MISSING)
        if doc_id is MISSING or doc_id is None:
            present = ", ".join(sorted(map(str, obj))) or "(none)"
            got = "is null" if doc_id is None else "is missing"
            raise CorpusError(
                f"{loc}: id field {id_field!r} {got} in this {what}; fields present: {present}. Ids come from "
                f"--id-field, or by default from an 'id' field when the file's first record (or its columns) has "
                f"one: give every record an id, choose another --id-field, or pass --id-field @hash to use "
                f"content hashes"
            )
        if isinstance(doc_id, (dict, list)):
            raise CorpusError(f"{loc}: id field {id_field!r} must be a string or number, got "
                              f"{type(doc_id).__name__}; choose another --id-field, or pass --id-field @hash "
                              f"to use content hashes")
        doc_id = str(doc_id)
    meta: dict[str, Any] = {}
    for f in meta_fields:
        v = obj.get(f, MISSING)
        if v is MISSING:
            raise CorpusError(f"{loc}: metadata field {f!r} is missing in this {what}; fields present: "
                              f"{', '.join(sorted(map(str, obj)))}. Remove it from metadata_fields")
        meta[f] = v
    return loc, text, doc_id, meta


def _columns_check(path: Path, names: list[str], fields: tuple[str, str | None, tuple[str, ...]]) -> list[str]:
    text_field, id_field, meta_fields = fields
    need = [text_field] + ([id_field] if id_field else []) + list(meta_fields)
    for kind, col in [("text", text_field)] + ([("id", id_field)] if id_field else []) + [
            ("metadata", f) for f in meta_fields]:
        if col not in names:
            flag = {"text": "--text-field", "id": "--id-field", "metadata": "metadata_fields"}[kind]
            raise CorpusError(f"{path}: no {kind} column {col!r}; columns present: {', '.join(names) or '(none)'}. "
                              f"Choose the column with {flag}")
    return list(dict.fromkeys(need))


def _iter_table_batches(path: Path, batches: Iterator[pa.RecordBatch], cols: list[str],
                        fields: tuple[str, str | None, tuple[str, ...]]) -> Iterator[Record]:
    text_field, id_field, meta_fields = fields
    row = 0
    for batch in batches:
        data = {c: batch.column(batch.schema.get_field_index(c)).to_pylist() for c in cols}
        for i in range(batch.num_rows):
            obj = {c: data[c][i] for c in cols}
            yield _record(f"{path}:row {row}", obj, text_field, id_field, meta_fields, what="row (0-based)")
            row += 1


def read_parquet(path: Path, fields: tuple[str, str | None, tuple[str, ...]], batch_size: int) -> Iterator[Record]:
    """Parquet via ``pyarrow.parquet.ParquetFile.iter_batches`` reading only the needed columns."""
    fh = None
    try:
        fh = path.open("rb") if _remote(path) else None
        pf = pq.ParquetFile(fh if fh is not None else path)
    except (OSError, pa.ArrowException) as e:
        if fh is not None:
            fh.close()
        raise CorpusError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())[:200]}); re-create it or "
                          f"check the extension") from None
    try:
        cols = _columns_check(path, pf.schema_arrow.names, fields)
        yield from _iter_table_batches(path, pf.iter_batches(batch_size=max(1, batch_size), columns=cols), cols,
                                       fields)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as e:  # a corrupt page, row group or string
        raise CorpusError(f"{path}: read failed ({' '.join(str(e).split())[:200]}); the Parquet file looks corrupt, "
                          f"re-create it") from None
    finally:
        if fh is not None:
            fh.close()


def read_arrow_stream(path: Path, fields: tuple[str, str | None, tuple[str, ...]]) -> Iterator[Record]:
    """One ``data-*.arrow`` file of a Hugging Face ``save_to_disk`` dataset (Arrow IPC stream)."""
    with contextlib.ExitStack() as stack:
        try:
            source = stack.enter_context(_arrow_source(path))
            reader = pa.ipc.open_stream(source)
        except (OSError, pa.ArrowException) as e:
            raise CorpusError(f"{path}: not a readable Arrow stream ({e}); re-save the dataset with "
                              f"Dataset.save_to_disk") from e
        cols = _columns_check(path, reader.schema.names, fields)
        try:
            yield from _iter_table_batches(path, (b.select(cols) for b in reader), cols, fields)
        except (OSError, pa.ArrowException, UnicodeDecodeError) as e:
            raise CorpusError(f"{path}: read failed ({' '.join(str(e).split())[:200]}); the Arrow file looks corrupt, "
                              f"re-save the dataset with Dataset.save_to_disk") from None


def has_field(path: Path, kind: str, name: str) -> bool | None:
    """Whether the records of a file carry field ``name`` (not null), for the default id rule.

    JSONL: judged by the first non-blank line; Parquet / Arrow: by the columns. None when
    there is nothing to judge (no record) or the file cannot be read here (the reader then
    reports the problem where it meets it).
    """
    try:
        if kind == "jsonl":
            with _open_binary(path) as fh:
                for raw in fh:
                    if raw.strip():
                        obj = json.loads(raw)
                        return isinstance(obj, dict) and obj.get(name) is not None
            return None
        if kind == "parquet":
            return name in _parquet_schema(path).names
        if kind == "arrow":
            with _arrow_source(path) as src:
                return name in pa.ipc.open_stream(src).schema.names
    except (CorpusError, OSError, EOFError, ValueError, zlib.error, pa.ArrowException):
        return None
    return None


def read_txt(path: Path, doc_id: str | None) -> Iterator[Record]:
    """A whole .txt file as one document; ``doc_id`` is its path relative to the input folder."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"{path}: cannot read ({e.strerror or e}); check the path and its permissions") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise CorpusError(
            f"{path}:{line}: invalid UTF-8 at byte offset {e.start} (byte 0x{raw[e.start]:02x}); text files "
            f"must be UTF-8. Re-encode the file, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
        ) from None
    yield str(path), text, doc_id, {}
