"""The Ray embedding backend's serial chunk pass (runs without Ray: it is driver-side code)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from subsetlm.corpus.sample import Sample
from subsetlm.distributed.ray_chunk import chunk_counts, write_chunks
from subsetlm.embed.store import samples_table


def _shards(n_shards: int, size: int, fail_after: int | None = None):
    for k in range(n_shards):
        if fail_after is not None and k == fail_after:
            raise RuntimeError("killed")
        yield [Sample(id=f"d{k}-{i}#0", doc_id=f"d{k}-{i}", text=f"text {k} {i}", n_tokens=2, source="s")
               for i in range(size if k < n_shards - 1 else 3)]


def test_an_interrupted_chunk_pass_resumes_after_its_last_written_shard(tmp_path):
    with pytest.raises(RuntimeError):
        write_chunks(tmp_path, _shards(4, 5, fail_after=2), 0)
    counts, done = chunk_counts(tmp_path)
    assert counts == [5, 5] and not done
    rest = list(_shards(4, 5))[len(counts):]  # what shards_after(sum(counts)) yields
    write_chunks(tmp_path, rest, len(counts))
    counts, done = chunk_counts(tmp_path)
    assert counts == [5, 5, 5, 3] and done
    want = list(_shards(4, 5))
    for k in range(4):
        assert pq.read_table(tmp_path / f"{k:05d}.parquet").equals(samples_table(want[k]))
    assert not list(tmp_path.glob("*.tmp"))


class _FakeRay:
    def __init__(self, **res):
        self.res = res

    def cluster_resources(self):
        return self.res


def test_default_actor_pool_is_one_per_gpu_with_cuda_else_one_per_cpu():
    from subsetlm.distributed.ray_embed import cluster_actors

    assert cluster_actors(_FakeRay(CPU=16.0, GPU=4.0), "cuda", 1.0) == 4
    assert cluster_actors(_FakeRay(CPU=16.0, GPU=4.0), "cpu", 1.0) == 16
    assert cluster_actors(_FakeRay(CPU=16.0), "cpu", 4.0) == 4
    with pytest.raises(ValueError, match="no GPUs"):
        cluster_actors(_FakeRay(CPU=16.0), "cuda", 1.0)
