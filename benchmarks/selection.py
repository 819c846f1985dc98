"""Selection benchmark: subsetlm vs submodlib vs apricot on the same embeddings.

Every method runs in its own worker process (``--worker``), so its peak RSS is its own
(``ru_maxrss`` of that child, read by the parent with ``os.wait4``). The parent scores
every selected subset with ONE evaluator, the exact dense facility-location objective
``f(S) = sum_i max_{j in S} max(0, x_i . x_j)`` (``_selection_data.facility_objective``),
plus a random subset as a baseline, and writes a table per n and a time/memory plot.

Datasets (cached as .npy under ``$SUBSETLM_CACHE/bench`` or ``~/.cache/subsetlm/bench``):
sizes up to ``--real-max`` (20,000) are MiniLM embeddings of PubMed abstracts made with
subsetlm's own embed pipeline; larger sizes are a seeded synthetic Gaussian mixture
(``_selection_data.synthetic_embeddings``).

Usage
-----
    python benchmarks/selection.py                       # 20k real + 100k, 1M synthetic
    python benchmarks/selection.py --sizes 20000 --repeats 3
    python benchmarks/selection.py --quick               # tiny smoke run, < 1 minute
    python benchmarks/selection.py --report-only         # redraw table + plot from results
    python benchmarks/selection.py --worker subsetlm-lazy --data X.npy --budget 2000 --out r.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import _selection_data as data  # noqa: E402
from benchmarks._report import run_capped, versions  # noqa: E402
from benchmarks._selection_methods import METHODS  # noqa: E402

DEFAULT_METHODS = ("subsetlm-lazy", "subsetlm-stochastic", "subsetlm-join", "submodlib", "apricot-dense",
                   "apricot-sparse", "apricot-stochastic")
GB = 1e9
VERSIONS = ("subsetlm", "submodlib-py", "apricot-select", "faiss-cpu", "numpy", "numba")  # recorded with the results


def _rss_gb(ru_maxrss_kb: float) -> float:
    return ru_maxrss_kb * 1024 / GB  # Linux reports ru_maxrss in KiB


# ---------------------------------------------------------------- worker side
def _preimport(method: str) -> None:
    """Import the method's libraries before the clock starts (imports are not timed).

    For the two numba users (subsetlm, apricot) that includes numba's own lazy start-up,
    the loading of its typing and lowering registries (about 1 s, the same for both), which
    numba otherwise does inside the first compiled call. What stays timed: loading
    subsetlm's kernels from numba's on-disk cache, and apricot compiling its own.
    """
    import faiss  # noqa: F401
    if method.startswith("subsetlm"):
        import subsetlm.index  # noqa: F401
        import subsetlm.select.facility_location  # noqa: F401
        import subsetlm.select.greedy  # noqa: F401
    elif method == "submodlib":
        import submodlib  # noqa: F401
    elif method.startswith("apricot"):
        import apricot  # noqa: F401
    if method.startswith(("subsetlm", "apricot")):
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()


def worker_main(args) -> int:
    """Run one method on one .npy file; write ``--out`` JSON and ``<out>.idx.npy``."""
    runner = METHODS[args.worker][0]
    _preimport(args.worker)
    X = np.load(args.data, mmap_mode="r")
    rss_before = _rss_gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    order, phases, variant, extra = runner(X, args.budget, args.k, args.seed)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    post = extra.pop("_post", None)
    if post is not None:
        extra.update(post())
    out = Path(args.out)
    np.save(out.with_suffix(".idx.npy"), np.asarray(order, dtype=np.int64))
    rec = {"method": args.worker, "n": int(X.shape[0]), "d": int(X.shape[1]), "budget": args.budget,
           "k": args.k, "seed": args.seed, "wall_s": wall, "cpu_s": cpu,
           "phases": {key: round(v, 3) for key, v in phases.items()}, "variant": variant,
           "extra": extra, "rss_before_gb": rss_before,
           "rss_self_gb": _rss_gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
           "n_selected": int(len(order))}
    out.write_text(json.dumps(rec, indent=1))
    return 0


# ---------------------------------------------------------------- parent side
def run_worker(method: str, data_path: Path, budget: int, k: int, seed: int, out_json: Path,
               max_seconds: float) -> dict:
    """Start one worker process, enforce the time cap, return its record + peak RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--data", str(data_path),
           "--budget", str(budget), "--k", str(k), "--seed", str(seed), "--out", str(out_json)]
    log = out_json.with_suffix(".log")
    out_json.unlink(missing_ok=True)
    returncode, peak, timed_out = run_capped(cmd, log, max_seconds, cwd=ROOT)
    if timed_out:
        prog = [ln.split(None, 1)[1] for ln in log.read_text(errors="replace").splitlines()
                if ln.startswith("PROGRESS ")]
        return {"method": method, "status": "timeout", "rss_gb": peak,
                "note": f"timeout (> {max_seconds:.0f} s" + (f"; {prog[-1]}" if prog else "") + ")"}
    if returncode != 0 or not out_json.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return {"method": method, "status": "failed", "note": f"failed (rc={returncode}): "
                + " | ".join(tail)[-300:], "rss_gb": peak}
    rec = json.loads(out_json.read_text())
    rec.update(status="ok", rss_gb=peak, indices=str(out_json.with_suffix(".idx.npy")))
    return rec


def prepare_dataset(n: int, real_max: int, seed: int, cache: Path, synthetic_only: bool,
                    d: int = 384, partial: bool = False) -> tuple[str, Path, dict]:
    """Return (name, .npy path, description) for size n, creating the file once."""
    if n <= real_max and not synthetic_only:
        path, meta = data.pubmed_embeddings(cache / f"pubmed-minilm-{n}.npy", n, partial)
        return f"pubmed-minilm-{meta['n']}", path, dict(meta, kind="pubmed", requested=n)
    path = data.synthetic_embeddings(cache / f"synthetic-{n}-d{d}-s{seed}.npy", n, d, seed)
    return f"synthetic-{n}", path, {"kind": "synthetic", "n": n, "dim": d, "seed": seed, **data.SYNTH}


def float16_copy(path: Path, block: int = 65536) -> Path:
    """``X-f16.npy`` beside ``path``: the same rows in float16 (written once, atomically)."""
    dest = path.with_name(path.stem + "-f16.npy")
    if dest.exists():
        return dest
    X = np.load(path, mmap_mode="r")
    tmp = dest.with_name(dest.name + ".tmp.npy")
    Y = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=X.shape)
    for s in range(0, X.shape[0], block):
        Y[s:s + block] = X[s:s + block]
    Y.flush()
    del Y
    os.replace(tmp, dest)
    return dest


def bench_dataset(name, path, meta, methods, budget_frac, repeats, k, seed, max_seconds, max_gb,
                  eval_sample, work: Path) -> dict:
    """All methods x repeats on one dataset, then the shared evaluation."""
    X = np.load(path, mmap_mode="r")
    n, d = X.shape
    budget = max(1, int(round(budget_frac * n)))
    runs, memo, loads = [], {}, []
    t_start = time.gmtime()
    sample = eval_sample if eval_sample and n > eval_sample else None
    for method in methods:
        need = METHODS[method][1](n, d, k) / GB
        if need > max_gb:
            runs.append({"method": method, "status": "skipped", "note": f"skipped (needs ~{need:.0f} GB)"})
            print(f"[{name}] {method}: skipped (needs ~{need:.0f} GB > {max_gb} GB)", flush=True)
            continue
        # subsetlm reads embeddings from an EmbeddingStore, which keeps them as float16;
        # the peers get the float32 array they would be handed. Both are scored on float32.
        src = float16_copy(path) if method.startswith("subsetlm") else path
        for r in range(repeats):
            loads.append(os.getloadavg()[0])
            rec = run_worker(method, src, budget, k, seed, work / f"{name}-{method}-r{r}.json", max_seconds)
            if src != path and rec.get("status") == "ok":
                rec["variant"] = f"{rec.get('variant', '')}, float16 input as an EmbeddingStore holds it"
            rec["repeat"] = r
            if rec["status"] == "ok":
                idx = np.load(rec["indices"])
                key = hash(idx.tobytes())
                if key not in memo:
                    memo[key] = data.facility_objective(X, idx, sample=sample, seed=seed)
                rec["objective"] = memo[key]
                rec["valid"] = bool(len(idx) == budget and len(np.unique(idx)) == budget)
            print(f"[{name}] {method} r{r}: {rec['status']} wall={rec.get('wall_s', float('nan')):.2f}s "
                  f"rss={rec.get('rss_gb', float('nan')):.2f}GB "
                  f"obj={rec.get('objective', {}).get('mean', float('nan')):.5f} {rec.get('note', '')}",
                  flush=True)
            runs.append(rec)
            if rec["status"] != "ok":
                break  # a timeout or failure will not change on a repeat
    rand = np.random.default_rng(seed).choice(n, size=budget, replace=False)
    span = f"{time.strftime('%Y-%m-%d %H:%M', t_start)}-{time.strftime('%H:%M', time.gmtime())} UTC"
    cond = (f"measured {span}; 1-min load average at the start of each run "
            f"{min(loads):.1f}-{max(loads):.1f} ({os.cpu_count()} cores)." if loads else None)
    return {"name": name, "n": n, "d": d, "budget": budget, "budget_frac": budget_frac, "k": k,
            "repeats": repeats, "eval_sample": sample, "max_seconds": max_seconds, "max_gb": max_gb, "meta": meta, "runs": runs, "conditions": cond,
            "random": data.facility_objective(X, rand, sample=sample, seed=seed)}


def _save(results: dict, path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=float))
    os.replace(tmp, path)


def reevaluate(ds: dict, cache: Path, seed: int) -> None:
    """Score the stored subsets (and a fresh random baseline) of one dataset again."""
    meta = ds["meta"]
    path = (cache / f"pubmed-minilm-{meta['requested']}.npy" if meta.get("kind") == "pubmed"
            else cache / f"synthetic-{ds['n']}-d{ds['d']}-s{meta['seed']}.npy")
    X = np.load(path, mmap_mode="r")
    sample = ds.get("eval_sample")
    for r in ds["runs"]:
        if r["status"] == "ok":
            r["objective"] = data.facility_objective(X, np.load(r["indices"]), sample=sample, seed=seed)
    rand = np.random.default_rng(seed).choice(ds["n"], size=ds["budget"], replace=False)
    ds["random"] = data.facility_objective(X, rand, sample=sample, seed=seed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=sorted(METHODS), help="internal: run one method and exit")
    ap.add_argument("--data", help="worker: .npy embeddings")
    ap.add_argument("--budget", default="0.1", help="fraction of n (parent) or a count (worker)")
    ap.add_argument("--out", help="worker: result JSON")
    ap.add_argument("--k", type=int, default=32, help="neighbours of the kNN graphs (default 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", default=None, help="comma-separated n (default 20000,100000,1000000)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats at n <= 20,000")
    ap.add_argument("--repeats-large", type=int, default=1, help="repeats at n > 20,000")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--max-seconds", type=float, default=900, help="time cap per run (s)")
    ap.add_argument("--max-gb", type=float, default=20, help="skip methods estimated to need more")
    ap.add_argument("--eval-sample", type=int, default=100000,
                    help="score on a seeded sample of this many ground points when n is larger")
    ap.add_argument("--real-max", type=int, default=20000, help="sizes <= this use real PubMed embeddings")
    ap.add_argument("--synthetic-only", action="store_true")
    ap.add_argument("--real-partial", action="store_true",
                    help="use the finished shards of an unfinished PubMed embed run (fewer rows)")
    ap.add_argument("--results", default=None,
                    help="results JSON (default: cache/selection-results.json); with --report-only a "
                         "comma-separated list whose datasets are merged")
    ap.add_argument("--quick", action="store_true", help="tiny synthetic sizes, 1 repeat, no docs")
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md or the figure")
    ap.add_argument("--report-only", action="store_true", help="only redraw table and plot from --results")
    ap.add_argument("--reevaluate", action="store_true",
                    help="re-score the stored subsets of --results (first file) with the evaluator")
    args = ap.parse_args(argv)
    if args.worker:
        args.budget = int(args.budget)
        return worker_main(args)

    from benchmarks import _selection_report as report

    cache = data.bench_cache()
    if args.quick:
        args.sizes = args.sizes or "1500"
        args.repeats, args.repeats_large, args.synthetic_only, args.no_docs, args.k = 1, 1, True, True, 16
    args.sizes = args.sizes or "20000,100000,1000000"
    paths = [Path(p) for p in args.results.split(",")] if args.results else [cache / (
        "selection-results-quick.json" if args.quick else "selection-results.json")]
    results_path = paths[0]
    results: dict = {"datasets": {}}
    for p in paths if args.report_only else paths[:1]:
        if p.exists():
            r = json.loads(p.read_text())
            for name, ds in r["datasets"].items():  # same dataset in several files: merge methods
                have = results["datasets"].setdefault(name, ds)
                if have is not ds:
                    done = {x["method"] for x in have["runs"]}
                    have["runs"] += [x for x in ds["runs"] if x["method"] not in done]
            results.update({k: v for k, v in r.items() if k != "datasets"})
    if args.reevaluate:
        for ds in results["datasets"].values():
            reevaluate(ds, cache, args.seed)
        _save(results, results_path)
    if not args.report_only and not args.reevaluate:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        bad = [m for m in methods if m not in METHODS]
        if bad:
            ap.error(f"unknown method(s) {bad}; choose from {sorted(METHODS)}")
        work = results_path.with_suffix("")
        work.mkdir(parents=True, exist_ok=True)
        for n in [int(float(s)) for s in args.sizes.split(",")]:
            name, path, meta = prepare_dataset(n, args.real_max, args.seed, cache, args.synthetic_only,
                                             partial=args.real_partial)
            reps = args.repeats if n <= 20000 else args.repeats_large
            res = bench_dataset(name, path, meta, methods, float(args.budget), reps, args.k, args.seed,
                                args.max_seconds, args.max_gb, args.eval_sample, work)
            old = results["datasets"].get(name, {"runs": []})
            keep = [r for r in old["runs"] if r["method"] not in methods]  # methods not re-run
            res["runs"] = keep + res["runs"]
            if keep and old.get("conditions"):
                res["conditions"] = (f"{', '.join(methods)}: {res['conditions']} "
                                     f"{', '.join(sorted({r['method'] for r in keep}))}: {old['conditions']}")
            results["datasets"][name] = res
            results.update(machine=report.machine_line(), versions=versions(VERSIONS))
            _save(results, results_path)
    md = report.markdown(results)
    print(md)
    if not args.no_docs:
        report.write(results, md)
    print(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
