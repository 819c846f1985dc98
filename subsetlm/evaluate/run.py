"""``subsetlm eval``: a pretrained run + a labelled task -> accuracy and macro-F1 over seeds and train sizes.

For every train size (e.g. 32, 128, 512, all) and seed, a stratified few-shot training set
is drawn from the task's train split (:func:`~subsetlm.evaluate.task.few_shot`), the model
is adapted with the chosen method, selected on the validation split, and scored once on
the test split. Results (``RESULTS.json``) hold each run's numbers and their mean and
standard deviation, next to the majority-class baseline.

Methods
-------
finetune  fresh linear head on the pooled backbone ([CLS] / mean for encoders, last real
          token for GPT-2), everything trained.
prompt    prompt-based fine-tuning: a cloze template, one label word per label, scored by
          the MLM head (encoders) or the next-token distribution (GPT-2) — or whole label
          names scored by the mean log-probability of their tokens; ``steps=0`` would be
          zero-shot. ``label_words`` chooses the words (:mod:`subsetlm.evaluate.label_words`:
          each label's own word from its name, else searched on the training set, LM-BFF
          style; or ``multi-token``); ``verbalizer`` overrides it per label. Every run
          records its words (``label_words`` in RESULTS.json, under ``teacher`` for distill).
distill   a teacher (``--teacher finetune|prompt``: the model itself adapted that way; or
          ``--teacher RUN[:finetune|:prompt]``: another run) labels the training texts; a
          student (the half-depth copy of the model when the teacher is the model itself, else
          the model) is trained on the teacher's softened probabilities mixed with the hard
          labels, over the labelled set plus unlabelled task text (the rest of the train split,
          up to ``max_unlabelled``).

RESULTS.json is the stage's output (``kind="file"``): its ``config`` is the identity, so
the same config again is skipped and another one refused unless ``force``.

Example
-------
>>> evaluate_model(EvalConfig(model="runs/bert", task="pubmed-task", method="finetune",
...                           train_sizes=["32", "all"], out="results.json"))   # doctest: +SKIP
>>> EvalConfig(model="runs/bert", task="t.jsonl", verbalizer=["cardio=heart", "onco=tumor"]).verbalizer
{'cardio': 'heart', 'onco': 'tumor'}
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from subsetlm._device import resolve_device
from subsetlm._stage import Output, Stage, check_out, identity
from subsetlm.evaluate.label_words import MODES as WORD_MODES
from subsetlm.evaluate.methods import FitConfig, fit, metrics, predict_logits
from subsetlm.evaluate.task import few_shot, majority_baseline
from subsetlm.runs import model_dir
from subsetlm.task import Task, load_task

logger = logging.getLogger(__name__)

METHODS = ("finetune", "prompt", "distill")


@dataclass
class EvalConfig:
    """Configuration of ``subsetlm eval`` (one field per flag).

    train_sizes : list of sizes, ``"all"`` for the whole train split.
    label_words : how prompting picks each label's word(s): ``auto`` (a word of the label's
        own name, else searched on the training set), ``name``, ``search`` or
        ``multi-token`` (whole label names); see :mod:`subsetlm.evaluate.label_words`.
    verbalizer : ``{label: word}`` overriding ``label_words`` for the labels it names, or a
        list of ``"LABEL=WORD"`` strings (``--verbalizer``), turned into that dict.
    """

    VOLATILE: ClassVar[tuple[str, ...]] = ("force", "device", "out")  # where/how: not in RESULTS.json's config

    model: str = ""
    task: str = ""
    method: str = "finetune"
    out: str = ""
    teacher: str | None = None
    train_sizes: list[str] = field(default_factory=lambda: ["all"])
    seeds: int = 3
    pooling: str = "auto"
    template: str | None = None
    verbalizer: dict[str, str] | list[str] | None = None
    label_words: str = "auto"
    lr: float = 3e-4
    batch_size: int = 16
    epochs: int = 10
    min_steps: int = 50
    max_steps: int = 400
    temperature: float = 2.0
    alpha: float = 0.5
    balanced: bool = False
    max_unlabelled: int = 2000
    max_test: int | None = None
    text_field: str = "text"
    label_field: str = "label"
    device: str = "auto"
    force: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.verbalizer, (list, tuple)):
            bad = [v for v in self.verbalizer if not isinstance(v, str) or "=" not in v]
            if bad:
                raise ValueError(f"--verbalizer {bad[0]!r}: expected LABEL=WORD")
            self.verbalizer = dict(v.split("=", 1) for v in self.verbalizer)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if not self.model or not self.task:
            raise ValueError("pass --model RUN and --task TASK.jsonl (or pubmed-task)")
        if self.seeds < 1:
            raise ValueError(f"seeds={self.seeds}; expected >= 1")
        if Path(self.model).is_dir():  # refused before the task is read: an unfinished run, no config.json
            model_dir(self.model)
        if self.method == "distill" and not self.teacher:
            raise ValueError("--method distill needs --teacher finetune|prompt|RUN[:finetune|:prompt]")
        if self.label_words not in WORD_MODES:
            raise ValueError(f"--label-words {self.label_words!r}; choose one of: {', '.join(WORD_MODES)}")
        for s in self.train_sizes:
            if s != "all" and (not str(s).isdigit() or int(s) < 1):
                raise ValueError(f"train size {s!r}; expected a positive integer or 'all'")

    def prompted(self) -> bool:
        """Whether a prompt model is trained (prompt, or distill from a prompt teacher)."""
        return self.method == "prompt" or (self.method == "distill" and str(self.teacher).split(":")[-1] == "prompt")


def _adapt(kind: str, run: str, task: Task, train, cfg: EvalConfig, fc: FitConfig, seed: int):
    """Build and fit a finetuned Classifier or a PromptScorer on ``train``; returns (model, log).

    A PromptScorer's label words are chosen on ``train`` (when searched); the log records them.
    """
    import torch

    from subsetlm.evaluate.models import Classifier, PromptScorer

    torch.manual_seed(seed)
    if kind == "prompt":
        model = PromptScorer.from_run(run, task.labels, template=cfg.template, verbalizer=cfg.verbalizer,
                                      label_words=cfg.label_words, train_texts=train.texts, train_labels=train.labels,
                                      device=fc.device)
    else:
        model = Classifier.from_run(run, len(task.labels), pooling=cfg.pooling)
    info = fit(model, train.texts, train.labels, task.validation.texts, task.validation.labels, len(task.labels),
               fc, seed)
    if kind == "prompt":
        info["label_words"] = model.label_words.as_dict()
    return model, info


def _teacher(cfg: EvalConfig) -> tuple[str, str, bool]:
    """(teacher run, teacher method, teacher is the evaluated model itself)."""
    t = str(cfg.teacher)
    if t in ("finetune", "prompt"):
        return cfg.model, t, True
    run, _, how = t.partition(":")
    how = how or "finetune"
    if how not in ("finetune", "prompt"):
        raise ValueError(f"--teacher {t}: the method after ':' must be finetune or prompt")
    return run, how, False


def _one(cfg: EvalConfig, task: Task, size: int | None, seed: int, fc: FitConfig) -> dict:
    import torch

    from subsetlm.evaluate.models import Classifier, half_depth_student, n_parameters

    train, rest = few_shot(task.train, size, seed)
    test = task.test if cfg.max_test is None else task.test.take(np.arange(min(cfg.max_test, len(task.test))))
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if cfg.method in ("finetune", "prompt"):
        model, info = _adapt(cfg.method, cfg.model, task, train, cfg, fc, seed)
        if "label_words" in info:
            extra["label_words"] = info["label_words"]
    else:
        t_run, t_how, itself = _teacher(cfg)
        teacher, t_info = _adapt(t_how, t_run, task, train, cfg, fc, seed)
        unl = rest.take(np.arange(min(cfg.max_unlabelled, len(rest))))
        texts = train.texts + unl.texts
        labels = np.concatenate([train.labels, np.full(len(unl), -1, dtype=np.int64)])
        soft = predict_logits(teacher, texts, device=fc.device)
        t_pred = predict_logits(teacher, test.texts, device=fc.device).argmax(1)
        extra["teacher"] = {"run": t_run, "method": t_how, "parameters": n_parameters(teacher),
                            **metrics(test.labels, t_pred, len(task.labels))}
        if "label_words" in t_info:
            extra["teacher"]["label_words"] = t_info["label_words"]
        torch.manual_seed(seed)
        base = Classifier.from_run(cfg.model, len(task.labels), pooling=cfg.pooling)
        model = half_depth_student(base, len(task.labels)) if itself else base
        info = fit(model, texts, labels, task.validation.texts, task.validation.labels, len(task.labels), fc, seed,
                   teacher_logits=soft)
        extra["unlabelled"] = int(len(unl))
        del teacher
    pred = predict_logits(model, test.texts, device=fc.device).argmax(1)
    return {"seed": seed, "train_size": len(train), **metrics(test.labels, pred, len(task.labels)),
            "val_macro_f1": info["best_val_macro_f1"], "steps": info["steps"], "parameters": n_parameters(model),
            "seconds": round(time.perf_counter() - t0, 2), **extra}


def _stats(rows: list[dict]) -> dict:
    out = {}
    for key in ("accuracy", "macro_f1"):
        v = np.array([r[key] for r in rows], dtype=np.float64)
        out[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                    "values": v.tolist()}
    return out


def _words_summary(runs: dict[str, list[dict]]) -> dict | None:
    """RESULTS.json's top-level ``label_words``: the runs' choice when they all agree (else per run only)."""
    got = [r.get("label_words") or r.get("teacher", {}).get("label_words") for rs in runs.values() for r in rs]
    got = [g for g in got if g]
    if not got:
        return None
    if all(g == got[0] for g in got):
        return got[0]
    return {"method": got[0]["method"], "words": None, "source": None,
            "note": "chosen per run (searched on each training set): see each run's label_words"}


def evaluate_model(cfg: EvalConfig, progress: bool = False) -> dict:
    """Run ``subsetlm eval``; writes ``cfg.out`` (JSON, atomically; none when empty) and returns the results.

    A ``cfg.out`` that holds the results of this config is read back instead (skip); one of
    another config raises ``FileExistsError`` unless ``cfg.force``.
    """
    from subsetlm import _io

    cfg.validate()
    config = identity(cfg, drop=() if cfg.prompted() else ("label_words",))  # old non-prompt results still match
    out = Output(check_out(cfg.out), config, what="evaluation", kind="file") if cfg.out else None  # a URL: its mirror
    if out is not None and out.up_to_date(cfg.force):
        return _io.read_json(out.path)
    task = load_task(cfg.task, text_field=cfg.text_field, label_field=cfg.label_field)
    fc = FitConfig(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, min_steps=cfg.min_steps,
                   max_steps=cfg.max_steps, device=resolve_device(cfg.device), temperature=cfg.temperature,
                   alpha=cfg.alpha, balanced=cfg.balanced)
    jobs = [(s, seed) for s in cfg.train_sizes for seed in range(cfg.seeds)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"eval {cfg.method}", unit="run")
    runs: dict[str, list[dict]] = {}
    for s, seed in jobs:
        size = None if s == "all" else int(s)
        r = _one(cfg, task, size, seed, fc)
        runs.setdefault(str(s), []).append(r)
        logger.info("%s train=%s seed=%d: accuracy %.4f, macro-F1 %.4f (%.1fs)", cfg.method, s, seed, r["accuracy"],
                    r["macro_f1"], r["seconds"])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results = {"method": cfg.method, "model": cfg.model, "task": task.name, "labels": task.labels,
               "splits": {"train": len(task.train), "validation": len(task.validation), "test": len(task.test)},
               "majority_baseline": majority_baseline(task),
               "results": {s: {**_stats(rs), "runs": rs} for s, rs in runs.items()},
               "config": config}
    words = _words_summary(runs)
    if words is not None:
        results["label_words"] = words
    if out is not None:
        out.write_json(results)
    return results


def run_eval(cfg: EvalConfig, progress: bool = False) -> Path:
    """The eval stage as the CLI runs it: :func:`evaluate_model` into ``cfg.out`` (required); returns that file."""
    path = check_out(cfg.out)
    evaluate_model(cfg, progress=progress)
    return path


def summary(path: str | Path) -> str:
    """What ``subsetlm eval`` prints for the RESULTS.json at ``path``: one line per train size, then the baseline."""
    from subsetlm import _io

    res = _io.read_json(path)
    base = res["majority_baseline"]
    lines = [f"{res['method']} train={size}: accuracy {r['accuracy']['mean']:.4f} ± {r['accuracy']['std']:.4f}, "
             f"macro-F1 {r['macro_f1']['mean']:.4f} ± {r['macro_f1']['std']:.4f} over {len(r['runs'])} seeds"
             for size, r in res["results"].items()]
    words = res.get("label_words")
    if words and words.get("words"):
        lines.append(f"label words ({words['method']}): " + ", ".join(f"{k}={v}" for k, v in words["words"].items()))
    lines.append(f"majority baseline ({base['label']}): accuracy {base['accuracy']:.4f}, macro-F1 "
                 f"{base['macro_f1']:.4f}; wrote {path}")
    return "\n".join(lines)


STAGE = Stage("eval", EvalConfig, run_eval, summary)
