"""``subsetlm train``: corpus (+ subset) -> tokenizer -> model -> run directory.

Run directory ``RUN/``::

    config.json        the run config (what was asked; compared on --resume / re-runs)
    tokenizer/         the trained tokenizer (+ token_clusters.npy for crts)
    checkpoints/       step-NNNNNNN/state.pt (the newest ``keep_checkpoints``)
    metrics.jsonl      loss, lr, tokens/s per log step; val_loss / val_ppl per evaluation
    reselection/       rounds.jsonl and round-NNN/ subset files (INGENIOUS runs)
    model/             final model + tokenizer (``AutoModel*.from_pretrained``)
    results.json       final held-out metrics, steps, tokens, parameters, wall time
    _SUCCESS           written last

The tokenizer is trained on the training split of the corpus (every row outside the
fixed validation split, not only the subset), so full-data, random-subset and selected-
subset runs of one corpus share a vocabulary.

Example
-------
>>> train_run(TrainRunConfig(recipe="bert", corpus=["store/"], subset="subset/", out="runs/bert"))  # doctest: +SKIP
PosixPath('runs/bert')
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path


from subsetlm.recipes.base import RECIPES

log = logging.getLogger(__name__)

VOLATILE = ("resume", "force", "device", "progress")
TLM_FIELDS = ("task", "rho1", "rho2", "stage2_seeds", "stage2_steps", "stage2_lr")  # tlm only


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

    @property
    def reselect(self) -> bool:
        return self.reselect_every is not None or self.warmup_steps is not None

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of: {', '.join(RECIPES)}")
        if not self.out:
            raise ValueError("no run directory given: pass --out RUN")
        if (self.recipe == "tlm") != bool(self.task):
            raise ValueError("--task goes with --recipe tlm (joint task + MLM training): pass both or neither")
        if self.recipe == "tlm" and self.reselect:
            raise ValueError("the tlm recipe trains on a retrieved subset (subsetlm retrieve); re-selection "
                             "(--reselect-every / --warmup-steps) does not apply")
        if self.subset and self.reselect:
            raise ValueError("--subset and re-selection (--reselect-every / --warmup-steps) exclude each other: "
                             "re-selection warms up on all data and selects its own subsets")


def _portable(cfg: TrainRunConfig) -> dict:
    skip = VOLATILE + (TLM_FIELDS if cfg.recipe != "tlm" else ())  # what does not change a run is not its identity
    d = {k: v for k, v in asdict(cfg).items() if k not in skip}
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def _prepare_dir(cfg: TrainRunConfig) -> Path | None:
    """Create/validate RUN; returns RUN, or None when it is complete with the same config (skip)."""
    from subsetlm import _io

    run = Path(cfg.out)
    want = _portable(cfg)
    if run.exists() and cfg.force:
        shutil.rmtree(run)
    if run.exists():
        have = _io.read_json(run / "config.json") if (run / "config.json").is_file() else None
        if _io.is_complete(run):
            if have == want:
                log.info("run %s is complete with this config; skipping (pass --force to retrain)", run)
                return None
            raise FileExistsError(f"{run} holds a finished run with a different config; pass --force to replace it "
                                  f"or choose another --out")
        if have is not None and have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise ValueError(f"{run} holds an unfinished run with a different config (fields {', '.join(diff)}); "
                             f"resume with the same options or pass --force")
        if have is not None and not cfg.resume and any((run / "checkpoints").glob("step-*")):
            raise FileExistsError(f"{run} holds an unfinished run; pass --resume to continue it or --force "
                                  f"to start over")
    run.mkdir(parents=True, exist_ok=True)
    _io.write_json_atomic(run / "config.json", want)
    return run


def train_run(cfg: TrainRunConfig, progress: bool = False) -> Path:
    """Run ``subsetlm train`` end to end; returns the run directory."""
    from subsetlm import _io
    from subsetlm.recipes.base import build_recipe
    from subsetlm.recipes.data import load_corpus
    from subsetlm.recipes.loop import TrainConfig, _dist, train
    from subsetlm.recipes.presets import get_preset

    cfg.validate()
    preset = get_preset(cfg.preset)
    corpus = list(cfg.corpus or [])
    sub = None
    if cfg.subset:
        from subsetlm.subsets import read_subset

        sub = read_subset(cfg.subset)
        corpus = corpus or [sub.manifest["store"]["path"]]
    if not corpus and cfg.recipe == "biobert":
        corpus = ["pubmed"]
    if not corpus:
        raise ValueError("no training corpus: pass --corpus STORE_DIR (or corpus files / a source name such as pubmed)")
    rank, world = _dist()
    run = _prepare_dir(cfg) if rank == 0 else Path(cfg.out)
    if world > 1:  # torchrun: rank 0 prepared the directory; everyone follows its decision
        import torch.distributed as td

        flag = [run is None]
        td.broadcast_object_list(flag, src=0)
        run = None if flag[0] else Path(cfg.out)
    if run is None:
        return Path(cfg.out)
    t0 = time.perf_counter()
    data = load_corpus(corpus, text_field=cfg.text_field, id_field=cfg.id_field, limit=cfg.limit,
                       val_fraction=cfg.val_fraction, max_val=cfg.max_val, seed=cfg.seed)
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
                    f"{made.get('text_field')!r}, id_field={made.get('id_field')!r})") from None
        rows, weights = data.subset_rows(sub.indices, sub.weights)
    tok_dir = run / "tokenizer"
    tokenizer = str(tok_dir) if (tok_dir / "tokenizer_config.json").is_file() else cfg.tokenizer
    extra, fit_rows = {}, data.train_rows
    if cfg.recipe == "tlm":
        from subsetlm.evaluate.task import load_task

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
    results = {"recipe": cfg.recipe, "preset": cfg.preset, "steps": res.state.step, "tokens": res.state.tokens_seen,
               "samples": res.state.samples_seen, "parameters": n_params,
               "train_rows": int(len(data.train_rows) if rows is None else len(rows)),
               "val_rows": int(len(data.val_rows)), "final_eval": res.final_eval,
               "flops_estimate": 6.0 * res.state.tokens_seen * n_params,
               "wall_s": round(time.perf_counter() - t0, 2), "subset": cfg.subset}
    if cfg.recipe == "tlm" and cfg.stage2_seeds > 0 and rank == 0:
        results["stage2"] = _stage2(cfg, run, progress)
    if rank == 0:
        _io.write_json_atomic(run / "results.json", results)
        (run / _io.SUCCESS).write_text("")
    log.info("trained %s (%s, %.2fM parameters) for %d steps -> %s", cfg.recipe, cfg.preset, n_params / 1e6,
             res.state.step, run)
    return run


def _stage2(cfg: TrainRunConfig, run: Path, progress: bool) -> dict:
    """TLM stage 2: fine-tune the stage-1 encoder on the task alone with a fresh head (``RUN/stage2.json``)."""
    from subsetlm.evaluate.run import EvalConfig, evaluate_model

    ev = evaluate_model(EvalConfig(model=str(run), task=str(cfg.task), method="finetune", out=str(run / "stage2.json"),
                                   seeds=cfg.stage2_seeds, max_steps=cfg.stage2_steps, lr=cfg.stage2_lr,
                                   device=cfg.device), progress=progress)
    r = ev["results"]["all"]
    log.info("TLM stage 2 (fine-tuning, %d seed(s)): test macro-F1 %.4f ± %.4f, accuracy %.4f", cfg.stage2_seeds,
             r["macro_f1"]["mean"], r["macro_f1"]["std"], r["accuracy"]["mean"])
    return {"macro_f1": r["macro_f1"], "accuracy": r["accuracy"], "file": "stage2.json"}
