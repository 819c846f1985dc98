"""Corpus readers, chunking into samples with stable ids, and real-data fetchers.

Example
-------
>>> from subsetlm.corpus import CorpusConfig, WhitespaceSplitter, iter_samples
>>> cfg = CorpusConfig(["corpus.jsonl"], max_tokens=128)          # doctest: +SKIP
>>> blocks = iter_samples(cfg, WhitespaceSplitter())              # doctest: +SKIP
"""

from subsetlm.corpus.sample import Document, Sample
from subsetlm.corpus.readers import (CorpusConfig, CorpusError, corpus_fingerprint, iter_documents,
                                     resolve_inputs)
from subsetlm.corpus.chunking import (HFTokenSplitter, TokenSplitter, WhitespaceSplitter, chunk_documents,
                                      iter_samples)
from subsetlm.corpus.sources import SOURCES, FetchError, fetch_source, pubmed_task

__all__ = ["Document", "Sample", "CorpusConfig", "CorpusError", "corpus_fingerprint", "iter_documents",
           "resolve_inputs", "TokenSplitter", "WhitespaceSplitter", "HFTokenSplitter", "chunk_documents",
           "iter_samples", "SOURCES", "FetchError", "fetch_source", "pubmed_task"]
