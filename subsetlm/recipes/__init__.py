"""Pretraining recipes, the training loop, callbacks and INGENIOUS re-selection.

Example
-------
>>> from subsetlm.recipes import TrainRunConfig, train_run        # doctest: +SKIP
>>> train_run(TrainRunConfig(recipe="bert", corpus=["store/"], subset="subset/", out="runs/bert"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "Recipe": "subsetlm.recipes.base", "build_recipe": "subsetlm.recipes.base", "RECIPES": "subsetlm.recipes.base",
    "Preset": "subsetlm.recipes.presets", "get_preset": "subsetlm.recipes.presets", "PRESETS": "subsetlm.recipes.presets",
    "TrainConfig": "subsetlm.recipes.loop", "train": "subsetlm.recipes.loop", "evaluate": "subsetlm.recipes.loop",
    "TrainResult": "subsetlm.recipes.loop",
    "Callback": "subsetlm.recipes.callbacks", "Control": "subsetlm.recipes.callbacks",
    "TrainState": "subsetlm.recipes.callbacks", "TrainContext": "subsetlm.recipes.callbacks",
    "TrainData": "subsetlm.recipes.data", "load_corpus": "subsetlm.recipes.data",
    "ReselectConfig": "subsetlm.recipes.reselect", "ReselectCallback": "subsetlm.recipes.reselect",
    "TrainRunConfig": "subsetlm.recipes.run", "train_run": "subsetlm.recipes.run",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'subsetlm.recipes' has no attribute {name!r}")
