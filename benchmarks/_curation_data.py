"""Inputs of ``benchmarks/curation.py`` (private helper), cached under ``cache_dir()/bench/curation``.

* :func:`planted_embeddings`: the synthetic clustered embeddings of
  :func:`benchmarks._selection_data.synthetic_embeddings` with ``dup_frac`` of the rows
  overwritten by noisy copies of other rows (near-duplicates for SemDeDup to find), stored as
  a float16 ``.npy`` (as an embedding store holds them) plus ``source.npy``: the row each copy
  was made from, -1 for an original.
* :func:`curation_texts`: real sentences to select from (PubMed abstracts and State of the
  Union speeches, split into sentences and shuffled), one per line; rows past the number of
  distinct sentences repeat them with a counter appended; plus the target texts (the
  ``pubmed-task`` train split).

Example
-------
>>> import tempfile, pathlib, numpy as np
>>> x, src = planted_embeddings(pathlib.Path(tempfile.mkdtemp()), n=2000, d=384, dup_frac=0.3)
>>> X, s = np.load(x), np.load(src)
>>> X.dtype.name, int((s >= 0).sum()), bool((s[s >= 0] >= 0).all() and (s[s[s >= 0]] == -1).all())
('float16', 600, True)
>>> c = (X[s >= 0].astype(np.float32) * X[s[s >= 0]].astype(np.float32)).sum(1)   # copy . source
>>> bool(c.min() > 0.97)
True
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from benchmarks._selection_data import synthetic_embeddings

logger = logging.getLogger(__name__)

#: noise of a planted copy: ``normalize(x_src + s e)``, ``e ~ N(0, I/d)``, ``s ~ U(NOISE)`` (cosine ~0.98-0.999)
NOISE = (0.05, 0.2)
DUP_FRAC = 0.3  # share of the rows the benchmark overwrites with copies
SOURCES = ("pubmed", "sotu")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
MIN_CHARS = 20


def curation_dir() -> Path:
    """``cache_dir()/bench/curation`` (``$SUBSETLM_CACHE`` or ``~/.cache/subsetlm``), created on demand."""
    from subsetlm._io import cache_dir

    p = cache_dir() / "bench" / "curation"
    p.mkdir(parents=True, exist_ok=True)
    return p


def planted_embeddings(root: Path, n: int, d: int = 384, seed: int = 0, dup_frac: float = 0.3,
                       block: int = 65536) -> tuple[Path, Path]:
    """(float16 ``(n, d)`` .npy, ``(n,)`` int64 source .npy): clustered rows, ``dup_frac`` of them noisy copies.

    The copies overwrite ``round(dup_frac * n)`` seeded random rows; each copies a seeded
    random original (so an original can have several copies, and a copy is never copied),
    ``normalize(x_src + s e)`` with ``e ~ N(0, I/d)`` and ``s ~ U(0.05, 0.2)`` per copy: cosine
    to its source about 0.98-0.999, far above two neighbours of the generator (same sub-topic:
    about 0.5-0.75). Reused when both files exist.
    """
    tag = f"{n}-d{d}-s{seed}-dup{dup_frac:g}"
    x_path, s_path = root / f"planted-{tag}-f16.npy", root / f"planted-{tag}-source.npy"
    if x_path.exists() and s_path.exists():
        return x_path, s_path
    base = synthetic_embeddings(root / f"base-{n}-d{d}-s{seed}.npy", n, d, seed)
    X = np.load(base, mmap_mode="r")
    rng = np.random.default_rng((seed, 0xD0))
    m = round(dup_frac * n)
    copies = np.sort(rng.choice(n, size=m, replace=False))
    is_copy = np.zeros(n, bool)
    is_copy[copies] = True
    source = np.full(n, -1, np.int64)
    source[copies] = rng.choice(np.flatnonzero(~is_copy), size=m)
    spread = rng.uniform(*NOISE, size=m).astype(np.float32)
    tmp = x_path.with_name(x_path.name + ".tmp.npy")
    Y = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, d))
    for s in range(0, n, block):
        xb = np.array(X[s:s + block], dtype=np.float32)
        lo, hi = np.searchsorted(copies, [s, s + len(xb)])
        if hi > lo:
            src = source[copies[lo:hi]]
            order = np.argsort(src, kind="stable")  # read the memmap forward
            xs = np.empty((hi - lo, d), np.float32)
            xs[order] = X[src[order]]
            e = rng.standard_normal((hi - lo, d), dtype=np.float32) / np.float32(np.sqrt(d))
            xs += spread[lo:hi, None] * e
            xs /= np.linalg.norm(xs, axis=1, keepdims=True)
            xb[copies[lo:hi] - s] = xs
        Y[s:s + len(xb)] = xb
    Y.flush()
    del Y, X
    os.replace(tmp, x_path)
    np.save(s_path, source)
    base.unlink()  # the float32 original is not needed again
    logger.info("planted %d noisy copies into %d x %d -> %s", m, n, d, x_path)
    return x_path, s_path


def planted_stats(x_path: Path, s_path: Path, sample: int = 2000, seed: int = 0) -> dict:
    """Cosine of every copy to its source (min, median, max) and of a seeded sample of originals to their
    nearest other original (median, max): how far the planted duplicates stand out.
    Cached as JSON beside ``x_path``."""
    cache = x_path.with_name(x_path.stem + "-stats.json")
    if cache.exists():
        return json.loads(cache.read_text())
    X, source = np.load(x_path, mmap_mode="r"), np.load(s_path)
    copies = np.flatnonzero(source >= 0)
    cos = np.concatenate([(np.asarray(X[c], np.float32) * np.asarray(X[source[c]], np.float32)).sum(1)
                          for c in np.array_split(copies, max(1, len(copies) // 65536))])
    orig = np.flatnonzero(source < 0)
    pick = np.sort(np.random.default_rng((seed, 0x57)).choice(orig, size=min(sample, len(orig)), replace=False))
    A = np.asarray(X[pick], np.float32)
    nn = np.full(len(pick), -np.inf, np.float32)
    for s in range(0, len(source), 65536):  # nearest other original among all rows
        S = A @ np.asarray(X[s:s + 65536], np.float32).T
        S[:, source[s:s + 65536] >= 0] = -np.inf
        hit = (pick >= s) & (pick < s + 65536)
        S[np.flatnonzero(hit), pick[hit] - s] = -np.inf
        np.maximum(nn, S.max(1), out=nn)
    out = {"copy_cos": [float(cos.min()), float(np.median(cos)), float(cos.max())],
           "original_nn_cos": [float(np.median(nn)), float(nn.max())], "sample": len(pick)}
    cache.write_text(json.dumps(out))
    return out


def _units() -> tuple[list[str], np.ndarray, dict]:
    """Every sentence (>= 20 chars, whitespace normalised) of the pubmed and sotu sources, and its source."""
    from subsetlm.corpus.sources import fetch_source

    texts, src, docs = [], [], {}
    for code, name in enumerate(SOURCES):
        path = fetch_source(name)
        n_docs = 0
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                n_docs += 1
                for para in re.split(r"\n\s*\n", json.loads(line)["text"]):
                    for sent in _SENT.split(" ".join(para.split())):
                        if len(sent) >= MIN_CHARS:
                            texts.append(sent)
                            src.append(code)
        docs[name] = n_docs
    return texts, np.asarray(src, np.uint8), docs


def curation_texts(root: Path, n: int, seed: int = 0) -> tuple[Path, Path, dict]:
    """(texts .txt with n lines, (n,) uint8 source codes .npy, description): the DSIR ground set.

    All sentences of both sources in one seeded shuffle; row i is sentence ``i mod U`` (U
    distinct sentences), with `` (r)`` appended for the r-th repeat (r >= 1) when n > U.
    """
    units, codes, meta_p = root / f"units-s{seed}.txt", root / f"units-s{seed}-source.npy", root / f"units-s{seed}.json"
    if not (units.exists() and codes.exists() and meta_p.exists()):
        texts, src, docs = _units()
        perm = np.random.default_rng((seed, 0x5E)).permutation(len(texts))
        np.save(codes, src[perm])
        meta_p.write_text(json.dumps({"documents": docs, "sentences": len(texts),
                                      "per_source": {s: int((src == c).sum()) for c, s in enumerate(SOURCES)}}))
        _write_lines(units, (texts[i] for i in perm))  # last: the three files exist only once this one does
    meta = json.loads(meta_p.read_text())
    out, out_src = root / f"texts-{n}-s{seed}.txt", root / f"texts-{n}-s{seed}-source.npy"
    if not (out.exists() and out_src.exists()):
        base = units.read_text(encoding="utf-8").split("\n")
        src = np.load(codes)
        U = len(base)
        rows = [base[i % U] if i < U else f"{base[i % U]} ({i // U})" for i in range(n)]
        np.save(out_src, src[np.arange(n) % U])
        _write_lines(out, rows)
    meta = dict(meta, n=n, repeats=int(np.ceil(n / meta["sentences"])))
    return out, out_src, meta


def target_texts(root: Path) -> tuple[Path, int]:
    """The ``pubmed-task`` train split, one whitespace-normalised text per line; (path, count)."""
    from subsetlm.task import load_task

    path = root / "target-pubmed-task-train.txt"
    if not path.exists():
        _write_lines(path, (" ".join(t.split()) for t in load_task("pubmed-task").train.texts))
    return path, len(read_lines(path))


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    """``lines`` joined by newlines (none after the last), UTF-8, written through a temporary file and a rename."""
    from subsetlm._io import write_bytes_atomic

    write_bytes_atomic(path, "\n".join(lines).encode("utf-8"))


def read_lines(path: Path, limit: int | None = None) -> list[str]:
    """The lines of a text file written above (no newlines), the first ``limit`` when given; read a line at a
    time, so the peak memory is the list itself."""
    out: list[str] = []
    with open(path, encoding="utf-8", newline="\n") as fh:
        for line in fh:
            if limit and len(out) == limit:
                break
            out.append(line.removesuffix("\n"))
    return out
