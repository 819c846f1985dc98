"""The three adaptation procedures, on one training loop: fine-tuning, prompting, distillation.

:func:`fit` trains any module that maps an encoded batch to ``(B, C)`` logits, with AdamW,
linear warm-up and decay, and keeps the weights of the evaluation with the best
validation macro-F1 (model selection on the validation split only; the test split is
scored once, at the end). Its loss is cross-entropy on labelled examples, plus — for
distillation — :func:`kd_loss` against a teacher's logits, on labelled and unlabelled text.

Distillation loss (Hinton et al.): with temperature T and mix α,

    L = mean_i [ α · T² · KL(softmax(t_i / T) ‖ softmax(s_i / T)) + (1 − α) · CE(s_i, y_i) · [i labelled] ]

Example
-------
>>> import torch
>>> float(kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), T=2.0, alpha=0.5))  # 0.5·log 2
0.34657359...
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """Optimisation of one adaptation run.

    steps : ``min(max_steps, max(min_steps, epochs * ceil(n / batch_size)))``.
    evals : validation evaluations per run (the best one is kept).
    balanced : draw training batches class-balanced (each label equally likely, with
        replacement; unlabelled texts as one more group) instead of shuffled epochs — for
        skewed tasks scored by macro-F1.
    """

    lr: float = 3e-4
    batch_size: int = 16
    epochs: int = 10
    min_steps: int = 50
    max_steps: int = 400
    evals: int = 5
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_val: int = 500
    device: str = "cpu"
    temperature: float = 2.0
    alpha: float = 0.5
    balanced: bool = False


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *, T: float = 2.0,
            alpha: float = 0.5) -> torch.Tensor:
    """Distillation loss (module docstring); ``labels`` -1 marks unlabelled examples (KD term only)."""
    if T <= 0:
        raise ValueError(f"temperature T={T}; expected > 0 (2.0 is common)")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha}; expected a mix in [0, 1]")
    log_ps = F.log_softmax(student / T, dim=-1)
    pt = F.softmax(teacher / T, dim=-1)
    kl = (pt * (torch.log(pt.clamp_min(1e-12)) - log_ps)).sum(-1) * (T * T)
    lab = labels >= 0
    ce = torch.zeros_like(kl)
    if lab.any():
        ce[lab] = F.cross_entropy(student[lab], labels[lab], reduction="none")
    return (alpha * kl + (1 - alpha) * ce * lab.float()).mean()


def metrics(y: np.ndarray, pred: np.ndarray, n_labels: int) -> dict:
    from sklearn.metrics import f1_score

    return {"accuracy": float((y == pred).mean()) if len(y) else float("nan"),
            "macro_f1": float(f1_score(y, pred, average="macro", labels=list(range(n_labels)), zero_division=0))}


def predict_logits(model: Any, texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """(n, C) float32 logits of ``model`` on ``texts`` (eval mode, no gradients)."""
    was = model.training
    model.eval()
    out: np.ndarray | None = None
    try:
        with torch.no_grad():
            order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch: less padding
            for s in range(0, len(texts), batch_size):
                idx = order[s:s + batch_size]
                enc = {k: v.to(device) for k, v in model.encode([texts[i] for i in idx]).items()}
                lg = model(**enc).float().cpu().numpy()
                if out is None:
                    out = np.zeros((len(texts), lg.shape[1]), dtype=np.float32)
                out[idx] = lg
    finally:
        model.train(was)
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def fit(model: Any, texts: Sequence[str], labels: np.ndarray, val_texts: Sequence[str], val_labels: np.ndarray,
        n_labels: int, cfg: FitConfig, seed: int, *, teacher_logits: np.ndarray | None = None) -> dict:
    """Train ``model`` in place; restore its best-validation weights. Returns a small log.

    ``labels`` -1 marks unlabelled texts (only with ``teacher_logits``, one row per text).
    """
    n = len(texts)
    if n == 0:
        raise ValueError("no training examples")
    if teacher_logits is not None and len(teacher_logits) != n:
        raise ValueError(f"{len(teacher_logits)} teacher rows for {n} texts")
    dev = torch.device(cfg.device)
    model.to(dev).train()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    steps = int(min(cfg.max_steps, max(cfg.min_steps, cfg.epochs * math.ceil(n / cfg.batch_size))))
    decay = [p for nm, p in model.named_parameters() if p.ndim >= 2]
    other = [p for nm, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other,
                                                                                 "weight_decay": 0.0}], lr=cfg.lr)
    warm = max(1, int(cfg.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    vt, vy = list(val_texts)[: cfg.max_val], np.asarray(val_labels)[: cfg.max_val]
    every = max(1, steps // max(1, cfg.evals))
    best, best_state, history = -1.0, None, []
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    t_all = None if teacher_logits is None else torch.as_tensor(teacher_logits, dtype=torch.float32)
    perm, pos = torch.randperm(n, generator=g), 0
    if cfg.balanced:
        groups = np.asarray(labels)
        uniq, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
        draw_w = torch.as_tensor(1.0 / counts[inv], dtype=torch.float64)
    for step in range(1, steps + 1):
        if cfg.balanced:
            idx = torch.multinomial(draw_w, min(cfg.batch_size, n), replacement=True, generator=g)
        else:
            if pos + cfg.batch_size > n and pos > 0:
                perm, pos = torch.randperm(n, generator=g), 0
            idx = perm[pos:pos + cfg.batch_size]
            pos += cfg.batch_size
        enc = {k: v.to(dev) for k, v in model.encode([texts[int(i)] for i in idx]).items()}
        logits = model(**enc)
        y = y_all[idx].to(dev)
        if t_all is None:
            loss = F.cross_entropy(logits, y)
        else:
            loss = kd_loss(logits, t_all[idx].to(dev), y, T=cfg.temperature, alpha=cfg.alpha)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % every == 0 or step == steps:
            if len(vt):
                m = metrics(vy, predict_logits(model, vt, device=cfg.device).argmax(1), n_labels)
                history.append({"step": step, "loss": float(loss.detach()), **m})
                if m["macro_f1"] > best:
                    best, best_state = m["macro_f1"], copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"steps": steps, "best_val_macro_f1": best, "history": history}
