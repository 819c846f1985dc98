"""``subsetlm inspect SUBSET``: why each sample was kept or dropped, as text (and a PNG).

Reads the subset's ``assignment.parquet`` (:mod:`subsetlm.subsets.assignment`) and its ground
set (the embedding store, or the corpus files a ``dsir`` / ``retrieve`` subset was drawn from),
and reports: the status counts; a coverage histogram (each dropped sample's similarity to
the subset sample that represents it); the least-covered samples with their text; a few
dropped -> kept pairs (near-duplicates, pruned prototypes, covered samples) with both texts;
per-source counts of the ground set and the subset. ``plot=PATH`` also draws the histogram
and the per-source shares.

Example
-------
>>> print(run_inspect(InspectConfig(subset="runs/subset")))      # doctest: +SKIP
subset runs/subset: 1232 of 4928 samples (facility-location) ...
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from subsetlm._stage import Stage, check_out

logger = logging.getLogger(__name__)

BINS = np.round(np.linspace(0.0, 1.0, 11), 2)


@dataclass
class InspectConfig:
    """Configuration of ``subsetlm inspect``.

    subset : the subset directory. store : its ground set, a store or a corpus file (default: what its
        manifest records: the config's ``corpus`` inputs, else the store path).
    examples : samples shown per list. plot : also write a PNG here (None: no plot).
    """

    VOLATILE: ClassVar[tuple[str, ...]] = ("plot", "verify")

    subset: str = ""
    store: str | None = None
    examples: int = 5
    plot: str | None = None
    verify: bool = True  # check the subset's and store's checksums on open (--no-verify: trust them)

    def validate(self) -> None:
        if not self.subset:
            raise ValueError("no subset given: pass SUBSET (a directory written by select, dedup, dsir or retrieve)")
        if self.examples < 0:
            raise ValueError(f"examples={self.examples}; expected >= 0")
        if self.plot is not None and not str(self.plot).endswith(".png"):
            raise ValueError(f"--plot {self.plot}: expected a .png file name")
        if self.plot is not None:
            check_out(self.plot, "--plot")


def _short(text: str, width: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def coverage_histogram(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of ``similarity`` (NaN dropped, clipped to [0, 1]) in ten bins of 0.1: ``(counts (10,), edges (11,))``."""
    s = np.clip(np.asarray(similarity, dtype=np.float64), 0.0, 1.0)
    counts, _ = np.histogram(s[np.isfinite(s)], bins=BINS)
    return counts, BINS


def ground_set(sub: Any, store: str | None = None, verify: bool = True) -> Any:
    """The rows a subset (a :class:`~subsetlm.subsets.format.SubsetFile`) indexes: ``store`` when
    given, else the inputs its manifest records.

    A ``dsir`` / ``retrieve`` subset records its ``corpus`` inputs (a store directory or corpus
    files, read again with the recorded ``text_field``, ``id_field`` and ``limit``); any other
    subset its store (:attr:`SubsetFile.store_path`). Opened by :func:`subsetlm.embed.store.open_rows`.
    """
    from subsetlm.embed.store import open_rows

    config = sub.manifest.get("config") or {}
    inputs = [store] if store else list(config.get("corpus") or [sub.store_path])
    return open_rows([str(x) for x in inputs], text_field=config.get("text_field", "text"),
                     id_field=config.get("id_field"), limit=config.get("limit"), verify=verify)


def run_inspect(cfg: InspectConfig, progress: bool = False) -> str:
    """The report of ``subsetlm inspect`` (see the module docstring); writes ``cfg.plot`` when given."""
    from subsetlm.subsets.assignment import read_assignment
    from subsetlm.subsets.format import check_against_store, read_subset

    cfg.validate()
    sub = read_subset(cfg.subset, verify=cfg.verify)
    store = ground_set(sub, cfg.store, verify=cfg.verify)
    check_against_store(sub, store)
    a = read_assignment(sub)
    status = np.asarray(a.column("status").to_pylist(), dtype=object)
    rep = a.column("representative").to_numpy()
    dup = a.column("duplicate_of").to_numpy() if "duplicate_of" in a.column_names else np.full(len(rep), -1)
    sim = a.column("similarity").to_numpy(zero_copy_only=False).astype(np.float64)
    n = len(status)
    if n != int(store.n):
        raise ValueError(f"{sub.path}/assignment.parquet has {n} rows but the store has {store.n}; re-run the "
                         "selection (--force)")
    lines = [f"subset {sub.path}: {sub.size} of {n} samples ({sub.manifest.get('function', '?')})"]
    c = sub.manifest.get("certificate") or {}
    if c.get("objective") is not None:
        extra = f", >= {c['ratio']:.4f} of optimal" if c.get("ratio") is not None else ""
        lines.append(f"objective {c['objective']:.6g}{extra}"
                     + (f"; random subset {c['random_objective']:.6g}" if c.get("random_objective") else ""))
    names, counts = np.unique(status, return_counts=True)
    lines.append("status: " + ", ".join(f"{nm} {ct}" for nm, ct in zip(names, counts)))
    dropped = np.flatnonzero(status != "kept")
    hist, edges = coverage_histogram(sim[dropped])
    lines.append(f"coverage of the {len(dropped)} samples not kept (cosine to their representative):")
    width = max(1, int(hist.max())) if hist.size else 1
    for lo, hi, ct in zip(edges[:-1], edges[1:], hist):
        lines.append(f"  {lo:.1f}-{hi:.1f} {'#' * int(round(40 * ct / width)):<40} {ct}")
    n_none = int(np.sum(~np.isfinite(sim[dropped])))
    if n_none:
        lines.append(f"  no representative: {n_none}")
    k = int(cfg.examples)
    if k and dropped.size:
        key = np.where(np.isfinite(sim[dropped]), sim[dropped], -np.inf)
        worst = dropped[np.lexsort((dropped, key))[:k]]
        lines.append(f"least covered ({len(worst)}):")
        lines += _pairs(store, worst, rep, sim, status, dup)
        shown = set(worst.tolist())
        for kind in ("duplicate", "pruned", "covered", "not_drawn"):
            rows = [i for i in np.flatnonzero(status == kind) if i not in shown][:k]
            if rows:
                lines.append(f"{kind} -> kept ({len(rows)} of {int((status == kind).sum())}):")
                lines += _pairs(store, np.asarray(rows), rep, sim, status, dup)
    src = np.asarray(store.sources).astype(str)
    kept = np.zeros(n, bool)
    kept[sub.indices] = True
    lines.append("per source (ground -> subset):")
    for s_name in sorted(set(src.tolist())):
        g = int((src == s_name).sum())
        kk = int((kept & (src == s_name)).sum())
        lines.append(f"  {s_name}: {g} -> {kk} ({kk / g:.1%} kept; {kk / max(1, sub.size):.1%} of the subset)")
    report = "\n".join(lines)
    if cfg.plot:
        from subsetlm._mirror import publish

        plot = check_out(cfg.plot, "--plot")  # a URL: written to its local mirror, then uploaded
        plot_inspect(plot, hist, edges, src, kept)
        publish(plot)
        report += f"\nplot: {cfg.plot}"
    return report


def _pairs(store: Any, rows: np.ndarray, rep: np.ndarray, sim: np.ndarray, status: np.ndarray,
           dup: np.ndarray) -> list[str]:
    """Each row's text, the sample it duplicated (when that is not its representative), and its representative."""
    rows = np.asarray(rows, np.int64)
    want = np.unique(np.concatenate([rep[rows][rep[rows] >= 0], dup[rows][dup[rows] >= 0]])).astype(np.int64)
    texts = dict(zip(rows.tolist(), store.texts(rows)))
    other = dict(zip(want.tolist(), store.texts(want))) if want.size else {}
    out = []
    for i in rows.tolist():
        out.append(f"  [{i}] {status[i]}: {_short(texts[i])}")
        d, r = int(dup[i]), int(rep[i])
        if d >= 0 and d != r:
            X = store.embeddings  # only a dedup subset names duplicates, and it has a store
            cos = float(np.dot(np.asarray(X[i], np.float32), np.asarray(X[d], np.float32)))
            out.append(f"      duplicate of [{d}] cos {cos:.3f}: {_short(other[d])}")
        out.append(f"      -> [{r}] cos {sim[i]:.3f}: {_short(other[r])}" if r >= 0 else "      -> (none in the subset)")
    return out


def plot_inspect(path: Path, hist: np.ndarray, edges: np.ndarray, sources: np.ndarray, kept: np.ndarray) -> Path:
    """A PNG: the coverage histogram and each source's share of the ground set and of the subset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from subsetlm._io import write_bytes_atomic

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.bar(edges[:-1], hist, width=0.095, align="edge", color="#4477aa")
    ax1.set_xlabel("cosine to the representative in the subset")
    ax1.set_ylabel("samples not kept")
    ax1.set_title("coverage")
    names = sorted(set(sources.tolist()))
    g = np.array([(sources == s).mean() for s in names])
    k = np.array([(sources[kept] == s).mean() if kept.any() else 0.0 for s in names])
    x = np.arange(len(names))
    ax2.bar(x - 0.2, g, 0.4, label="ground set", color="#bbbbbb")
    ax2.bar(x + 0.2, k, 0.4, label="subset", color="#ee6677")
    ax2.set_xticks(x, names, rotation=30, ha="right")
    ax2.set_ylabel("share")
    ax2.set_title("sources")
    ax2.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    write_bytes_atomic(Path(path), buf.getvalue())
    return Path(path)


def summary(report: str) -> str:
    """What ``subsetlm inspect`` prints: the report."""
    return report


STAGE = Stage("inspect", InspectConfig, run_inspect, summary)
