"""The data contract between the corpus stage and everything after it.

A :class:`Document` is what a reader yields (one JSONL line, one Parquet row, one
.txt file). A :class:`Sample` is what gets embedded and selected: a document, or a
chunk of at most ``max_tokens`` tokens of one.

Example
-------
>>> d = Document(id="pmid:1", text="Aspirin.", source="pubmed", location="a.jsonl:1")
>>> Sample(id="pmid:1#0", doc_id=d.id, text=d.text, n_tokens=2, source=d.source).doc_id
'pmid:1'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One document as read from a corpus file.

    id : the user's id field as a string, or ``None`` when the corpus has none
         (the chunker then derives a content hash).
    location : ``"FILE:LINE"`` (or ``"FILE:row N"``) for error messages.
    """

    id: str | None
    text: str
    source: str = ""
    location: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One unit of selection: a document or a chunk of one.

    id : stable across runs: ``"<doc id>#<chunk>"``; without a user id the doc id is
         ``"sha1:<first 16 hex of sha1(text)>"``.
    """

    id: str
    doc_id: str
    text: str
    n_tokens: int
    source: str = ""
