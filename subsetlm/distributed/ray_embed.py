"""Ray backend for ``subsetlm embed``: shards embedded by a pool of Ray actors, written by the driver.

The corpus is read and chunked on the driver exactly as locally, cut into the same
resumable shards (``shard_size`` samples). Shard *i* goes to actor ``i mod n_actors``;
each actor holds one embedder (built from the same spec and options; the hashing
backend's fitted state is read from the run's ``embedder_state/``) and embeds its shard
the same way the local loop does (:func:`subsetlm.embed.run.embed_in_parts`). The driver collects results in
shard order and writes them with the same ``ShardWriter``, so a killed run resumes shard
by shard and the store has the same layout, ids and manifest as a local run. At most
``2 × n_actors`` shards are in flight, so memory stays bounded.

Actors are restarted (and their pending calls retried) when their worker dies. With a
deterministic embedder (``hashing``) the embeddings are byte-identical to the local
backend's; a neural model can differ in the last bits on other hardware or thread counts.

Example
-------
>>> embed_corpus(EmbedConfig(inputs=["big.jsonl"], out="store", backend="ray", ray_address="auto"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

log = logging.getLogger(__name__)

class _EmbedActor:
    def __init__(self, spec: str, options: dict, state_dir: str | None, device: str) -> None:
        from subsetlm.embed.base import get_embedder

        self.emb = get_embedder(spec, device=device, **options)
        if state_dir is not None:
            self.emb.load_state(Path(state_dir))

    def embed(self, texts: list[str], batch_size: int) -> np.ndarray:
        from subsetlm.embed.run import embed_in_parts

        return embed_in_parts(self.emb, texts, batch_size)


def embed_shards(shards: Iterable[list[Any]], *, spec: str, options: dict, state_dir: Path | None,
                 batch_size: int, device: str = "cpu", address: str | None = None, n_actors: int = 2,
                 num_cpus: float = 1.0) -> Iterator[tuple[list[Any], np.ndarray]]:
    """Yield ``(shard, embeddings (len(shard), dim))`` in shard order, embedded by ``n_actors`` Ray actors.

    ``device="cuda"`` asks Ray for one GPU per actor (each actor then sees its own GPU as cuda:0).
    """
    from subsetlm.distributed.ray_backend import connect

    ray = connect(address)
    gpus = 1 if str(device).startswith("cuda") else 0  # one GPU per actor: `--device cuda` on a GPU cluster
    Actor = ray.remote(num_cpus=num_cpus, num_gpus=gpus, max_restarts=3, max_task_retries=3)(_EmbedActor)
    actors = [Actor.remote(spec, dict(options), None if state_dir is None else str(state_dir), device)
              for _ in range(max(1, int(n_actors)))]
    log.info("ray: embedding with %d actor(s) of %s", len(actors), spec)
    pending: deque = deque()
    i = 0
    for shard in shards:
        texts = [s.text for s in shard]
        pending.append((shard, actors[i % len(actors)].embed.remote(texts, batch_size)))
        i += 1
        if len(pending) >= 2 * len(actors):
            sh, ref = pending.popleft()
            yield sh, ray.get(ref)
    while pending:
        sh, ref = pending.popleft()
        yield sh, ray.get(ref)
