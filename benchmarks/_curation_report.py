"""Tables, reading and plot of ``benchmarks/curation.py`` (private helper).

``markdown(results)`` turns the results JSON into the ``curation`` section of
docs/benchmarks.md; ``figure(results)`` draws time and peak RSS against n per method
(log-log), saved as docs/figures/curation_scaling.png.
"""

from __future__ import annotations

import statistics

from benchmarks import _curation_data as data
from benchmarks._report import cores

METHODS = ("facility-location", "semdedup", "d4", "dsir")
FIGURE = "curation_scaling.png"
LABELS = {"facility-location": "facility location", "semdedup": "SemDeDup", "d4": "D4", "dsir": "DSIR"}
CALLS = {"facility-location": "`select_array(X, 0.25, k=32)`: kNN graph + lazy greedy",
         "semdedup": "k-means (ceil(n/10k) partitions) + `semdedup(X, labels, target=0.75 n)`",
         "d4": "k-means + `d4(X, labels)`: SemDeDup to 75%, prototype pruning to 25%",
         "dsir": "`dsir_select(texts, target, 0.25 n)`: hashed uni+bigrams (2^18), Gumbel top-k"}


def _agg(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return {"ok": False, "note": runs[0]["note"], "rss": runs[0]["rss_gb"]}
    med = statistics.median
    walls = [r["wall_s"] for r in ok]
    names = list(dict.fromkeys(k for r in ok for k in r["phases"]))
    return {"ok": True, "wall": med(walls), "wmin": min(walls), "wmax": max(walls), "n_ok": len(ok),
            "cpu": med(r["cpu_s"] for r in ok), "rss": max(r["rss_gb"] for r in ok),
            "before": med(r.get("rss_start_gb", r["rss_before_gb"]) for r in ok),
            "phases": {k: med(r["phases"].get(k, 0.0) for r in ok) for k in names}, "keeps": ok[0]["keeps"],
            "extra": ok[0]["extra"]}


def _summary(size: dict) -> dict[str, dict]:
    by: dict[str, list] = {}
    for r in size["runs"]:
        by.setdefault(r["method"], []).append(r)
    return {m: _agg(by[m]) for m in METHODS if m in by}


def _keeps_text(m: str, a: dict) -> str:
    k = a["keeps"]
    if m == "dsir":
        s = f"PubMed sentences {k['pubmed']:.1%} of kept (pool {k['pool_pubmed']:.1%})"
        if k["pool_repeats"] > 0:
            s += f"; repeated rows {k['repeats']:.1%} (pool {k['pool_repeats']:.1%})"
        return s
    s = (f"redundant planted copies {k['redundant']:,} = {k['redundant'] / k['kept']:.1%} of kept "
         f"(pool {k['pool_redundant'] / (k['kept'] / k['frac']):.1%})")
    e = a["extra"]
    if m == "facility-location" and e.get("certificate_ratio"):
        s += f"; f(S) / bound {e['certificate_ratio']:.4f}"
    elif "eps" in e:
        s += f"; eps found {e['eps']:.4g} ({e['partitions']} partitions" + (
            f", {e['proto_partitions']} prototype clusters)" if "proto_partitions" in e else ")")
    return s


def _phases_text(a: dict) -> str:
    ph = dict(a["phases"])
    ph["other"] = max(0.0, a["wall"] - sum(ph.values()))
    return ", ".join(f"{k} {v:.1f}" for k, v in ph.items() if v >= 0.05 or k != "other")


def table(size: dict) -> str:
    rows = [("| method | call | kept | wall s (median, min-max) | CPU s | peak RSS GB (RSS at the call's start) "
             "| phases s | what it keeps |"), "|---|---|---|---|---|---|---|---|"]
    for m, a in _summary(size).items():
        if not a["ok"]:
            rows.append(f"| {LABELS[m]} | {CALLS[m]} | | {a['note']} | | {a['rss']:.2f} at the kill | | |")
            continue
        spread = f" ({a['wmin']:.1f}-{a['wmax']:.1f})" if a["n_ok"] > 1 else " (one run)"
        rows.append(f"| {LABELS[m]} | {CALLS[m]} | {a['keeps']['kept']:,} ({a['keeps']['frac']:.0%}) | "
                    f"{a['wall']:.1f}{spread} | {a['cpu']:.1f} | {a['rss']:.2f} ({a['before']:.2f}) | "
                    f"{_phases_text(a)} | {_keeps_text(m, a)} |")
    return "\n".join(rows)


def _inputs_text(size: dict) -> str:
    n, inp, out = size["n"], size["inputs"], []
    if "emb" in inp:
        st = inp["emb"]["stats"]
        out.append(f"embeddings: {n:,} x 384 synthetic clustered (seed 0), {data.DUP_FRAC:.0%} of the rows "
                   f"replaced by noisy copies of other rows (cosine to the source min {st['copy_cos'][0]:.3f}, median "
                   f"{st['copy_cos'][1]:.3f}, max {st['copy_cos'][2]:.3f}; the nearest other original of "
                   f"{st['sample']:,} sampled originals: "
                   f"median {st['original_nn_cos'][0]:.2f}, max {st['original_nn_cos'][1]:.2f}), float16 "
                   "memory-mapped")
    if "txt" in inp:
        t = inp["txt"]
        rep = (f"the {t['sentences']:,} distinct sentences repeated {t['meta']['repeats']}x with a counter "
               f"appended" if n > t["sentences"] else f"the first {n:,} of {t['sentences']:,} shuffled sentences")
        out.append(f"texts: {rep} (PubMed {t['meta']['documents']['pubmed']:,} abstracts and "
                   f"{t['meta']['documents']['sotu']:,} State of the Union speeches, split into sentences); "
                   f"target: {t['target_texts']:,} `pubmed-task` train abstracts")
    return "; ".join(out)


def reading(results: dict) -> list[str]:
    """Where each method spends its time, from the phases of the largest size each method finished."""
    best: dict[str, tuple[int, dict]] = {}
    for size in sorted(results["sizes"].values(), key=lambda s: s["n"]):
        for m, a in _summary(size).items():
            if a["ok"]:
                best[m] = (size["n"], a)
    why = {"facility-location": "the graph is an exact FAISS search up to 50,000 rows and an IVF search beyond "
                                "(the default); the lazy greedy then touches only the k = 32 neighbour lists",
           "semdedup": "the pairwise similarities are one BLAS product per block of each partition "
                       "(O(n · n/P · d)), masked to the earlier rows and reduced by a column-wise argmax",
           "d4": "SemDeDup as above, then a second k-means over the kept rows with round(sqrt(m)) clusters",
           "dsir": "sklearn's HashingVectorizer tokenises every text twice (once for the raw model, once for "
                   "the weights), in Python"}
    out = []
    for m, (n, a) in best.items():
        ph = sorted(a["phases"].items(), key=lambda kv: -kv[1])[:2]
        share = ", ".join(f"{k} {v / a['wall']:.0%}" for k, v in ph)
        mapped = "" if m == "dsir" else f", of which {n * 768 / 1e9:.2f} GB can be the mapped embeddings"
        out.append(f"- **{LABELS[m]}** (n = {n:,}, {a['wall']:.3g} s wall, {a['cpu']:.3g} CPU s, peak "
                   f"{a['rss'] - a['before']:.2f} GB above the start{mapped}): {share} of the wall time; {why[m]}.")
    if "d4" in best and "semdedup" in best and best["d4"][0] == best["semdedup"][0]:
        n, d4, sd = best["d4"][0], best["d4"][1], best["semdedup"][1]
        m, clusters = _d4_prototype_step(d4, sd)
        if m is not None and clusters:
            from subsetlm.index.partitions import MAX_SAMPLE

            sample = min(m, 256 * clusters, MAX_SAMPLE)  # kmeans_partitions' default training sample
            out.append(f"- D4's peak RSS is {d4['rss'] - sd['rss']:.2f} GB above SemDeDup's at n = {n:,}: its "
                       f"prototype step gathers the m = {m:,} kept rows into one float32 array (m x 384 x 4 bytes = "
                       f"{m * 384 * 4 / 1e9:.2f} GB), then k-means copies a float32 training sample of {sample:,} "
                       f"rows ({sample * 384 * 4 / 1e9:.2f} GB) out of it.")
    gauge = [r["phases"]["target model"] for s in results["sizes"].values() for r in s["runs"]
             if r["method"] == "dsir" and r["status"] == "ok" and "target model" in r["phases"]]
    if len(gauge) > 1:
        out.append(f"- Noise gauge: DSIR's target model is the same work at every size (hashing the same target "
                   f"texts); across the {len(gauge)} runs it took {min(gauge):.1f}-{max(gauge):.1f} s (a factor "
                   f"of {max(gauge) / min(gauge):.1f}): compare times across sizes and methods with that in "
                   "mind.")
    return out


def _d4_prototype_step(d4: dict, semdedup: dict) -> tuple[int | None, int | None]:
    """(rows SemDeDup kept for D4's prototype step, its k-means clusters), as the D4 run recorded them.

    Results written before the run recorded ``kept_after_dedup`` take the SemDeDup run's kept count
    when both found the same eps (the same SemDeDup step on the same partitions); else None.
    """
    e = d4["extra"]
    m = e.get("kept_after_dedup")
    if m is None and e.get("eps") is not None and semdedup["extra"].get("eps") == e["eps"]:
        m = semdedup["keeps"]["kept"]
    return m, e.get("proto_partitions")


def _others_text(runs: list[dict]) -> str:
    if any("others" not in r for r in runs):
        return "not recorded"
    return ", ".join(f"`{c}`" for c in sorted({c for r in runs for c in r["others"]})) or "none"


def _range(v: list[float]) -> str:
    return f"{min(v):.2f}-{max(v):.2f}" if v else "n/a"


def markdown(results: dict) -> str:
    sizes = sorted(results["sizes"].values(), key=lambda s: s["n"])
    nc = cores(results)
    intro = ("Each method runs once per repeat in its own child process: **wall s** and **CPU s** (user + system) "
             "cover the call only (imports, numba's start-up and reading the inputs come before the clock); "
             "**peak RSS** is the child's `ru_maxrss` (interpreter, libraries, inputs and the method together; "
             "in brackets the resident set when the call starts: libraries and the inputs read so far, where a "
             "memory-mapped array has no page in yet: its n x 384 float16 rows, n x 768 bytes, come in as the "
             "method reads them). **phases** are timed inside the "
             "call by wrapping the library's own steps (the outermost wrapped step only, so none counts twice); "
             "`other` is the rest. Facility location, D4 and DSIR keep 25% of the rows, SemDeDup 75% (its eps is "
             "found for that target). The embedding methods run on synthetic data "
             f"(`_selection_data.synthetic_embeddings`, 384-d, seed 0) where {data.DUP_FRAC:.0%} of the rows were "
             f"overwritten by noisy copies `normalize(x_src + s e)` of other rows, e ~ N(0, I/d), "
             f"s ~ U{data.NOISE} (the cosines are given per size), so **what it keeps** counts the kept rows "
             "whose original or a copy of it was already kept (redundant copies). DSIR runs on real sentences; "
             "its target overlaps the pool "
             "(the task's abstracts are PubMed abstracts), and the counter appended to repeated rows adds one "
             "n-gram pair to each of them (which DSIR weighs against them: see the repeated rows it keeps).")
    command = results.get("command", "--max-seconds 900 --wait-quiet 60")
    lines = ["## Curation: facility location vs SemDeDup, D4 and DSIR (`benchmarks/curation.py`)", "",
             f"`python benchmarks/curation.py {command}` (`--quick` for a smoke run).", "",
             intro, "", f"Machine: {results['machine']}. Versions: "
             + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + "."]
    for s in sizes:
        reps = f"{s['repeats']} repeat(s): median wall, min-max" if s["repeats"] > 1 else "one run each"
        lines += ["", f"### n = {s['n']:,}", "",
                  (f"Inputs: {_inputs_text(s)}. Measured {s['span']}; {reps}; time cap {s['max_seconds']:.0f} s "
                   "per run."),
                  "", "Load: `uptime` before and after: " + "; ".join(f"`{u}`" for u in s["uptime"])
                  + "; 1-min load average at the start of each child: " + _range([r["load1"] for r in s["runs"]])
                  + f" ({nc} cores; a child runs up to {nc} threads, so load beyond that is other work); "
                  + "other test or benchmark processes at a child's start or end: "
                  + _others_text(s["runs"]) + ".",
                  "", table(s)]
    lines += ["", f"![curation time and memory vs n](figures/{FIGURE})", "", "### Where the time goes", ""]
    lines += reading(results)
    for s in sizes:
        if s.get("profiles"):
            lines += ["", (f"Inside the steps, from one more run per method at n = {s['n']:,} under cProfile "
                           "(own time per function, excluding the functions it calls, as a share of the profiled "
                           "wall time; a matrix product or fancy indexing written as an operator is own time of "
                           "the function that contains it; cProfile slows Python-level code):"), ""]
            lines += [f"- **{LABELS[m]}** ({p['wall_s']:.0f} s profiled): "
                      + ", ".join(f"`{lab}` {tt:.1f} s = {tt / p['wall_s']:.0%} ({nc:,} call{'s' * (nc != 1)})"
                                  for lab, tt, nc in p["top"][:5])
                      for m, p in s["profiles"].items()]
    return "\n".join(lines) + "\n"


def figure(results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    sizes = sorted(results["sizes"].values(), key=lambda s: s["n"])
    for m in METHODS:
        pts = [(s["n"], a) for s in sizes for mm, a in _summary(s).items() if mm == m and a["ok"]]
        if not pts:
            continue
        ns = [p[0] for p in pts]
        err = [[p[1]["wall"] - p[1]["wmin"] for p in pts], [p[1]["wmax"] - p[1]["wall"] for p in pts]]
        axes[0].errorbar(ns, [p[1]["wall"] for p in pts], yerr=err, fmt="o-", capsize=3, label=LABELS[m])
        axes[1].plot(ns, [p[1]["rss"] for p in pts], "o-", label=LABELS[m])
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    for ax, title in zip(axes, ("wall time (s; median, min-max)", "peak RSS (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("rows n")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


