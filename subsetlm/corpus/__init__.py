"""Corpus readers, chunking into samples with stable ids, and real-data fetchers."""

from subsetlm.corpus.sample import Document, Sample

__all__ = ["Document", "Sample"]
