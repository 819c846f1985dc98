"""The labelled task that retrieve, train (TLM) and eval share: JSONL ``text`` + ``label``, three splits.

A line may carry a ``split`` field (``train`` / ``validation`` / ``test``; the built-in
``pubmed-task`` does). Without one, the split is made from a seeded hash of a group key
(``group_field``, default the ``id`` field, else the text), so all examples that share a
group land in the same split and no id leaks from train to test.

Who reads what: ``subsetlm retrieve`` queries with the train split and never retrieves the
validation/test documents; ``subsetlm train --recipe tlm`` trains on the train split;
``subsetlm eval`` draws few-shot sets from train (:func:`subsetlm.evaluate.task.few_shot`),
selects on validation and scores on test.

This module sits at the corpus level of the package layering: ``load_task("pubmed-task")``
builds the built-in task with :func:`subsetlm.corpus.sources.fetch_source`.

Example
-------
>>> import json, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
>>> _ = p.write_text("".join(json.dumps({"id": str(i), "text": f"t{i}", "label": "ab"[i % 2]}) + "\\n"
...                          for i in range(50)))
>>> task = load_task(p)
>>> task.labels, len(task.train) + len(task.validation) + len(task.test)
(['a', 'b'], 50)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from subsetlm._io import hash_split, hash_unit

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
BUILTIN = "pubmed-task"  # a task built from the pubmed source on first use (subsetlm.corpus.sources)


@dataclass
class Split:
    """One split: ``texts`` (n,) strings, ``labels`` (n,) int64 indices into ``Task.labels``, ``groups`` (n,) ids."""

    texts: list[str]
    labels: np.ndarray
    groups: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: np.ndarray) -> "Split":
        """The rows ``idx`` (m,) of this split, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        return Split([self.texts[i] for i in idx], self.labels[idx], [self.groups[i] for i in idx])


@dataclass
class Task:
    """A text-classification task: its name (the file stem), sorted label names and three splits."""

    name: str
    labels: list[str]
    train: Split
    validation: Split
    test: Split


def load_task(path: str | Path, *, text_field: str = "text", label_field: str = "label",
              split_field: str = "split", group_field: str = "id", seed: int = 0,
              fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Task:
    """Read a JSONL task (or the source name ``pubmed-task``).

    Without a validation split, one is carved out of train (10% of the groups, by a
    seeded hash).

    Raises ``ValueError`` naming the file and line for malformed lines, a missing text or
    label, an unknown split name, fewer than two labels, or an empty train/test split.
    """
    if str(path) == BUILTIN:
        from subsetlm.corpus.sources import fetch_source

        path = fetch_source(BUILTIN)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file {path} does not exist; expected a JSONL file with '{text_field}' and "
                         f"'{label_field}' fields (or the built-in '{BUILTIN}')")
    rows: dict[str, list] = {s: [] for s in SPLITS}
    opener = __import__("gzip").open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg}); each line must be one JSON object") from exc
            text, label = rec.get(text_field), rec.get(label_field)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{path}:{n}: field '{text_field}' is missing or empty; pass --text-field")
            if label is None:
                raise ValueError(f"{path}:{n}: field '{label_field}' is missing; pass --label-field")
            group = str(rec.get(group_field) if rec.get(group_field) is not None else text)
            split = rec.get(split_field)
            if split is None:
                split = hash_split(seed, group, fractions)
            if split in ("dev", "valid", "val"):
                split = "validation"
            if split not in rows:
                raise ValueError(f"{path}:{n}: split {split!r}; expected one of {', '.join(SPLITS)}")
            rows[split].append((text, str(label), group))
    labels = sorted({r[1] for s in SPLITS for r in rows[s]})
    if len(labels) < 2:
        raise ValueError(f"{path}: {len(labels)} distinct label(s); classification needs at least 2")
    if not rows["train"] or not rows["test"]:
        raise ValueError(f"{path}: the train and test splits must be non-empty (got "
                         f"{', '.join(f'{s}={len(rows[s])}' for s in SPLITS)})")
    code = {lab: i for i, lab in enumerate(labels)}

    def mk(rs):
        return Split([r[0] for r in rs], np.array([code[r[1]] for r in rs], dtype=np.int64), [r[2] for r in rs])

    if not rows["validation"]:  # carve a validation split out of train, by group
        tr = rows["train"]
        held = [hash_unit(seed + 1, r[2]) < 0.1 for r in tr]
        rows["train"], rows["validation"] = [r for r, h in zip(tr, held) if not h], [r for r, h in zip(tr, held) if h]
    task = Task(path.stem, labels, mk(rows["train"]), mk(rows["validation"]), mk(rows["test"]))
    logger.info("task %s: %d labels, train/validation/test = %d/%d/%d", task.name, len(labels), len(task.train),
                len(task.validation), len(task.test))
    return task


def _text_key(text: str) -> str:
    import hashlib

    return hashlib.sha1(" ".join(str(text).lower().split()).encode("utf-8")).hexdigest()


class HeldOut:
    """The task's validation and test documents, to keep them out of any training subset.

    A corpus row is held out when its document id is the group of a validation/test example,
    or its text equals one (case and whitespace folded). Used by ``retrieve`` and ``dsir``.

    >>> t = Task("t", ["a", "b"], Split(["x"], np.array([0]), ["d0"]), Split([], np.zeros(0, np.int64), []),
    ...          Split(["A  test"], np.array([1]), ["d9"]))
    >>> HeldOut(t).rows(["d1", "d9", "d2"], ["y", "z", "a TEST"]).tolist()
    [False, True, True]
    """

    def __init__(self, task: "Task"):
        self.groups = {str(g) for g in list(task.validation.groups) + list(task.test.groups)}
        self.texts = {_text_key(t) for t in list(task.validation.texts) + list(task.test.texts)}

    def rows(self, doc_ids: Any, texts: list[str]) -> np.ndarray:
        """(len(texts),) bool: which of these rows (their document ids and texts) are held out."""
        by_doc = np.fromiter((str(d) in self.groups for d in doc_ids), dtype=bool, count=len(texts))
        by_text = np.fromiter((_text_key(t) in self.texts for t in texts), dtype=bool, count=len(texts))
        return by_doc | by_text
