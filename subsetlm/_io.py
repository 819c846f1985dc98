"""Shared file helpers: atomic directories and files, fingerprints, JSON.

Every stage writes to a temporary name next to its destination and renames at
the end, so a killed run never leaves a half-written output behind.

Example
-------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "out"
>>> with atomic_dir(d) as tmp:
...     _ = (tmp / "a.txt").write_text("x")
>>> (d / "_SUCCESS").exists()
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

SUCCESS = "_SUCCESS"


def tmp_path_for(dest: Path) -> Path:
    """The temporary sibling used while ``dest`` is being written (stable, so runs can resume)."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".tmp")


def is_complete(path: Path) -> bool:
    """True when ``path`` is a directory whose ``_SUCCESS`` marker exists."""
    return (Path(path) / SUCCESS).is_file()


@contextlib.contextmanager
def atomic_dir(dest: Path, *, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``dest`` (with ``_SUCCESS``) on success.

    Parameters
    ----------
    dest : Path
        Final directory.
    resume : bool
        Keep an existing ``dest.tmp`` (a killed earlier run) instead of wiping it.
    overwrite : bool
        Replace an existing complete ``dest``; otherwise an existing ``dest`` raises
        ``FileExistsError``.

    On an exception the temporary directory is left in place when ``resume`` is true
    (so the next run resumes) and removed otherwise; ``dest`` is never touched.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(
            f"{dest} already exists; pass --force (overwrite=True) to replace it"
        )
    tmp = tmp_path_for(dest)
    if tmp.exists() and not resume:
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        if not resume:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / SUCCESS).write_text("")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def dumps_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as deterministic JSON, atomically."""
    write_bytes_atomic(Path(path), dumps_json(obj).encode("utf-8"))


def read_json(path: Path) -> Any:
    with open(path, "r", encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def hash_unit(seed: int, key: str) -> float:
    """A seeded hash of ``key`` mapped to [0, 1): the first 8 bytes of sha256("seed:key") / 2**64.

    Used wherever a split must depend only on a key (validation rows, task splits).

    >>> 0.0 <= hash_unit(0, "doc-1") < 1.0, hash_unit(0, "doc-1") == hash_unit(0, "doc-1")
    (True, True)
    """
    h = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def hash_split(seed: int, key: str, fractions: tuple[float, float, float]) -> str:
    """``train`` / ``validation`` / ``test`` for ``key`` by :func:`hash_unit` and the split ``fractions``.

    >>> hash_split(0, "doc-1", (1.0, 0.0, 0.0))
    'train'
    """
    u = hash_unit(seed, key)
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_dir() -> Path:
    """Where fetched real corpora live: ``$SUBSETLM_CACHE`` or ``~/.cache/subsetlm``."""
    root = os.environ.get("SUBSETLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "subsetlm")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p
