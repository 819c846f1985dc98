"""Comparing two stage outputs file by file, leaving out only what legitimately differs between runs.

Used by the kill trials (``benchmarks/_faults.py``) and the determinism tests. Every file under
an output is compared byte for byte, except:

- ``stats.json`` anywhere (``VOLATILE_FILES``: timings, by the stage contract);
- the timing keys ``VOLATILE_KEYS`` of the JSON / JSONL files named there (a training run's
  ``results.json`` and ``metrics.jsonl``, eval's RESULTS file as the trials name it, ``eval.json``);
- torch checkpoints (``.pt``), compared by content: a resumed process pickles the same tensors
  with another memo layout and serialization id;
- ``*.lock`` files (left or not depending on whether their holder was killed).

Example
-------
>>> import tempfile
>>> a, b = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
>>> for d, secs in ((a, 1), (b, 2)):
...     _ = (d / "stats.json").write_text(str(secs))
...     _ = (d / "data.txt").write_text("same")
>>> compare(a, b)
[]
>>> _ = (b / "data.txt").write_text("other")
>>> compare(a, b)
['data.txt']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

VOLATILE_FILES = ("stats.json",)
VOLATILE_KEYS = {"results.json": ("wall_s",), "metrics.jsonl": ("tokens_per_s",), "eval.json": ("seconds",)}
IGNORED_SUFFIXES = (".lock",)


def normalized(path: Path) -> bytes:
    """A file's bytes, with the timing keys of ``VOLATILE_KEYS`` removed (JSON / JSONL files named there)."""
    data = path.read_bytes()
    keys = VOLATILE_KEYS.get(path.name)
    if not keys:
        return data

    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in keys}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    try:
        if path.suffix == ".jsonl":
            lines = [json.dumps(strip(json.loads(s)), sort_keys=True) for s in data.decode().splitlines() if s.strip()]
            return "\n".join(lines).encode()
        return json.dumps(strip(json.loads(data)), sort_keys=True).encode()
    except (ValueError, UnicodeDecodeError):
        return data  # not JSON (a corrupt file): compared as it is


def _files(p: Path) -> dict[str, Path]:
    if p.is_file():
        return {"": p}
    out = {}
    for f in sorted(p.rglob("*")):
        if f.is_file() and f.name not in VOLATILE_FILES and not f.name.endswith(IGNORED_SUFFIXES):
            out[str(f.relative_to(p))] = f
    return out


def compare(got: Path, want: Path) -> list[str]:
    """What differs between two outputs: ``missing X`` / ``extra X`` / ``X`` (content), sorted; [] when equal."""
    if not got.exists() or not want.exists():
        return [] if got.exists() == want.exists() else [f"{'missing' if want.exists() else 'extra'} {got.name}"]
    a, b = _files(got), _files(want)
    out = [f"missing {k}" for k in sorted(set(b) - set(a))] + [f"extra {k}" for k in sorted(set(a) - set(b))]
    out += [k or got.name for k in sorted(set(a) & set(b)) if not _same(a[k], b[k])]
    return out


def _same(a: Path, b: Path) -> bool:
    """Equal files: bytes (after :func:`normalized`); a torch checkpoint (``.pt``) by content."""
    x, y = normalized(a), normalized(b)
    if x == y or a.suffix != ".pt":
        return x == y
    import torch

    return _equal(torch.load(a, map_location="cpu", weights_only=False),
                  torch.load(b, map_location="cpu", weights_only=False))


def _equal(x: Any, y: Any) -> bool:
    """Exact equality of nested checkpoint contents: dicts in the same key order, tensors and arrays bit for bit."""
    import torch

    if type(x) is not type(y):
        return False
    if isinstance(x, dict):
        return list(x) == list(y) and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_equal(u, v) for u, v in zip(x, y))
    if isinstance(x, torch.Tensor):
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        return bool(torch.equal(x, y) or (x.is_floating_point() and ((x == y) | (x.isnan() & y.isnan())).all()))
    if isinstance(x, np.ndarray):
        return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    return bool(x == y)


def complete(p: Path) -> bool:
    """An output a later run would trust: a directory with ``_SUCCESS``, or a single-file output that exists."""
    return p.is_file() if p.suffix == ".json" else (p / "_SUCCESS").is_file()
