"""kNN graph benchmark: ``subsetlm.index.knn_graph`` with the auto settings on synthetic data.

Data: synthetic clustered float16 embeddings (384-d, 2,000 random unit centres, Zipf-like
cluster sizes, per-cluster noise 0.6-1.2 / sqrt(d) per coordinate, rows L2-normalised),
generated once per size with seed 0 and cached as a ``.npy`` under
``$SUBSETLM_CACHE/bench/`` (default ``~/.cache/subsetlm/bench/``), read as a memmap.

Per size, each measurement runs in its own subprocess so that its peak RSS is its own:

* ``graph``: ``knn_graph(X, k)`` with ``IndexConfig()`` (auto) -- wall, CPU (user+sys),
  peak RSS, then ``estimate_recall`` (recall@k on 1,000 seeded rows vs exact search).
* ``sweep`` (``--nprobes``, IVF sizes only): ``build_index`` once, then per nprobe search a
  seeded sample of ``--sweep-queries`` rows; search CPU is extrapolated to all n rows and
  recall@k is measured on the first 1,000 sampled rows against ``exact_topk``.
* ``kmeans`` (``--partitions``): ``kmeans_partitions(X, P, seed=0)``.

The machine may be shared: the 1-minute load average is recorded at the start and end of
every subprocess and printed with the table. CPU seconds are the load-independent number.

After every size the results go to ``bench/index_knn-results.json`` in the cache and the
"index-knn" section of docs/benchmarks.md is rewritten (so a stopped run keeps what it
measured); ``--render FILE`` rebuilds the section from such a file without measuring.

Run::

    .venv/bin/python benchmarks/index_knn.py                      # 100k and 1M, writes docs
    .venv/bin/python benchmarks/index_knn.py --sizes 100000 --nprobes 8,12,16 --partitions 1000
    .venv/bin/python benchmarks/index_knn.py --quick              # n=20000, seconds, no docs
    .venv/bin/python benchmarks/index_knn.py --render ~/.cache/subsetlm/bench/index_knn-results.json
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

from benchmarks._report import machine, update_section

D, N_CENTRES, SIGMA, SEED = 384, 2000, 1.0, 0
TAG = "RESULT "
BLOCK = 16384  # IndexConfig().block_size: knn_graph's search block, also used by the sweep


def bench_dir() -> Path:
    """``$SUBSETLM_CACHE/bench`` or ``~/.cache/subsetlm/bench`` (created)."""
    root = os.environ.get("SUBSETLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "subsetlm")
    p = Path(root) / "bench"
    p.mkdir(parents=True, exist_ok=True)
    return p


def data_path(n: int) -> Path:
    return bench_dir() / f"clustered_n{n}_d{D}_c{N_CENTRES}_s{SEED}.npy"


def make_data(path: Path, n: int, d: int = D, n_centres: int = N_CENTRES, sigma: float = SIGMA,
              seed: int = SEED) -> np.memmap:
    """Synthetic clustered, L2-normalised float16 rows, shape (n, d); cached at ``path``.

    Written in 65,536-row chunks to a temporary ``.npy`` then renamed (atomic); same
    arguments => identical bytes.

    Example
    -------
    >>> X = make_data(Path("/tmp/x.npy"), 1000)  # doctest: +SKIP
    >>> X.shape, X.dtype
    ((1000, 384), dtype('float16'))
    """
    if path.exists():
        return np.load(path, mmap_mode="r")
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((n_centres, d)).astype(np.float32)
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    spread = rng.uniform(0.6, 1.2, n_centres).astype(np.float32) * sigma
    p = 1.0 / np.arange(1, n_centres + 1) ** 0.5
    p /= p.sum()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
    X = np.lib.format.open_memmap(str(tmp), mode="w+", dtype=np.float16, shape=(n, d))
    for s in range(0, n, 65536):
        m = min(n, s + 65536) - s
        c = rng.choice(n_centres, size=m, p=p)
        x = C[c] + spread[c, None] * rng.standard_normal((m, d)).astype(np.float32) / np.sqrt(d)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        X[s:s + m] = x.astype(np.float16)
    X.flush()
    del X
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


# --------------------------------------------------------------------------- child side


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_gib() -> float:
    """This process's peak RSS (GiB) from ``VmHWM``.

    Not ``ru_maxrss``: Linux carries the parent's RSS at fork into a child's ``ru_maxrss``
    across ``execve``, so it would count the benchmark driver's memory too.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # non-Linux fallback (KiB on Linux)


def child_graph(X, k: int, recall_queries: int) -> dict:
    from subsetlm.index import IndexConfig, estimate_recall, knn_graph

    c0, t0 = _cpu(), time.perf_counter()
    g = knn_graph(X, k=k, cfg=IndexConfig(k=k))
    wall, cpu, peak = time.perf_counter() - t0, _cpu() - c0, _peak_gib()
    t1 = time.perf_counter()
    rec = estimate_recall(X, g, n_queries=recall_queries, seed=0)
    return {"params": g.params, "wall_s": wall, "cpu_s": cpu, "peak_rss_gib": peak,
            "recall": rec, "recall_wall_s": time.perf_counter() - t1}


def child_sweep(X, k: int, nprobes: list[int], n_queries: int, recall_queries: int) -> dict:
    import faiss

    from subsetlm.index import IndexConfig, build_index, exact_topk, resolve_params

    n = X.shape[0]
    cfg = IndexConfig(k=k)
    p = resolve_params(n, X.shape[1], cfg)
    c0, t0 = _cpu(), time.perf_counter()
    index = build_index(X, cfg)
    build_cpu, build_wall = _cpu() - c0, time.perf_counter() - t0
    rows = np.sort(np.random.default_rng(SEED).choice(n, min(n, n_queries), replace=False))
    xq = np.asarray(X[rows], dtype=np.float32)
    nr = min(recall_queries, len(rows))
    out, found = [], []
    for nprobe in nprobes:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))
        c0, t0 = _cpu(), time.perf_counter()
        I = np.concatenate([index.search(xq[s:s + cfg.block_size], k)[1]  # blocks, as knn_graph searches
                            for s in range(0, len(xq), cfg.block_size)])
        cpu, wall = _cpu() - c0, time.perf_counter() - t0
        found.append(I[:nr])
        out.append({"nprobe": int(nprobe), "search_cpu_s": cpu, "search_wall_s": wall,
                    "search_cpu_all_rows_s": cpu * n / len(rows)})
    peak = _peak_gib()  # build + search; the exact ground truth below has its own transient peak
    truth, _ = exact_topk(X, xq[:nr], k)
    for e, I in zip(out, found):
        e["recall"] = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(I, truth)]))
    return {"params": p, "build_cpu_s": build_cpu, "build_wall_s": build_wall, "n_queries": len(rows),
            "recall_queries": nr, "sweep": out, "peak_rss_gib": peak}


def child_kmeans(X, n_partitions: int) -> dict:
    from subsetlm.index import kmeans_partitions

    c0, t0 = _cpu(), time.perf_counter()
    res = kmeans_partitions(X, n_partitions, seed=0, return_centroids=True)
    return {"P": n_partitions, "wall_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0,
            "peak_rss_gib": _peak_gib(), "size_min": int(res.sizes.min()), "size_max": int(res.sizes.max()),
            "n_partitions_out": len(res.sizes), "n_dropped": int(res.n_dropped)}


def run_child(spec: dict) -> None:
    load0 = os.getloadavg()[0]
    X = np.load(spec["path"], mmap_mode="r")
    rss_start = _peak_gib()
    if spec["what"] == "graph":
        r = child_graph(X, spec["k"], spec["recall_queries"])
    elif spec["what"] == "sweep":
        r = child_sweep(X, spec["k"], spec["nprobes"], spec["sweep_queries"], spec["recall_queries"])
    else:
        r = child_kmeans(X, spec["partitions"])
    r.update(what=spec["what"], n=int(X.shape[0]), load1_start=load0, load1_end=os.getloadavg()[0],
             rss_before_gib=rss_start)
    print(TAG + json.dumps(r), flush=True)


# --------------------------------------------------------------------------- parent side


def spawn(spec: dict) -> dict:
    """Run one measurement in a fresh interpreter; return its RESULT dict."""
    env = dict(os.environ, OMP_WAIT_POLICY="passive")  # idle OpenMP threads must not spin
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(TAG)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"benchmark child {spec['what']} n={spec.get('path')} failed (exit {proc.returncode}); "
                         f"its stderr is above. Fix that error and re-run.")
    r = json.loads(lines[-1][len(TAG):])
    print(json.dumps(r), flush=True)
    return r


def _n(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _index(p: dict) -> str:
    if p["kind"] == "ivf":
        return f"IVF nlist={p['nlist']} nprobe={p['nprobe']}, {p.get('storage', 'float32')} storage"
    if p["kind"] == "ivfpq":
        return f"IVF-PQ nlist={p['nlist']} nprobe={p['nprobe']} m={p['pq_m']}"
    return p["kind"]


def _s(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _load(r: dict) -> str:
    return f"{r['load1_start']:.1f} / {r['load1_end']:.1f}"


def render(results: list[dict], args, started: str, mach: str | None = None) -> str:
    k = args.k
    lines = [
        "## kNN graph (index stage)",
        "",
        f"Script: `benchmarks/index_knn.py {' '.join(args.argv)}`".rstrip() + f" (run {started}).",
        f"Machine: {mach or machine()}.",
        "The machine is **shared with other jobs**: the 1-minute load average at the start / end of",
        "each measurement is in the tables; wall times are inflated when it exceeds the core count.",
        "CPU seconds (user+sys of the measuring process, `OMP_WAIT_POLICY=passive`) are the",
        "load-independent number. Each measurement ran in its own subprocess; peak RSS is that",
        "process's, including the memory-mapped float16 input pages.",
        "",
        f"Data: synthetic, {D}-d, rows drawn around {N_CENTRES:,} random unit centres (Zipf-like cluster",
        f"sizes, per-cluster noise {0.6 * SIGMA:g}-{1.2 * SIGMA:g} / sqrt(d) per coordinate), L2-normalised, float16 `.npy`",
        f"memmap, seed {SEED}. k = {k}; recall@{k} = `estimate_recall` against exact search on",
        f"{args.recall_queries:,} seeded rows (self counted on both sides).",
        "",
        f"`knn_graph(X, k={k}, cfg=IndexConfig())` (auto settings):",
        "",
        f"| n | index (auto) | wall s | CPU s | peak RSS | recall@{k} | load 1-min start / end |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        g = r.get("graph")
        if g:
            lines.append(f"| {_n(g['n'])} | {_index(g['params'])} | {g['wall_s']:.1f} | {g['cpu_s']:.1f} | "
                         f"{g['peak_rss_gib']:.2f} GiB | {g['recall']:.4f} | {_load(g)} |")
    sweeps = [r["sweep"] for r in results if r.get("sweep")]
    if sweeps:
        nps = args.nprobes
        lines += [
            "",
            "nprobe sweep (same auto index, built once with `build_index`; per nprobe: search CPU for a",
            f"seeded sample of {sweeps[0]['n_queries']:,} rows, searched in {BLOCK:,}-row blocks, extrapolated to all",
            f"n rows / recall@{k} on {sweeps[0]['recall_queries']:,} of them vs `exact_topk`). The extrapolated CPU",
            "comes from a few seconds of search on a shared machine: compare the nprobe columns within a",
            "row, not with the `knn_graph` table above (which times the search of all n rows).",
            "",
            "| n | index | build CPU s | " + " | ".join(f"nprobe={p}" for p in nps)
            + " | peak RSS (build + search) | load |",
            "|---|---|---|" + "---|" * len(nps) + "---|---|",
        ]
        for s in sweeps:
            cells = [f"{_s(e['search_cpu_all_rows_s'])} s / {e['recall']:.4f}" for e in s["sweep"]]
            p = dict(s["params"], nprobe="*")
            lines.append(f"| {_n(s['n'])} | {_index(p).replace(' nprobe=*', '')} | {s['build_cpu_s']:.1f} | "
                         + " | ".join(cells) + f" | {s['peak_rss_gib']:.2f} GiB | {_load(s)} |")
    kms = [r["kmeans"] for r in results if r.get("kmeans")]
    if kms:
        lines += [
            "",
            "`kmeans_partitions(X, P, seed=0)` (default sample min(n, 256 P, 2^20) rows, 20 iterations):",
            "",
            "| n | P | wall s | CPU s | partition sizes | dropped | peak RSS | load |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in kms:
            lines.append(f"| {_n(m['n'])} | {m['P']:,} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | "
                         f"{m['size_min']:,}..{m['size_max']:,} | {m['n_dropped']} | {m['peak_rss_gib']:.2f} GiB | "
                         f"{_load(m)} |")
    if sweeps or kms:
        lines += ["", "Loads are the 1-minute load average at the start / end of that measurement."]
    not_run = [s for s in args.sizes if s not in {r['n'] for r in results}]
    if not_run:
        lines += ["", "Not measured in this run: n = " + ", ".join(f"{s:,}" for s in not_run) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated n (default 100000,1000000)")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--recall-queries", type=int, default=1000)
    ap.add_argument("--nprobes", default="", help="nprobe sweep, e.g. 8,12,16 (IVF sizes only; default none)")
    ap.add_argument("--sweep-queries", type=int, default=20000, help="rows searched per nprobe (default 20000)")
    ap.add_argument("--partitions", type=int, default=0, help="also time kmeans_partitions with P partitions")
    ap.add_argument("--quick", action="store_true", help="n=20000, P=100, no docs (smoke test, seconds)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    ap.add_argument("--render", metavar="JSON", help="re-render the section from a results file this script "
                    "wrote (index_knn-results.json in the cache), without measuring")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return []
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        md = render(saved["results"], argparse.Namespace(**saved["args"]), saved["started"], saved["machine"])
        if not args.no_write:
            update_section("index-knn", md)
        print(md)
        return saved["results"]
    args.argv = [a for a in argv]
    if args.quick:
        args.sizes, args.no_write = "20000", True
        args.partitions = min(args.partitions or 100, 100)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s]
        args.nprobes = [int(s) for s in args.nprobes.split(",") if s]
    except ValueError:
        raise SystemExit(f"--sizes/--nprobes must be comma-separated integers; got {args.sizes!r} / {args.nprobes!r}")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"machine: {machine()}; load1 now {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for n in args.sizes:
        path = data_path(n)
        t = time.perf_counter()
        make_data(path, n)
        print(f"data n={n}: {path} ({time.perf_counter() - t:.1f}s)", flush=True)
        base = {"path": str(path), "k": args.k, "recall_queries": args.recall_queries}
        r = {"n": n, "graph": spawn(dict(base, what="graph"))}
        if args.nprobes and r["graph"]["params"]["kind"] in ("ivf", "ivfpq"):
            r["sweep"] = spawn(dict(base, what="sweep", nprobes=args.nprobes, sweep_queries=args.sweep_queries))
        if args.partitions:
            r["kmeans"] = spawn(dict(base, what="kmeans", partitions=min(args.partitions, n)))
        results.append(r)
        md = render(results, args, started)
        # results in the cache (not docs) after every size; --render rebuilds the section from them
        saved = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "render")},
                 "started": started, "machine": machine(), "results": results}
        out = bench_dir() / ("index_knn-results-quick.json" if args.quick else "index_knn-results.json")
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(saved, indent=1))
        os.replace(tmp, out)
        if not args.no_write:  # after every size, so a long run that is stopped keeps what it measured
            update_section("index-knn", md)
    print(md)
    return results


if __name__ == "__main__":
    main()
