"""Models for downstream evaluation, built on a pretrained run's ``model/`` folder.

* :class:`Classifier` — a backbone (``AutoModel``) + dropout + linear head over pooled
  hidden states: ``cls`` or ``mean`` for encoders, the last real token for GPT-2.
* :class:`PromptScorer` — prompt-based classification with the pretrained LM head: a cloze
  template whose ``{mask}`` slot is scored over one verbalizer token per label (the MLM head
  of BERT-family models at the [MASK] position; GPT-2's next-token distribution after the
  prompt), or over each label's whole name by the mean log-probability of its tokens. The
  label words are chosen by :mod:`subsetlm.evaluate.label_words`.
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
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from subsetlm.embed.hf import pool_hidden
from subsetlm.evaluate.label_words import LabelWords, choose_label_words
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


def _logits_at(lm: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
               cols: torch.Tensor) -> torch.Tensor:
    """The LM head's logits at ``(rows, cols)`` only, shape ``rows.shape + (V,)``.

    The head runs on the gathered hidden states (GPT-2 ``lm_head``, BERT ``cls``), not on every
    position: a (B, L, V) logits tensor for many label continuations would not fit.
    """
    head = getattr(lm, "lm_head", None)
    head = head if head is not None else getattr(lm, "cls", None)
    base = getattr(lm, getattr(lm, "base_model_prefix", ""), None)
    if head is None or base is None:
        return lm(input_ids=input_ids, attention_mask=attention_mask).logits[rows, cols]
    h = base(input_ids=input_ids, attention_mask=attention_mask)[0]  # (B, L, H)
    return head(h[rows, cols])


class PromptScorer(nn.Module):
    """Cloze-template classifier scored by the pretrained LM head.

    Parameters
    ----------
    lm : ``BertForMaskedLM``-like (encoders) or ``GPT2LMHeadModel`` (causal).
    template : contains ``{text}`` then ``{mask}``; for GPT-2 ``{mask}`` must end it (the
        next token is scored). Default :data:`DEFAULT_TEMPLATES`.
    verbalizer : ``{label: word}`` for the labels it names (``--verbalizer``); single-token
        modes need each word to be one token of the vocabulary (GPT-2: with its leading
        space), distinct per label; ``multi-token`` takes any phrase.
    label_words : how the other labels get theirs: ``auto`` | ``name`` | ``search`` |
        ``multi-token`` (:mod:`subsetlm.evaluate.label_words`).
    train_texts, train_labels : the training set a ``search`` looks at (label indices).

    ``forward`` returns (B, C) scores: single-token modes, the LM logit of each label's word
    at the ``{mask}`` position; ``multi-token``, the mean log-probability of each label's
    tokens (encoders: one ``[MASK]`` per token, filled at once; GPT-2: the label as the
    prompt's continuation). ``label_words`` holds the choice (:class:`LabelWords`).
    """

    def __init__(self, lm: Any, tokenizer: Any, labels: Sequence[str], template: str | None = None,
                 verbalizer: dict[str, str] | None = None, label_words: str = "auto",
                 train_texts: Sequence[str] | None = None, train_labels: Any = None, device: str = "cpu") -> None:
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
        self.max_length = _max_len(lm.config, tokenizer)
        self.template = template
        self.multi_token = False
        choice = choose_label_words(self, labels, verbalizer, label_words, train_texts, train_labels, device=device)
        self._set_words([str(lab) for lab in labels], choice)

    def _set_words(self, labels: list[str], choice: LabelWords) -> None:
        self.label_words = choice
        self.verbalizer = {lab: choice.words[lab] for lab in labels}
        seqs = [self.tokens_of(choice.words[lab]) for lab in labels]
        self.multi_token = choice.method == "multi-token"
        if not self.multi_token:
            assert all(len(s) == 1 for s in seqs) and len({s[0] for s in seqs}) == len(seqs), seqs
            self.register_buffer("label_ids", torch.tensor([s[0] for s in seqs], dtype=torch.long), persistent=False)
            return
        K = max(len(s) for s in seqs)
        toks = torch.zeros((len(seqs), K), dtype=torch.long)
        for c, s in enumerate(seqs):
            toks[c, : len(s)] = torch.tensor(s)
        self.lengths = sorted({len(s) for s in seqs})  # MLM: one input per distinct label length
        self.register_buffer("label_tokens", toks, persistent=False)  # (C, K), 0-padded
        self.register_buffer("label_len", torch.tensor([len(s) for s in seqs], dtype=torch.long), persistent=False)
        self.register_buffer("label_group", torch.tensor([self.lengths.index(len(s)) for s in seqs]),
                             persistent=False)

    def tokens_of(self, word: str) -> list[int]:
        """The token ids of a label word as it follows the template (GPT-2: after a space)."""
        return self.tokenizer((" " + word) if self.causal else word, add_special_tokens=False)["input_ids"]

    def token_of(self, word: str) -> int | None:
        """The id of ``word`` when it is exactly one (known) token, else None."""
        t = self.tokens_of(word)
        return t[0] if len(t) == 1 and t[0] != self.tokenizer.unk_token_id else None

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

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer
        L = max(len(s) for s in seqs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.full((len(seqs), L), int(pad), dtype=torch.long)
        att = torch.zeros((len(seqs), L), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            att[i, : len(s)] = 1
        return ids, att

    def encode(self, texts: Sequence[str], single: bool = False) -> dict[str, torch.Tensor]:
        """Model inputs for ``texts``; ``positions`` (B,) is where the ``{mask}`` slot starts.

        Single-token modes (or ``single``): one row per text. ``multi-token``: GPT-2, one row
        per (text, label) with the label's tokens in the slot; encoders, one row per (text,
        distinct label length) with that many ``[MASK]`` tokens.
        """
        tok = self.tokenizer
        multi = self.multi_token and not single
        special = [] if self.causal else [tok.cls_token_id]
        end = [] if self.causal else [tok.sep_token_id]
        slot = int(self.label_tokens.shape[1]) if multi else (0 if self.causal else 1)
        fixed = len(special) + len(self.head_ids) + len(self.mid_ids) + slot + len(self.tail_ids) + len(end)
        budget = self.max_length - fixed
        if budget < 1:
            raise ValueError(f"template {self.template!r} leaves no room for the text in {self.max_length} tokens")
        bodies = tok(list(texts), add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]
        seqs, pos = [], []
        for b in bodies:
            s = special + self.head_ids + list(b) + self.mid_ids
            if not multi:
                pos.append(len(s) if not self.causal else len(s) - 1)
                seqs.append(s + ([] if self.causal else [tok.mask_token_id]) + self.tail_ids + end)
            elif self.causal:
                pos.append(len(s))
                seqs += [s + t[:n] for t, n in zip(self.label_tokens.tolist(), self.label_len.tolist())]
            else:
                pos.append(len(s))
                seqs += [s + [tok.mask_token_id] * n + self.tail_ids + end for n in self.lengths]
        ids, att = self._pad(seqs)
        return {"input_ids": ids, "attention_mask": att, "positions": torch.tensor(pos, dtype=torch.long)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if not self.multi_token:  # the head at the prompt position only, not a (B, L, V) tensor
            rows = torch.arange(len(positions), device=input_ids.device)
            return _logits_at(self.lm, input_ids, attention_mask, rows, positions)[:, self.label_ids]
        B, (C, K) = len(positions), self.label_tokens.shape
        dev = input_ids.device
        per = len(input_ids) // B  # rows per text: C (GPT-2) or the distinct label lengths (encoders)
        rows = torch.arange(len(input_ids), device=dev)[:, None].expand(-1, K)  # (B*per, K)
        first = positions.repeat_interleave(per)[:, None] - (1 if self.causal else 0)  # GPT-2: token t predicted at t-1
        cols = first + torch.arange(K, device=dev)  # (B*per, K)
        logp = torch.log_softmax(_logits_at(self.lm, input_ids, attention_mask, rows, cols).float(), -1)  # (B*per, K, V)
        if self.causal:
            r = torch.arange(B * C, device=dev).view(B, C)
        else:
            r = torch.arange(B, device=dev)[:, None] * per + self.label_group[None, :]  # (B, C)
        lp = logp[r[:, :, None], torch.arange(K, device=dev)[None, None, :], self.label_tokens[None]]  # (B, C, K)
        mask = (torch.arange(K, device=dev)[None, :] < self.label_len[:, None]).float()  # (C, K)
        return (lp * mask).sum(-1) / self.label_len.float()  # (B, C) mean log-probability per label

    def prompt_log_probs(self, texts: Sequence[str], device: str = "cpu") -> torch.Tensor:
        """(n, V) log-probabilities of the vocabulary at the ``{mask}`` slot (eval mode, no gradients)."""
        was = self.training
        self.eval()
        self.lm.to(device)
        try:
            with torch.no_grad():
                enc = {k: v.to(device) for k, v in self.encode(texts, single=True).items()}
                p = enc["positions"]
                rows = torch.arange(len(p), device=device)
                at = _logits_at(self.lm, enc["input_ids"], enc["attention_mask"], rows, p)  # (n, V)
                return torch.log_softmax(at.float(), dim=-1)
        finally:
            self.train(was)


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
