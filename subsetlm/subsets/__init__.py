"""The subset file and its consumers: write/read/validate, sampler, export, HF view.

``SubsetSampler`` (torch) and ``to_hf_dataset`` (datasets) are imported lazily, so
``from subsetlm.subsets import read_subset`` stays cheap.

Example
-------
>>> from subsetlm.subsets import read_subset, SubsetSampler     # doctest: +SKIP
>>> sub = read_subset("runs/subset")                            # doctest: +SKIP
>>> sampler = SubsetSampler(sub, weighted=True, seed=0)         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from subsetlm.subsets.format import (
    SCHEMA,
    SCHEMA_VERSION,
    SubsetError,
    SubsetFile,
    SubsetStoreMismatch,
    read_subset,
    write_subset,
)

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "SubsetError",
    "SubsetFile",
    "SubsetStoreMismatch",
    "SubsetSampler",
    "export_subset",
    "read_subset",
    "to_hf_dataset",
    "write_subset",
]

_LAZY = {
    "SubsetSampler": "subsetlm.subsets.sampler",
    "export_subset": "subsetlm.subsets.export",
    "to_hf_dataset": "subsetlm.subsets.hf",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'subsetlm.subsets' has no attribute {name!r}")
