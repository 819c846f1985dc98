"""Models for downstream evaluation, built on a pretrained run's ``model/`` folder.

* :class:`Classifier` — a backbone (``AutoModel``) + dropout + linear head over pooled
  hidden states: ``cls`` or ``mean`` for encoders, the last real token for GPT-2.
* :class:`PromptScorer` — prompt-based classification with the pretrained LM head: a cloze
  template whose ``{mask}`` slot is scored over one verbalizer token per label (the MLM head
  of BERT-family models at the [MASK] position; GPT-2's next-token distribution after the
  prompt).
* :func:`half_depth_student` — a smaller student for distillation: the backbone with every
  other layer (DistilBERT-style initialisation from the teacher's own weights).

Example
-------
>>> clf = Classifier.from_run("runs/bert", n_labels=4, pooling="cls")   # doctest: +SKIP
>>> clf(**clf.encode(["an abstract"])).shape                            # doctest: +SKIP
torch.Size([1, 4])
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from subsetlm.embed.hf import pool_hidden
from subsetlm.runs import model_dir

logger = logging.getLogger(__name__)


def _is_causal(config: Any) -> bool:
    return getattr(config, "model_type", "") == "gpt2"


def _max_len(config: Any, tokenizer: Any) -> int:
    cands = [getattr(config, "max_position_embeddings", None), getattr(config, "n_positions", None),
             getattr(tokenizer, "model_max_length", None)]
    return min(int(c) for c in cands if c and int(c) < 1_000_000)


class Classifier(nn.Module):
    """Backbone + linear head. ``forward(input_ids, attention_mask) -> (B, n_labels)`` logits."""

    def __init__(self, backbone: Any, tokenizer: Any, n_labels: int, pooling: str = "auto",
                 dropout: float = 0.1) -> None:
        super().__init__()
        causal = _is_causal(backbone.config)
        self.pooling = ("last" if causal else "cls") if pooling == "auto" else pooling
        if causal and self.pooling != "last":
            raise ValueError(f"pooling={pooling!r} for a GPT-2 model; a causal model's summary is its last real "
                             f"token: use pooling='last' (or auto)")
        self.backbone, self.tokenizer = backbone, tokenizer
        hidden = int(getattr(backbone.config, "hidden_size", None) or backbone.config.n_embd)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_labels)
        self.max_length = _max_len(backbone.config, tokenizer)

    @classmethod
    def from_run(cls, run: str | Path, n_labels: int, pooling: str = "auto", **kw: Any) -> "Classifier":
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        d = model_dir(run)
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        extra = {"add_pooling_layer": False} if not _is_causal(AutoConfig.from_pretrained(str(d))) else {}
        backbone = AutoModel.from_pretrained(str(d), local_files_only=True, **extra)  # our own pooling + head
        return cls(backbone, tok, n_labels, pooling, **kw)

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                             return_tensors="pt", return_token_type_ids=False)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(pool_hidden(h, attention_mask, self.pooling)))


DEFAULT_TEMPLATES = {"encoder": "{text} Topic: {mask}.", "causal": "{text} Topic:{mask}"}


def default_verbalizer(labels: Sequence[str]) -> dict[str, str]:
    """One word per label: the first word of the label name (``case_report`` -> ``case``)."""
    return {lab: re.split(r"[_\s\-/]+", str(lab).strip())[0].lower() or str(lab) for lab in labels}


class PromptScorer(nn.Module):
    """Cloze-template classifier scored by the pretrained LM head.

    Parameters
    ----------
    lm : ``BertForMaskedLM``-like (encoders) or ``GPT2LMHeadModel`` (causal).
    template : contains ``{text}`` then ``{mask}``; for GPT-2 ``{mask}`` must end it (the
        next token is scored). Default :data:`DEFAULT_TEMPLATES`.
    verbalizer : ``{label: word}``; every word must be one token of the vocabulary (GPT-2:
        with its leading space), distinct per label.
    """

    def __init__(self, lm: Any, tokenizer: Any, labels: Sequence[str], template: str | None = None,
                 verbalizer: dict[str, str] | None = None) -> None:
        super().__init__()
        self.lm, self.tokenizer = lm, tokenizer
        self.causal = _is_causal(lm.config)
        template = template or DEFAULT_TEMPLATES["causal" if self.causal else "encoder"]
        if "{text}" not in template or "{mask}" not in template or template.index("{text}") > template.index("{mask}"):
            raise ValueError(f"template {template!r}: expected '{{text}}' followed by '{{mask}}', e.g. "
                             f"{DEFAULT_TEMPLATES['encoder']!r}")
        if self.causal and not template.rstrip().endswith("{mask}"):
            raise ValueError(f"template {template!r}: a GPT-2 prompt must end with '{{mask}}' (the next token is scored)")
        head, rest = template.split("{text}", 1)
        mid, tail = rest.split("{mask}", 1)
        def enc(s: str) -> list[int]:
            return tokenizer(s, add_special_tokens=False)["input_ids"] if s else []

        self.head_ids, self.mid_ids, self.tail_ids = enc(head), enc(mid), enc(tail)
        verbalizer = verbalizer or default_verbalizer(labels)
        missing = [lab for lab in labels if lab not in verbalizer]
        if missing:
            raise ValueError(f"verbalizer has no word for labels {missing}; pass one word per label")
        ids = []
        for lab in labels:
            word = verbalizer[lab]
            t = tokenizer((" " + word) if self.causal else word, add_special_tokens=False)["input_ids"]
            if len(t) != 1 or t[0] == tokenizer.unk_token_id and not self.causal:
                raise ValueError(f"verbalizer word {word!r} for label {lab!r} is {len(t)} tokens of this vocabulary "
                                 f"({tokenizer.convert_ids_to_tokens(t)}); choose a word that is one token, e.g. "
                                 f"with --verbalizer {lab}=WORD")
            ids.append(t[0])
        if len(set(ids)) != len(ids):
            raise ValueError(f"verbalizer words {verbalizer} map two labels to the same token; make them distinct")
        self.verbalizer = {lab: verbalizer[lab] for lab in labels}
        self.register_buffer("label_ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        self.max_length = _max_len(lm.config, tokenizer)
        self.template = template

    @classmethod
    def from_run(cls, run: str | Path, labels: Sequence[str], **kw: Any) -> "PromptScorer":
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

        d = model_dir(run)
        config = AutoConfig.from_pretrained(str(d), local_files_only=True)
        arch = (config.architectures or [""])[0]
        if not _is_causal(config) and "MaskedLM" not in arch:
            raise ValueError(f"{run}: a {arch or config.model_type} has no MLM head to score a cloze prompt (RTS / "
                             f"C-RTS models have a 2-way token head); use --method finetune for it")
        auto = AutoModelForCausalLM if _is_causal(config) else AutoModelForMaskedLM
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        return cls(auto.from_pretrained(str(d), local_files_only=True), tok, labels, **kw)

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        special = [] if self.causal else [tok.cls_token_id]
        end = [] if self.causal else [tok.sep_token_id]
        mask = [] if self.causal else [tok.mask_token_id]
        fixed = len(special) + len(self.head_ids) + len(self.mid_ids) + len(mask) + len(self.tail_ids) + len(end)
        budget = self.max_length - fixed
        if budget < 1:
            raise ValueError(f"template {self.template!r} leaves no room for the text in {self.max_length} tokens")
        bodies = tok(list(texts), add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]
        seqs, pos = [], []
        for b in bodies:
            s = special + self.head_ids + list(b) + self.mid_ids
            pos.append(len(s) if not self.causal else len(s) - 1)
            seqs.append(s + mask + self.tail_ids + end)
        L = max(len(s) for s in seqs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.full((len(seqs), L), int(pad), dtype=torch.long)
        att = torch.zeros((len(seqs), L), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            att[i, : len(s)] = 1
        return {"input_ids": ids, "attention_mask": att, "positions": torch.tensor(pos, dtype=torch.long)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
        at = logits[torch.arange(len(positions), device=logits.device), positions]  # (B, V)
        return at[:, self.label_ids]


def half_depth_student(classifier: Classifier, n_labels: int) -> Classifier:
    """A :class:`Classifier` whose backbone keeps every other layer of ``classifier``'s (at least one).

    The student starts from the teacher's own pretrained weights (embeddings and the kept
    layers), as DistilBERT does; its head is new.
    """
    bb = copy.deepcopy(classifier.backbone)
    cfg = bb.config
    if _is_causal(cfg):
        blocks = bb.h
        keep = nn.ModuleList([blocks[i] for i in range(0, len(blocks), 2)])
        bb.h, cfg.n_layer = keep, len(keep)
    else:
        layers = bb.encoder.layer
        keep = nn.ModuleList([layers[i] for i in range(0, len(layers), 2)])
        bb.encoder.layer, cfg.num_hidden_layers = keep, len(keep)
    for i, layer in enumerate(keep):  # renumber cache slots of the kept layers
        for mod in layer.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = i
    cfg.use_cache = False
    return Classifier(bb, classifier.tokenizer, n_labels, classifier.pooling)


def n_parameters(m: nn.Module) -> int:
    return int(sum(p.numel() for p in m.parameters()))
