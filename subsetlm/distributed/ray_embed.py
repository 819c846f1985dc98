"""Ray backend for ``subsetlm embed``: Ray Data ``map_batches`` over corpus shards with an actor pool.

Two passes, both resumable, inside the run's ``STORE.tmp/``:

1. **Chunk** (:mod:`subsetlm.distributed.ray_chunk`): one Ray task per corpus file reads
   and chunks it with the embedder's own splitter into chunk shards of at most
   ``shard_size`` samples (the store's sample columns), then the driver drops documents
   repeated across files as the local reader does, reading only their ids. With
   ``--limit`` the driver chunks serially instead (the local backend's shards).
2. **Embed** (cluster): ``ray.data.from_items(<shards not yet embedded>)
   .map_batches(ShardEmbedder, batch_size=1, compute=ActorPoolStrategy(size=n_actors), num_gpus=1 | 0)``.
   Each actor holds one embedder (built from the same spec and options; the hashing
   backend's fitted state is read from the run's ``embedder_state/``), reads its chunk
   shard, embeds it as the local loop does (:func:`subsetlm.embed.run.embed_in_parts`)
   and writes ``shards/NNNNN.npy`` + ``.parquet`` with the same ``ShardWriter``. Only
   ``{shard, rows}`` comes back to the driver, so the embeddings never pass through it.
   A dead actor is restarted and its shard retried (Ray Data's actor-pool default); a
   killed run resumes at the shards that are missing, in any order.

The driver then assembles the shards as locally, so the store has the same layout, ids
and manifest; with a deterministic embedder (``hashing``) it is byte-identical to the local
backend's (a neural model can differ in the last bits on other hardware or thread
counts). Every node must read and write ``STORE.tmp`` at the same path (one machine or a
shared filesystem), as the partitioned selection tasks read the store.

Example
-------
>>> embed_corpus(EmbedConfig(inputs=["big.jsonl"], out="store", backend="ray", ray_address="auto"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

class ShardEmbedder:
    """The Ray Data UDF: one embedder per actor; a batch of shard numbers -> those shards written."""

    def __init__(self, tmp: str, spec: str, options: dict, state_dir: str | None, device: str,
                 batch_size: int, dim: int, dtype: str) -> None:
        from subsetlm.embed.base import get_embedder
        from subsetlm.embed.store import ShardWriter

        self.tmp, self.batch_size = Path(tmp), int(batch_size)
        self.emb = get_embedder(spec, device=device, **options)
        if state_dir is not None:
            self.emb.load_state(Path(state_dir))
        self.writer = ShardWriter(self.tmp, dim, dtype)

    def embed_shard(self, k: int, path: str) -> int:
        import pyarrow.parquet as pq

        from subsetlm.embed.run import embed_in_parts

        table = pq.read_table(path)
        X = embed_in_parts(self.emb, table.column("text").to_pylist(), self.batch_size)
        self.writer.write_table(k, X, table)
        return len(table)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards = [int(k) for k in batch["shard"]]
        rows = [self.embed_shard(k, str(p)) for k, p in zip(shards, batch["path"])]
        return {"shard": np.asarray(shards, np.int64), "rows": np.asarray(rows, np.int64)}


def cluster_actors(ray: Any, device: str, num_cpus: float) -> int:
    """Default pool size: one actor per GPU of the cluster (``--device cuda``), else one per ``num_cpus`` CPUs."""
    res = ray.cluster_resources()
    if str(device).startswith("cuda"):
        n = int(res.get("GPU", 0))
        if n < 1:
            raise ValueError("--device cuda with --backend ray, but the Ray cluster has no GPUs; "
                             "use --device cpu or start the nodes with GPUs")
        return n
    return max(1, int(res.get("CPU", 1) // num_cpus))


def embed_with_ray(tmp: Path, corpus: Any, splitter: Any, shard_size: int,
                   shards_after: Callable[[int], Iterable[list[Any]]], *, spec: str, options: dict,
                   state_dir: Path | None, batch_size: int, dim: int, dtype: str, device: str = "cpu",
                   address: str | None = None, n_actors: int | None = None, num_cpus: float = 1.0,
                   on_shard: Callable[[int, int], None] | None = None) -> None:
    """Chunk the corpus into ``tmp/chunks/`` and embed the missing shards into ``tmp/shards/`` on Ray.

    Parameters
    ----------
    tmp : the run's ``STORE.tmp`` directory (readable and writable by every node).
    corpus, splitter : the ``CorpusConfig`` and the embedder's ``TokenSplitter``.
    shard_size : most samples per shard.
    shards_after : ``skip -> iterator of sample lists`` of ``shard_size`` samples, after
        the first ``skip`` samples (the local backend's shards; used with ``--limit``).
    device : ``cuda`` asks Ray for one GPU per actor (each actor sees its GPU as cuda:0).
    n_actors : actors in the pool (None: :func:`cluster_actors`).
    on_shard : called on the driver as ``on_shard(k, rows)`` when shard ``k`` is written.
    """
    from subsetlm.distributed.ray_backend import connect, ray_executor
    from subsetlm.distributed.ray_chunk import chunk_corpus
    from subsetlm.embed.store import ShardWriter

    paths = chunk_corpus(tmp, corpus, splitter, shard_size, shards_after, executor=ray_executor(address))
    writer = ShardWriter(tmp, dim, dtype)
    todo = [k for k in range(len(paths)) if not writer.is_finished(k)]
    if not todo:
        return
    ray = connect(address)
    from ray import data as ray_data

    ctx = ray_data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI's own bar counts samples
    gpus = 1 if str(device).startswith("cuda") else 0
    actors = int(n_actors) if n_actors else cluster_actors(ray, device, num_cpus)
    actors = max(1, min(actors, len(todo)))
    log.info("ray: embedding %d shard(s) with %d actor(s) of %s", len(todo), actors, spec)
    ds = ray_data.from_items([{"shard": k, "path": str(paths[k])} for k in todo], override_num_blocks=len(todo))
    out = ds.map_batches(
        ShardEmbedder, batch_size=1, compute=ray_data.ActorPoolStrategy(size=actors), num_cpus=num_cpus,
        num_gpus=gpus,
        fn_constructor_kwargs=dict(tmp=str(tmp), spec=spec, options=dict(options),
                                   state_dir=None if state_dir is None else str(state_dir), device=device,
                                   batch_size=batch_size, dim=dim, dtype=dtype))
    # Ray Data restarts a dead actor and retries its shard (max_restarts = max_task_retries = -1 by
    # default for actor pools); an exception raised by the embedder itself is not retried: it ends the run.
    for row in out.iter_rows():
        if on_shard is not None:
            on_shard(int(row["shard"]), int(row["rows"]))
    missing = [k for k in todo if not writer.is_finished(k)]
    if missing:  # pragma: no cover - Ray reported success for a shard it did not write
        raise RuntimeError(f"ray: shard(s) {missing[:5]} were not written; re-run to resume")
