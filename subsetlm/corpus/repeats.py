"""The one duplicate-document check of a corpus (re-exported by :mod:`subsetlm.corpus.readers`)."""

from __future__ import annotations

import logging
from typing import Any, Callable

from subsetlm.corpus._formats import CorpusError
from subsetlm.corpus.ids import HASH_IDS

logger = logging.getLogger(__name__)


class Repeats:
    """The one duplicate-document check of a corpus, whoever reads it (a stream, or file by file).

    A document id seen before is a repeat: with a user id (an id field, a .txt path) it is
    a :class:`CorpusError` naming both places; without one (a content hash: the same
    text) the later copy is dropped and counted, and :meth:`warn` logs the count once.
    :func:`~subsetlm.corpus.chunking.iter_samples` checks each document as it streams; the
    embed stage's per-file chunk pass checks each file's ids against the files before it.

    Parameters
    ----------
    cfg : CorpusConfig
    inputs : the inputs read (default: all of ``cfg``'s); searched for a repeat's first place.

    Example
    -------
    >>> from subsetlm.corpus.readers import CorpusConfig
    >>> r = Repeats(CorpusConfig(["c.jsonl"]))
    >>> r.keep("sha1:aa", user_id=False, where="c.jsonl:1"), r.keep("sha1:aa", user_id=False, where="c.jsonl:3")
    (True, False)
    >>> r.dropped, r.examples
    (1, ['c.jsonl:3'])
    """

    def __init__(self, cfg: Any, inputs: list[Any] | None = None) -> None:
        self.cfg, self.inputs = cfg, inputs
        self.seen: set[str] = set()
        self.dropped = 0
        self.examples: list[str] = []

    def repeated(self, doc_id: str, user_id: bool, where: str | Callable[[], str]) -> bool:
        """True when ``doc_id`` was seen before (drop this copy); raises for a repeated user id.

        ``where`` is this copy's location (a callable is called only when needed). The id is
        not recorded: call :meth:`add` (or use :meth:`keep`).
        """
        if doc_id not in self.seen:
            return False
        if user_id:
            from subsetlm.corpus.readers import _first_location

            first = _first_location(self.cfg, doc_id, self.inputs)
            raise CorpusError(
                f"duplicate document id {doc_id!r}: at {first} and again at {_where(where)}; ids must be "
                f"unique. Fix the data, choose another --id-field, or pass --id-field {HASH_IDS} to use content "
                f"hashes")
        self.dropped += 1
        if len(self.examples) < 3:
            self.examples.append(_where(where))
        return True

    def add(self, doc_id: str) -> None:
        """Record ``doc_id`` as seen."""
        self.seen.add(doc_id)

    def keep(self, doc_id: str, user_id: bool, where: str | Callable[[], str]) -> bool:
        """:meth:`repeated` then :meth:`add`: True for the first copy of a document (keep it)."""
        if self.repeated(doc_id, user_id, where):
            return False
        self.seen.add(doc_id)
        return True

    def warn(self) -> None:
        """Log the dropped copies once (nothing when none was dropped)."""
        if self.dropped:
            logger.warning("dropped %d exact duplicate document(s) without ids (e.g. %s); their content-hash ids "
                        "would collide", self.dropped, ", ".join(self.examples))


def _where(where: str | Callable[[], str]) -> str:
    return where if isinstance(where, str) else str(where())
