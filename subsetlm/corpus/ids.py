"""Which id each document gets: the corpus's own ``id`` field, another field, or a content hash.

``CorpusConfig.id_field`` (the ``--id-field`` flag) chooses the rule:

- ``None`` (the default, *auto*): a corpus whose records carry an ``id`` field is read with
  those ids (numbers become strings), as datatrove (``id_key="id"``) and Hugging Face
  datasets name it; a corpus without one gets content-hash ids (``sha1:<16 hex>``).
  Each JSONL file is judged by its first record (an ``id`` that is present and not null),
  each Parquet / Arrow file by its columns, so the choice depends on the files alone and a
  resumed or sharded run makes the same one. Once a corpus's ids come from ``id``, every
  record needs one: a later record without it stops the run naming its ``FILE:LINE``, and
  files that disagree (one with ``id``, one without) stop it before anything is read.
  Named sources (``pubmed``, ``sotu``) keep their own id field; ``.txt`` files their path.
- a field name (``--id-field pmid``): that field, for every record of every file.
- :data:`HASH_IDS` (``--id-field @hash``): content-hash ids for every document, ``.txt``
  files included, whatever fields the records carry.

The rule that was applied is recorded in the store manifest under ``ids``
(:func:`id_rule`). Duplicate ids are treated as before (:class:`~subsetlm.corpus.readers.Repeats`):
a repeated user id stops the run, a repeated content hash (the same text) drops the copy.

Example
-------
>>> import json, tempfile, pathlib
>>> from subsetlm.corpus.readers import CorpusConfig, iter_documents
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "c.jsonl").write_text(json.dumps({"id": 7, "text": "a"}) + "\\n")
>>> [doc.id for block in iter_documents(CorpusConfig([str(d / "c.jsonl")])) for doc in block]
['7']
>>> id_rule(CorpusConfig([str(d / "c.jsonl")]))
{'rule': 'auto', 'source': 'field', 'field': 'id'}
>>> id_rule(CorpusConfig([str(d / "c.jsonl")], id_field=HASH_IDS))
{'rule': 'content-hash', 'source': 'content-hash', 'field': None}
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from subsetlm.corpus._formats import CorpusError, has_field

logger = logging.getLogger(__name__)

__all__ = ["HASH_IDS", "AUTO_FIELD", "check_id_field", "field_of", "has_user_ids", "resolve", "id_rule"]

HASH_IDS = "@hash"
"""``id_field`` value asking for content-hash ids (``sha1:<16 hex>``) for every document."""
AUTO_FIELD = "id"
"""The field used by default when every record of a corpus carries it."""

_PEEKED: dict[tuple, bool | None] = {}  # (path, kind, size, mtime or ETag) -> the file's first record has AUTO_FIELD


def check_id_field(value: Any) -> None:
    """Refuse an ``id_field`` that is neither None, :data:`HASH_IDS` nor a field name."""
    if value is None or value == HASH_IDS:
        return
    if not isinstance(value, str) or not value:
        raise CorpusError(f"id_field={value!r}: expected a field name, {HASH_IDS!r} (content-hash ids) or None "
                          f"(the corpus's own {AUTO_FIELD!r} field when every record has one)")
    if value.startswith("@"):
        raise CorpusError(f"id_field={value!r}: names starting with '@' are reserved; use {HASH_IDS} for content-hash "
                          f"ids, or a field name")


def field_of(inp: Any, cfg: Any) -> str | None:
    """The field the documents of input ``inp`` take their ids from (None: content hash, or a .txt path)."""
    if cfg.id_field == HASH_IDS or inp.kind == "txt":
        return None
    return cfg.id_field if cfg.id_field is not None else inp.id_field


def has_user_ids(inp: Any, cfg: Any) -> bool:
    """Whether the documents of ``inp`` carry user ids (an id field, or a .txt path) rather than content hashes."""
    if cfg.id_field == HASH_IDS:
        return False
    return inp.kind == "txt" or field_of(inp, cfg) is not None


def _peek(inp: Any) -> bool | None:
    """Whether the file's records carry :data:`AUTO_FIELD` (None: no record to judge, or unreadable)."""
    try:  # a remote file: its version (size + ETag / mtime) from one metadata call, not a read
        st = inp.path.stat()
        key = (str(inp.path), inp.kind, st.st_size, getattr(st, "token", None) or st.st_mtime_ns)
    except (OSError, ValueError):
        key = None
    if key in _PEEKED:
        return _PEEKED[key]
    found = has_field(inp.path, inp.kind, AUTO_FIELD)
    if key is not None:
        _PEEKED[key] = found
    return found


def resolve(inputs: list[Any], cfg: Any) -> list[Any]:
    """``inputs`` with the auto rule applied: plain files whose records carry ``id`` read their ids from it.

    Only with ``cfg.id_field`` None; sources keep their own id field, ``.txt`` files their path.

    Raises
    ------
    CorpusError
        Some files carry ``id`` and others do not (names one of each and the fixes).
    """
    if cfg.id_field is not None:
        return inputs
    plain = [i for i, inp in enumerate(inputs) if inp.kind != "txt" and inp.id_field is None]
    if not plain:
        return inputs
    votes = {i: _peek(inputs[i]) for i in plain}
    with_id = [i for i, v in votes.items() if v is True]
    without = [i for i, v in votes.items() if v is False]
    if with_id and without:
        a, b = inputs[with_id[0]], inputs[without[0]]
        raise CorpusError(
            f"{a.path} carries an {AUTO_FIELD!r} field, so ids are read from it by default, but {b.path} does not "
            f"({len(without)} of {len(votes)} files lack it; a file is judged by its first record or its columns). "
            f"Pass --id-field {HASH_IDS} to give every document a content-hash id, add an {AUTO_FIELD!r} to every "
            f"record, or choose another --id-field that every record has")
    if not with_id:
        return inputs
    out = list(inputs)
    for i in with_id + [i for i, v in votes.items() if v is None]:  # an empty file follows the others
        out[i] = dataclasses.replace(out[i], id_field=AUTO_FIELD)
    return out


def _kind_of(inp: Any, cfg: Any) -> str:
    f = field_of(inp, cfg)
    if f is not None:
        return f"field:{f}"
    return "path" if has_user_ids(inp, cfg) else "content-hash"


def id_rule(cfg: Any, inputs: list[Any] | None = None) -> dict[str, Any]:
    """What the store manifest records under ``ids``: the rule asked for and the ids it gave.

    Returns ``{"rule", "source", "field"}`` (plus ``"sources"`` when inputs differ):

    - ``rule``: ``"auto"`` (no ``--id-field``), ``"field"`` (``--id-field NAME``) or
      ``"content-hash"`` (``--id-field @hash``);
    - ``source``: ``"field"`` (ids from ``field``), ``"content-hash"`` (``sha1:<16 hex>`` of
      the text), ``"path"`` (``.txt`` files: the path relative to the folder) or ``"mixed"``;
    - ``sources`` (mixed only): the sorted kinds, e.g. ``["content-hash", "field:id", "path"]``.
    """
    from subsetlm.corpus.readers import input_files

    inputs = input_files(cfg) if inputs is None else inputs
    rule = "auto" if cfg.id_field is None else ("content-hash" if cfg.id_field == HASH_IDS else "field")
    kinds = sorted({_kind_of(inp, cfg) for inp in inputs})
    fields = sorted(k.partition(":")[2] for k in kinds if k.startswith("field:"))
    if len(kinds) == 1:
        source = kinds[0].partition(":")[0]
        return {"rule": rule, "source": source, "field": fields[0] if fields else None}
    return {"rule": rule, "source": "mixed", "field": fields[0] if len(fields) == 1 else None, "sources": kinds}
