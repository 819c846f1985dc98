"""The chunk pass of the Ray embedding backend: corpus files -> chunk shards in ``STORE.tmp/chunks/``.

A chunk shard is one Parquet file of at most ``shard_size`` samples with the store's
sample columns (id, doc_id, source, n_tokens, text); the k-th one listed in
``chunks/_SHARDS.json`` becomes store shard k. Two ways to make them:

* **per input file, on the cluster** (the default): one Ray task per corpus file reads it,
  chunks it with the embedder's own splitter and writes ``chunks/in-IIIII/JJJJJ.parquet``
  (``_DONE`` marks a finished file, so a re-run redoes only the unfinished ones). The
  driver then drops documents already seen in an earlier file, exactly as the local
  reader does (a repeated content hash: later copies dropped, one warning; a repeated user
  id: :class:`CorpusError` naming both places), by reading only the ``doc_id`` columns.
  Shard boundaries then follow the files, which does not change the assembled store
  (its files are concatenations with fixed row groups).
* **serially on the driver** (``--limit``, which counts documents across files, or no
  executor): the local backend's shards, ``chunks/serial/NNNNN.parquet``, resumable shard
  by shard (:func:`write_chunks`).

Example
-------
>>> run = ray_executor("auto")                                                   # doctest: +SKIP
>>> paths = chunk_corpus(Path("store.tmp"), ccfg, splitter, 4096, shards_after, executor=run)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from subsetlm._io import write_json_atomic

log = logging.getLogger(__name__)

CHUNKS = "chunks"
_DONE = "_DONE"
_LISTING = "_SHARDS.json"


def chunk_shards(tmp: Path) -> list[Path] | None:
    """The chunk shards in store-shard order, once the chunk pass has finished (else None)."""
    listing = Path(tmp) / CHUNKS / _LISTING
    if not listing.is_file():
        return None
    return [Path(tmp) / CHUNKS / p for p in json.loads(listing.read_text())["shards"]]


def _parts(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("*.parquet"))


def chunk_counts(d: Path) -> tuple[list[int], bool]:
    """Rows of the consecutive chunk shards 0, 1, ... in ``d``, and whether its pass finished."""
    import pyarrow.parquet as pq

    counts, k = [], 0
    while (Path(d) / f"{k:05d}.parquet").is_file():
        counts.append(pq.ParquetFile(Path(d) / f"{k:05d}.parquet").metadata.num_rows)
        k += 1
    return counts, (Path(d) / _DONE).is_file()


def write_chunks(d: Path, shards: Iterable[list[Any]], start: int) -> int:
    """Write ``shards`` as ``d/NNNNN.parquet`` from ``start`` on, then mark ``d`` finished; return the count."""
    from subsetlm.embed.store import samples_table, write_table_atomic

    Path(d).mkdir(parents=True, exist_ok=True)
    k = start
    for shard in shards:
        write_table_atomic(samples_table(shard), Path(d) / f"{k:05d}.parquet")
        k += 1
    write_json_atomic(Path(d) / _DONE, {"chunks": k})
    return k


def _chunk_input(task: tuple[int, Any], *, tmp: str, cfg: Any, splitter: Any, shard_size: int) -> int:
    """Ray task: chunk one corpus file into ``chunks/in-IIIII/`` (redone from scratch unless finished)."""
    import shutil

    from subsetlm.corpus.chunking import iter_samples
    from subsetlm.embed.run import _rechunk

    i, inp = task
    d = Path(tmp) / CHUNKS / f"in-{i:05d}"
    if (d / _DONE).is_file():
        return len(_parts(d))
    shutil.rmtree(d, ignore_errors=True)
    return write_chunks(d, _rechunk(iter_samples(cfg, splitter, [inp], require_documents=False), shard_size, 0), 0)


def _drop_repeats(tmp: Path, cfg: Any, inputs: list[Any]) -> None:
    """Drop documents already seen in an earlier input, as ``iter_samples`` does across files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from subsetlm.corpus.readers import CorpusError, _first_location, has_ids
    from subsetlm.embed.store import write_table_atomic

    seen: set[str] = set()
    n_dup, examples = 0, []
    for i, inp in enumerate(inputs):
        here: set[str] = set()
        for part in _parts(Path(tmp) / CHUNKS / f"in-{i:05d}"):
            dids = pq.read_table(part, columns=["doc_id"]).column("doc_id").to_pylist()
            keep = [did not in seen for did in dids]
            if not all(keep):
                did = dids[keep.index(False)]
                if has_ids(inp, cfg):
                    first = _first_location(cfg, did, inputs[:i])
                    again = _first_location(cfg, did, [inp])
                    raise CorpusError(
                        f"duplicate document id {did!r}: at {first} and again at {again}; ids must be unique. Fix "
                        f"the data, choose another --id-field, or drop --id-field to use content hashes")
                n_dup += len({d for d, k in zip(dids, keep) if not k})  # documents, not chunks
                if len(examples) < 3:
                    examples.append(str(inp.path))
                table = pq.read_table(part).filter(pa.array(keep))
                write_table_atomic(table, part)  # re-running this pass finds nothing more to drop here
            here.update(dids)
        seen |= here
    if n_dup:
        log.warning("dropped %d exact duplicate document(s) without ids (e.g. in %s); their content-hash ids "
                    "would collide", n_dup, ", ".join(examples))


def chunk_corpus(tmp: Path, cfg: Any, splitter: Any, shard_size: int,
                 shards_after: Callable[[int], Iterable[list[Any]]], executor: Callable | None = None) -> list[Path]:
    """Make (or find) the chunk shards of a run; return their paths in store-shard order.

    Parameters
    ----------
    tmp : the run's ``STORE.tmp`` (every node reads and writes it at this path).
    cfg : the ``CorpusConfig``; splitter : the embedder's ``TokenSplitter``.
    shards_after : ``skip -> the local backend's shards after the first skip samples`` (serial pass).
    executor : ``run(func, tasks)`` (:func:`~subsetlm.distributed.ray_backend.ray_executor`): one task per
        corpus file; None or ``cfg.limit`` set: the serial pass on the driver.
    """
    import pyarrow.parquet as pq

    from subsetlm.corpus.readers import input_files

    found = chunk_shards(tmp)
    if found is not None:
        return found
    root = Path(tmp) / CHUNKS
    t0 = time.perf_counter()
    if cfg.limit is not None or executor is None:
        d = root / "serial"
        counts, done = chunk_counts(d)
        if not done:
            write_chunks(d, shards_after(sum(counts)), len(counts))
        parts = _parts(d)
    else:
        inputs = input_files(cfg)
        run = functools.partial(_chunk_input, tmp=str(tmp), cfg=cfg, splitter=splitter, shard_size=shard_size)
        todo = [(i, inp) for i, inp in enumerate(inputs) if not (root / f"in-{i:05d}" / _DONE).is_file()]
        log.info("ray: chunking %d of %d corpus file(s) as Ray tasks", len(todo), len(inputs))
        executor(run, todo)
        _drop_repeats(tmp, cfg, inputs)
        parts = [p for i in range(len(inputs)) for p in _parts(root / f"in-{i:05d}")]
    parts = [p for p in parts if pq.ParquetFile(p).metadata.num_rows > 0]
    write_json_atomic(root / _LISTING, {"shards": [p.relative_to(root).as_posix() for p in parts]})
    log.info("ray: chunk pass finished: %d shard(s) in %.1f s", len(parts), time.perf_counter() - t0)
    return parts
