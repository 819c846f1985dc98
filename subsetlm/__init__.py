"""subsetlm: cheaper language-model pretraining on informative subsets of a corpus.

The package mirrors the data flow (``tests/test_layering.py`` keeps the imports in this order)::

    corpus -> embed -> index -> subsets (the subset file) -> select -> retrieve -> recipes -> evaluate

with the shared contracts below them (``_stage``: the stage contract; ``task``, ``runs``)
and the compositions above (``demo``, ``train``: pretraining then TLM's stage 2; ``cli``).

Heavy submodules (torch, faiss, transformers) are imported lazily, so
``import subsetlm`` is cheap.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
