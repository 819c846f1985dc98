"""subsetlm: cheaper language-model pretraining on informative subsets of a corpus.

The package mirrors the data flow::

    corpus -> embed -> index -> select -> subsets -> recipes -> evaluate

Heavy submodules (torch, faiss, transformers) are imported lazily, so
``import subsetlm`` is cheap.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
