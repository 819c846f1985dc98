"""Statistics, tables and plots of ``benchmarks/selection_quality.py`` (private helper).

Per (corpus, budget, regime): every arm's held-out loss (mean and 95% CI over seeds), the
share of the full corpus's improvement it keeps, ``(L0 - L_arm) / (L0 - L_full)`` with L0
the loss at step 0 (same initial weights in every arm), and paired comparisons against
random and against full on the seeds both arms finished: mean difference, 95% CI (t),
two-sided paired t-test p-value, wins, and — when the CI covers zero — a power note: the
minimum detectable effect at 80% power with this many seeds, and the seeds the observed
difference would need.

Example
-------
>>> d = paired([1.0, 1.1, 1.2, 1.3], [1.1, 1.2, 1.3, 1.45])
>>> round(d["mean"], 4), d["n"], d["wins"]
(-0.1125, 4, 4)
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

ARM_ORDER = ("full", "random", "fl-hashing", "fl-minilm", "semdedup", "d4", "dsir", "weighted-fl", "ingenious")
COLORS = {"full": "#555", "random": "#c96", "fl-hashing": "#48a", "fl-minilm": "#26c", "semdedup": "#8a4",
          "d4": "#6a6", "dsir": "#a48", "weighted-fl": "#4aa", "ingenious": "#a84"}


def ci95(x) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval); half-width nan for fewer than 2 values."""
    from scipy import stats

    x = np.asarray(x, float)
    if len(x) < 2:
        return float(x.mean()) if len(x) else float("nan"), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def paired(a, b) -> dict:
    """Paired comparison of ``a - b`` (per seed): mean, 95% CI, p, wins of a (lower loss), power note."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    m, h = ci95(d)
    out = {"n": n, "mean": m, "ci": h, "wins": int((d < 0).sum())}
    if n >= 2:
        sd = float(d.std(ddof=1))
        out["p"] = float(stats.ttest_rel(a, b).pvalue) if sd > 0 else (0.0 if m != 0 else 1.0)
        out["sd"] = sd
        if not (abs(m) > h):  # the CI covers zero: what could this design have seen?
            t_a, t_b = stats.t.ppf(0.975, n - 1), stats.t.ppf(0.80, n - 1)
            out["mde"] = float((t_a + t_b) * sd / math.sqrt(n))
            z = stats.norm.ppf(0.975) + stats.norm.ppf(0.80)
            out["seeds_needed"] = int(math.ceil((z * sd / abs(m)) ** 2)) if m else None
    return out


def load(setup, keys: list[tuple]) -> dict:
    """(corpus, budget, regime) -> arm -> {seed: result} for the finished runs among ``keys``."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for k in keys:
        p = Path(_out(setup, *k))
        if p.is_file():
            r = json.loads(p.read_text())
            out[(r["corpus"], r["budget"], r["regime"])][r["arm"]][r["seed"]] = r
    return out


def _out(setup, corpus, budget, arm, seed, regime) -> str:
    return str(setup.root / "runs" / f"{corpus}-{budget:g}-{arm}-{regime}-s{seed}.json")


def step0(groups: dict) -> dict:
    """corpus -> {seed: loss at step 0} (recorded by the random arm's runs)."""
    out: dict = defaultdict(dict)
    for (corpus, _b, _r), arms in groups.items():
        for arm in arms.values():
            for seed, r in arm.items():
                if r.get("step0_loss") is not None:
                    out[corpus][seed] = r["step0_loss"]
    return out


def _fmt_p(p: float | None) -> str:
    if p is None or p != p:
        return "–"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def comparison_cell(c: dict | None) -> str:
    if not c or c["n"] < 2:
        return "–"
    s = f"{c['mean']:+.4f} ± {c['ci']:.4f} (p {_fmt_p(c.get('p'))}, {c['wins']}/{c['n']})"
    if "mde" in c:
        s += f"; MDE {c['mde']:.4f}" + (f", ~{c['seeds_needed']} seeds" if c.get("seeds_needed") else "")
    return s


def table(key: tuple, arms: dict, l0: dict, diag: dict) -> tuple[list[str], dict]:
    """Markdown rows of one (corpus, budget, regime) and the numbers behind them."""
    corpus, budget, regime = key
    rnd, full = arms.get("random", {}), arms.get("full", {})
    lines = [f"### {corpus}, {budget:.0%} budget, {regime}-bound ({next(iter(next(iter(arms.values())).values()))['steps']} steps)",
             "", "| arm | seeds | held-out loss (95% CI) | kept of full's gain | − random (95% CI, p, wins) | "
             "− full (95% CI, p, wins) | rows | distinct docs | redundant rows | f MiniLM |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    nums = {}
    for arm in [a for a in ARM_ORDER if a in arms]:
        res = arms[arm]
        seeds = sorted(res)
        loss = [res[s]["heldout_loss"] for s in seeds]
        m, h = ci95(loss)
        kept = [(l0[s] - res[s]["heldout_loss"]) / (l0[s] - full[s]["heldout_loss"])
                for s in seeds if s in full and s in l0]
        common_r = [s for s in seeds if s in rnd]
        common_f = [s for s in seeds if s in full]
        vs_r = paired([res[s]["heldout_loss"] for s in common_r], [rnd[s]["heldout_loss"] for s in common_r]) \
            if arm != "random" and len(common_r) >= 2 else None
        vs_f = paired([res[s]["heldout_loss"] for s in common_f], [full[s]["heldout_loss"] for s in common_f]) \
            if arm != "full" and len(common_f) >= 2 else None
        dg = diag.get(arm, {})
        km = f"{np.mean(kept):.1%}" if kept else "–"
        lines.append(f"| {arm} | {len(seeds)} | {m:.4f} ± {h:.4f} | {km} | {comparison_cell(vs_r)} | "
                     f"{comparison_cell(vs_f)} | {dg.get('rows', '–')} | {dg.get('distinct_docs', '–')} | "
                     f"{dg.get('redundant_rows', '–')} | {dg.get('fl_minilm', '–')} |")
        nums[arm] = {"seeds": len(seeds), "mean": m, "ci": h, "kept_of_full": float(np.mean(kept)) if kept else None,
                     "vs_random": vs_r, "vs_full": vs_f, "diagnostics": dg}
    return lines, nums


def diagnostics_for(setup, key: tuple, arms: dict, graph) -> dict:
    """arm -> subset diagnostics (random: the mean over its seeds' draws; full: the whole corpus)."""
    from benchmarks._quality_arms import FIXED_ARMS, diagnostics
    from benchmarks._quality_train import random_rows

    corpus, budget, _ = key
    c, nt = setup.corpora[corpus], setup.n_tokens[corpus]
    out = {}
    for arm, res in arms.items():
        if arm in FIXED_ARMS:
            p = setup.root / f"rows-{corpus}-{budget:g}-{arm}.npy"
            if p.is_file():
                out[arm] = diagnostics(c, np.load(p), nt, graph)
        elif arm == "random":
            ds = [diagnostics(c, random_rows(nt, setup.cap(corpus, budget), s), nt, graph) for s in sorted(res)]
            out[arm] = {k: (round(float(np.mean([d[k] for d in ds])), 5 if k == "fl_minilm" else 1))
                        for k in ("rows", "distinct_docs", "redundant_rows", "fl_minilm") if k in ds[0]}
        elif arm == "full":
            out[arm] = diagnostics(c, np.arange(c.n), nt, graph)
    return out


def minilm_graph(setup, corpus: str):
    """(neighbors, similarities) of the exact k=32 MiniLM graph, or None when MiniLM embeddings are not cached."""
    p = setup.root / f"emb-{corpus}-minilm.npy"
    if not p.is_file():
        return None
    from subsetlm.index import knn_graph

    g = knn_graph(np.load(p), 32)
    return g.neighbors, g.similarities


def per_source_table(arms: dict) -> list[str]:
    """Per-source held-out loss of each arm on the imbalanced corpus, and fl − random per source."""
    srcs = sorted({s for res in arms.values() for r in res.values() for s in r.get("per_source", {}) if s != "macro"})
    if not srcs:
        return []
    lines = ["", "Per-source held-out loss (imbalanced corpus; every source weighs the same in `macro`):", "",
             "| arm | " + " | ".join(srcs + ["macro"]) + " |", "|---" * (len(srcs) + 2) + "|"]
    rnd = arms.get("random", {})
    for arm in [a for a in ARM_ORDER if a in arms]:
        res = arms[arm]
        cells = []
        for s in srcs + ["macro"]:
            m, h = ci95([r["per_source"][s] for r in res.values()])
            cell = f"{m:.3f} ± {h:.3f}"
            common = [k for k in res if k in rnd]
            if arm != "random" and len(common) >= 2:
                c = paired([res[k]["per_source"][s] for k in common], [rnd[k]["per_source"][s] for k in common])
                cell += f" (Δ {c['mean']:+.3f}, p {_fmt_p(c.get('p'))})"
            cells.append(cell)
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def verdict(key: tuple, nums: dict, arm: str = "fl-hashing") -> str | None:
    """One sentence: does ``arm`` separate from random on this corpus?"""
    c = (nums.get(arm) or {}).get("vs_random")
    if not c or c["n"] < 2:
        return None
    corpus, budget, regime = key
    where = f"{corpus} at {budget:.0%} ({regime}-bound, {c['n']} paired seeds)"
    if abs(c["mean"]) > c["ci"]:
        better = "lower" if c["mean"] < 0 else "higher"
        return (f"- {where}: {arm} held-out loss is {better} than random by {abs(c['mean']):.4f} nats "
                f"(95% CI ±{c['ci']:.4f}, p {_fmt_p(c.get('p'))}, {c['wins']}/{c['n']} seeds).")
    return (f"- {where}: no separation, {arm} − random = {c['mean']:+.4f} ± {c['ci']:.4f} nats "
            f"(p {_fmt_p(c.get('p'))}); this design detects {c.get('mde', float('nan')):.4f} nats at 80% power.")


def figure(groups: dict, nums: dict):
    """Left: redundant-75 loss vs budget (random, fl-hashing; 95% CI). Right: arm − random at 25% per corpus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for arm in ("random", "fl-hashing", "full"):
        pts = sorted((b, ci95([r["heldout_loss"] for r in g[arm].values()])) for (c, b, reg), g in groups.items()
                     if c == "redundant-75" and reg == "compute" and arm in g and len(g[arm]) >= 2)
        if pts:
            a1.errorbar([p[0] * 100 for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o",
                        capsize=4, label=arm, color=COLORS[arm])
    a1.set_xlabel("budget (% of the corpus's tokens)")
    a1.set_ylabel("held-out loss (nats/token)")
    a1.set_title("redundant-75: loss vs budget (equal steps = one pass)")
    a1.legend(fontsize=8)
    labels, ys, es, cols = [], [], [], []
    for (c, b, reg), arms in sorted(nums.items()):
        if b != 0.25 or reg != "compute":
            continue
        for arm in [a for a in ARM_ORDER if a in arms and a != "random"]:
            v = arms[arm].get("vs_random")
            if v and v["n"] >= 2:
                labels.append(f"{c}\n{arm}")
                ys.append(v["mean"])
                es.append(v["ci"])
                cols.append(COLORS[arm])
    a2.bar(range(len(ys)), ys, yerr=es, capsize=3, color=cols)
    a2.axhline(0, color="k", lw=0.8)
    a2.set_xticks(range(len(ys)), labels, rotation=90, fontsize=6)
    a2.set_ylabel("arm − random, held-out loss (paired, 95% CI)")
    a2.set_title("25% budget: below zero = better than random")
    fig.tight_layout()
    return fig


def report(setup, keys: list[tuple], *, write: bool, elapsed_s: float) -> dict:
    """Print (and with ``write``, publish) the selection-quality section of docs/benchmarks.md."""
    from benchmarks._report import machine, publish, versions

    groups = load(setup, keys)
    if not groups:
        print("no finished runs yet")
        return {}
    l0 = step0(groups)
    m = setup.p["model"]
    runs = [r for g in groups.values() for a in g.values() for r in a.values()]
    wall = [r["wall_s"] for r in runs]
    graphs = {c: minilm_graph(setup, c) for c in {k[0] for k in groups}}
    l0s = [v for d in l0.values() for v in d.values()]
    lines = [f"## Selection quality: held-out loss of every arm, paired seeds (`benchmarks/selection_quality.py "
             f"--preset {setup.name}`)", "",
             f"Machine: {machine()}; {len(runs)} finished runs, {np.median(wall):.0f} s median wall per run "
             f"(single-thread runs, {os.cpu_count()} in parallel; measured while other work shared the cores, so "
             f"times are upper bounds). Versions: {versions(('torch', 'transformers', 'faiss-cpu'))}.",
             f"Model: the library's GPT-2 recipe, {m['layers']} layers × {m['hidden']} wide, {m['heads']} heads, "
             f"sequence {m['seq_len']}, batch {m['batch']}, byte-level BPE vocabulary {m['vocab']}, lr {m['lr']:g} with "
             f"{m['warmup']:.0%} warm-up and {m['schedule']} decay to 0, no dropout, {m['precision']} autocast. "
             f"Corpora: {setup.p['rows']:,} rows each (see the script's docstring); held-out: "
             f"{setup.p['eval_rows']} PubMed abstracts never trained on (imbalanced: 100 chunks per source). "
             f"Loss at step 0: {np.mean(l0s) if l0s else float('nan'):.3f}; unigram entropy of the held-out text: "
             + ", ".join(f"{k} {v:.3f}" for k, v in setup.entropy.items()) + " nats/token.", "",
             "Every arm of a table trains the same steps on the same number of BPE tokens (a token-capped subset; "
             "`compute`-bound = one pass over it). `kept of full's gain` = (L0 − L_arm) / (L0 − L_full), per seed. "
             "Differences are paired by seed (same initial weights); `wins` = seeds where the arm's loss is lower. "
             "MDE = the difference this many seeds detects with 80% power (two-sided 5%), given where the CI "
             "covers zero, with the seeds the observed difference would need.", ""]
    nums = {}
    verdicts = []
    for key in sorted(groups, key=lambda k: (k[2], k[0], k[1])):
        diag = diagnostics_for(setup, key, groups[key], graphs.get(key[0]))
        tl, nm = table(key, groups[key], l0.get(key[0], {}), diag)
        nums[key] = nm
        lines += tl
        if key[0] == "imbalanced":
            lines += per_source_table(groups[key])
        lines.append("")
        for arm in ("fl-hashing", "fl-minilm"):
            v = verdict(key, nm, arm)
            if v:
                verdicts.append(v)
    lines[len(lines):] = ["Facility location against random, per corpus:", ""] + verdicts + [""]
    name = f"selection_quality_{setup.name}.png"
    lines += [f"![held-out loss by budget and arm](figures/{name})", "",
              f"Compute: {len(runs)} runs, {sum(wall) / 3600:.1f} h of single-thread run time in all "
              f"(sum of the runs' wall times; {os.cpu_count()} ran at a time).", ""]
    publish("\n".join(lines), figure(groups, nums), name, f"selection-quality-{setup.name}", write)
    out = setup.root / "summary.json"
    out.write_text(json.dumps({"/".join(map(str, k)): v for k, v in nums.items()}, indent=1, default=float))
    return nums
