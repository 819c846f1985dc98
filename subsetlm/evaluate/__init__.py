"""Downstream evaluation: fine-tuning, prompting and distillation on text-classification tasks.

The ``eval`` stage is :mod:`subsetlm.evaluate.run` (TLM's stage 2 is one, composed with
training in :mod:`subsetlm.train`).

Example
-------
>>> from subsetlm.evaluate import EvalConfig, evaluate_model          # doctest: +SKIP
>>> evaluate_model(EvalConfig(model="runs/bert", task="pubmed-task", method="prompt", out="r.json"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "EvalConfig": "subsetlm.evaluate.run", "evaluate_model": "subsetlm.evaluate.run", "METHODS": "subsetlm.evaluate.run",
    "run_eval": "subsetlm.evaluate.run",
    "Task": "subsetlm.task", "load_task": "subsetlm.task", "few_shot": "subsetlm.evaluate.task",
    "majority_baseline": "subsetlm.evaluate.task",
    "Classifier": "subsetlm.evaluate.models", "PromptScorer": "subsetlm.evaluate.models",
    "half_depth_student": "subsetlm.evaluate.models",
    "LabelWords": "subsetlm.evaluate.label_words", "choose_label_words": "subsetlm.evaluate.label_words",
    "FitConfig": "subsetlm.evaluate.methods", "fit": "subsetlm.evaluate.methods", "kd_loss": "subsetlm.evaluate.methods",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'subsetlm.evaluate' has no attribute {name!r}")
