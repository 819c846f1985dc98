"""Embedders (MiniLM, a model's own hidden states, hashed n-grams) and the EmbeddingStore.

Example
-------
>>> from subsetlm.embed import get_embedder
>>> emb = get_embedder("hashing", dim=16).fit(["a b", "c d"])
>>> emb.embed(["a b"]).shape
(1, 16)
"""

from subsetlm.embed.base import Embedder, get_embedder, resolve_device
from subsetlm.embed.run import EmbedConfig, embed_corpus
from subsetlm.embed.store import EmbeddingStore, StoreError

__all__ = ["Embedder", "get_embedder", "resolve_device", "EmbeddingStore", "StoreError", "EmbedConfig",
           "embed_corpus"]
