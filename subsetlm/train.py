"""The ``train`` stage (``subsetlm train``): pretraining (:mod:`subsetlm.recipes.run`), then TLM's stage 2.

TLM (Yao et al., 2022) trains in two stages: stage 1 trains on the retrieved rows and the
task jointly (:mod:`subsetlm.recipes.tlm`); stage 2 fine-tunes the stage-1 encoder on the
task alone with a fresh head. Stage 2 is ``subsetlm eval --method finetune`` on the run
(:mod:`subsetlm.evaluate`, a later stage than training), so the two are composed here,
after both in the data flow (beside :mod:`subsetlm.demo`, the other composition of
stages). Stage 2 reaches the run as :func:`~subsetlm.recipes.run.train_run`'s ``finish``
step: ``RUN/stage2.json`` (an eval RESULTS.json) and ``results.json["stage2"]`` are
written before the run's ``_SUCCESS``. Other recipes (and ``stage2_seeds=0``) are
``train_run`` unchanged.

Example
-------
>>> train_with_stage2(TrainRunConfig(recipe="tlm", subset="subset-bm25", task="task.jsonl",
...                                  out="runs/tlm"))                  # doctest: +SKIP
PosixPath('runs/tlm')
"""

from __future__ import annotations

import logging
from pathlib import Path

from subsetlm import runs
from subsetlm._stage import Stage
from subsetlm.evaluate.run import EvalConfig, evaluate_model
from subsetlm.recipes.run import TrainRunConfig, summary, train_run

logger = logging.getLogger(__name__)


def tlm_stage2(cfg: TrainRunConfig, run: Path, progress: bool) -> dict:
    """TLM stage 2: fine-tune the stage-1 encoder on the task alone with a fresh head (``RUN/stage2.json``).

    Returns ``{"stage2": {macro_f1, accuracy, file}}`` for ``results.json``.
    """
    ev = evaluate_model(EvalConfig(model=str(run), task=str(cfg.task), method="finetune",
                                   out=str(run / runs.STAGE2), seeds=cfg.stage2_seeds, max_steps=cfg.stage2_steps,
                                   lr=cfg.stage2_lr, device=cfg.device), progress=progress)
    r = ev["results"]["all"]
    logger.info("TLM stage 2 (fine-tuning, %d seed(s)): test macro-F1 %.4f ± %.4f, accuracy %.4f", cfg.stage2_seeds,
                r["macro_f1"]["mean"], r["macro_f1"]["std"], r["accuracy"]["mean"])
    return {"stage2": {"macro_f1": r["macro_f1"], "accuracy": r["accuracy"], "file": runs.STAGE2}}


def train_with_stage2(cfg: TrainRunConfig, progress: bool = False) -> Path:
    """Run ``subsetlm train``: :func:`~subsetlm.recipes.run.train_run`, with TLM stage 2 for tlm runs."""
    stage2 = cfg.has_stage2
    return train_run(cfg, progress=progress, finish=tlm_stage2 if stage2 else None)


STAGE = Stage("train", TrainRunConfig, train_with_stage2, summary)
