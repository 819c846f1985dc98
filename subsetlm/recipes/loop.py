"""The training loop shared by every recipe: ``train(recipe, data, config, callbacks=())``.

Runs on CPU, one GPU, or several under ``torchrun`` (DistributedDataParallel; every rank
builds the same global batch and trains on its slice, so the data order does not
depend on the number of processes). Mixed precision on GPU (bf16 autocast, or fp16 with
a gradient scaler), gradient accumulation, AdamW with linear warm-up then linear or
cosine decay, gradient clipping.

Checkpoints (``RUN/checkpoints/step-NNNNNNN/state.pt`` written to a temporary name and
renamed) hold the model, optimizer, scheduler, every RNG (python, numpy, torch, CUDA, the
corruption generator), the data stream (sampler epoch and position, active subset,
carried tokens), the recipe's state (the C-RTS count matrix) and each callback's state,
so a killed run resumed with ``resume=True`` ends with the same weights as an
uninterrupted one. ``RUN/metrics.jsonl`` gets one line per log step (loss, learning rate,
tokens/s) and per evaluation (held-out loss and perplexity on the fixed validation split).

Example
-------
>>> res = train(recipe, data, TrainConfig(out="runs/bert", steps=50))   # doctest: +SKIP
>>> res.state.step                                                     # doctest: +SKIP
50
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from subsetlm._device import resolve_device
from subsetlm.recipes.callbacks import Callback, CallbackList, Control, TrainContext, TrainState
from subsetlm.recipes.data import TrainData

logger = logging.getLogger(__name__)

SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings of one run (``None`` = the preset's value).

    steps : optimizer steps. batch_size : sequences per micro-batch (global, over all ranks).
    grad_accum : micro-batches per step. warmup : fraction of ``steps`` (< 1) or a step count.
    save_every / eval_every / log_every : 0 = only at the end (save, eval) / never (log).
    eval_batches : validation batches per evaluation (fixed, so evaluations compare).
    weighted : sample subset rows with probability proportional to their ``weight``.
    """

    out: str
    steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    schedule: str = "linear"
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    save_every: int = 100
    keep_checkpoints: int = 2
    eval_every: int = 0
    eval_batches: int = 20
    log_every: int = 10
    weighted: bool = False

    def validate(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected an integer >= 1")
        for name in ("save_every", "eval_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 0 (0 = off)")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr}; expected a positive learning rate")


@dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    final_eval: dict


# ---------------------------------------------------------------------------- helpers

def _dist() -> tuple[int, int]:
    """(rank, world size) under torchrun; initialises the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as td

    if not td.is_initialized():
        td.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return td.get_rank(), world


def _device(spec: str, rank: int) -> torch.device:
    """``resolve_device(spec)``; plain ``cuda`` becomes this process's GPU (``LOCAL_RANK`` under torchrun)."""
    spec = resolve_device(spec)
    if spec == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return torch.device(spec)


def _amp(precision: str, device: torch.device) -> tuple[bool, Any]:
    """(autocast on, dtype) for this precision and device."""
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return False, torch.float32
    return True, {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _schedule(cfg: TrainConfig) -> Any:
    warm = int(cfg.warmup * cfg.steps) if cfg.warmup < 1 else int(cfg.warmup)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        t = (step - warm) / max(1, cfg.steps - warm)
        return max(0.0, 1.0 - t) if cfg.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return f


def _optimizer(model: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in n or "ln_" in n else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel where torch has one (CPU and CUDA); the HF Trainer defaults to it too
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def _checkpoints(run: Path) -> list[Path]:
    d = run / "checkpoints"
    return sorted(p for p in d.glob("step-*") if (p / "state.pt").is_file() and not p.name.endswith(".tmp")) \
        if d.is_dir() else []


def _rng_state() -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _append_metrics(path: Path, rec: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec, sort_keys=True) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past ``step`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()
            and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")


# ---------------------------------------------------------------------------- evaluation

def evaluate(recipe: Any, data: TrainData, model: Any, device: torch.device, *, batch_size: int, n_batches: int,
             seed: int, amp: tuple[bool, Any] = (False, torch.float32)) -> dict:
    """Held-out loss on the fixed validation split (the same masks every time).

    Returns ``{"val_loss", "val_ppl", "val_targets"}`` (perplexity only for LM objectives;
    ``val_accuracy`` for RTS/C-RTS). Empty dict when there is no validation split.
    """
    rows = data.val_rows
    if len(rows) == 0:
        return {}
    toks = data.tokens(recipe.tokenizer, rows)
    if recipe.packed:
        eos = recipe.tokenizer.eos_token_id
        flat = np.concatenate([np.concatenate([t, [eos]]) for t in toks]).astype(np.int32)
        nseq = len(flat) // recipe.seq_len
        if nseq == 0:
            return {}
        seqs = list(flat[: nseq * recipe.seq_len].reshape(nseq, recipe.seq_len))
    else:
        seqs = toks
    gen = torch.Generator().manual_seed(10_000 + seed)
    was = model.training
    model.eval()
    tot, n, acc, nacc = 0.0, 0, 0.0, 0
    try:
        with torch.no_grad():
            for b in range(min(n_batches, math.ceil(len(seqs) / batch_size))):
                batch = recipe.collate(seqs[b * batch_size:(b + 1) * batch_size])
                with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
                    loss, stats = recipe.step_loss(model, batch, gen, device)
                k = stats["n_targets"]
                if k:
                    tot += float(loss) * k
                    n += k
                if "accuracy" in stats and stats["accuracy"] == stats["accuracy"]:
                    acc += stats["accuracy"] * k
                    nacc += k
    finally:
        model.train(was)
    if n == 0:
        return {}
    out = {"val_loss": tot / n, "val_targets": n}
    if nacc:
        out["val_accuracy"] = acc / nacc
    else:
        out["val_ppl"] = float(math.exp(min(tot / n, 50.0)))
    return out


# ---------------------------------------------------------------------------- the loop

def train(recipe: Any, data: TrainData, config: TrainConfig, callbacks: Sequence[Callback] = (), *,
          rows: np.ndarray | None = None, weights: np.ndarray | None = None, resume: bool = False,
          progress: bool = False) -> TrainResult:
    """Train ``recipe.model`` on ``data`` and write the run directory ``config.out``.

    Parameters
    ----------
    recipe : a :class:`~subsetlm.recipes.base.Recipe` (tokenizer, model, objective, collator).
    data : :class:`~subsetlm.recipes.data.TrainData`; training never reads ``data.val_rows``.
    config : :class:`TrainConfig`.
    callbacks : :class:`~subsetlm.recipes.callbacks.Callback` instances.
    rows, weights : the store rows to train on (a subset) and their weights; default all
        training rows, weight 1.
    resume : continue from the newest checkpoint in ``config.out`` (if any).

    Returns
    -------
    TrainResult
        ``run_dir``, final ``state``, ``final_eval`` (held-out metrics). The final model and
        tokenizer are in ``RUN/model`` (``from_pretrained``-loadable).
    """
    from subsetlm.subsets.sampler import SubsetSampler

    cfg = config
    cfg.validate()
    rank, world = _dist()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {world} torchrun processes")
    device = _device(cfg.device, rank)
    amp = _amp(cfg.precision, device)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    metrics_path = run / "metrics.jsonl"
    cbs = CallbackList(callbacks)

    if rows is None:
        rows, weights = data.train_rows, None
    else:
        rows, weights = data.subset_rows(rows, weights)
    sampler = SubsetSampler(np.asarray(rows), weights=weights, weighted=cfg.weighted, seed=cfg.seed)
    tok = recipe.tokenizer
    stream = recipe.make_stream(sampler, lambda r: data.tokens(tok, r), cfg.batch_size, cfg.seed)
    trunc = recipe.truncated_fraction(data.tokens(tok, rows[:2000]))
    if trunc > 0.05:
        logger.warning("%.0f%% of the training tokens lie outside one seq_len=%d window of their row; long rows "
                       "are cropped to a random window each time they are drawn. To train on every token each "
                       "epoch, embed shorter samples (subsetlm embed --max-tokens %d) or raise --seq-len",
                       100 * trunc, recipe.seq_len, recipe.seq_len - 2)

    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = recipe.model.to(device)
    model.train()
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=amp[0] and amp[1] == torch.float16)
    state = TrainState(max_steps=cfg.steps)
    ckpts = _checkpoints(run)
    if ckpts and not resume:
        raise FileExistsError(f"{run} already holds checkpoints (newest {ckpts[-1].name}); pass --resume to "
                              f"continue that run or --force to start over")
    if ckpts:
        st = torch.load(ckpts[-1] / "state.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        per_rank = st.get("per_rank", {})
        if world > 1 and len(per_rank.get("generator", [])) != world:
            raise ValueError(f"{ckpts[-1]} was written by {len(per_rank.get('generator', [1]))} process(es); resume "
                             f"with the same number of torchrun processes ({world} now)")
        gen.set_state(per_rank["generator"][rank] if world > 1 else st["generator"])
        stream.load_state_dict(st["stream"])
        recipe.load_state_dict(st["recipe"])
        cbs.load_state_dict(st["callbacks"])
        _set_rng_state(per_rank["rng"][rank] if world > 1 else st["rng"])
        state = TrainState.from_dict(st["state"])
        state.max_steps = cfg.steps
        _truncate_metrics(metrics_path, state.step)
        logger.info("resumed %s from %s (step %d)", run, ckpts[-1].name, state.step)
    elif metrics_path.exists() and rank == 0:
        metrics_path.unlink()
    ddp = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ctx = TrainContext(model=model, tokenizer=tok, recipe=recipe, data=data, config=cfg, run_dir=run, sampler=sampler)
    control = Control()

    def save_checkpoint() -> Path:
        dest = run / "checkpoints" / f"step-{state.step:07d}"
        gens, rngs = [gen.get_state()], [_rng_state()]
        if world > 1:  # each process's corruption and dropout randomness, so a resumed DDP run is exact too
            import torch.distributed as td

            gens, rngs = [None] * world, [None] * world
            td.all_gather_object(gens, gen.get_state())
            td.all_gather_object(rngs, _rng_state())
        if rank == 0:
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict(), "generator": gens[0], "stream": stream.state_dict(),
                        "recipe": recipe.state_dict(), "callbacks": cbs.state_dict(), "rng": rngs[0],
                        "per_rank": {"generator": gens, "rng": rngs}, "state": state.to_dict(),
                        "log_acc": [loss_acc, n_acc],  # the next logged loss averages from the last log, not the resume
                        "config": asdict(cfg)}, tmp / "state.pt")
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
            for old in _checkpoints(run)[:-cfg.keep_checkpoints] if cfg.keep_checkpoints else []:
                shutil.rmtree(old, ignore_errors=True)
        return dest

    def run_eval() -> dict:
        m = evaluate(recipe, data, model, device, batch_size=cfg.batch_size, n_batches=cfg.eval_batches,
                     seed=cfg.seed, amp=amp)
        if m and rank == 0:
            _append_metrics(metrics_path, {"step": state.step, "split": "val", **m})
            logger.info("step %d: %s", state.step, ", ".join(f"{k}={v:.4g}" for k, v in m.items()))
        state.last_eval = m
        cbs("on_evaluate", state, control, ctx, m)
        return m

    cbs("on_train_begin", state, control, ctx)
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=state.step, desc=f"train {recipe.name}", unit="step")
    t_log, tok_log, loss_acc, n_acc = time.perf_counter(), 0, 0.0, 0
    if ckpts:
        loss_acc, n_acc = st.get("log_acc", (0.0, 0))
    while state.step < cfg.steps and not control.should_stop:
        cbs("on_step_begin", state, control, ctx)
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            seqs = stream.next()
            batch = recipe.collate(seqs[rank::world], gen)
            with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
                loss, _stats = recipe.step_loss(ddp, batch, gen, device)
            scaler.scale(loss / cfg.grad_accum).backward()
            step_loss += float(loss.detach()) / cfg.grad_accum
            n_tok = int(batch["attention_mask"].sum()) * world
            tok_log += n_tok
            state.tokens_seen += n_tok
            state.samples_seen += len(seqs)
        if cfg.max_grad_norm:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
        state.step += 1
        state.epoch = stream.epoch
        state.last_loss = step_loss
        loss_acc, n_acc = loss_acc + step_loss, n_acc + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
        cbs("on_step_end", state, control, ctx)
        if control.new_subset is not None:
            new_rows, new_w = control.new_subset
            sampler.update(*data.subset_rows(new_rows, new_w), immediate=True)
            stream.reset_iterator()
        last = state.step >= cfg.steps or control.should_stop
        if (cfg.log_every and state.step % cfg.log_every == 0) or control.should_log or last:
            dt = time.perf_counter() - t_log
            logs = {"step": state.step, "loss": loss_acc / max(n_acc, 1), "lr": sched.get_last_lr()[0],
                    "tokens_per_s": tok_log / dt if dt > 0 else float("nan"), "tokens": state.tokens_seen,
                    "samples": state.samples_seen, "epoch": state.epoch}
            if rank == 0:
                _append_metrics(metrics_path, logs)
            cbs("on_log", state, control, ctx, logs)
            t_log, tok_log, loss_acc, n_acc = time.perf_counter(), 0, 0.0, 0
        if (cfg.eval_every and state.step % cfg.eval_every == 0 and not last) or control.should_evaluate:
            run_eval()
        if (cfg.save_every and state.step % cfg.save_every == 0) or control.should_save or last:
            path = save_checkpoint()
            cbs("on_save", state, control, ctx, path)
        control.reset()
    if bar is not None:
        bar.close()
    final = run_eval()
    if rank == 0:
        out = run / "model"
        tmp = run / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))
        recipe.save(tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    cbs("on_train_end", state, control, ctx)
    return TrainResult(run, state, final)
