"""``subsetlm train``: corpus (+ subset) -> tokenizer -> model -> run directory.

The run directory (:mod:`subsetlm.runs` describes its files) is the stage's output, written
in place (``kind="inplace"``: checkpoints survive a crash): ``config.json`` holds the
run's identity (the config minus where/how fields, and minus the tlm options for other
recipes), ``_SUCCESS`` is written last. A finished run of the same config is skipped, one
of another config refused unless ``force``; an unfinished one continues with ``resume``.

The tokenizer is trained on the training split of the corpus (every row outside the
fixed validation split, not only the subset), so full-data, random-subset and selected-
subset runs of one corpus share a vocabulary.

The ``tlm`` recipe's stage 2 (fine-tuning on the task with a fresh head, ``subsetlm eval
--method finetune``) is evaluation, a later stage: :func:`train_run` takes it as its
``finish`` step, and :mod:`subsetlm.train` composes the two into the ``train``
stage that the CLI runs.

Example
-------
>>> train_run(TrainRunConfig(recipe="bert", corpus=["store/"], subset="subset/", out="runs/bert"))  # doctest: +SKIP
PosixPath('runs/bert')
>>> sorted(set(run_identity(TrainRunConfig(recipe="tlm", task="t.jsonl", out="r"))) - set(run_identity(
...     TrainRunConfig(recipe="bert", out="r"))))
['rho1', 'rho2', 'stage2_lr', 'stage2_seeds', 'stage2_steps', 'task']
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from subsetlm import _io, runs
from subsetlm._stage import Output, diff, identity
from subsetlm.recipes.base import RECIPES

logger = logging.getLogger(__name__)

TLM_FIELDS = ("task", "rho1", "rho2", "stage2_seeds", "stage2_steps", "stage2_lr")  # tlm only

# finish(cfg, run, progress) -> extra keys of results.json, run on rank 0 before _SUCCESS (TLM stage 2)
Finish = Callable[["TrainRunConfig", Path, bool], dict]


@dataclass
class TrainRunConfig:
    """Everything ``subsetlm train`` takes (``None`` = the preset's default).

    corpus : a store directory (rows = the store's samples; needed with ``subset``) or
        corpus files / source names; default: the subset's store, or ``pubmed`` for biobert.
    subset : a subset file to train on (optionally ``weighted``).
    reselect_every / warmup_steps / layer : INGENIOUS re-selection (either of the first two
        turns it on); ``reselect_*`` fields tune it (see :class:`~.reselect.ReselectConfig`).
    init_from : continue from a run's model (biobert from a bert run); its tokenizer is used.
    task / rho1 / rho2 : ``tlm`` only: the task JSONL (its train split is trained on jointly),
        external batches per task batch, and the MLM weight of task batches.
    stage2_* : ``tlm`` only: stage 2 (fine-tuning on the task alone with a fresh head, as
        ``subsetlm eval --method finetune``) at the end of the run; ``stage2_seeds=0`` skips it.
    """

    VOLATILE: ClassVar[tuple[str, ...]] = ("resume", "force", "device", "verify")  # how, not what: not in config.json

    recipe: str = "bert"
    out: str = ""
    corpus: list[str] | None = None
    subset: str | None = None
    preset: str = "tiny"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seq_len: int | None = None
    grad_accum: int = 1
    warmup: float | None = None
    schedule: str = "linear"
    weighted: bool = False
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    save_every: int | None = None
    eval_every: int | None = None
    eval_batches: int = 20
    log_every: int = 10
    keep_checkpoints: int = 2
    tokenizer: str | None = None
    init_from: str | None = None
    limit: int | None = None
    text_field: str = "text"
    id_field: str | None = None
    val_fraction: float = 0.02
    max_val: int = 1000
    n_clusters: int = 100
    reselect_every: int | None = None
    warmup_steps: int | None = None
    layer: int | None = None
    reselect_budget: str = "0.25"
    reselect_partitions: int = 0
    reselect_mode: str = "reembed"
    reselect_sampling: str = "taylor-softmax"
    reselect_optimizer: str = "lazy"
    task: str | None = None
    rho1: int = 3
    rho2: float = 20.0
    stage2_seeds: int = 1
    stage2_steps: int = 400
    stage2_lr: float = 3e-4
    resume: bool = False
    force: bool = False
    verify: bool = True  # check store / graph / subset checksums on open (--no-verify: trust them)

    @property
    def reselect(self) -> bool:
        return self.reselect_every is not None or self.warmup_steps is not None

    @property
    def has_stage2(self) -> bool:
        """A tlm run that ends with stage 2 (task-only fine-tuning: :mod:`subsetlm.train`)."""
        return self.recipe == "tlm" and self.stage2_seeds > 0

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r} (--recipe, or recipe: in --config); choose one of: "
                             f"{', '.join(RECIPES)}")
        if not self.out:
            raise ValueError("no run directory given: pass --out RUN (or out: RUN in --config)")
        if (self.recipe == "tlm") != bool(self.task):
            raise ValueError(f"task={self.task!r} with recipe={self.recipe!r}: a task goes with the tlm recipe "
                             "(joint task + MLM training); give both (--recipe tlm --task T, or recipe: tlm and "
                             "task: T in --config) or neither")
        if self.recipe == "tlm" and self.reselect:
            raise ValueError("the tlm recipe trains on a retrieved subset (subsetlm retrieve); re-selection "
                             "(--reselect-every / --warmup-steps) does not apply")
        if self.subset and self.reselect:
            raise ValueError("--subset and re-selection (--reselect-every / --warmup-steps) exclude each other: "
                             "re-selection warms up on all data and selects its own subsets")


def run_identity(cfg: TrainRunConfig) -> dict[str, Any]:
    """What ``RUN/config.json`` holds: the config minus ``VOLATILE``, and minus :data:`TLM_FIELDS` unless tlm.

    Runs of other recipes finished before the tlm options existed stay comparable.
    """
    return identity(cfg, drop=() if cfg.recipe == "tlm" else TLM_FIELDS)


def _recorded(run: Path) -> Any:
    """The identity a run recorded: its ``config.json`` (None without one)."""
    f = Path(run) / runs.CONFIG
    return _io.read_json(f) if f.is_file() else None


def run_output(cfg: TrainRunConfig) -> Output:
    """The run directory as a stage output (written in place; ``config.json`` records its identity)."""
    from subsetlm._remote import is_url

    if is_url(cfg.out):  # checkpoints are written in place and reread on --resume: a local directory only
        raise ValueError(f"--out {cfg.out}: a training run is written in place (checkpoints, --resume), so it must "
                         f"be a local directory; copy the finished run to the URL afterwards (the subset and "
                         f"corpus may be URLs)")
    return Output(Path(cfg.out), run_identity(cfg), what="run", read_identity=_recorded, kind="inplace")


def _finished(cfg: TrainRunConfig, out: Output) -> bool:
    """True: RUN is finished with this config (skip). Refuses what may not be continued or replaced."""
    if out.up_to_date(cfg.force):  # raises for a finished run of another config (unless force)
        return True
    run = out.path
    if not run.exists() or cfg.force:
        return False
    if not run.is_dir():
        raise FileExistsError(f"{run} is a file, not a run directory; choose another --out or pass --force")
    have = out.recorded()
    if have is None:
        if any(run.iterdir()):
            raise FileExistsError(f"{run} exists but is not a run directory written by `subsetlm train` (no "
                                  f"{runs.CONFIG}); remove it, choose another --out, or pass --force to replace it")
    elif have != out.identity:
        raise ValueError(f"{run} holds an unfinished run with a different config ({diff(have, out.identity)}); "
                         f"resume with the same options or pass --force")
    elif not cfg.resume and any((run / "checkpoints").glob("step-*")):
        raise FileExistsError(f"{run} holds an unfinished run; pass --resume to continue it or --force "
                              f"to start over")
    return False


def train_run(cfg: TrainRunConfig, progress: bool = False, *, finish: Finish | None = None) -> Path:
    """Train the run ``cfg`` describes (or skip it when finished with this config); returns the run directory.

    ``finish(cfg, run, progress) -> dict`` runs on rank 0 after training, before
    ``results.json`` and ``_SUCCESS``; its keys are added to ``results.json``. The tlm
    recipe's stage 2 is such a step: it fine-tunes on the task (:mod:`subsetlm.evaluate`,
    a later stage), so a tlm run with ``stage2_seeds > 0`` goes through
    :func:`subsetlm.train.train_with_stage2`, which passes it.

    Raises ``FileExistsError`` / ``ValueError`` when ``cfg.out`` holds another run (see
    :func:`run_output`), ``ValueError`` for a config that cannot run.
    """
    from subsetlm.recipes.loop import _dist
    from subsetlm.recipes.presets import get_preset

    cfg.validate()
    if cfg.has_stage2 and finish is None:
        raise ValueError("the tlm recipe's stage 2 (fine-tuning on the task) is evaluation: run the train stage "
                         "subsetlm.train.train_with_stage2 (what `subsetlm train` runs), or pass "
                         "stage2_seeds=0 to train stage 1 only")
    preset = get_preset(cfg.preset)
    corpus = list(cfg.corpus or [])
    sub = None
    if cfg.subset:
        from subsetlm.subsets import read_subset

        sub = read_subset(cfg.subset, verify=cfg.verify)
        corpus = corpus or [p for p in [sub.store_path] if p]
    if not corpus and cfg.recipe == "biobert":
        corpus = ["pubmed"]
    if not corpus:
        raise ValueError("no training corpus: pass --corpus STORE_DIR (or corpus files / a source name such as pubmed)")
    rank, world = _dist()
    out = run_output(cfg)
    with contextlib.ExitStack() as stack:
        skip = False
        if rank == 0:
            skip = _finished(cfg, out)
            if not skip:  # rank 0 alone prepares RUN: kept (resume) or emptied, identity first
                run = stack.enter_context(out.writing(force=cfg.force, resume=not cfg.force))
                _io.write_json_atomic(run / runs.CONFIG, out.identity)
        if world > 1:  # torchrun: everyone follows rank 0's decision
            import torch.distributed as td

            flag = [skip]
            td.broadcast_object_list(flag, src=0)
            skip = flag[0]
        if skip:
            return out.path
        results = _train(cfg, out.path, corpus, sub, preset, rank, world, progress and rank == 0)
        if rank == 0:
            if finish is not None:
                results.update(finish(cfg, out.path, progress))
            _io.write_json_atomic(out.path / runs.RESULTS, results)
    # (rank 0: leaving ``writing`` wrote _SUCCESS)
    logger.info("trained %s (%s, %.2fM parameters) for %d steps -> %s", cfg.recipe, cfg.preset,
                results["parameters"] / 1e6, results["steps"], out.path)
    return out.path


def _train(cfg: TrainRunConfig, run: Path, corpus: list[str], sub: Any, preset: Any, rank: int, world: int,
           progress: bool) -> dict:
    """Load the data, build the recipe, train; returns the ``results.json`` dict (without ``finish``'s keys)."""
    from subsetlm.recipes.base import build_recipe
    from subsetlm.recipes.data import load_corpus
    from subsetlm.recipes.loop import TrainConfig, train

    t0 = time.perf_counter()
    data = load_corpus(corpus, text_field=cfg.text_field, id_field=cfg.id_field, limit=cfg.limit,
                       val_fraction=cfg.val_fraction, max_val=cfg.max_val, seed=cfg.seed, verify=cfg.verify)
    rows = weights = None
    if sub is not None:
        from subsetlm.subsets.format import check_against_store

        if data.store is not None:
            check_against_store(sub, data.store)
        elif int(sub.manifest.get("store", {}).get("dim") or 0) > 0:
            raise ValueError(f"--subset {cfg.subset} indexes the rows of an embedding store, but --corpus "
                             f"{', '.join(corpus)} is not a store; pass the store the subset was selected from "
                             f"({sub.manifest['store'].get('path')})")
        else:  # a subset of a plain corpus (BM25 retrieval): rows are its documents in reading order
            from subsetlm.corpus.rows import CorpusRows
            from subsetlm.subsets.format import SubsetStoreMismatch

            try:
                check_against_store(sub, CorpusRows.from_texts(data.texts, data.ids, spec=data.spec))
            except SubsetStoreMismatch as e:
                made = sub.manifest.get("config", {})
                raise SubsetStoreMismatch(
                    f"{e}. A subset of a plain corpus indexes its documents in reading order: train on the same "
                    f"files with the same --text-field/--id-field as the subset was made with (text_field="
                    f"{made.get('text_field')!r}, id_field={made.get('id_field')!r}; id_field None reads the "
                    f"records' own 'id' field when they have one: a subset made by an older subsetlm, which used "
                    f"content hashes then, needs --id-field @hash)") from None
        rows, weights = data.subset_rows(sub.indices, sub.weights)
    tok_dir = run / runs.TOKENIZER
    tokenizer = str(tok_dir) if (tok_dir / "tokenizer_config.json").is_file() else cfg.tokenizer
    extra, fit_rows = {}, data.train_rows
    if cfg.recipe == "tlm":
        from subsetlm.task import load_task

        task = load_task(cfg.task)
        extra = {"task": (task.train.texts, task.train.labels, task.labels), "rho1": cfg.rho1, "rho2": cfg.rho2}
        fit_rows = data.train_rows if rows is None else rows  # TLM's vocabulary: what it trains on
    recipe = build_recipe(cfg.recipe, [data.texts[i] for i in fit_rows], preset=preset, seq_len=cfg.seq_len,
                          tokenizer=tokenizer, init_from=cfg.init_from, seed=cfg.seed, n_clusters=cfg.n_clusters,
                          **extra)
    if world > 1:
        import torch.distributed as td

        td.barrier()  # every process has chosen its tokenizer before rank 0 writes one
    if rank == 0 and not (tok_dir / "tokenizer_config.json").is_file():
        recipe.save(tok_dir)
    steps = int(cfg.steps or preset.steps)
    tcfg = TrainConfig(out=str(run), steps=steps, batch_size=int(cfg.batch_size or preset.batch_size),
                       grad_accum=cfg.grad_accum, lr=float(cfg.lr or preset.lr),
                       warmup=float(preset.warmup if cfg.warmup is None else cfg.warmup), schedule=cfg.schedule,
                       seed=cfg.seed, device=cfg.device, precision=cfg.precision,
                       save_every=max(1, steps // 4) if cfg.save_every is None else cfg.save_every,
                       eval_every=max(1, steps // 4) if cfg.eval_every is None else cfg.eval_every,
                       eval_batches=cfg.eval_batches, log_every=cfg.log_every,
                       keep_checkpoints=cfg.keep_checkpoints, weighted=cfg.weighted)
    callbacks = []
    if cfg.reselect:
        from subsetlm.recipes.reselect import ReselectCallback, ReselectConfig

        callbacks.append(ReselectCallback(ReselectConfig(
            warmup_steps=int(cfg.warmup_steps if cfg.warmup_steps is not None else max(1, steps // 10)),
            every=int(cfg.reselect_every or 0), budget=cfg.reselect_budget, layer=cfg.layer,
            partitions=cfg.reselect_partitions, sampling=cfg.reselect_sampling, optimizer=cfg.reselect_optimizer,
            mode=cfg.reselect_mode, seed=cfg.seed)))
    res = train(recipe, data, tcfg, callbacks, rows=rows, weights=weights, resume=cfg.resume, progress=progress)
    n_params = int(sum(p.numel() for p in recipe.model.parameters()))
    return {"recipe": cfg.recipe, "preset": cfg.preset, "steps": res.state.step, "tokens": res.state.tokens_seen,
               "samples": res.state.samples_seen, "parameters": n_params,
               "train_rows": int(len(data.train_rows) if rows is None else len(rows)),
               "val_rows": int(len(data.val_rows)), "final_eval": res.final_eval,
               "flops_estimate": 6.0 * res.state.tokens_seen * n_params,
               "wall_s": round(time.perf_counter() - t0, 2), "subset": cfg.subset}


def summary(run: str | Path) -> str:
    """The line ``subsetlm train`` prints for the finished run ``run`` ("" on torchrun ranks other than 0)."""
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return ""
    run = Path(run)
    res = _io.read_json(run / runs.RESULTS)
    ev = ", ".join(f"{k}={v:.4g}" for k, v in res["final_eval"].items() if k != "val_targets")
    return (f"trained {res['recipe']} ({res['parameters'] / 1e6:.2f}M parameters) for {res['steps']} steps on "
            f"{res['train_rows']} rows: {ev}; model in {run / runs.MODEL}")
