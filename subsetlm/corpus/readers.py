"""Corpus readers: JSONL (.jsonl, .gz, .zst), Parquet, folders of .txt files, Hugging Face
datasets saved with ``save_to_disk``, and the named sources (``pubmed``, ``sotu``,
``pubmed-task``). Documents stream in blocks; the corpus is never loaded whole.

Inputs (``CorpusConfig.paths``), each one of (a local path, or an fsspec URL such as
``s3://bucket/corpus.jsonl.gz``, ``hf://datasets/ORG/NAME/data``, ``memory://...``: see
:mod:`subsetlm._remote`):

- a file: ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.parquet``, ``.txt`` (one document);
- a folder: a ``save_to_disk`` Dataset (``state.json`` + ``data-*.arrow``), a
  DatasetDict (``dataset_dict.json``: every split, in the order listed there), or any
  other folder, expanded recursively in sorted order to its supported files (each
  ``.txt`` file is one document whose id is its path relative to the folder);
- ``DIR:SPLIT`` to read one split of a DatasetDict (e.g. ``hf_data:train``);
- a source name from :data:`subsetlm.corpus.sources.SOURCES`, fetched and cached on
  first use (an existing file or folder of the same name wins).

Example
-------
>>> import json, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "c.jsonl").write_text("\\n".join(json.dumps({"text": t}) for t in "abc"))
>>> [len(b) for b in iter_documents(CorpusConfig([str(d / "c.jsonl")], block_size=2))]
[2, 1]
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from subsetlm._io import read_json, sha256_file
from subsetlm.corpus._formats import (CorpusError, read_arrow_stream, read_jsonl, read_parquet,
                                      read_txt)
from subsetlm.corpus.ids import HASH_IDS, check_id_field, field_of, has_user_ids
from subsetlm.corpus.ids import resolve as _resolve_ids
from subsetlm.corpus.sample import Document

logger = logging.getLogger(__name__)

__all__ = ["CorpusConfig", "CorpusError", "resolve_inputs", "input_files", "iter_documents", "corpus_fingerprint",
           "Repeats", "SUPPORTED_EXTENSIONS"]

SUPPORTED_EXTENSIONS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".txt")
_ON_EMPTY = ("skip", "error")


@dataclass
class CorpusConfig:
    """What to read and how to cut it into samples.

    Parameters
    ----------
    paths : list of str
        Files, folders, ``DIR:SPLIT`` or source names (see the module docstring).
    text_field : str, default "text"
        Field / column holding the text (ignored for .txt files).
    id_field : str or None, default None
        Field / column holding a unique document id (taken as a string). ``None``: the
        corpus's own ``id`` field when its records carry one (judged per file by the first
        record, or the columns; every record then needs one), else content-hash ids; named
        sources use their own ``id`` field. ``"@hash"``: content-hash ids for every
        document. See :mod:`subsetlm.corpus.ids`.
    block_size : int, default 1024
        Documents per yielded block.
    max_tokens : int or None, default 256
        Chunk length for :func:`subsetlm.corpus.chunking.iter_samples`; ``None``/0 = whole documents.
    limit : int or None, default None
        Stop after this many (non-empty) documents.
    on_empty : {"skip", "error"}, default "skip"
        Empty or whitespace-only (or null) texts are skipped with one warning that counts
        them and names the first three places (``FILE:LINE``), or raise. A corpus whose
        documents are *all* empty always raises.
    metadata_fields : list of str, default []
        Extra fields copied into ``Document.metadata`` (must exist in every record).
    """

    paths: list[str]
    text_field: str = "text"
    id_field: str | None = None
    block_size: int = 1024
    max_tokens: int | None = 256
    limit: int | None = None
    on_empty: str = "skip"
    metadata_fields: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Input:
    path: Path          # the file to read (a subsetlm._remote.RemotePath for a URL)
    kind: str           # jsonl | parquet | txt | arrow
    source: str         # Document.source
    name: str           # name used by the fingerprint (basename / relative path / split path)
    txt_id: str | None = None      # id of a .txt document
    id_field: str | None = None    # a source's default id field, or "id" chosen by the default rule


def _kind(path: Path) -> str | None:
    n = path.name.lower()
    if n.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
        return "jsonl"
    if n.endswith(".parquet"):
        return "parquet"
    if n.endswith(".txt"):
        return "txt"
    return None


def _stem(path: Path) -> str:
    n = path.name
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if n.lower().endswith(ext):
            return n[: -len(ext)]
    return path.stem


def _load_json(p: Any) -> Any:
    return json.loads(p.read_bytes()) if getattr(p, "is_remote", False) else read_json(p)


def _hf_dataset(folder: Path, source: str, prefix: str) -> list[_Input]:
    try:
        state = _load_json(folder / "state.json")
        files = [f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorpusError(f"{folder / 'state.json'}: not a valid Hugging Face save_to_disk state ({e}); "
                          f"re-save the dataset with Dataset.save_to_disk(path)") from e
    out = []
    for f in files:
        p = folder / f
        if not p.is_file():
            raise CorpusError(f"{p}: listed in {folder / 'state.json'} but missing; the saved dataset is "
                              f"incomplete, save it again")
        out.append(_Input(p, "arrow", source, f"{prefix}{f}"))
    return out


def _hf_dataset_dict(folder: Path, split: str | None) -> list[_Input]:
    try:
        splits = list(_load_json(folder / "dataset_dict.json")["splits"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorpusError(f"{folder / 'dataset_dict.json'}: not a valid DatasetDict description ({e}); "
                          f"re-save it with DatasetDict.save_to_disk(path)") from e
    if split is not None:
        if split not in splits:
            raise CorpusError(f"{folder}: no split {split!r}; splits present: {', '.join(splits)}. "
                              f"Use {folder}:SPLIT with one of them, or {folder} for all")
        splits = [split]
    out: list[_Input] = []
    for s in splits:
        out += _hf_dataset(folder / s, folder.name, f"{s}/")
    return out


def _expand(p: str) -> list[_Input]:
    from subsetlm._remote import RemoteError, is_url

    try:
        return _expand_path(p)
    except RemoteError as e:
        raise CorpusError(str(e)) from None
    except OSError as e:
        if not is_url(p):
            raise
        raise CorpusError(f"input {p!r}: cannot read ({e}); check the URL, the credentials of its storage and "
                          f"that it is reachable from here") from None


def _expand_path(p: str) -> list[_Input]:
    from subsetlm._remote import as_path, is_url
    from subsetlm.corpus import sources

    path = as_path(p)
    if not path.exists():
        head, sep, split = p.rpartition(":")
        folder = as_path(head) if sep and head and "/" not in split else None
        if folder is not None and folder.is_dir() and (folder / "dataset_dict.json").is_file():
            return _hf_dataset_dict(folder, split)
        if is_url(p):
            raise CorpusError(f"input {p!r} not found: no file or folder at this URL (nor DIR:SPLIT of a saved "
                              f"DatasetDict); check the URL")
        if p in sources.SOURCES:
            src = sources.SOURCES[p]
            f = sources.fetch_source(p)
            return [_Input(f, "jsonl", p, f.name, id_field=src.id_field)]
        raise CorpusError(f"input {p!r} not found: expected an existing file or folder, DIR:SPLIT of a saved "
                          f"DatasetDict, or a source name ({', '.join(sorted(sources.SOURCES))})")
    if path.is_file():
        kind = _kind(path)
        if kind is None:
            raise CorpusError(f"{path}: unsupported file type; supported: {', '.join(SUPPORTED_EXTENSIONS)}, "
                              f"or a folder saved with datasets' save_to_disk. Convert the file (e.g. JSON "
                              f"array -> JSON Lines) or rename it if it already is one of these")
        return [_Input(path, kind, _stem(path), path.name, txt_id=path.name if kind == "txt" else None)]
    if (path / "dataset_dict.json").is_file():
        return _hf_dataset_dict(path, None)
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        return _hf_dataset(path, path.name, "")
    out, skipped = [], []
    for rel, f in _folder_files(path):
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        kind = _kind(f)
        if kind is None:
            skipped.append(rel)
            continue
        source = path.name if kind == "txt" else _stem(f)
        out.append(_Input(f, kind, source, rel, txt_id=rel if kind == "txt" else None))
    if skipped:
        logger.warning("%s: ignoring %d file(s) with unsupported extensions (e.g. %s); supported: %s",
                    path, len(skipped), ", ".join(skipped[:3]), ", ".join(SUPPORTED_EXTENSIONS))
    if not out:
        raise CorpusError(f"{path}: folder holds no corpus files; supported: {', '.join(SUPPORTED_EXTENSIONS)} "
                          f"(searched recursively), or a folder saved with datasets' save_to_disk")
    return out


def _folder_files(path: Any) -> list[tuple[str, Any]]:
    """``(posix path relative to the folder, file)`` of every file under ``path``, in sorted order."""
    if getattr(path, "is_remote", False):
        return [(rel, path / rel) for rel in path.files()]
    found = sorted(path.rglob("*"), key=lambda q: q.relative_to(path).as_posix())
    return [(f.relative_to(path).as_posix(), f) for f in found if f.is_file()]


def _inputs(paths: list[str] | str) -> list[_Input]:
    if isinstance(paths, (str, Path)):
        paths = [str(paths)]
    if not paths:
        raise CorpusError("no corpus inputs given; pass at least one file, folder or source name")
    return [inp for p in paths for inp in _expand(str(p))]


def resolve_inputs(paths: list[str]) -> list[Path]:
    """The files that ``paths`` stand for, in reading order.

    Folders expand recursively in sorted order (a saved Hugging Face dataset to its
    ``data-*.arrow`` files), source names are fetched (:func:`~subsetlm.corpus.sources.fetch_source`).

    Raises
    ------
    CorpusError
        A path that does not exist, an unsupported extension, an empty folder.

    Example
    -------
    >>> resolve_inputs(["pubmed"])                 # doctest: +SKIP
    [PosixPath('/root/.cache/subsetlm/pubmed/abstracts-v2.jsonl.gz')]
    """
    return [inp.path for inp in _inputs(paths)]


def _check(cfg: CorpusConfig) -> None:
    if not isinstance(cfg.text_field, str) or not cfg.text_field:
        raise CorpusError(f"text_field={cfg.text_field!r}: expected a non-empty field name")
    check_id_field(cfg.id_field)
    if not isinstance(cfg.block_size, int) or cfg.block_size < 1:
        raise CorpusError(f"block_size={cfg.block_size!r}: expected an integer >= 1")
    if cfg.limit is not None and (not isinstance(cfg.limit, int) or cfg.limit < 0):
        raise CorpusError(f"limit={cfg.limit!r}: expected None or an integer >= 0")
    if cfg.max_tokens is not None and (not isinstance(cfg.max_tokens, int) or cfg.max_tokens < 0):
        raise CorpusError(f"max_tokens={cfg.max_tokens!r}: expected None, 0 (whole documents) or a positive integer")
    if cfg.on_empty not in _ON_EMPTY:
        raise CorpusError(f"on_empty={cfg.on_empty!r}: expected one of {', '.join(_ON_EMPTY)}")


def _corpus_inputs(cfg: CorpusConfig) -> list[_Input]:
    """The inputs of ``cfg`` with the id rule resolved (:func:`subsetlm.corpus.ids.resolve`)."""
    return _resolve_ids(_inputs(cfg.paths), cfg)


def _records(inp: _Input, cfg: CorpusConfig) -> Iterator[tuple[str, Any, Any, dict[str, Any]]]:
    id_field = field_of(inp, cfg)
    fields = (cfg.text_field, id_field, tuple(cfg.metadata_fields))
    if inp.kind == "jsonl":
        return read_jsonl(inp.path, fields)
    if inp.kind == "parquet":
        return read_parquet(inp.path, fields, cfg.block_size)
    if inp.kind == "arrow":
        return read_arrow_stream(inp.path, fields)
    assert inp.kind == "txt", inp.kind
    return read_txt(inp.path, None if cfg.id_field == HASH_IDS else (inp.txt_id or inp.path.name))


def input_files(cfg: CorpusConfig) -> list[_Input]:
    """The corpus's inputs in reading order (one per file; source names fetched), for per-file work.

    Each can be read on its own with ``iter_documents(cfg, inputs=[inp])``; the
    ``has_ids`` of an input says whether its documents carry their own ids. The default id
    rule is resolved here (an input whose records carry ``id`` has ``id_field="id"``).
    """
    _check(cfg)
    return _corpus_inputs(cfg)


def has_ids(inp: _Input, cfg: CorpusConfig) -> bool:
    """Whether the documents of ``inp`` carry user ids (an id field, or a .txt path) rather than content hashes."""
    return has_user_ids(inp, cfg)


def iter_documents(cfg: CorpusConfig, inputs: list[_Input] | None = None,
                   require_documents: bool = True) -> Iterator[list[Document]]:
    """Stream the corpus as blocks of at most ``cfg.block_size`` documents.

    Parameters
    ----------
    cfg : CorpusConfig
    inputs : read only these of :func:`input_files` (default: all of them).
    require_documents : raise when no non-empty document is found (off for one file of many).

    Yields
    ------
    list of Document
        Every block has exactly ``block_size`` documents except the last. ``id`` is
        the id field as a string (``None`` without one), ``source`` the source name or
        the file stem (folder name for .txt folders and saved datasets), ``location``
        ``FILE:LINE`` (1-based) or ``FILE:row N`` (0-based).

    Raises
    ------
    CorpusError
        Bad input, raised as soon as it is read (before the offending block is yielded):
        malformed JSON, a line that is not an object, a missing text / id field,
        non-UTF-8 bytes, an unreadable file, an unsupported extension, an empty text
        with ``on_empty="error"``, or a corpus with no non-empty document.

    Example
    -------
    >>> cfg = CorpusConfig(["corpus.jsonl.gz"], text_field="abstract", id_field="pmid")  # doctest: +SKIP
    >>> for block in iter_documents(cfg):                                              # doctest: +SKIP
    ...     print(len(block), block[0].id)
    """
    _check(cfg)
    inputs = _corpus_inputs(cfg) if inputs is None else list(inputs)
    if cfg.id_field not in (None, HASH_IDS) and any(i.kind == "txt" for i in inputs):
        logger.warning("id_field=%r is ignored for .txt files: their id is the path relative to the folder",
                    cfg.id_field)
    n_yielded = n_empty = 0
    empty_examples: list[str] = []
    block: list[Document] = []
    limit = cfg.limit
    if limit == 0:
        return
    for inp in inputs:
        for loc, text, doc_id, meta in _records(inp, cfg):
            if text is None or not text.strip():
                if cfg.on_empty == "error":
                    raise CorpusError(f"{loc}: field {cfg.text_field!r} is empty or whitespace only; drop the "
                                      f"record, fix the text, or use on_empty='skip' to skip such documents")
                n_empty += 1
                if len(empty_examples) < 3:
                    empty_examples.append(loc)
                continue
            block.append(Document(id=doc_id, text=text, source=inp.source, location=loc, metadata=meta))
            n_yielded += 1
            if len(block) == cfg.block_size:
                yield block
                block = []
            if limit is not None and n_yielded >= limit:
                break
        if limit is not None and n_yielded >= limit:
            break
    if n_yielded == 0 and require_documents:
        where = ", ".join(str(i.path) for i in inputs[:3]) + (" ..." if len(inputs) > 3 else "")
        if n_empty:
            raise CorpusError(f"all {n_empty} documents in {where} have an empty {cfg.text_field!r} field "
                              f"(e.g. {', '.join(empty_examples)}); check --text-field")
        raise CorpusError(f"no documents found in {where}; the input is empty: check the path, or give a file "
                          f"with documents ({', '.join(SUPPORTED_EXTENSIONS)})")
    if block:
        yield block
    if n_empty:
        _warn_empty(n_empty, cfg.text_field, inputs, empty_examples)


_WARNED_EMPTY: set[tuple] = set()  # (files, field, count) already warned about: a stage reading twice warns once


def _warn_empty(n_empty: int, text_field: str, inputs: list[_Input], examples: list[str]) -> None:
    """One warning per corpus: how many documents were skipped for an empty text, and where."""
    key = (tuple(str(i.path) for i in inputs), text_field, n_empty)
    log = logger.debug if key in _WARNED_EMPTY else logger.warning
    _WARNED_EMPTY.add(key)
    log("skipped %d document(s) whose %r field is empty, whitespace only or null (e.g. %s); they are left out of "
        "the output. Fix or drop those records to silence this (CorpusConfig(on_empty='error') stops instead)",
        n_empty, text_field, ", ".join(examples))


def corpus_fingerprint(cfg: CorpusConfig) -> str:
    """SHA-256 identifying the corpus a config reads.

    Hashes, for every resolved file in reading order, its name (basename, or path
    relative to the input folder / split), size and content SHA-256, then the text
    and (effective) id fields, ``max_tokens``, ``limit`` and ``metadata_fields``.
    It changes when any byte of any input changes; it does not depend on where the
    corpus lives on disk or on ``block_size``.

    Example
    -------
    >>> corpus_fingerprint(CorpusConfig(["pubmed"]))      # doctest: +SKIP
    '3f1c...'
    """
    _check(cfg)
    h = hashlib.sha256(b"subsetlm.corpus.v1\n")
    for inp in _corpus_inputs(cfg):
        try:
            size, digest = _file_digest(inp.path)
        except OSError as e:
            raise CorpusError(f"{inp.path}: cannot read ({e.strerror or e}); check the path and permissions") from e
        h.update(f"file\t{inp.kind}\t{inp.name}\t{size}\t{digest}\n".encode())
        h.update(f"id_field\t{field_of(inp, cfg)}\n".encode())
        if inp.kind == "txt" and cfg.id_field == HASH_IDS:  # content hashes instead of the path ids
            h.update(b"ids\tcontent-hash\n")
    opts = {"text_field": cfg.text_field, "max_tokens": cfg.max_tokens or None, "limit": cfg.limit,
            "metadata_fields": list(cfg.metadata_fields)}
    h.update(repr(sorted(opts.items())).encode())
    return h.hexdigest()


_REMOTE_DIGESTS: dict[tuple[str, str], str] = {}  # (url, size:etag/mtime) -> sha256: hashed once per process


def _file_digest(path: Any) -> tuple[int, str]:
    """``(size, sha256)`` of a corpus file; a remote one is streamed through fsspec (once per process and version)."""
    if not getattr(path, "is_remote", False):
        return path.stat().st_size, sha256_file(path)
    from subsetlm._remote import sha256

    st = path.stat()
    key = (str(path), st.token)
    if key not in _REMOTE_DIGESTS:
        _REMOTE_DIGESTS[key] = sha256(path)
    return st.st_size, _REMOTE_DIGESTS[key]


def _first_location(cfg: CorpusConfig, doc_id: str, inputs: list[_Input] | None = None) -> str | None:
    """Location of the first document whose id (or content-hash id) is ``doc_id`` (slow path)."""
    from subsetlm.corpus.chunking import doc_id_for

    quiet = CorpusConfig(**{**cfg.__dict__, "block_size": 4096})
    for block in iter_documents(quiet, inputs, require_documents=False):
        for d in block:
            if doc_id_for(d) == doc_id:
                return d.location
    return None


from subsetlm.corpus.repeats import Repeats  # noqa: E402  (re-exported: the check every reader uses)
