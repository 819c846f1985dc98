"""Few-shot training sets and the majority baseline over a labelled :class:`~subsetlm.task.Task`.

The task itself (``Task``, ``Split``, ``load_task``) is a data contract that retrieve and
train share too: it lives in :mod:`subsetlm.task` and is re-exported here.

Few-shot training sets (:func:`few_shot`) are drawn per seed, stratified by label, from
the training split; what is left of it is the pool of unlabelled text that distillation
may use.

Example
-------
>>> import numpy as np
>>> split = Split([f"t{i}" for i in range(10)], np.array([0] * 8 + [1] * 2), [str(i) for i in range(10)])
>>> shots, rest = few_shot(split, 4, seed=0)
>>> len(shots), len(rest), sorted(set(shots.labels.tolist()))
(4, 6, [0, 1])
"""

from __future__ import annotations

import numpy as np

from subsetlm.task import Split, Task

__all__ = ["few_shot", "majority_baseline"]


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
