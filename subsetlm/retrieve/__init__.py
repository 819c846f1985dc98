"""Task-driven retrieval (TLM): a labelled task's training examples select corpus rows.

``bm25`` (:mod:`~subsetlm.retrieve.bm25`) and ``dense`` (:mod:`~subsetlm.retrieve.dense`)
search give per-query hit lists; :mod:`~subsetlm.retrieve.merge` merges them into one
ranked list; :mod:`~subsetlm.retrieve.run` is the stage (``subsetlm retrieve``): budget
cap, decontamination, the ``diverse`` FL-MI pick (an objective of :mod:`subsetlm.select`)
and the subset directory with its ``provenance.parquet``.

Example
-------
>>> from subsetlm.retrieve import RetrieveConfig, retrieve          # doctest: +SKIP
>>> retrieve(RetrieveConfig(corpus=["store/"], task="task.jsonl", method="diverse", budget="0.25",
...                         out="subset-diverse"))                  # doctest: +SKIP
PosixPath('subset-diverse')
"""

from subsetlm.retrieve.bm25 import bm25_search
from subsetlm.retrieve.dense import dense_search
from subsetlm.retrieve.merge import Hits, Merged, merge_hits
from subsetlm.retrieve.run import (METHODS, PROVENANCE_FILE, STAGE, RetrieveConfig, auto_k, read_provenance,
                                   retrieve, summary)

__all__ = ["Hits", "Merged", "merge_hits", "bm25_search", "dense_search", "METHODS", "PROVENANCE_FILE", "STAGE",
           "RetrieveConfig", "auto_k", "read_provenance", "retrieve", "summary"]
