"""Curation benchmark: facility location vs SemDeDup, D4 and DSIR, time and peak memory at 100k and 1M rows.

Every (method, n, repeat) runs in its own child process (``--worker``): wall and CPU seconds
of the call, measured in the child, and the child's peak RSS (``ru_maxrss`` read by the
parent with ``os.wait4``: interpreter, libraries, inputs and the method together; the resident
set when the call starts is recorded too). A run longer than ``--max-seconds`` is killed and reported
as a timeout.

* **facility location**: ``subsetlm.select.api.select_array(X, 0.25, k=32)`` (kNN graph +
  lazy greedy, the default path), 25% of the rows.
* **SemDeDup**: FAISS k-means into ``ceil(n / 10,000)`` partitions
  (``subsetlm.index.kmeans_partitions``, as ``subsetlm dedup`` does) then
  ``subsetlm.select.dedup.semdedup(X, labels, target=0.75 n, centroids=C)``: 75% kept.
* **D4**: the same k-means, then ``subsetlm.select.dedup.d4(X, labels, centroids=C)`` with its
  defaults (SemDeDup to 75%, prototype pruning to 25%).
* **DSIR**: ``subsetlm.select.dsir.dsir_select(texts, target, 0.25 n)`` on real sentences.

Data (generated once under ``cache_dir()/bench/curation``, never in the repository):
embeddings are the synthetic clustered generator of ``_selection_data`` (384-d) with 30% of
the rows replaced by noisy copies of other rows (``_curation_data.planted_embeddings``),
float16 memory-mapped as stores hold them; texts are the sentences of the ``pubmed`` and
``sotu`` sources, shuffled, repeated with a counter past their number; the DSIR target is the
``pubmed-task`` train split.

Usage
-----
    python benchmarks/curation.py --max-seconds 900 --wait-quiet 60 --repeats-large 3 --profile-size 1000000
                                        # what docs/benchmarks.md shows: 100k and 1M, 3 repeats each, ~30 min
    python benchmarks/curation.py --sizes 100000 --methods semdedup,d4
    python benchmarks/curation.py --quick --no-write       # n = 5,000, seconds
    python benchmarks/curation.py --report-only            # redraw the section from the results
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

from benchmarks import _curation_data as data
from benchmarks._curation_report import FIGURE, METHODS, figure, markdown
from benchmarks._report import machine, publish, run_capped, setup_logging, versions

FRACTION = 0.25  # facility location and DSIR budgets, D4's final ratio
DEDUP_KEEP = 0.75  # SemDeDup's target, D4's R_dedup
K = 32
GB = 1e9
SECTION = "curation"
VERSIONS = ("subsetlm", "faiss-cpu", "numpy", "numba", "scikit-learn")  # recorded with the results


# ---------------------------------------------------------------- worker side
_DEPTH = [0]  # wrapped calls in progress: only the outermost one is timed (a phase never counts twice)


def _timed(owner, name: str, label: str, phases: dict) -> None:
    """Replace ``owner.name`` by a wrapper adding its seconds to ``phases[label]`` (benchmark-side only)."""
    f = getattr(owner, name)

    def wrapper(*a, **kw):
        _DEPTH[0] += 1
        t = time.perf_counter()
        try:
            return f(*a, **kw)
        finally:
            _DEPTH[0] -= 1
            if not _DEPTH[0]:
                phases[label] = phases.get(label, 0.0) + time.perf_counter() - t

    setattr(owner, name, wrapper)


def _kmeans(X, phases: dict):
    from subsetlm.index import kmeans_partitions
    from subsetlm.select.dedup import default_partitions

    t = time.perf_counter()
    km = kmeans_partitions(X, default_partitions(X.shape[0]), seed=0, return_centroids=True)
    phases["k-means"] = time.perf_counter() - t
    return km.labels, km.centroids


def _instrument(method: str, phases: dict) -> None:
    from importlib import (
        import_module as mod,  # modules, not the same-named functions their packages export
    )

    if method == "facility-location":
        _timed(mod("subsetlm.index"), "knn_graph", "kNN graph", phases)
        _timed(mod("subsetlm.select.greedy"), "greedy", "lazy greedy", phases)
        _timed(mod("subsetlm.select.selector"), "certificate", "certificate", phases)
    elif method in ("semdedup", "d4"):
        dd = mod("subsetlm.select.dedup")
        for name, label in (("centroid_similarity", "centroid cosines"), ("max_earlier", "pairwise similarities"),
                            ("chains", "chains"), ("pair_similarity", "cosine to kept"),
                            ("prototype_similarity", "prototype k-means")):
            _timed(dd, name, label, phases)
    else:
        ds = mod("subsetlm.select.dsir")
        _timed(ds.NgramHasher, "counts", "target model", phases)  # hashes the target texts
        _timed(ds.NgramHasher, "transform", "hashing the pool (2 passes)", phases)
        _timed(ds, "gumbel_top_k", "Gumbel top-k", phases)


def _preimport(method: str) -> None:
    """Import what the method uses before the clock (and only that: the RSS before the call is its own)."""
    if method == "dsir":
        import sklearn.feature_extraction.text  # noqa: F401

        import subsetlm.select.dsir
        return
    import faiss  # noqa: F401
    from numba.core.registry import cpu_target

    import subsetlm.index
    import subsetlm.select.api
    import subsetlm.select.dedup  # noqa: F401

    cpu_target.target_context.refresh()  # numba's own start-up (about 1 s), as benchmarks/selection.py


def _load(method: str, args):
    """The inputs, read before the clock: a float16 memmap, or (texts, target texts) lists."""
    if method == "dsir":
        return data.read_lines(args.data), data.read_lines(args.target, args.target_limit)
    return np.load(args.data, mmap_mode="r")


def _run(method: str, inputs, phases: dict) -> tuple[np.ndarray, dict]:
    """The timed call: kept row indices and what to record."""
    if method == "dsir":
        from subsetlm.select.dsir import dsir_select

        texts, target = inputs
        return dsir_select(texts, target, round(FRACTION * len(texts)), seed=0), {"target_texts": len(target)}
    X = inputs
    n = X.shape[0]
    if method == "facility-location":
        from subsetlm.select.api import select_array

        sel = select_array(X, FRACTION, k=K)
        return sel.indices, {"certificate_ratio": sel.certificate.get("ratio")}
    from subsetlm.select.dedup import d4, semdedup

    labels, C = _kmeans(X, phases)
    if method == "semdedup":
        res = semdedup(X, labels, target=round(DEDUP_KEEP * n), centroids=C)
    else:
        res = d4(X, labels, centroids=C)
    d4_info = {k: res.info["d4"][k] for k in ("proto_partitions", "kept_after_dedup")} if "d4" in res.info else {}
    return res.indices, {"eps": res.eps, "partitions": int(res.info["n_partitions"]), **d4_info}


def _top(prof, count: int = 8) -> list:
    """The ``count`` functions with the most own time (cProfile's tottime): [label, seconds, calls]."""
    import pstats

    rows = []
    for (file, line, func), (_cc, nc, tt, _ct, _callers) in pstats.Stats(prof).stats.items():
        if file == "~":  # C: "<built-in method faiss._swigfaiss.X>", "<method 'argmax' of 'numpy.ndarray' objects>"
            m = re.match(r"<method '(\w+)' of '([\w.]+)' objects>", func)
            label = f"{m.group(2)}.{m.group(1)}" if m else func.removeprefix("<built-in method ").rstrip(">")
        else:
            label = f"{func} ({Path(file).parent.name}/{Path(file).name}:{line})"
        rows.append([label, round(tt, 3), nc])
    return sorted(rows, key=lambda r: -r[1])[:count]


def _rss_now_gb() -> float:
    """The resident set now (``/proc/self/statm``), in GB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GB


def worker_main(args) -> int:
    """Run one method once; write ``--out`` JSON and ``<out>.idx.npy``."""
    _preimport(args.worker)
    phases: dict = {}
    _instrument(args.worker, phases)
    inputs = _load(args.worker, args)
    rss_start = _rss_now_gb()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    idx, extra = _run(args.worker, inputs, phases)
    wall = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
        extra["profile"] = _top(prof)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    out = Path(args.out)
    np.save(out.with_suffix(".idx.npy"), np.asarray(idx, np.int64))
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    rec = {"method": args.worker, "wall_s": wall, "cpu_s": cpu,
           "phases": {k: round(v, 3) for k, v in phases.items()}, "extra": extra, "kept": len(idx),
           "rss_before_gb": ru0.ru_maxrss * 1024 / GB, "rss_start_gb": rss_start}
    out.write_text(json.dumps(rec))
    return 0


# ---------------------------------------------------------------- parent side
def run_worker(method: str, inputs: dict, out_json: Path, max_seconds: float, profile: bool = False) -> dict:
    """One child process; its record plus peak RSS (``os.wait4``), or a timeout / failure note."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--data", str(inputs["data"]),
           "--out", str(out_json)] + (["--profile"] if profile else [])
    if method == "dsir":
        cmd += ["--target", str(inputs["target"])] + (["--target-limit", str(inputs["target_limit"])]
                                                     if inputs.get("target_limit") else [])
    log = out_json.with_suffix(".log")
    out_json.unlink(missing_ok=True)
    load1, others = os.getloadavg()[0], _others()
    rc, peak, timed_out = run_capped(cmd, log, max_seconds)
    base = {"method": method, "rss_gb": peak, "load1": load1, "others": sorted(set(others) | set(_others()))}
    if timed_out:
        return dict(base, status="timeout", note=f"timeout (> {max_seconds:.0f} s)")
    if rc != 0 or not out_json.exists():
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])[-300:]
        return dict(base, status="failed", note=f"failed (rc={rc}): {tail}")
    return dict(json.loads(out_json.read_text()), **base, status="ok", indices=str(out_json.with_suffix(".idx.npy")))


def keeps(method: str, idx: np.ndarray, inputs: dict) -> dict:
    """What a kept set holds: redundant planted copies (embeddings) or the PubMed share (texts)."""
    n = inputs["n"]
    out = {"kept": len(idx), "frac": len(idx) / n}
    if method == "dsir":
        src = np.load(inputs["source"])
        out.update(pubmed=float((src[idx] == 0).mean()), pool_pubmed=float((src == 0).mean()),
                   repeats=float((idx >= inputs["sentences"]).mean()),
                   pool_repeats=max(0.0, 1 - inputs["sentences"] / n))
    else:
        source = np.load(inputs["source"])
        group = np.where(source >= 0, source, np.arange(n))
        out.update(redundant=int(len(idx) - len(np.unique(group[idx]))), pool_redundant=int((source >= 0).sum()))
    return out


def prepare(n: int, methods: list[str], target_limit: int | None) -> dict:
    """Generate (once) and describe the inputs of size n."""
    root = data.curation_dir()
    inputs: dict = {"n": n}
    if any(m != "dsir" for m in methods):
        x, s = data.planted_embeddings(root, n, dup_frac=data.DUP_FRAC)
        inputs["emb"] = {"data": str(x), "source": str(s), "n": n, "stats": data.planted_stats(x, s)}
    if "dsir" in methods:
        t, s, meta = data.curation_texts(root, n)
        target, n_target = data.target_texts(root)
        inputs["txt"] = {"data": str(t), "source": str(s), "n": n, "target": str(target), "target_limit": target_limit,
                         "target_texts": min(n_target, target_limit or n_target), "sentences": meta["sentences"],
                         "meta": meta}
    return inputs


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _others() -> list[str]:
    """Command lines (first 80 characters) of pytest / benchmarks/ processes other than this run's own."""
    r = subprocess.run(["pgrep", "-f", "pytest|benchmarks/"], capture_output=True, text=True, check=False)
    mine, out = _ancestors(), []
    for pid in map(int, r.stdout.split()):
        if pid in mine:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd and f"{Path(__file__).name} --worker" not in cmd:  # this run's own children
            out.append(cmd[:80])
    return out


def wait_quiet(seconds: float, poll: float = 5.0) -> None:
    """Block until no other pytest or benchmarks/ process has run for ``seconds`` (``pgrep -f``)."""
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < seconds:
        others = _others()
        if others:
            print(f"waiting for a quiet machine: {len(others)} other test/benchmark process(es)", flush=True)
            quiet_since = time.monotonic()
        time.sleep(poll)


def bench_size(n: int, methods: list[str], repeats: int, max_seconds: float, target_limit: int | None,
               work: Path, profile: bool = False) -> dict:
    inputs = prepare(n, methods, target_limit)
    t_start, runs, up = time.gmtime(), [], _uptime()
    for method in methods:
        inp = inputs["txt" if method == "dsir" else "emb"]
        for r in range(repeats):
            rec = run_worker(method, inp, work / f"{n}-{method}-r{r}.json", max_seconds)
            rec["repeat"] = r
            if rec["status"] == "ok":
                rec["keeps"] = keeps(method, np.load(rec["indices"]), inp)
            print(f"[n={n:,}] {method} r{r}: {rec['status']} wall={rec.get('wall_s', float('nan')):.2f}s "
                  f"cpu={rec.get('cpu_s', float('nan')):.1f}s rss={rec['rss_gb']:.2f}GB load={rec['load1']:.2f} "
                  f"{rec.get('phases', '')} {rec.get('note', '')}", flush=True)
            runs.append(rec)
            if rec["status"] != "ok":
                break  # a timeout or failure will not change on a repeat
    profiles = {}
    for method in methods if profile else ():  # after the timed runs: cProfile slows Python-level code
        rec = run_worker(method, inputs["txt" if method == "dsir" else "emb"], work / f"{n}-{method}-profile.json",
                         max_seconds, profile=True)
        if rec["status"] == "ok":
            profiles[method] = {"wall_s": rec["wall_s"], "top": rec["extra"]["profile"]}
        print(f"[n={n:,}] {method} profile: {rec['status']} {rec.get('extra', {}).get('profile', '')}", flush=True)
    span = f"{time.strftime('%Y-%m-%d %H:%M', t_start)}-{time.strftime('%H:%M', time.gmtime())} UTC"
    return {"n": n, "repeats": repeats, "max_seconds": max_seconds, "span": span, "uptime": [up, _uptime()],
            "inputs": {k: v for k, v in inputs.items() if k != "n"}, "runs": runs, "profiles": profiles}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--target-limit", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated n (default 100000,1000000)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--repeats", type=int, default=3, help="repeats at n <= 200,000")
    ap.add_argument("--repeats-large", type=int, default=1, help="repeats at n > 200,000")
    ap.add_argument("--max-seconds", type=float, default=900,
                    help="time cap per child process (imports and reading the inputs included); reported as a timeout")
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)  # worker: under cProfile
    ap.add_argument("--profile-size", type=int, default=None,
                    help="after the timed runs at this n, one more run per method under cProfile (own time per "
                         "function in the section)")
    ap.add_argument("--wait-quiet", type=float, default=0,
                    help="first wait until no other pytest / benchmarks/ process has run for this many seconds")
    ap.add_argument("--results", default=None, help="results JSON (default CACHE/bench/curation/results.json)")
    ap.add_argument("--quick", action="store_true", help="n = 5,000, one run, 1,000 target texts: a smoke test")
    ap.add_argument("--no-write", action="store_true", help="print only: leave docs/benchmarks.md and the figure")
    ap.add_argument("--report-only", action="store_true", help="redraw the section from --results")
    a = ap.parse_args(argv)
    if a.worker:
        return worker_main(a)
    setup_logging()
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    if a.quick:
        a.sizes, a.repeats, a.repeats_large = "5000", 1, 1
    target_limit = 1000 if a.quick else None
    results_path = Path(a.results) if a.results else data.curation_dir() / (
        "results-quick.json" if a.quick else "results.json")
    results = json.loads(results_path.read_text()) if results_path.exists() and not a.quick else {"sizes": {}}
    if not a.report_only:
        results["command"] = " ".join(sys.argv[1:] if argv is None else argv)
        if a.wait_quiet:
            wait_quiet(a.wait_quiet)
        work = results_path.with_suffix("")
        work.mkdir(parents=True, exist_ok=True)
        for n in [int(float(s)) for s in a.sizes.split(",")]:
            reps = a.repeats if n <= 200_000 else a.repeats_large
            res = bench_size(n, methods, reps, a.max_seconds, target_limit, work, profile=n == a.profile_size)
            old = results["sizes"].get(str(n))
            if old:  # methods not re-run keep their earlier runs
                res["runs"] = [r for r in old["runs"] if r["method"] not in methods] + res["runs"]
                res["inputs"] = {**old["inputs"], **res["inputs"]}
                res["span"] = f"{', '.join(methods)}: {res['span']}; the others: {old['span']}"
                res["uptime"] = old["uptime"] + res["uptime"]
                res["profiles"] = {**old.get("profiles", {}), **res["profiles"]}
            results["sizes"][str(n)] = res
            results.update(machine=machine(), versions=versions(VERSIONS, missing="n/a"))
            results_path.write_text(json.dumps(results, indent=1))
    md = markdown(results)
    write = not (a.no_write or a.quick)
    publish(md, figure(results), FIGURE, SECTION, write)
    print(f"results: {results_path}" + ("" if write else " (docs not written)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
