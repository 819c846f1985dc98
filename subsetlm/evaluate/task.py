"""Text-classification tasks from JSONL: ``text`` and ``label`` per line, splits given or made.

A line may carry a ``split`` field (``train`` / ``validation`` / ``test``; the built-in
``pubmed-task`` does). Without one, the split is made from a seeded hash of a group key
(``group_field``, default the ``id`` field, else the text), so all examples that share a
group land in the same split and no id leaks from train to test.

Few-shot training sets (:func:`few_shot`) are drawn per seed, stratified by label, from
the training split; what is left of it is the pool of unlabelled text that distillation
may use.

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

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class Split:
    """Texts, integer labels (index into ``Task.labels``) and group ids of one split."""

    texts: list[str]
    labels: np.ndarray
    groups: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: np.ndarray) -> "Split":
        idx = np.asarray(idx, dtype=np.int64)
        return Split([self.texts[i] for i in idx], self.labels[idx], [self.groups[i] for i in idx])


@dataclass
class Task:
    name: str
    labels: list[str]
    train: Split
    validation: Split
    test: Split


def _unit(seed: int, key: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0 ** 64


def load_task(path: str | Path, *, text_field: str = "text", label_field: str = "label",
              split_field: str = "split", group_field: str = "id", seed: int = 0,
              fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Task:
    """Read a JSONL task (or the source name ``pubmed-task``).

    Raises ``ValueError`` naming the file and line for malformed lines, a missing text or
    label, an unknown split name, fewer than two labels, or an empty train/test split.
    """
    if str(path) == "pubmed-task":
        from subsetlm.corpus.sources import fetch_source

        path = fetch_source("pubmed-task")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file {path} does not exist; expected a JSONL file with '{text_field}' and "
                         f"'{label_field}' fields (or the built-in 'pubmed-task')")
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
                u = _unit(seed, group)
                split = "train" if u < fractions[0] else ("validation" if u < fractions[0] + fractions[1] else "test")
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
        val = [r for r in tr if _unit(seed + 1, r[2]) < 0.1]
        rows["train"], rows["validation"] = [r for r in tr if _unit(seed + 1, r[2]) >= 0.1], val
    task = Task(path.stem, labels, mk(rows["train"]), mk(rows["validation"]), mk(rows["test"]))
    log.info("task %s: %d labels, train/validation/test = %d/%d/%d", task.name, len(labels), len(task.train),
             len(task.validation), len(task.test))
    return task


def few_shot(split: Split, size: int | None, seed: int) -> tuple[Split, Split]:
    """``(labelled, rest)``: ``size`` examples drawn per seed, stratified by label (None = all).

    Every label that occurs gets at least one example when ``size`` allows; the rest of
    the split (returned second) is what distillation may use as unlabelled text.
    """
    n = len(split)
    if size is None or size >= n:
        return split, split.take(np.zeros(0, dtype=np.int64))
    if size < 1:
        raise ValueError(f"train size {size}; expected a positive number of examples or 'all'")
    rng = np.random.default_rng(seed)
    classes = np.unique(split.labels)
    per = {c: rng.permutation(np.flatnonzero(split.labels == c)) for c in classes}
    quota = {c: int(np.floor(size * len(per[c]) / n)) for c in classes}
    for c in classes:
        quota[c] = max(quota[c], 1 if size >= len(classes) else 0)
    while sum(quota.values()) > size:  # trim the largest
        c = max(quota, key=lambda k: quota[k])
        quota[c] -= 1
    left = size - sum(quota.values())
    order = rng.permutation(classes)
    i = 0
    while left > 0:
        c = order[i % len(order)]
        if quota[c] < len(per[c]):
            quota[c] += 1
            left -= 1
        i += 1
    chosen = np.sort(np.concatenate([per[c][:quota[c]] for c in classes]))
    rest = np.setdiff1d(np.arange(n), chosen)
    return split.take(chosen), split.take(rest)


def majority_baseline(task: Task) -> dict:
    """Accuracy and macro-F1 of always predicting the most frequent training label."""
    from sklearn.metrics import f1_score

    maj = int(np.bincount(task.train.labels, minlength=len(task.labels)).argmax())
    y = task.test.labels
    pred = np.full_like(y, maj)
    return {"label": task.labels[maj], "accuracy": float((pred == y).mean()),
            "macro_f1": float(f1_score(y, pred, average="macro", labels=list(range(len(task.labels))),
                                       zero_division=0))}
