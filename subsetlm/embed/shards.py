"""The embed stage's shard plan and the work on one shard, for any executor.

A run of :func:`~subsetlm.embed.run.embed_corpus` is: a :class:`ShardPlan` -> embed the
shards not yet written (``map_stateful(executor, ShardEmbedder, embed_shard, tasks)``:
in this process, or on a pool of Ray actors) -> assemble. The plan cuts the corpus's
samples into shards of at most ``shard_size`` samples, one of two ways:

* ``serial`` (in process, or with ``--limit``, which counts documents across files): the
  sample stream of :func:`~subsetlm.corpus.chunking.iter_samples` cut every
  ``shard_size`` samples. Tasks ``(k, table)`` are drawn lazily, so chunking and
  embedding interleave and nothing but the finished shards is written.
* ``per-file`` (a distributed executor): one task per corpus file (``executor(chunk_file,
  files)``) chunks it with the embedder's own splitter into chunk shards
  ``chunks/in-IIIII/JJJJJ.parquet`` (``_DONE`` marks a finished file, so a re-run redoes
  only the unfinished ones); then :func:`drop_repeats` drops documents seen in an
  earlier file with the corpus's one duplicate check (:class:`~subsetlm.corpus.readers.Repeats`),
  reading only the ``doc_id`` columns, and ``chunks/_SHARDS.json`` lists the chunk
  shards in store-shard order. Tasks are ``(k, path)``; the embeddings never pass
  through the driver.

The assembled store does not depend on the cut (its files are concatenations with fixed
row groups); an unfinished run does, so the plan is recorded in ``STORE.tmp/plan.json``
and a run resumes only with the same cut and ``shard_size``.

Example
-------
>>> plan = ShardPlan.choose(4096, per_file=False)
>>> plan.describe()
{'cut': 'serial', 'shard_size': 4096}
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from subsetlm._io import read_json, write_json_atomic
from subsetlm._stage import diff
from subsetlm.distributed import report_progress

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
CHUNKS = "chunks"
_DONE = "_DONE"
_LISTING = "_SHARDS.json"
_PROGRESS_STEP = 1024  # samples per embed() call: the progress bar moves at least this often
_BACKEND_OF_CUT = {"serial": "local", "per-file": "ray"}


def rechunk(blocks: Iterable[list[Any]], size: int) -> Iterator[list[Any]]:
    """Regroup a stream of sample blocks into lists of ``size`` (the last one shorter).

    >>> list(rechunk([[1, 2, 3], [4], [5, 6]], 4))
    [[1, 2, 3, 4], [5, 6]]
    """
    buf: list[Any] = []
    for block in blocks:
        buf.extend(block)
        while len(buf) >= size:
            yield buf[:size]
            buf = buf[size:]
    if buf:
        yield buf


# -- the per-file chunk pass -------------------------------------------------------------
def listed_chunks(tmp: Path) -> list[Path] | None:
    """The chunk shards of a per-file run in store-shard order, once its chunk pass finished (else None)."""
    listing = Path(tmp) / CHUNKS / _LISTING
    if not listing.is_file():
        return None
    return [Path(tmp) / CHUNKS / p for p in read_json(listing)["shards"]]


def _parts(d: Path) -> list[Path]:
    return sorted(Path(d).glob("*.parquet"))


def write_chunks(d: Path, shards: Iterable[list[Any]]) -> int:
    """Write ``shards`` (lists of samples) as ``d/NNNNN.parquet``, then mark ``d`` finished; return the count."""
    from subsetlm.embed.store import samples_table, write_table_atomic

    Path(d).mkdir(parents=True, exist_ok=True)
    k = 0
    for shard in shards:
        write_table_atomic(samples_table(shard), Path(d) / f"{k:05d}.parquet")
        k += 1
    write_json_atomic(Path(d) / _DONE, {"chunks": k})
    return k


def chunk_file(task: tuple[int, Any], *, tmp: str, cfg: Any, splitter: Any, shard_size: int) -> int:
    """One task of the per-file chunk pass: corpus file ``i`` -> ``chunks/in-IIIII/`` (redone unless finished).

    Repeats inside the file are dropped as :func:`iter_samples` drops them; repeats of
    earlier files are left to :func:`drop_repeats`.
    """
    from subsetlm.corpus.chunking import iter_samples

    i, inp = task
    d = Path(tmp) / CHUNKS / f"in-{i:05d}"
    if (d / _DONE).is_file():
        return len(_parts(d))
    shutil.rmtree(d, ignore_errors=True)
    return write_chunks(d, rechunk(iter_samples(cfg, splitter, [inp], require_documents=False), shard_size))


def drop_repeats(tmp: Path, cfg: Any, inputs: list[Any]) -> None:
    """Drop the documents of each file's chunk shards that an earlier file already had (the corpus's one check).

    A repeated user id raises :class:`~subsetlm.corpus.readers.CorpusError` naming both
    places; repeated content hashes are dropped from the chunk shards (rewritten in place,
    so running this again finds nothing more to drop) and counted in one warning.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from subsetlm.corpus.readers import Repeats, _first_location, has_ids
    from subsetlm.embed.store import write_table_atomic

    repeats = Repeats(cfg, inputs)
    for i, inp in enumerate(inputs):
        user_id = has_ids(inp, cfg)
        here: dict[str, bool] = {}  # this file's documents (a document's chunks may span two shards): repeated?
        for part in _parts(Path(tmp) / CHUNKS / f"in-{i:05d}"):
            dids = pq.read_table(part, columns=["doc_id"]).column("doc_id").to_pylist()
            for did in dids:
                if did not in here:  # an error names the repeat's line (read again); a dropped copy its file
                    where = functools.partial(_first_location, cfg, did, [inp]) if user_id else str(inp.path)
                    here[did] = repeats.repeated(did, user_id, where)
            keep = [not here[did] for did in dids]
            if not all(keep):
                write_table_atomic(pq.read_table(part).filter(pa.array(keep)), part)
        for did, again in here.items():
            if not again:
                repeats.add(did)
    repeats.warn()


def _chunk_pass(tmp: Path, cfg: Any, splitter: Any, shard_size: int, executor: Callable) -> list[Path]:
    """Make (or find) the chunk shards of a per-file run; return their paths in store-shard order."""
    import pyarrow.parquet as pq

    from subsetlm.corpus.readers import input_files

    found = listed_chunks(tmp)
    if found is not None:
        return found
    root = Path(tmp) / CHUNKS
    t0 = time.perf_counter()
    inputs = input_files(cfg)
    run = functools.partial(chunk_file, tmp=str(tmp), cfg=cfg, splitter=splitter, shard_size=shard_size)
    todo = [(i, inp) for i, inp in enumerate(inputs) if not (root / f"in-{i:05d}" / _DONE).is_file()]
    logger.info("chunking %d of %d corpus file(s), one task each", len(todo), len(inputs))
    executor(run, todo)
    drop_repeats(tmp, cfg, inputs)
    parts = [p for i in range(len(inputs)) for p in _parts(root / f"in-{i:05d}")]
    parts = [p for p in parts if pq.ParquetFile(p).metadata.num_rows > 0]
    write_json_atomic(root / _LISTING, {"shards": [p.relative_to(root).as_posix() for p in parts]})
    logger.info("chunk pass finished: %d shard(s) in %.1f s", len(parts), time.perf_counter() - t0)
    return parts


# -- the plan ---------------------------------------------------------------------------
@dataclass
class ShardPlan:
    """How a run cuts the corpus's samples into shards (see the module docstring).

    Attributes
    ----------
    cut : {"serial", "per-file"}
    shard_size : most samples per shard.
    n_shards : the number of shards, known once :meth:`tasks` has been exhausted.
    """

    cut: str
    shard_size: int
    n_shards: int | None = None

    @classmethod
    def choose(cls, shard_size: int, *, per_file: bool) -> "ShardPlan":
        """``per-file`` when the tasks run elsewhere (and no ``--limit`` counts across files), else ``serial``."""
        return cls("per-file" if per_file else "serial", int(shard_size))

    def describe(self) -> dict[str, Any]:
        return {"cut": self.cut, "shard_size": self.shard_size}

    def record(self, tmp: Path) -> None:
        """Write the plan into a new run's ``tmp``; refuse an unfinished run that was cut another way."""
        f = Path(tmp) / PLAN_FILE
        if not f.is_file():
            write_json_atomic(f, self.describe())
            return
        old = read_json(f)
        if old.get("cut") != self.cut:
            how = {"serial": "serially", "per-file": "one corpus file at a time"}.get(old.get("cut"), old.get("cut"))
            raise ValueError(f"{tmp} holds an unfinished --backend {_BACKEND_OF_CUT.get(old.get('cut'), '?')} run "
                             f"(its shards are cut {how}); resume it with the same backend, or pass --force to "
                             f"start over")
        if old != self.describe():
            raise ValueError(f"{tmp} holds an unfinished run with a different config "
                             f"({diff(old, self.describe())}); pass --force to discard it and start over")

    def tasks(self, tmp: Path, cfg: Any, splitter: Any, done: dict[int, int], executor: Callable | None
              ) -> Iterator[tuple[int, Any]]:
        """The shards not in ``done`` (shard -> rows of the finished ones) as ``(k, table or path)`` tasks.

        ``serial``: drawn lazily from the sample stream (a finished shard is cut again and
        checked against its row count, not embedded). ``per-file``: runs the chunk pass on
        ``executor`` first. Sets :attr:`n_shards` once exhausted.
        """
        if self.cut == "per-file":
            if executor is None:
                raise ValueError("a per-file shard plan needs an executor to chunk the files")
            paths = _chunk_pass(tmp, cfg, splitter, self.shard_size, executor)
            self.n_shards = len(paths)
            yield from ((k, str(p)) for k, p in enumerate(paths) if k not in done)
            return
        from subsetlm.corpus.chunking import iter_samples
        from subsetlm.embed.store import samples_table

        k = -1
        for k, shard in enumerate(rechunk(iter_samples(cfg, splitter), self.shard_size)):
            if k not in done:
                yield k, samples_table(shard)
            elif done[k] != len(shard):
                raise ValueError(f"shard {k} of the unfinished run holds {done[k]} samples, the corpus now cuts "
                                 f"{len(shard)} there; it changed since that run: pass --force to start over")
        self.n_shards = k + 1

    def check_finished(self, done: dict[int, int], where: Path) -> None:
        """Every shard of the plan is written, and none beyond it (``done``: shard -> rows)."""
        if self.n_shards is None:
            raise RuntimeError("ShardPlan.check_finished before its tasks were listed")
        missing = [k for k in range(self.n_shards) if k not in done]
        extra = sorted(k for k in done if k >= self.n_shards)
        if extra:
            raise ValueError(f"{where} holds shard(s) {extra[:5]} beyond the {self.n_shards} the corpus now cuts "
                             f"into; it changed since that run: pass --force to start over")
        if missing:  # pragma: no cover - an executor reported success for a shard it did not write
            raise RuntimeError(f"shard(s) {missing[:5]} were not written; re-run to resume")


# -- one shard ----------------------------------------------------------------------------
def embed_in_parts(emb: Any, texts: list[str], batch_size: int, on_part: Callable[[int], None] | None = None
                   ) -> np.ndarray:
    """Embed ``texts`` in parts of ``_PROGRESS_STEP`` (each length-sorted by the embedder), as every executor does."""
    parts = []
    for s0 in range(0, len(texts), _PROGRESS_STEP):
        parts.append(emb.embed(texts[s0:s0 + _PROGRESS_STEP], batch_size=batch_size))
        if on_part is not None:
            on_part(len(parts[-1]))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


class ShardEmbedder:
    """The per-worker state of the embed step: one embedder and the run's shard writer.

    Calling it (``setup()``, once per worker) builds what is missing and returns it:
    in this process it keeps the embedder the stage already built (``embedder``); a
    pickled copy (a Ray actor) leaves it behind and builds its own from ``spec`` and
    ``options`` on ``device`` (the fitted state of a hashing embedder read from
    ``state_dir``). :func:`embed_shard` then embeds one task and writes the shard.

    Parameters
    ----------
    tmp : the run's ``STORE.tmp`` (every worker writes ``tmp/shards/`` there).
    spec, options : the embedder spec and its keyword arguments.
    state_dir : the fitted state to load, or None.
    device : the device of a worker that builds its own embedder.
    batch_size, dim, dtype : as in ``EmbedConfig`` / ``ShardWriter``.
    embedder : an embedder already built in this process (not pickled).
    """

    def __init__(self, tmp: Path, spec: str, options: dict[str, Any], *, state_dir: Path | None, device: str,
                 batch_size: int, dim: int, dtype: str, embedder: Any = None) -> None:
        self.tmp, self.spec, self.options = Path(tmp), spec, dict(options)
        self.state_dir, self.device = state_dir, device
        self.batch_size, self.dim, self.dtype = int(batch_size), int(dim), dtype
        self.embedder, self.writer = embedder, None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "embedder": None, "writer": None}

    def __call__(self) -> "ShardEmbedder":
        from subsetlm.embed.base import get_embedder
        from subsetlm.embed.store import ShardWriter

        if self.embedder is None:
            self.embedder = get_embedder(self.spec, device=self.device, **self.options)
            if self.state_dir is not None:
                self.embedder.load_state(Path(self.state_dir))
        if self.writer is None:
            self.writer = ShardWriter(self.tmp, self.dim, self.dtype)
        return self

    def embed(self, task: tuple[int, Any]) -> tuple[int, int]:
        """Embed and write shard ``k`` of a ``(k, table or chunk-shard path)`` task; return ``(k, rows)``."""
        import pyarrow.parquet as pq

        k, payload = task
        table = pq.read_table(payload) if isinstance(payload, str) else payload
        X = embed_in_parts(self.embedder, table.column("text").to_pylist(), self.batch_size, report_progress)
        self.writer.write_table(k, X, table)
        return k, len(table)


def embed_shard(worker: ShardEmbedder, task: tuple[int, Any]) -> tuple[int, int]:
    """``func`` of ``map_stateful``: ``worker.embed(task)``."""
    return worker.embed(task)
