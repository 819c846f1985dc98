"""The blocked kNN graph (bfloat16 products, exact re-scoring) against FAISS on this CPU.

Rows, each measured in its own subprocess (``OMP_WAIT_POLICY=passive``) on the same data:

* ``faiss-flat``: ``faiss.IndexFlatIP`` add + ``search(X, 32)`` of every row: the raw FAISS
  exact search (no re-scoring, no graph).
* ``flat``: ``knn_graph(X, 32, IndexConfig(kind="flat"))``, subsetlm's exact graph on FAISS.
* ``ivf-auto``: ``knn_graph`` with the settings ``auto`` used before the blocked method
  (FAISS IVF search, nlist = 4 sqrt n, nprobe = max(12, nlist / 512)) -- "today's auto IVF".
* ``blocked``: ``knn_graph(X, 32, IndexConfig(graph_method="blocked"))``: all pairs in
  bfloat16 blocks, k + 16 candidates re-scored exactly (``subsetlm.index.blocked``).
* ``blocked-ivf``: ``ivf_blocked_knn``: the same kernel over IVF lists, nprobe chosen on a
  sample for recall 0.99 (``subsetlm.index.ivf_blocked``).

wall / CPU (user + sys) / peak RSS of the graph build; ``torch import`` is the blocked rows'
first ``import torch`` (in the subprocess, outside the clock: add it for a fresh process).
recall@32 = ``estimate_recall`` on 1,000 seeded rows against exact numpy search (after the
clock). The 1-minute load average at start / end is recorded: the machine is shared.

Data: ``pubmed-20k``: MiniLM (all-MiniLM-L6-v2) embeddings of the first 20,000 PubMed
abstract chunks, computed once by ``benchmarks/_selection_data.pubmed_embeddings`` and cached;
``synthetic-N``: ``benchmarks/index_knn.make_data`` (2,000 Zipf-sized clusters, float16).

Run::

    .venv/bin/python benchmarks/knn_blocked.py                       # all rows, writes docs
    .venv/bin/python benchmarks/knn_blocked.py --data pubmed-20k     # one data set
    .venv/bin/python benchmarks/knn_blocked.py --render FILE         # docs from saved results
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import cpu_flags, machine, update_section  # noqa: E402

TAG = "RESULT "
K = 32
PLAN = {  # data set -> methods
    "pubmed-20k": ["faiss-flat", "flat", "blocked"],
    "synthetic-100k": ["ivf-auto", "blocked", "blocked-ivf"],
    "synthetic-1M": ["ivf-auto", "blocked-ivf"],
}


def _path(data: str) -> Path:
    if data == "pubmed-20k":
        from benchmarks import _selection_data

        return _selection_data.pubmed_embeddings(_selection_data.bench_cache() / "pubmed-minilm-20000.npy", 20000)[0]
    from benchmarks.index_knn import data_path, make_data

    n = {"synthetic-100k": 100_000, "synthetic-1M": 1_000_000}[data]
    make_data(data_path(n), n)
    return data_path(n)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def child(spec: dict) -> dict:
    load0 = os.getloadavg()[0]
    X = np.load(spec["path"], mmap_mode="r")
    n = X.shape[0]
    method = spec["method"]
    import faiss  # noqa: F401 - imported before the clock, as by every row

    from subsetlm.index import IndexConfig, KNNGraph, estimate_recall, knn_graph

    from numba import njit

    njit(lambda a: a + 1)(1)  # numba's one-time start-up, before the clock (every subsetlm row pays it)
    t_torch = None
    if method.startswith("blocked"):
        t = time.perf_counter()
        import torch  # noqa: F401

        t_torch = time.perf_counter() - t
    c0, t0 = _cpu(), time.perf_counter()
    params: dict = {}
    if method == "faiss-flat":
        import faiss

        index = faiss.IndexFlatIP(X.shape[1])
        index.add(np.ascontiguousarray(X, dtype=np.float32))
        _, I = index.search(np.ascontiguousarray(X, dtype=np.float32), K)
        g = KNNGraph(I.astype(np.int32), np.zeros(I.shape, np.float32))
    elif method == "flat":
        g = knn_graph(X, K, IndexConfig(kind="flat"))
    elif method == "ivf-auto":
        from subsetlm.index import blocked

        blocked.torch_available = lambda: False  # the choice auto made before the blocked method
        g = knn_graph(X, K, IndexConfig())
    elif method == "blocked":
        g = knn_graph(X, K, IndexConfig(graph_method="blocked"))
    elif method == "blocked-ivf":
        from subsetlm.index.ivf_blocked import ivf_blocked_knn

        nb, sims, info = ivf_blocked_knn(X, K)
        g = KNNGraph(nb, sims, dict(info, kind="blocked"))
    else:
        raise SystemExit(f"unknown method {method!r}")
    wall, cpu, peak = time.perf_counter() - t0, _cpu() - c0, _peak_gib()
    params = {a: b for a, b in g.params.items() if a not in ("n", "d")}
    rec = estimate_recall(X, g, n_queries=1000, seed=0)
    return {"data": spec["data"], "method": method, "n": int(n), "wall_s": wall, "cpu_s": cpu, "peak_rss_gib": peak,
            "recall": rec, "torch_import_s": t_torch, "params": params, "load1_start": load0,
            "load1_end": os.getloadavg()[0]}


def spawn(spec: dict) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(TAG)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"benchmark child {spec} failed (exit {proc.returncode}); its stderr is above.")
    r = json.loads(lines[-1][len(TAG):])
    print(json.dumps(r), flush=True)
    return r


def _setting(r: dict) -> str:
    p = r["params"]
    if r["method"] == "faiss-flat":
        return "IndexFlatIP, search k=32"
    if r["method"] == "ivf-auto":
        return f"FAISS IVF nlist={p.get('nlist')} nprobe={p.get('nprobe')}"
    if r["method"] == "flat":
        return "FAISS flat + exact re-scoring"
    if p.get("method") == "ivf":
        return (f"{p.get('precision')}, IVF nlist={p.get('nlist')} nprobe={p.get('nprobe')} (chosen), "
                f"{100 * p.get('pair_fraction', 0):.2f}% of pairs")
    return f"{p.get('precision')} blocks, k'=k+{p.get('margin')}"


NOTES = [
    "Reading the table (issue 17, targets: recall@32 >= 0.99 and >= 2.5x FAISS IndexFlatIP at 20k, >= 2.5x "
    "today's auto IVF at 1M):",
    "",
    "- **Quality.** On the real MiniLM embeddings the blocked graph is the exact graph: the same neighbours and "
    "the same similarity bits as `kind=\"flat\"` in every row (recall 1.0 against it; margins 8, 16 and 32 "
    "all gave 1.0). The IVF-restricted blocked graph reaches its 0.99 target where today's auto IVF settles "
    "where nprobe 12 lands (0.98 at 100k).",
    "- **20k.** While these rows ran another job held one of the two cores, so no row got more than about one "
    "core (CPU s ~ wall s). The blocked build's CPU (~1.7 s) splits into bf16 products ~0.45, the filter ~0.3, "
    "exact re-scoring ~0.35, the recall check ~0.2 and loading numba's cached kernels / oneDNN's first kernels "
    "~0.3. A fresh process also pays `import torch` (~1.1 s), so `auto` keeps FAISS up to about 22k rows "
    "(estimated) and uses the blocked method above; with torch already imported it uses it from about 12k.",
    "- **100k.** All pairs in bf16 cost about what FAISS IVF costs (nprobe 12, recall 0.98) and give the exact "
    "graph. This synthetic mixture has a long tail of points whose neighbours lie in other clusters: IVF needs "
    "113 of 1,265 lists for 0.99, so the IVF-restricted kernel is no cheaper than all pairs here.",
    "- **1M** (synthetic: no million real MiniLM embeddings exist yet): the IVF-restricted kernel chose nprobe "
    "6 of 4,000 lists on its sample and checked 0.991 on another; its CPU splits into its own k-means (~15 s "
    "wall), probes (~15 s), the list-by-list products and filter (~35 s) and re-scoring (~20 s).",
    "- **Whole process** (`subsetlm index STORE` then `subsetlm select STORE --out DIR`, defaults, real MiniLM "
    "stores, `/usr/bin/time`, 2 runs each, measured by hand on 2026-12-03 against the previous commit): 20,000 "
    "rows (`auto` keeps FAISS flat; load 1.6): index 2.58 -> 2.42 s, select 1.15 -> 1.13 s (the faster exact "
    "re-scoring). 32,932 rows (`auto` picks blocked; another job held one core, load 1.8-2.4): index 12.2-12.5 "
    "-> 6.7-7.1 s wall (12.1-12.5 -> 6.6-6.8 CPU s, torch's import included), select 1.41-1.44 -> 1.42-1.56 s; "
    "the same subset objective. Neither command imports transformers; `select` on an existing graph imports "
    "neither torch nor transformers.",
]


def render(results: list[dict], started: str) -> str:
    lines = [
        "## kNN graph: blocked bfloat16 products vs FAISS",
        "",
        f"Script: `benchmarks/knn_blocked.py` (run {started}). Machine: {machine()}; CPU flags "
        f"{', '.join(cpu_flags('avx512_bf16', 'amx_bf16', 'avx512_vnni')) or 'none of bf16/amx'}. "
        "k = 32. The machine is **shared with other jobs**: the 1-minute load average at the start / end "
        "of each measurement is in the table; with load above 2 (the core count) wall times are inflated "
        "and CPU seconds are the steadier number.",
        "",
        "Each row is one subprocess. wall / CPU s: the graph build only (data memory-mapped; imports and "
        "numba's one-time start-up before the clock; loading subsetlm's numba kernels from their disk cache "
        "inside it). torch import: the blocked rows' `import torch`, outside the clock (a fresh "
        "`subsetlm index` process pays it; `auto` counts it). recall@32: `estimate_recall`, 1,000 seeded rows "
        "vs exact numpy search (ties among duplicate chunks make even the exact graph 0.9992 on PubMed); the "
        "blocked rows' own check (float32 search, 1,000 other rows) is in the manifest. speed-up: the FAISS "
        "row's wall (CPU) over this row's wall (CPU); baseline IndexFlatIP at 20k, today's auto IVF at 100k / 1M.",
        "",
        "| data | n | method | setting | wall s | CPU s | torch import s | peak RSS GiB | recall@32 | speed-up wall (CPU) "
        "| load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {}
    for r in results:
        if r["method"] in ("faiss-flat", "ivf-auto"):
            base[r["data"]] = r
    for r in results:
        b = base.get(r["data"])
        sp = (f"{b['wall_s'] / r['wall_s']:.1f}x ({b['cpu_s'] / r['cpu_s']:.1f}x)"
              if b and r["method"] not in ("faiss-flat", "ivf-auto") else "")
        ti = f"{r['torch_import_s']:.2f}" if r.get("torch_import_s") is not None else ""
        lines.append(f"| {r['data']} | {r['n']:,} | {r['method']} | {_setting(r)} | {r['wall_s']:.2f} | "
                     f"{r['cpu_s']:.2f} | {ti} | {r['peak_rss_gib']:.2f} | {r['recall']:.4f} | {sp} | "
                     f"{r['load1_start']:.1f} / {r['load1_end']:.1f} |")
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=",".join(PLAN), help="comma-separated data sets: " + ", ".join(PLAN))
    ap.add_argument("--methods", default=None, help="comma-separated subset of the methods to run")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--update", action="store_true", help="replace only the rows measured now in the saved results")
    ap.add_argument("--render", default=None, help="render docs from a saved results JSON file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(TAG + json.dumps(child(json.loads(args.child))), flush=True)
        return []
    from benchmarks._selection_data import bench_cache

    out = bench_cache() / "knn_blocked-results.json"
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        update_section("knn-blocked", render(saved["results"], saved["started"]))
        return saved["results"]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = []
    if args.update and out.exists():  # keep the saved rows this run does not measure again
        saved = json.loads(out.read_text())
        started, results = saved["started"] + f", updated {started}", saved["results"]
    for data in args.data.split(","):
        path = _path(data)
        for m in PLAN[data]:
            if args.methods and m not in args.methods.split(","):
                continue
            r = spawn({"data": data, "method": m, "path": str(path)})
            results = [x for x in results if (x["data"], x["method"]) != (data, m)] + [r]
            results.sort(key=lambda x: (list(PLAN).index(x["data"]), PLAN[x["data"]].index(x["method"])))
            out.write_text(json.dumps({"started": started, "results": results}, indent=1))
            if not args.no_docs:
                update_section("knn-blocked", render(results, started))
    return results


if __name__ == "__main__":
    main()
