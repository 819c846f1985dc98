"""Recipes: tokenizer + model config + objective + collator, registered by name.

=========  ============================  ====================================================
name       model (``transformers``)      objective
=========  ============================  ====================================================
bert       ``BertForMaskedLM``           MLM: 15% selected, 80/10/10
biobert    ``BertForMaskedLM``           MLM on a biomedical corpus (default ``pubmed``), from
                                         scratch or continued from a ``bert`` run (``init_from``)
gpt2       ``GPT2LMHeadModel``           causal LM on packed sequences
slm        ``BertForMaskedLM``           swapped LM: selected tokens all replaced by random ones
rts        ``BertForTokenClassification`` random token substitution, 2-way head on every token
crts       ``BertForTokenClassification`` cluster-based RTS (:class:`~.objectives.ClusterGenerator`)
tlm        ``BertForMaskedLM`` + task    TLM stage 1: retrieved rows (MLM) interleaved with task
           head (:mod:`~.tlm`)           batches ((ρ2·MLM + CE) / (ρ2 + 1)), ρ1 external per task
=========  ============================  ====================================================

A recipe object owns the tokenizer and the model and knows how to turn token-id rows into
a batch (:meth:`Recipe.collate`) and a batch into a loss (:meth:`Recipe.step_loss`). The
training loop (:func:`subsetlm.recipes.loop.train`) is the same for all of them.

Example
-------
>>> r = build_recipe("bert", ["the cell divides", "the cell grows"] * 30, preset="tiny")  # doctest: +SKIP
>>> r.model.num_parameters() > 0                                                        # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from subsetlm.recipes import objectives as obj
from subsetlm.recipes.presets import Preset, get_preset
from subsetlm.recipes.tokenizer import load_tokenizer, special_ids, train_byte_bpe, train_wordpiece
from subsetlm.registry import get, names, register
from subsetlm.runs import model_dir

logger = logging.getLogger(__name__)

RECIPES = ("bert", "biobert", "gpt2", "slm", "rts", "crts", "tlm")


class Recipe:
    """Base class. Subclasses set ``name``, ``family`` ("encoder" | "causal"), ``packed``.

    Attributes
    ----------
    tokenizer : a ``PreTrainedTokenizerFast``.
    model : a ``transformers`` model (``save_pretrained``-able).
    seq_len : tokens per sequence (special tokens included).
    pooling : how the re-selection callback pools hidden states ("mean" or "last").
    """

    name = "base"
    family = "encoder"
    packed = False
    pooling = "mean"

    def __init__(self, tokenizer: Any, model: Any, seq_len: int, *, mask_prob: float = 0.15) -> None:
        self.tokenizer, self.model, self.seq_len, self.mask_prob = tokenizer, model, int(seq_len), float(mask_prob)
        self.special = torch.tensor(special_ids(tokenizer), dtype=torch.long)
        vocab = int(model.config.vocab_size)
        normal = np.setdiff1d(np.arange(len(tokenizer)), self.special.numpy())
        self.normal_ids = torch.as_tensor(normal[normal < vocab], dtype=torch.long)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    # ---------------------------------------------------------------- batches
    def collate(self, seqs: Sequence[np.ndarray], gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Rows of token ids -> ``input_ids``, ``attention_mask`` (B, L), ``special`` and ``pad`` masks.

        Encoders: ``[CLS] window [SEP]``, padded on the right to the longest row. A row longer
        than ``seq_len - 2`` tokens is cropped: to a window starting at a position drawn from
        ``gen`` (training: every epoch sees another part of a long row), or to its first
        ``seq_len - 2`` tokens without ``gen`` (evaluation: the same window every time).
        """
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        w = self.seq_len - 2
        body = []
        for s in seqs:
            start = 0
            if gen is not None and len(s) > w:
                start = int(torch.randint(0, len(s) - w + 1, (1,), generator=gen))
            body.append(np.asarray(s[start:start + w], dtype=np.int64))
        L = max(len(b) for b in body) + 2
        ids = np.full((len(body), L), self.pad_id, dtype=np.int64)
        att = np.zeros((len(body), L), dtype=np.int64)
        for i, b in enumerate(body):
            ids[i, : len(b) + 2] = np.concatenate([[cls_id], b, [sep_id]])
            att[i, : len(b) + 2] = 1
        input_ids, attention = torch.from_numpy(ids), torch.from_numpy(att)
        pad = attention == 0
        special = torch.isin(input_ids, self.special) | pad
        return {"input_ids": input_ids, "attention_mask": attention, "special": special, "pad": pad}

    def truncated_fraction(self, seqs: Sequence[np.ndarray]) -> float:
        """Share of the rows' tokens that lie outside any one window of :meth:`collate`."""
        total = sum(len(s) for s in seqs)
        kept = sum(min(len(s), self.seq_len - 2) for s in seqs)
        return 0.0 if total == 0 else 1.0 - kept / total

    def make_stream(self, sampler: Any, get_tokens: Any, batch_size: int, seed: int) -> Any:
        """The loop's batch stream over ``sampler``'s rows (TLM mixes in task batches)."""
        from subsetlm.recipes.data import BatchStream

        return BatchStream(sampler, get_tokens, batch_size, packed=self.packed, seq_len=self.seq_len,
                           sep_id=self.tokenizer.eos_token_id if self.packed else None)

    # ---------------------------------------------------------------- objective
    def corrupt(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, Any]:
        """Inputs and labels of the objective (CPU tensors)."""
        raise NotImplementedError

    def step_loss(self, model: Any, batch: dict[str, torch.Tensor], gen: torch.Generator,
                  device: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Corrupt ``batch``, run ``model``, return ``(loss, stats)``; stats has ``n_targets``."""
        c = self.corrupt(batch, gen)
        out = model(input_ids=c["inputs"].to(device), attention_mask=batch["attention_mask"].to(device),
                    labels=c["labels"].to(device))
        n = int((c["labels"] != obj.IGNORE).sum())
        stats = {"n_targets": n}
        self.after_forward(out, c, stats)
        return out.loss, stats

    def after_forward(self, out: Any, corrupted: dict, stats: dict) -> None:
        """Hook for objectives that learn from the model's predictions (C-RTS)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def save(self, path: str | Path) -> None:
        """Save the tokenizer (and any recipe files such as the C-RTS cluster map) to ``path``."""
        self.tokenizer.save_pretrained(str(path))
        _drop_load_flags(Path(path) / "tokenizer_config.json")


class MLMRecipe(Recipe):
    name = "bert"

    def corrupt(self, batch, gen):
        inputs, labels = obj.mlm_corrupt(batch["input_ids"], batch["special"], mask_id=self.tokenizer.mask_token_id,
                                         normal_ids=self.normal_ids, gen=gen,
                                         prob=self.mask_prob)
        return {"inputs": inputs, "labels": labels}


class BioBERTRecipe(MLMRecipe):
    name = "biobert"


class SLMRecipe(Recipe):
    name = "slm"

    def corrupt(self, batch, gen):
        inputs, labels = obj.slm_corrupt(batch["input_ids"], batch["special"], normal_ids=self.normal_ids, gen=gen,
                                         prob=self.mask_prob)
        return {"inputs": inputs, "labels": labels}


class RTSRecipe(Recipe):
    name = "rts"

    def corrupt(self, batch, gen):
        inputs, labels = obj.rts_corrupt(batch["input_ids"], batch["special"], batch["pad"],
                                         normal_ids=self.normal_ids, gen=gen, prob=self.mask_prob)
        return {"inputs": inputs, "labels": labels}

    def after_forward(self, out, corrupted, stats):
        with torch.no_grad():
            lab = corrupted["labels"]
            pred = out.logits.argmax(-1).cpu()
            real = lab != obj.IGNORE
            stats["accuracy"] = float((pred[real] == lab[real]).float().mean()) if real.any() else float("nan")
            corrupted["predictions"] = pred


class CRTSRecipe(RTSRecipe):
    name = "crts"

    def __init__(self, tokenizer, model, seq_len, *, clusters: np.ndarray, beta: float = 2.0, mask_prob=0.15):
        super().__init__(tokenizer, model, seq_len, mask_prob=mask_prob)
        self.clusters = np.asarray(clusters, dtype=np.int32)
        self.generator = obj.ClusterGenerator(self.clusters, beta=beta)

    def corrupt(self, batch, gen):
        inputs, labels, info = self.generator.corrupt(batch["input_ids"], batch["special"], batch["pad"], gen=gen,
                                                      prob=self.mask_prob)
        return {"inputs": inputs, "labels": labels, "info": info}

    def after_forward(self, out, corrupted, stats):
        super().after_forward(out, corrupted, stats)
        if torch.is_grad_enabled():  # training steps only: evaluation must not move K
            d = self.generator.delta(corrupted["info"], corrupted["predictions"], corrupted["labels"])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # every process saw a slice of the batch: K moves by the sum over all of them
                t = d.to(out.logits.device)
                torch.distributed.all_reduce(t)
                d = t.cpu()
            self.generator.counts += d

    def state_dict(self):
        return {"crts": self.generator.state_dict()}

    def load_state_dict(self, state):
        if "crts" in state:
            self.generator.load_state_dict(state["crts"])

    def save(self, path):
        from subsetlm.recipes.clusters import save_clusters

        super().save(path)
        save_clusters(path, self.clusters, {"method": "k-means on truncated SVD of log1p co-occurrence counts",
                                            "beta": self.generator.beta})


class GPT2Recipe(Recipe):
    name = "gpt2"
    family = "causal"
    packed = True
    pooling = "last"

    def collate(self, seqs, gen=None):
        ids = torch.from_numpy(np.stack([np.asarray(s, dtype=np.int64) for s in seqs]))
        att = torch.ones_like(ids)
        zeros = torch.zeros_like(ids, dtype=torch.bool)
        return {"input_ids": ids, "attention_mask": att, "special": zeros, "pad": zeros}

    def truncated_fraction(self, seqs):
        return 0.0

    def corrupt(self, batch, gen):
        return {"inputs": batch["input_ids"], "labels": batch["input_ids"].masked_fill(batch["pad"], obj.IGNORE)}

    def step_loss(self, model, batch, gen, device):
        loss, stats = super().step_loss(model, batch, gen, device)
        stats["n_targets"] = int(batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1))
        return loss, stats


def _drop_load_flags(path: Path) -> None:
    """Remove how-it-was-loaded keys (``is_local``, ``local_files_only``) that a reloaded tokenizer writes back,
    so a resumed run saves the same tokenizer_config.json as an uninterrupted one (same JSON layout as
    ``save_pretrained``: indent 2, sorted keys)."""
    import json

    if not path.is_file():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if any(k in cfg for k in ("is_local", "local_files_only")):
        for k in ("is_local", "local_files_only"):
            cfg.pop(k, None)
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- building

def _bert_config(tokenizer: Any, p: Preset, seq_len: int, **kw: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=len(tokenizer), hidden_size=p.hidden, num_hidden_layers=p.layers,
                      num_attention_heads=p.heads, intermediate_size=p.intermediate,
                      max_position_embeddings=max(seq_len, 64), hidden_dropout_prob=p.dropout,
                      attention_probs_dropout_prob=p.dropout, pad_token_id=tokenizer.pad_token_id, **kw)


def _gpt2_config(tokenizer: Any, p: Preset, seq_len: int) -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=len(tokenizer), n_positions=seq_len, n_embd=p.hidden, n_layer=p.layers,
                      n_head=p.heads, n_inner=p.intermediate, resid_pdrop=p.dropout, embd_pdrop=p.dropout,
                      attn_pdrop=p.dropout, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)


def _tokenizer(kind: str, texts: Sequence[str], p: Preset, seq_len: int, tokenizer: Any) -> Any:
    if tokenizer is not None:
        return load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    if kind == "gpt2":
        return train_byte_bpe(texts, vocab_size=p.gpt2_vocab_size, model_max_length=seq_len)
    return train_wordpiece(texts, vocab_size=p.vocab_size, model_max_length=seq_len)


def build_recipe(name: str, texts: Sequence[str], *, preset: str | Preset = "tiny", seq_len: int | None = None,
                 tokenizer: Any = None, init_from: str | None = None, seed: int = 0, n_clusters: int = 100,
                 beta: float = 2.0, mask_prob: float = 0.15, **extra: Any) -> Recipe:
    """Build recipe ``name``: train (or load) its tokenizer on ``texts`` and create its model.

    Parameters
    ----------
    name : one of :data:`RECIPES`.
    texts : the training texts the tokenizer (and the C-RTS cluster map) is fitted on.
    preset : ``tiny`` | ``small`` | ``base`` or a :class:`Preset`.
    tokenizer : a saved tokenizer folder (or object) to reuse instead of training one.
    init_from : a run directory (or ``save_pretrained`` folder) whose weights and tokenizer
        to continue from (``biobert`` continued from ``bert``; any recipe resuming a model).
    seed : seeds the model's initial weights and the cluster map.
    **extra : recipe-specific options (``tlm``: ``task=(texts, labels, names)``, ``rho1``, ``rho2``).

    Returns
    -------
    Recipe
    """
    if name == "tlm":
        import subsetlm.recipes.tlm  # noqa: F401  (registers itself; it builds on this module)
    return get("recipe", name)(texts, preset=get_preset(preset) if isinstance(preset, str) else preset,
                               seq_len=seq_len, tokenizer=tokenizer, init_from=init_from, seed=seed,
                               n_clusters=n_clusters, beta=beta, mask_prob=mask_prob, **extra)


def _encoder(cls: type, head: str, texts, *, preset, seq_len, tokenizer, init_from, seed, mask_prob, **extra):
    import transformers

    seq_len = int(seq_len or preset.seq_len)
    model_cls = getattr(transformers, head)
    if init_from:
        d = model_dir(init_from)
        tok = load_tokenizer(d)
        model = model_cls.from_pretrained(str(d), local_files_only=True, **({"num_labels": 2} if "Token" in head else {}))
        logger.info("continuing from %s (%s)", d, type(model).__name__)
        seq_len = min(seq_len, int(model.config.max_position_embeddings))
    else:
        tok = _tokenizer("bert", texts, preset, seq_len, tokenizer)
        torch.manual_seed(seed)
        kw = {"num_labels": 2} if "Token" in head else {}
        model = model_cls(_bert_config(tok, preset, seq_len, **kw))
    if cls is CRTSRecipe:
        clusters = extra.pop("clusters")
        return cls(tok, model, seq_len, clusters=clusters(tok), beta=extra["beta"], mask_prob=mask_prob)
    return cls(tok, model, seq_len, mask_prob=mask_prob)


def _plain(cls: type, head: str):
    def make(texts, **kw):
        kw.pop("n_clusters"), kw.pop("beta")
        return _encoder(cls, head, texts, **kw)

    return make


for _name, _cls, _head in (("bert", MLMRecipe, "BertForMaskedLM"), ("biobert", BioBERTRecipe, "BertForMaskedLM"),
                           ("slm", SLMRecipe, "BertForMaskedLM"), ("rts", RTSRecipe, "BertForTokenClassification")):
    register("recipe", _name)(_plain(_cls, _head))


@register("recipe", "crts")
def _crts(texts, **kw):
    from subsetlm.recipes.clusters import load_clusters, token_clusters

    n_clusters, seed, tokenizer = kw.pop("n_clusters"), kw["seed"], kw["tokenizer"]

    def clusters(tok):
        if isinstance(tokenizer, (str, Path)) and (Path(tokenizer) / "token_clusters.npy").is_file():
            return load_clusters(tokenizer)
        if kw.get("init_from") and (model_dir(kw["init_from"]) / "token_clusters.npy").is_file():
            return load_clusters(model_dir(kw["init_from"]))
        seqs = tok(list(texts), add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
        return token_clusters([np.asarray(s) for s in seqs], len(tok), special_ids(tok), n_clusters=n_clusters,
                              seed=seed)

    return _encoder(CRTSRecipe, "BertForTokenClassification", texts, clusters=clusters, **kw)


@register("recipe", "gpt2")
def _gpt2(texts, *, preset, seq_len, tokenizer, init_from, seed, mask_prob, n_clusters, beta):
    from transformers import GPT2LMHeadModel

    seq_len = int(seq_len or preset.seq_len)
    if init_from:
        d = model_dir(init_from)
        tok, model = load_tokenizer(d), GPT2LMHeadModel.from_pretrained(str(d), local_files_only=True)
        seq_len = min(seq_len, int(model.config.n_positions))
    else:
        tok = _tokenizer("gpt2", texts, preset, seq_len, tokenizer)
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(_gpt2_config(tok, preset, seq_len))
    return GPT2Recipe(tok, model, seq_len, mask_prob=mask_prob)


def recipe_names() -> list[str]:
    return names("recipe")
