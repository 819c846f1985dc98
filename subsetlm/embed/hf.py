"""Embeddings from a transformers model's own hidden states (``hf:PATH``).

The representation INGENIOUS uses for re-selection during pretraining: the hidden
states of layer ``L`` of the model being trained, pooled over the real (non-pad)
tokens. The same class embeds a checkpoint directory (``get_embedder("hf:PATH")``)
and a model held in memory by the training loop (:meth:`HFEmbedder.from_model`), so
both go through exactly one code path.

Pooling
-------
``mean``  masked mean over the real tokens of each text (padding never counts).
``cls``   the first token's state (BERT's [CLS]).
``last``  the last real token's state (GPT-2-style causal models), found from the
          attention mask, so it is right whatever the padding side.

Texts are tokenised without padding, sorted by length, and padded on the right per
batch with the tokenizer's pad id (or its eos id, or 0 for GPT-2-style tokenizers that
have no pad token; padded positions are masked out, so the id does not matter).

Example
-------
>>> emb = get_embedder("hf:/path/to/bert", layer=9, pooling="mean")   # doctest: +SKIP
>>> emb.embed(["a text", "another"]).shape                          # doctest: +SKIP
(2, 768)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from subsetlm.embed.base import Embedder, length_batches, package_version, resolve_device
from subsetlm.registry import register

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "last")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _torch_dtype(precision: str, device: str) -> Any:
    """Map a precision name to a torch dtype; ``auto`` picks bf16 where it is fast."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        try:  # native bf16 matmuls (AVX512-BF16 / AMX) make bf16 ~2.5x faster than fp32 on CPU
            fast = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            fast = False
        return torch.bfloat16 if fast else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _n_special(tokenizer: Any) -> int:
    """Special tokens the tokenizer adds to one text ([CLS]+[SEP] = 2 for BERT, 0 for GPT-2)."""
    fn = getattr(tokenizer, "num_special_tokens_to_add", None)
    if callable(fn):
        try:
            return int(fn(pair=False))
        except (TypeError, NotImplementedError, AttributeError):
            pass
    return len(tokenizer("", add_special_tokens=True)["input_ids"])


def pool_hidden(h: Any, mask: Any, pooling: str) -> Any:
    """Pool hidden states (B, L, D) over the real tokens of ``mask`` (B, L) -> (B, D) float32.

    ``mean``: masked mean; ``cls``: the first token; ``last``: the last real token (any padding side).
    """
    import torch

    h = h.float()
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    if pooling == "cls":
        return h[:, 0]
    if pooling != "last":
        raise ValueError(f"pooling={pooling!r}; expected one of {', '.join(POOLINGS)}")
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), pos, torch.full_like(pos, -1)).max(dim=1).values.clamp_min(0)
    return h[torch.arange(h.shape[0], device=h.device), last]


class HFEmbedder(Embedder):
    """Pooled hidden states of one layer of a transformers model.

    Parameters
    ----------
    path : str or Path
        A local checkpoint directory (``config.json`` + weights + tokenizer files),
        loaded with ``AutoModel`` / ``AutoTokenizer`` and ``local_files_only=True``
        (the hub is never contacted).
    device : str, default "auto"
        "auto" = cuda when available, else cpu.
    layer : int, default -1
        Index into ``hidden_states`` (0 = embeddings output, -1 = last layer).
    pooling : {"mean", "cls", "last"}, default "mean"
    max_length : int or None
        Truncate inputs to this many tokens (special tokens included). Default: the
        smaller of the tokenizer's ``model_max_length`` and the model's
        ``max_position_embeddings`` / ``n_positions`` (512 when neither is known).
    precision : {"fp32", "bf16", "fp16", "auto"}, default "fp32"
        Weight dtype for inference; outputs are always float32.
    max_batch_tokens : int or None, default 8192
        Cap on ``batch * longest`` padded tokens per forward pass.

    Attributes
    ----------
    model, tokenizer, device, layer, dim, pooling, max_length
    """

    name = "hf"
    default_max_batch_tokens = 8192

    def __init__(self, path: str | Path, device: str = "auto", layer: int = -1, pooling: str = "mean",
                 max_length: int | None = None, precision: str = "fp32",
                 max_batch_tokens: int | None = 8192) -> None:
        from transformers import AutoModel, AutoTokenizer

        p = Path(path)
        if not (p / "config.json").is_file():
            raise ValueError(
                f"hf:{path}: no config.json in that directory; expected a transformers checkpoint saved with "
                f"save_pretrained (model + tokenizer). Hub names are not downloaded; pass a local path"
            )
        dev = resolve_device(device)
        dtype = _torch_dtype(precision, dev)
        tokenizer = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        model = AutoModel.from_pretrained(str(p), local_files_only=True, dtype=dtype)
        model.to(dev).eval()
        self._setup(model, tokenizer, layer=layer, pooling=pooling, max_length=max_length,
                    max_batch_tokens=max_batch_tokens)
        self.path = str(p.resolve())
        self.precision = precision if precision != "auto" else str(dtype).replace("torch.", "")

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, layer: int = -1, pooling: str = "mean",
                   max_length: int | None = None, max_batch_tokens: int | None = 8192) -> "HFEmbedder":
        """Wrap a model already in memory (e.g. the one being pretrained).

        The model is used where it is (its device and dtype) and is not copied; its
        ``training`` flag is restored after each :meth:`embed` call. A task model
        (``...ForMaskedLM``, ``...LMHeadModel``) is fine: its ``base_model`` is run, so
        no logits are computed.

        Example
        -------
        >>> emb = HFEmbedder.from_model(model, tokenizer, layer=9, pooling="mean")  # doctest: +SKIP
        """
        self = cls.__new__(cls)
        self._setup(model, tokenizer, layer=layer, pooling=pooling, max_length=max_length,
                    max_batch_tokens=max_batch_tokens)
        self.path = None
        self.precision = str(next(model.parameters()).dtype).replace("torch.", "")
        return self

    # -- setup ----------------------------------------------------------------------
    def _setup(self, model: Any, tokenizer: Any, *, layer: int, pooling: str, max_length: int | None,
               max_batch_tokens: int | None) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of {', '.join(POOLINGS)}")
        cfg = model.config
        n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
        if n_layers is not None and not -(n_layers + 1) <= int(layer) <= n_layers:
            raise ValueError(f"layer={layer} but the model has {n_layers} layers; expected -{n_layers + 1}..{n_layers} "
                             f"(0 = embedding output, -1 = last layer)")
        self.model = model
        self.tokenizer = tokenizer
        self.layer = int(layer)
        self.pooling = pooling
        self.dim = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd"))
        self.max_length = int(max_length) if max_length else self._default_max_length()
        self.max_batch_tokens = max_batch_tokens
        pad = tokenizer.pad_token_id
        if pad is None:  # GPT-2: no pad token. Padded positions are masked, so any id works.
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self.n_special_tokens = _n_special(tokenizer)

    def _default_max_length(self) -> int:
        cfg = self.model.config
        cands = [getattr(cfg, "max_position_embeddings", None), getattr(cfg, "n_positions", None),
                 getattr(self.tokenizer, "model_max_length", None)]
        cands = [int(c) for c in cands if c and int(c) < 1_000_000]
        return min(cands) if cands else 512

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def max_content_tokens(self) -> int:
        """Longest chunk (in :meth:`splitter` tokens) that is embedded without truncation."""
        return self.max_length - self.n_special_tokens

    def splitter(self) -> Any:
        from subsetlm.corpus.chunking import HFTokenSplitter

        return HFTokenSplitter(self.tokenizer)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        cfg = self.model.config
        d.update({
            "model": self.path or getattr(cfg, "_name_or_path", "") or type(self.model).__name__,
            "model_type": getattr(cfg, "model_type", None),
            "architecture": type(self.model).__name__,
            "layer": self.layer,
            "precision": self.precision,
            "tokenizer": type(self.tokenizer).__name__,
            "transformers_version": package_version("transformers"),
        })
        return d

    # -- embedding --------------------------------------------------------------------
    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False,
                             return_attention_mask=False, return_token_type_ids=False, verbose=False)
        return enc["input_ids"]

    def _forward(self, input_ids: Any, attention_mask: Any) -> Any:
        """Hidden states of ``self.layer``, shape (batch, length, dim)."""
        base = getattr(self.model, "base_model", None) or self.model  # skip LM heads: no logits
        if self.layer == -1:
            out = base(input_ids=input_ids, attention_mask=attention_mask)
            h = getattr(out, "last_hidden_state", None)
            if h is not None:
                return h
        out = base(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.hidden_states[self.layer]

    def _pool(self, h: Any, mask: Any) -> Any:
        return pool_hidden(h, mask, self.pooling)

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> (n, dim) float32, rows L2-normalised, input order kept.

        Example
        -------
        >>> HFEmbedder.from_model(model, tok).embed(["x"]).shape   # doctest: +SKIP
        (1, 768)
        """
        import torch

        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self._tokenize(texts)
        empty = [i for i, x in enumerate(ids) if len(x) == 0]
        if empty:
            raise ValueError(f"text {empty[0]} ({texts[empty[0]][:40]!r}) has no tokens; embedders need non-empty "
                             f"texts (the corpus readers skip empty documents)")
        lengths = [len(x) for x in ids]
        batches = list(length_batches(lengths, batch_size, self.max_batch_tokens))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="embed", unit="text")
        model = self.model
        was_training = model.training
        model.eval()
        device = self.device
        try:
            with torch.inference_mode():
                for idx in batches:
                    L = max(lengths[i] for i in idx)
                    arr = np.full((len(idx), L), self.pad_id, dtype=np.int64)
                    msk = np.zeros((len(idx), L), dtype=np.int64)
                    for r, i in enumerate(idx):
                        arr[r, : lengths[i]] = ids[i]
                        msk[r, : lengths[i]] = 1
                    input_ids = torch.from_numpy(arr).to(device)
                    mask = torch.from_numpy(msk).to(device)
                    pooled = self._pool(self._forward(input_ids, mask), mask)
                    pooled = torch.nn.functional.normalize(pooled, dim=1)
                    out[idx] = pooled.cpu().numpy()
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if was_training:
                model.train()
            if bar is not None:
                bar.close()
        return out


@register("embedder", "hf")
def _make_hf(path: str, device: str = "auto", **kw: Any) -> HFEmbedder:
    return HFEmbedder(path, device=device, **kw)
