"""TLM: task-driven language modelling from scratch (Yao et al., 2022), stage 1 joint training.

The model is BERT with two heads on one encoder: the MLM head and a classification head
on the ``[CLS]`` state. Batches alternate in a fixed cycle of ``ρ1 + 1``: one **task**
batch (labelled training examples of the task), then ``ρ1`` **external** batches (rows of
the retrieved subset of the general corpus). Losses:

    external batch:  L = MLM
    task batch:      L = (ρ2 · MLM + CE(task)) / (ρ2 + 1)

(one forward pass of the masked task sequence gives both terms). Defaults ρ1 = 3,
ρ2 = 20 come from the paper's grids (ρ1 ∈ {1, 3, 7, 19, 99, 499, 999, 1999}, ρ2 ∈ {20,
100, 1000}), at their small-data end, which suits short runs. Stage 2, fine-tuning on the
task alone with a fresh head, is ``subsetlm eval --method finetune`` on the run (``subsetlm
train --recipe tlm`` runs it at the end, see :mod:`subsetlm.recipes.run`).

``RUN/model`` holds the encoder + MLM head (``BertForMaskedLM.from_pretrained``-loadable)
and ``task_head.pt`` (the stage-1 classifier, kept for inspection; stage 2 starts afresh).

Example
-------
>>> r = build_recipe("tlm", texts, task=(task_texts, task_labels, ["a", "b"]))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from subsetlm.recipes.base import MLMRecipe, _bert_config, _tokenizer
from subsetlm.recipes.objectives import IGNORE
from subsetlm.recipes.data import BatchStream
from subsetlm.registry import register
from subsetlm.runs import model_dir

logger = logging.getLogger(__name__)


def tlm_loss(mlm: torch.Tensor, task: torch.Tensor | None, rho2: float) -> torch.Tensor:
    """``(ρ2 · mlm + task) / (ρ2 + 1)`` for a task batch; ``mlm`` alone for an external one (``task=None``)."""
    return mlm if task is None else (rho2 * mlm + task) / (rho2 + 1.0)


def is_task_batch(count: int, rho1: int) -> bool:
    """Batch ``count`` (0-based) of the stream is a task batch: the first of every cycle of ``ρ1 + 1``."""
    return count % (int(rho1) + 1) == 0


@dataclass
class TaskBatch:
    """Token rows of one batch, with ``labels`` (B,) for a task batch (``kind == "task"``) or None.

    Slicing (``batch[rank::world]``) slices rows and labels together, so DDP ranks split it.
    """

    kind: str
    seqs: list
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, sl: slice) -> "TaskBatch":
        return TaskBatch(self.kind, self.seqs[sl], None if self.labels is None else self.labels[sl])


class MixedStream:
    """``ρ1`` external batches per task batch; resumable like :class:`~.data.BatchStream`."""

    def __init__(self, external: BatchStream, task: BatchStream, labels: np.ndarray, rho1: int) -> None:
        self.external, self.task, self.labels, self.rho1 = external, task, np.asarray(labels), int(rho1)
        self.count = 0

    @property
    def epoch(self) -> int:
        return self.external.epoch

    def reset_iterator(self) -> None:
        self.external.reset_iterator()

    def next(self) -> TaskBatch:
        task = is_task_batch(self.count, self.rho1)
        self.count += 1
        if task:
            rows, seqs = self.task.next_rows()
            return TaskBatch("task", seqs, self.labels[rows])
        return TaskBatch("external", self.external.next())

    def state_dict(self) -> dict:
        return {"count": self.count, "external": self.external.state_dict(), "task": self.task.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.external.load_state_dict(state["external"])
        self.task.load_state_dict(state["task"])


class TLMModel(nn.Module):
    """BERT encoder with an MLM head (``mlm``: a ``BertForMaskedLM``) and a task head on ``[CLS]``."""

    def __init__(self, mlm: Any, n_labels: int, rho2: float, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlm, self.rho2 = mlm, float(rho2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(mlm.config.hidden_size), int(n_labels))

    @property
    def config(self) -> Any:
        return self.mlm.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                task_labels: torch.Tensor | None = None) -> SimpleNamespace:
        h = self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.mlm.cls(h)
        keep = labels != IGNORE
        mlm = nn.functional.cross_entropy(logits[keep].float(), labels[keep]) if keep.any() else logits.sum() * 0.0
        cls_logits = self.head(self.dropout(h[:, 0]))
        task = None if task_labels is None else nn.functional.cross_entropy(cls_logits.float(), task_labels)
        # the head takes part in every step's graph (0 × on external batches), so DDP syncs it each step
        loss = tlm_loss(mlm, task, self.rho2) + (0.0 * cls_logits.sum() if task is None else 0.0)
        return SimpleNamespace(loss=loss, logits=logits, mlm_loss=mlm, task_loss=task, task_logits=cls_logits)

    def save_pretrained(self, path: str | Path) -> None:
        self.mlm.save_pretrained(str(path))
        torch.save(self.head.state_dict(), Path(path) / "task_head.pt")
        (Path(path) / "tlm.json").write_text(json.dumps({"rho2": self.rho2, "n_labels": self.head.out_features}))


class TLMRecipe(MLMRecipe):
    """Stage 1 of TLM. ``task`` = (token rows, labels (T,) int, label names) of the task's train split."""

    name = "tlm"

    def __init__(self, tokenizer: Any, model: TLMModel, seq_len: int, *, task_tokens: Sequence[np.ndarray],
                 task_labels: np.ndarray, label_names: Sequence[str], rho1: int = 3, mask_prob: float = 0.15) -> None:
        super().__init__(tokenizer, model, seq_len, mask_prob=mask_prob)
        if rho1 < 0:
            raise ValueError(f"rho1={rho1}; expected >= 0 external batches per task batch (0 = task data only)")
        if len(task_tokens) == 0 or len(task_tokens) != len(task_labels):
            raise ValueError(f"TLM needs the task's labelled training examples: got {len(task_tokens)} texts and "
                             f"{len(task_labels)} labels")
        self.task_tokens, self.task_labels = list(task_tokens), np.asarray(task_labels, dtype=np.int64)
        self.label_names, self.rho1 = list(label_names), int(rho1)

    def make_stream(self, sampler: Any, get_tokens: Any, batch_size: int, seed: int) -> MixedStream:
        from subsetlm.subsets.sampler import SubsetSampler

        ext = BatchStream(sampler, get_tokens, batch_size)
        task_sampler = SubsetSampler(np.arange(len(self.task_tokens)), seed=seed + 7919)
        task = BatchStream(task_sampler, lambda rows: [self.task_tokens[r] for r in rows], batch_size)
        return MixedStream(ext, task, self.task_labels, self.rho1)

    def collate(self, seqs: Any, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if not isinstance(seqs, TaskBatch):  # validation rows: external (MLM-only) batches
            return super().collate(seqs, gen)
        batch = super().collate(seqs.seqs, gen)
        if seqs.labels is not None:
            batch["task_labels"] = torch.as_tensor(seqs.labels, dtype=torch.long)
        return batch

    def step_loss(self, model: Any, batch: dict[str, torch.Tensor], gen: torch.Generator,
                  device: Any) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.corrupt(batch, gen)
        tl = batch.get("task_labels")
        out = model(input_ids=c["inputs"].to(device), attention_mask=batch["attention_mask"].to(device),
                    labels=c["labels"].to(device), task_labels=None if tl is None else tl.to(device))
        stats: dict[str, float] = {"n_targets": int((c["labels"] != IGNORE).sum()), "mlm_loss": float(out.mlm_loss.detach())}
        if out.task_loss is not None:
            stats["task_loss"] = float(out.task_loss.detach())
            stats["task_accuracy"] = float((out.task_logits.argmax(-1).cpu() == tl).float().mean())
        return out.loss, stats

    def save(self, path: str | Path) -> None:
        super().save(path)
        (Path(path) / "labels.json").write_text(json.dumps(self.label_names))


@register("recipe", "tlm")
def _tlm(texts, *, preset, seq_len, tokenizer, init_from, seed, mask_prob, n_clusters, beta, task=None, rho1=3,
         rho2=20.0):
    from transformers import BertForMaskedLM

    if task is None:
        raise ValueError("the tlm recipe trains on a task jointly with the corpus: pass --task TASK.jsonl")
    task_texts, task_labels, names = task
    seq_len = int(seq_len or preset.seq_len)
    if init_from:
        d = model_dir(init_from)
        from subsetlm.recipes.tokenizer import load_tokenizer

        tok, mlm = load_tokenizer(d), BertForMaskedLM.from_pretrained(str(d), local_files_only=True)
    else:  # the vocabulary is fitted on what TLM trains on: the retrieved rows and the task's train texts
        tok = _tokenizer("bert", list(texts) + list(task_texts), preset, seq_len, tokenizer)
        torch.manual_seed(seed)
        mlm = BertForMaskedLM(_bert_config(tok, preset, seq_len))
    enc = tok(list(task_texts), add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    model = TLMModel(mlm, len(names), rho2)
    return TLMRecipe(tok, model, seq_len, task_tokens=[np.asarray(e, np.int32) for e in enc],
                     task_labels=np.asarray(task_labels), label_names=names, rho1=rho1, mask_prob=mask_prob)
