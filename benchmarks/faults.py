"""Kill -9 trials per stage (>= 30 each): the table of outcomes in docs/reliability.md.

Each trial starts ``python -m subsetlm STAGE ...`` on small inputs, SIGKILLs it at a seeded
moment (a time in the uninterrupted run, mostly in its write window, or a size of the
output being written), once or twice, re-runs it (train: ``--resume``) and compares every
file with an uninterrupted run (benchmarks/_faults.py says how; the files and keys that may
differ are listed in docs/reliability.md). Outcomes: identical, differing, failed to recover,
corrupt output trusted.

Trials are appended to ``$SUBSETLM_CACHE/bench/faults/results-KEY.jsonl`` as they finish, so
an interrupted run continues where it stopped (``--fresh`` starts over).

Run::

    .venv/bin/python benchmarks/faults.py                          # 30 trials x 7 stages, writes the section
    .venv/bin/python benchmarks/faults.py --stages index --trials 5 --no-write
    .venv/bin/python benchmarks/faults.py --stages train --no-write &   # stages side by side (own work
    .venv/bin/python benchmarks/faults.py --stages eval --no-write &    # directories, one results file)
    .venv/bin/python benchmarks/faults.py --stages train --replay 0 # one trial, its record printed
    .venv/bin/python benchmarks/faults.py --report-only             # redraw the section from the results
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _faults as F  # noqa: E402
from benchmarks._report import ROOT, machine, update_section, versions  # noqa: E402

DOC = ROOT / "docs" / "reliability.md"
SECTION = "faults"


def _load(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(s) for s in path.read_text().splitlines() if s.strip()]


def _append(path: Path, rec: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _update(path: Path, change) -> None:
    """Read-modify-write the JSON at ``path`` under an flock (several stages may run side by side)."""
    with open(path.with_suffix(".lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        meta = json.loads(path.read_text()) if path.is_file() else {}
        change(meta)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp, path)


def _load_note(runs: list[dict]) -> str:
    """One sentence on how busy the machine was, from the load averages recorded per run."""
    peak = max((max(r["load"]) for r in runs), default=0.0)
    if peak > 3.0:
        return (f"The machine was shared with other jobs (1-min load averages up to {peak:.1f} on two cores), "
                "so the wall times below are inflated.")
    return (f"1-min load averages stayed at or below {peak:.1f} on two cores (the runs listed below, "
            "at most two stages side by side).")


def table(records: list[dict], meta: dict) -> str:
    """The markdown section: machine line, inputs, the outcome table, and every trial that was not identical."""
    names = [s for s in F.STAGES if any(r["stage"] == s for r in records)]
    rows = ["| stage | trials | identical | differing | failed to recover | corrupt output trusted | kills landed "
            "| median kill time (s) | uninterrupted run (s) |", "|" + " --- |" * 9]
    bad = []
    for name in names:
        recs = [r for r in records if r["stage"] == name]
        s = F.summarize(recs)
        med = f"{s['median_kill_s']:.2f}" if s["median_kill_s"] is not None else "-"
        ref = meta["references"].get(name, {})
        rows.append(f"| {name} | {s['trials']} | {s['identical']} | {s['differing']} | {s['failed to recover']} | "
                    f"{s['corrupt output trusted']} | {s['kills']} | {med} | {ref.get('seconds', 0):.2f} |")
        bad += [r for r in recs if r["outcome"] != "identical"]
    lines = []
    for r in sorted(bad, key=lambda r: (r["stage"], r["seed"])):
        kills = "; ".join(f"{k['trigger']} {k.get('at', k.get('bytes'))}{'' if k['landed'] else ' (ran out)'}"
                          for k in r["kills"])
        lines.append(f"- {r['stage']} seed {r['seed']}: **{r['outcome']}** (kills: {kills}): {r['detail']}")
    findings = "\n".join(lines) if lines else "Every trial ended identical to the uninterrupted run."
    runs = "\n".join(f"- `{r['command']}`: {r['minutes']:.0f} min, 1-min load average {r['load'][0]:.1f} at the "
                     f"start and {r['load'][1]:.1f} at the end" + (f" ({r['note']})" if r.get("note") else "")
                     for r in meta.get("runs", []))
    return f"""## Kill -9 trials (`benchmarks/faults.py`)

{meta['machine']}; {meta['versions']}; the stages pinned to {meta['threads']} thread(s).
{_load_note(meta.get("runs", []))} Stages ran one at a time or a few side by side, each in its own
directory:

{runs}

Inputs: {meta['inputs']}.

{chr(10).join(rows)}

Kills landed: kills that hit the running process (a drawn moment past the end of the run lets it
finish). Median kill time: seconds after the start, over the landed kills. Uninterrupted run: the
reference run's wall time (imports included).

Trials that were not identical (reproduce one with `python benchmarks/faults.py --stages STAGE --replay SEED`):

{findings}
"""


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default=",".join(F.STAGES), help=f"comma-separated (default all: {','.join(F.STAGES)})")
    ap.add_argument("--trials", type=int, default=30, help="trials per stage (default 30)")
    ap.add_argument("--text", choices=["pubmed", "synthetic"], default="pubmed",
                    help="corpus: the first --n-docs PubMed abstracts (default) or generated text")
    ap.add_argument("--n-docs", type=int, default=200)
    ap.add_argument("--shard-size", type=int, default=64, help="store rows per embed shard (small: many resumes)")
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL/OpenBLAS/numba threads of the children")
    ap.add_argument("--base", type=Path, default=None, help="work and results (default $SUBSETLM_CACHE/bench/faults)")
    ap.add_argument("--fresh", action="store_true", help="drop earlier results and inputs of this configuration")
    ap.add_argument("--replay", type=int, default=None, metavar="SEED", help="run one trial of each --stages, print it")
    ap.add_argument("--report-only", action="store_true", help="redraw the section from the saved results")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/reliability.md")
    args = ap.parse_args(argv)

    from subsetlm._io import cache_dir

    names = [s for s in args.stages.split(",") if s]
    unknown = [s for s in names if s not in F.STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; choose from {list(F.STAGES)}")
    root = args.base or cache_dir() / "bench" / "faults"
    inputs = F.Inputs(root, text=args.text, n_docs=args.n_docs, shard_size=args.shard_size, threads=args.threads)
    key = inputs.key()
    inputs.base = root / key  # the work, the references and the prepared inputs of this configuration
    results, meta_path = root / f"results-{key}.jsonl", root / f"meta-{key}.json"
    if args.fresh:
        shutil.rmtree(inputs.base, ignore_errors=True)
        results.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
    inputs.base.mkdir(parents=True, exist_ok=True)
    log = inputs.base / "stages.log"

    if args.replay is not None:
        for name in names:
            spec = F.STAGES[name]
            ref = F.reference(spec, inputs, check=True, log=log)
            print(json.dumps(F.run_trial(spec, inputs, ref, args.replay, log=log), indent=1))
        print(f"work directories: {inputs.base / 'work'}; stderr of the stages: {log}")
        return {}

    t0, load0 = time.time(), os.getloadavg()[0]
    if not args.report_only:
        done = {(r["stage"], r["seed"]) for r in _load(results)}
        for name in names:
            spec = F.STAGES[name]
            todo = [s for s in range(args.trials) if (name, s) not in done]
            if not todo:
                continue
            ref = F.reference(spec, inputs, check=True, log=log)
            _update(meta_path, lambda m: m.setdefault("references", {}).update(
                {name: {"seconds": ref.seconds, "first_write": ref.first_write, "peak_bytes": ref.peak_bytes}}))
            print(f"{name}: uninterrupted {ref.seconds:.2f} s (writes from {ref.first_write}), {len(todo)} trials",
                  flush=True)
            for seed in todo:
                rec = F.run_trial(spec, inputs, ref, seed, log=log)
                _append(results, rec)
                print(f"  seed {seed}: {rec['outcome']}" + (f" ({rec['detail']})" if rec["detail"] else ""),
                      flush=True)
        cmd = " ".join(["python", "benchmarks/faults.py"] + list(sys.argv[1:] if argv is None else argv))
        info = dict(machine=machine(), threads=args.threads,
                    versions=", ".join(f"{k} {v}" for k, v in versions(("torch", "faiss-cpu", "numpy")).items()),
                    inputs=(f"{'the first ' if args.text == 'pubmed' else ''}{args.n_docs} "
                            f"{'PubMed abstracts' if args.text == 'pubmed' else 'generated documents'} "
                            f"(minilm embed: the first {F.MINILM_DOCS}, {max(8, args.shard_size // 4)}-row shards), "
                            f"{args.shard_size}-row store shards, a hashing store with a k={F.K} graph for index / "
                            f"select / retrieve, a tiny BERT trained 12 steps (a checkpoint every 3) for train / "
                            f"eval"))
        run = {"command": cmd, "load": [load0, os.getloadavg()[0]], "minutes": (time.time() - t0) / 60}
        _update(meta_path, lambda m: (m.update(info), m.setdefault("runs", []).append(run)))
    meta = json.loads(meta_path.read_text())
    records = [r for r in _load(results) if r["stage"] in names]
    md = table(records, meta)
    print(md)
    if not args.no_write:
        update_section(SECTION, md, doc=DOC)
    return {"records": records, "meta": meta}


if __name__ == "__main__":
    main()
