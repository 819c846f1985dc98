"""Small private helpers of the subset file writer/reader."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


def library_versions() -> dict[str, str | None]:
    import subsetlm

    def dist_version(*names: str) -> str | None:
        for name in names:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    return {
        "subsetlm": getattr(subsetlm, "__version__", None) or dist_version("subsetlm"),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "faiss": dist_version("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss"),
        "python": platform.python_version(),
    }


def strict_json(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by ``None`` (recursively)."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    return obj


def duplicates(idx: np.ndarray) -> np.ndarray:
    """Values occurring more than once in ``idx`` (sorted; O(b log b), no hashing)."""
    s = np.sort(idx)
    return np.unique(s[1:][s[1:] == s[:-1]])


def _path_from_subset(store_path: Any, subset_path: Path) -> str:
    """The store as seen from the subset directory: a relative path, or the store's URL / absolute path
    when either of them is at a URL (a relative path between a bucket and a local disk means nothing)."""
    from subsetlm._mirror import url_of
    from subsetlm._remote import is_url

    store_url, subset_url = url_of(store_path), url_of(subset_path)
    if store_url is None and subset_url is None and not is_url(store_path):
        return os.path.relpath(Path(store_path).resolve(), subset_path.resolve())
    return store_url or (str(store_path) if is_url(store_path) else str(Path(store_path).resolve()))
