"""``subsetlm dsir``: DSIR importance resampling of a corpus toward a target distribution, as a stage.

``subsetlm dsir CORPUS_OR_STORE... --out SUBSET (--target FILES... | --target-store STORE | --task TASK)``

* **Ground set**: one embedding store directory (its rows; texts read a block at a time
  from the store) or corpus files / source names (one row per non-empty document,
  :class:`~subsetlm.corpus.rows.CorpusRows`, as ``subsetlm retrieve`` reads them; ``limit``
  keeps the first N documents).
* **Target**: text files in any format the corpus readers take (``target``), the texts of
  a store (``target_store``), or a task's *train* split (``task``). Exactly one.
* **Steps** (:mod:`subsetlm.select.dsir`): the target's hashed n-gram counts (one pass);
  the corpus's counts and those of a seeded random subset under the same budget (pass 1);
  the log importance weight of every row (pass 2); a Gumbel order of the weights, taken as
  far as the budget allows (a count: its first b rows; ``tokens:N``: every row that still
  fits, :meth:`~subsetlm.select.constraints.Constraint.draw`); the selected rows' counts
  (pass 3, the selected rows only); the KL reduction.
* **Output**: a subset directory (``gain`` = the row's log importance weight, ``weight`` =
  1: the resampled subset already follows the target, so it is trained on uniformly;
  rows in draw order) with ``assignment.parquet`` (``kept`` / ``not_drawn``, representative
  -1 for rows not drawn) and, in ``manifest.json``, ``selection.kl_reduction`` =
  KL(target ‖ random subset) − KL(target ‖ selected) (nats, > 0 = closer to the target than
  a random subset of the same budget) and ``selection.kl`` with the values it is computed
  from plus the paper's version against the whole corpus (:func:`~subsetlm.select.dsir.kl_reduction`).
  The identity is the manifest's ``config`` plus the ground set's and the target's
  fingerprints: a re-run skips, another config or input is refused unless ``force``.

Refused before anything is written: an empty target; a target whose hashed n-gram
distribution overlaps the corpus's by less than ``min_overlap`` (Σ_f min(p̂_t, p̂_r), 0.1;
in a one-off measurement against PubMed, English text of other domains scored 0.17-0.40,
other languages 0.011-0.044: :func:`~subsetlm.select.dsir.overlap`);
a budget above the number of rows; a ``limit`` with a store.

Example
-------
>>> import json
>>> docs = ["heart artery blood", "blood pressure heart", "artery stent vessel", "goal match league",
...         "referee penalty goal", "striker season coach"]
>>> _ = open("corpus.jsonl", "w").write("".join(json.dumps({"text": t}) + "\\n" for t in docs))
>>> _ = open("target.jsonl", "w").write(json.dumps({"text": "blood artery heart stent vessel pressure"}))
>>> path = dsir(DSIRConfig(corpus=["corpus.jsonl"], target=["target.jsonl"], budget="3", smoothing=0.01, out="sub"))
>>> summary(path)
'wrote sub: 3 of 6 rows by DSIR toward files target.jsonl (1 docs); KL reduction 0.0301 nats vs a random subset ...'
>>> dsir(DSIRConfig(corpus=["pubmed"], task="pubmed-task", budget="0.1", out="sub-dsir"))  # doctest: +SKIP
PosixPath('sub-dsir')
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from subsetlm._stage import Output, Stage, check_out, identity
from subsetlm.select.dsir import (DEFAULT_FEATURES, KL_BUCKETS, NgramHasher, check_features, check_smoothing,
                                  column_sums, kl_reduction, log_ratio, overlap)

logger = logging.getLogger(__name__)

RANDOM_STREAM = 0xD51  # the random reference subset's seed is (seed, RANDOM_STREAM): apart from the Gumbel noise


@dataclass
class DSIRConfig:
    """``subsetlm dsir`` (one field per flag).

    corpus : one store directory, or corpus files / source names.
    target / target_store / task : the target texts (exactly one): corpus-format files, a
        store, or a task whose train split is the target.
    budget : count, fraction of the rows, or ``tokens:N`` (store: its ``n_tokens``; corpus
        files: whitespace tokens).
    n_features : hash buckets of the importance models (2**16 .. 2**20).
    smoothing : add-α pseudo-count per bucket of the importance models (the KL uses 0.01).
    kl_buckets : buckets the KL reduction is computed on (a power of two <= n_features).
    min_overlap : refuse a target whose n-gram overlap with the corpus is below this (0 = never).
    decontaminate : with ``task``: rows of the task's validation/test documents (same document
        id, or the same text) are never drawn (as ``subsetlm retrieve`` does).
    limit : corpus files only: the first N documents.
    """

    VOLATILE: ClassVar[tuple[str, ...]] = ("out", "force", "batch_size", "verify")

    corpus: list[str] = field(default_factory=list)
    out: str = ""
    target: list[str] = field(default_factory=list)
    target_store: str | None = None
    task: str | None = None
    budget: str | float | int = "0.25"
    n_features: int = DEFAULT_FEATURES
    smoothing: float = 1.0
    kl_buckets: int = KL_BUCKETS
    min_overlap: float = 0.1
    decontaminate: bool = True
    text_field: str = "text"
    id_field: str | None = None
    limit: int | None = None
    seed: int = 0
    batch_size: int = 8192
    force: bool = False
    verify: bool = True  # check store / graph / subset checksums on open (--no-verify: trust them)

    def __post_init__(self) -> None:
        if isinstance(self.budget, (int, float)) and not isinstance(self.budget, bool):
            self.budget = str(self.budget)  # a YAML number (0.25, 5000) reads like the same flag
        if isinstance(self.corpus, str):
            self.corpus = [self.corpus]
        if isinstance(self.target, str):
            self.target = [self.target]

    def validate(self) -> None:
        """Check every field up front (ValueError saying what was given and what is expected)."""
        from subsetlm.select.budget import parse_budget

        if not self.corpus:
            raise ValueError("no corpus given: pass a store directory or corpus files / a source name")
        check_out(self.out)
        given = [name for name, v in (("--target", self.target), ("--target-store", self.target_store),
                                      ("--task", self.task)) if v]
        if len(given) != 1:
            raise ValueError(f"give exactly one target: --target FILES, --target-store STORE or --task TASK "
                             f"(got {', '.join(given) or 'none'})")
        parse_budget(self.budget)
        check_features(self.n_features)
        check_smoothing(self.smoothing)
        kb = self.kl_buckets
        if isinstance(kb, bool) or not isinstance(kb, int) or kb < 2 or kb & (kb - 1) or kb > self.n_features:
            raise ValueError(f"kl_buckets={kb}; expected a power of two in [2, n_features={self.n_features}] "
                             f"(default {KL_BUCKETS})")
        if not 0.0 <= float(self.min_overlap) <= 1.0:
            raise ValueError(f"min_overlap={self.min_overlap}; expected a number in [0, 1] (0 disables the check)")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit}; expected a positive number of documents (or no limit)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}; expected a positive integer")


def _ground(cfg: DSIRConfig) -> Any:
    """The rows to select from: the store (one store directory given) or the corpus files read in order."""
    from subsetlm.embed.store import open_rows

    return open_rows(list(cfg.corpus), text_field=cfg.text_field, id_field=cfg.id_field, limit=cfg.limit,
                     verify=cfg.verify)


def _blocks(ground: Any, rows: np.ndarray | None, size: int) -> Iterator[list[str]]:
    """Texts of ``rows`` (default: every row, in order), ``size`` at a time."""
    n = int(ground.n)
    if rows is None:
        for s in range(0, n, size):
            yield ground.texts(np.arange(s, min(s + size, n)))
        return
    for s in range(0, len(rows), size):
        yield ground.texts(rows[s:s + size])


def _fingerprint(kind: str, blocks: Iterator[list[str]]) -> tuple[str, int]:
    """SHA-256 of the texts of ``blocks`` in order, and how many there are."""
    sha = hashlib.sha256(f"subsetlm.dsir-target.{kind}\n".encode())
    n = 0
    for b in blocks:
        for t in b:
            sha.update(t.encode("utf-8") + b"\x00")
        n += len(b)
    return sha.hexdigest(), n


def _task(cfg: DSIRConfig) -> Any:
    """The ``--task`` (read once: its train split is the target, its validation/test documents are held out)."""
    if not cfg.task:
        return None
    from subsetlm.task import load_task

    return load_task(cfg.task, text_field=cfg.text_field)


def _target(cfg: DSIRConfig, task: Any) -> tuple[Callable[[], Iterator[list[str]]], dict[str, Any]]:
    """The target: a function giving its texts' blocks afresh, and its kind, spec, fingerprint and n_docs.

    Files are read once here to fingerprint them (a re-run skips before any n-gram is hashed).
    ``task`` is :func:`_task`'s.
    """
    bs = int(cfg.batch_size)
    if cfg.target_store:
        from subsetlm.embed import EmbeddingStore

        store = EmbeddingStore.open(cfg.target_store, verify=cfg.verify)
        return (lambda: _blocks(store, None, bs)), {"kind": "store", "spec": str(cfg.target_store),
                                                     "fingerprint": store.fingerprint, "n_docs": int(store.n)}
    if task is not None:
        texts = task.train.texts
        kind, spec = "task", str(cfg.task)

        def blocks() -> Iterator[list[str]]:
            return (texts[s:s + bs] for s in range(0, len(texts), bs))
    else:
        from subsetlm.corpus.readers import CorpusConfig, iter_documents

        ccfg = CorpusConfig([str(p) for p in cfg.target], text_field=cfg.text_field, max_tokens=None, block_size=bs)
        kind, spec = "files", ",".join(map(str, cfg.target))

        def blocks() -> Iterator[list[str]]:
            return ([d.text for d in b] for b in iter_documents(ccfg, require_documents=False))
    fp, n = _fingerprint(kind, blocks())
    return blocks, {"kind": kind, "spec": spec, "fingerprint": fp, "n_docs": n}


def _held_out(cfg: DSIRConfig, task: Any) -> Any:
    """With ``--task`` (and ``decontaminate``): the task's validation/test documents, never drawn."""
    if task is None or not cfg.decontaminate:
        return None
    from subsetlm.task import HeldOut

    return HeldOut(task)


def _empty_target(target: dict[str, Any], n_ngrams: float) -> ValueError:
    return ValueError(f"the target ({target['kind']} {target['spec']}) is empty: {target['n_docs']} documents, "
                      f"{n_ngrams:.0f} word n-grams; DSIR needs example texts of the target distribution")


def _identity_of(path: Path) -> Any:
    """The identity a finished DSIR subset recorded: its config and its ground set's and target's fingerprints."""
    from subsetlm._io import read_json

    man = Path(path) / "manifest.json"
    m = read_json(man) if man.is_file() else {}
    if m.get("config") is None:
        return None
    return {"config": m["config"], "ground": m["store"]["fingerprint"],
            "target": m["selection"]["target"]["fingerprint"]}


def _overlap_error(target: dict[str, Any], n: int, n_ngrams: float, ov: float, min_overlap: float) -> ValueError:
    return ValueError(f"the target ({target['kind']} {target['spec']}, {target['n_ngrams']} n-grams) and the corpus "
                      f"({n} rows, {n_ngrams:.0f} n-grams) share only {ov:.3f} of their hashed n-gram distribution "
                      f"(sum of min(p_target, p_corpus) = {ov:.3f} < min_overlap {min_overlap}; against PubMed, in a "
                      f"one-off measurement, English text of other domains scored 0.17-0.40, other languages "
                      f"0.011-0.044). Check the target's and the corpus's language and --text-field, or pass "
                      f"--min-overlap 0 to select anyway")


def dsir(cfg: DSIRConfig, progress: bool = False) -> Path:
    """Run ``subsetlm dsir``: target and corpus n-gram models → importance weights → Gumbel resampling → subset.

    Returns the subset path; skips the work when it holds a DSIR subset of this config and
    inputs, and raises ``FileExistsError`` when it holds something else (unless ``cfg.force``).
    """
    from subsetlm.select.budget import parse_budget
    from subsetlm.select.constraints import from_budget
    from subsetlm.select.sampling import gumbel_top_k

    cfg.validate()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    hasher = NgramHasher(cfg.n_features)
    ground = _ground(cfg)
    n, bs = int(ground.n), int(cfg.batch_size)
    task = _task(cfg)
    target_blocks, target = _target(cfg, task)
    if target["n_docs"] == 0:
        raise _empty_target(target, 0)
    out = Output(check_out(cfg.out), {"config": identity(cfg), "ground": str(ground.fingerprint),
                                 "target": target["fingerprint"]}, what="DSIR subset", read_identity=_identity_of)
    if out.up_to_date(cfg.force):
        return out.path
    tokens = np.asarray(ground.n_tokens, dtype=np.int64) if parse_budget(cfg.budget).kind == "tokens" else None
    constraint = from_budget(cfg.budget, n, n_tokens=tokens)  # a bad budget is refused here, before any pass

    def blocks(rows: np.ndarray | None, desc: str) -> Iterator[list[str]]:
        it = _blocks(ground, rows, bs)
        if not progress:
            return it
        from tqdm.auto import tqdm

        return tqdm(it, total=-(-(n if rows is None else len(rows)) // bs), desc=f"dsir {desc}", unit="block")

    t_counts, _ = hasher.counts(target_blocks())
    target["n_ngrams"] = int(t_counts.sum())
    if target["n_ngrams"] == 0:
        raise _empty_target(target, 0)
    timings["target_s"] = time.perf_counter() - t0

    t = time.perf_counter()  # pass 1: the corpus's counts, and a random subset's under the same budget
    rand = np.zeros(n, dtype=bool)
    rand[constraint.draw(np.random.default_rng((int(cfg.seed), RANDOM_STREAM)).permutation(n))] = True
    r_counts, x_counts, start = np.zeros(hasher.n_features), np.zeros(hasher.n_features), 0
    for block in blocks(None, "corpus counts"):
        M = hasher.transform(block)
        r_counts += column_sums(M)
        x_counts += column_sums(M[np.flatnonzero(rand[start:start + len(block)])])
        start += len(block)
    ov = overlap(t_counts, r_counts)
    if ov < float(cfg.min_overlap):
        raise _overlap_error(target, n, r_counts.sum(), ov, cfg.min_overlap)
    delta = log_ratio(t_counts, r_counts, cfg.smoothing)
    timings["pass1_s"] = time.perf_counter() - t

    t = time.perf_counter()  # pass 2: the weights; the whole Gumbel order, taken as far as the budget allows
    held = _held_out(cfg, task)
    doc_ids = np.asarray(ground.doc_ids) if held is not None else None
    parts, start = [], 0
    for b in blocks(None, "weights"):
        w = np.asarray(hasher.transform(b) @ delta, dtype=np.float64).ravel()
        if held is not None:  # the task's validation/test documents are never drawn
            w[held.rows(doc_ids[start:start + len(b)], b)] = -np.inf
        parts.append(w)
        start += len(b)
    logw = np.concatenate(parts)
    n_excluded = int(np.isneginf(logw).sum())
    if n_excluded:
        logger.info("decontamination: %d of %d rows belong to the task's validation/test documents and are never "
                    "drawn", n_excluded, n)
    if constraint.kind == "count" and constraint.count > n - n_excluded:
        raise ValueError(f"budget {cfg.budget} = {constraint.count} rows, but only {n - n_excluded} of the {n} rows "
                         f"may be drawn ({n_excluded} are the task's validation/test documents); lower --budget")
    chosen = constraint.draw(gumbel_top_k(logw, n - n_excluded, int(cfg.seed)))
    timings["pass2_s"] = time.perf_counter() - t

    t = time.perf_counter()  # pass 3: the selected rows' counts -> the KL reduction
    s_counts, _ = hasher.counts(blocks(np.sort(chosen), "selected counts"))
    kl = kl_reduction(t_counts, s_counts, raw_counts=r_counts, random_counts=x_counts, n_buckets=cfg.kl_buckets)
    timings["pass3_s"] = time.perf_counter() - t
    if kl["kl_reduction"] <= 0:
        logger.warning("the DSIR subset is no closer to the target than a random subset of the same budget (KL "
                       "reduction %.4f nats): either the corpus already follows the target (KL(target || corpus) = "
                       "%.4f) and the weights, not normalised by length, mostly favour long rows, or the budget is "
                       "too large to shift the subset", kl["kl_reduction"], kl["kl_target_raw"])
    info = {"method": "dsir", "budget": str(cfg.budget), "constraint": constraint.describe(),
            "n_selected": len(chosen), "target": target, "overlap": ov, "kl_reduction": kl["kl_reduction"],
            "n_excluded": n_excluded,
            "kl": {k: v for k, v in kl.items() if k != "kl_reduction"},
            "random_subset": {"size": int(rand.sum()), "seed": [int(cfg.seed), RANDOM_STREAM]},
            "log_weight": {"min": float(logw[np.isfinite(logw)].min()), "max": float(logw.max()),
                           "mean": float(logw[np.isfinite(logw)].mean()),
                           "selected_mean": float(logw[chosen].mean()) if len(chosen) else None},
            "gain": "log importance weight", "weight": "1 (the resampled subset follows the target as is)"}
    timings["total_s"] = time.perf_counter() - t0
    path = _write(out, cfg, ground, chosen, logw, info, timings)
    logger.info("DSIR: %d of %d rows toward %s %s (overlap %.3f, KL reduction %.4f nats vs a random subset) in "
                "%.1fs -> %s", len(chosen), n, target["kind"], target["spec"], ov, kl["kl_reduction"],
                timings["total_s"], path)
    return path


def _write(out: Output, cfg: DSIRConfig, ground: Any, chosen: np.ndarray, logw: np.ndarray, info: dict[str, Any],
           timings: dict[str, float]) -> Path:
    """The subset directory: rows in draw order, gain = log weight, weight 1, assignment kept / not_drawn."""
    from subsetlm.subsets import write_subset
    from subsetlm.subsets.assignment import ASSIGNMENT_FILE, assignment_table

    n = int(ground.n)
    cert = {"objective": None, "upper_bound": None, "ratio": None, "random_objective": None,
            "note": "importance resampling (no submodular objective): see selection.kl_reduction"}
    manifest = {"config": out.identity["config"], "seed": int(cfg.seed), "function": "dsir", "certificate": cert,
                "selection": info}
    table = assignment_table(n, chosen, representative=np.full(n, -1, np.int64), similarity=np.full(n, np.nan),
                             status=np.full(n, "not_drawn", dtype=object))
    return write_subset(out.path, store=ground, indices=chosen, gains=logw[chosen], weights=None, manifest=manifest,
                        stats={"timings": timings}, overwrite=cfg.force, extra_tables={ASSIGNMENT_FILE: table})


def summary(path: str | Path) -> str:
    """The line ``subsetlm dsir`` prints for the subset at ``path``."""
    from subsetlm._mirror import display  # a subset at a URL: shown as the URL, not its mirror
    from subsetlm._io import read_json

    m = read_json(Path(path) / "manifest.json")
    s = m["selection"]
    return (f"wrote {display(path)}: {m['size']} of {m['n_ground']} rows by DSIR toward {s['target']['kind']} "
            f"{s['target']['spec']} ({s['target']['n_docs']} docs); KL reduction {s['kl_reduction']:.4f} nats vs a "
            f"random subset ({s['kl']['kl_reduction_vs_raw']:.4f} vs the whole corpus)")


STAGE = Stage("dsir", DSIRConfig, dsir, summary)
