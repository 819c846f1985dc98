"""The Ray backend on a real multi-node Ray cluster on this machine (head + one worker node).

Skipped when Ray is not installed (``pip install 'subsetlm[ray]'``); the dev extra installs it,
so CI runs it. Run with ``.venv/bin/python -m pytest tests/distributed``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
# the cluster's workers cannot import this test module: ship its helpers by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``ray start --head`` on 127.0.0.1 plus a second node process joined to it; stopped afterwards."""
    if shutil.which(RAY) is None and not Path(RAY).exists():
        pytest.skip("the ray command is not installed next to this Python")
    port = _free_port()
    tmp = tmp_path_factory.mktemp("ray")
    # a loopback-only test cluster: no auth token (a ~/.ray/auth_token left by another Ray run would
    # otherwise be used by the head but not by the joining node)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    old_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the driver (this process) too
    common = ["--num-cpus", "1", "--object-store-memory", str(200 * 2 ** 20), "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--include-dashboard", "false", "--temp-dir", str(tmp), *common],
                   check=True, env=env, capture_output=True, timeout=180)
    address = f"127.0.0.1:{port}"
    try:
        r = subprocess.run([RAY, "start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
                           env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"ray start (worker node) failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        ray.init(address=address, log_to_driver=False)
        for _ in range(60):  # wait for both nodes
            if len([n for n in ray.nodes() if n["Alive"]]) >= 2:
                break
            __import__("time").sleep(1)
        assert len([n for n in ray.nodes() if n["Alive"]]) >= 2
        yield address
    finally:
        ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        if old_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old_mode


def _store(tmp: Path) -> Path:
    from subsetlm.cli import main

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    p = tmp / "c.jsonl"
    with open(p, "w") as fh:
        for i in range(600):
            topic = i % 6
            fh.write(json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(words[topic * 50:(topic + 1) * 50], 20))})
                     + "\n")
    store = tmp / "store"
    assert main(["embed", str(p), "--out", str(store), "--model", "hashing", "--id-field", "id", "-q"]) == 0
    return store


_EMBED_FILES = ("embeddings.npy", "ids.parquet", "texts.parquet", "manifest.json")


def _embed_kw(tmp_path: Path) -> dict:
    _store(tmp_path)
    return dict(inputs=[str(tmp_path / "c.jsonl")], model="hashing", id_field="id", shard_size=128)  # 5 shards


def test_ray_embedding_writes_the_same_store_as_local(cluster, tmp_path):
    from subsetlm.embed import EmbedConfig, embed_corpus

    kw = _embed_kw(tmp_path)
    a = embed_corpus(EmbedConfig(out=str(tmp_path / "local"), **kw))
    b = embed_corpus(EmbedConfig(out=str(tmp_path / "ray"), backend="ray", ray_address=cluster, ray_actors=2, **kw))
    for f in _EMBED_FILES:
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f
    assert not (b.path / "chunks").exists() and not (b.path / "shards").exists()


def _settle(folder: Path, quiet_s: float = 2.0, limit_s: float = 60.0) -> None:
    """Wait until no file in ``folder`` has changed for ``quiet_s`` seconds (at most ``limit_s``)."""
    import time

    def snap() -> set:
        return {(p.name, p.stat().st_size) for p in folder.glob("*")} if folder.exists() else set()

    t0, last, since = time.monotonic(), snap(), time.monotonic()
    while time.monotonic() - t0 < limit_s and time.monotonic() - since < quiet_s:
        time.sleep(0.2)
        now = snap()
        if now != last:
            last, since = now, time.monotonic()


def test_ray_embedding_killed_midway_resumes_to_the_same_store(cluster, tmp_path):
    from subsetlm.embed.shards import listed_chunks as chunk_shards
    from subsetlm.embed import EmbedConfig, embed_corpus

    kw = _embed_kw(tmp_path)
    a = embed_corpus(EmbedConfig(out=str(tmp_path / "local"), **kw))
    cfg = EmbedConfig(out=str(tmp_path / "ray"), backend="ray", ray_address=cluster, ray_actors=1, **kw)
    seen: list[int] = []

    def stop(k: int) -> None:
        seen.append(k)
        raise KeyboardInterrupt  # the driver dies after its first finished shard

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(cfg, _after_shard=stop)
    tmp = tmp_path / "ray.tmp"
    assert len(chunk_shards(tmp)) == 5  # the chunk pass had finished
    shards = tmp / "shards"
    _settle(shards)  # ray.kill of the actors is asynchronous: a shard in flight may still land
    for k in (1, 3):  # as if the run had died before these two (the actors run ahead of the driver)
        for ext in (".npy", ".parquet"):
            (shards / f"{k:05d}{ext}").unlink(missing_ok=True)
    written = sorted(int(p.name[:5]) for p in shards.glob("*.parquet"))
    assert written and 1 not in written and 3 not in written
    resumed: list[int] = []
    b = embed_corpus(cfg, _after_shard=resumed.append)
    assert sorted(resumed) == sorted(set(range(5)) - set(written))  # only the missing shards ran
    for f in _EMBED_FILES:
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f


def _split_corpus(tmp: Path, with_ids: bool) -> Path:
    """c.jsonl cut into 3 files of a folder, with documents of the first file repeated in the third."""
    lines = (tmp / "c.jsonl").read_text().splitlines()
    if not with_ids:
        lines = [json.dumps({"text": json.loads(x)["text"]}) for x in lines]
    d = tmp / "split"
    d.mkdir()
    (d / "a.jsonl").write_text("\n".join(lines[:250]) + "\n")
    (d / "b.jsonl").write_text("\n".join(lines[250:400]) + "\n")
    (d / "c.jsonl").write_text("\n".join(lines[400:] + lines[10:20]) + "\n")  # 10 repeats of a.jsonl
    return d


def test_ray_chunking_per_file_drops_repeats_across_files_and_writes_the_same_store(cluster, tmp_path):
    from subsetlm.embed.shards import listed_chunks as chunk_shards
    from subsetlm.embed import EmbedConfig, embed_corpus

    _store(tmp_path)
    kw = dict(inputs=[str(_split_corpus(tmp_path, with_ids=False))], model="hashing", shard_size=128)
    a = embed_corpus(EmbedConfig(out=str(tmp_path / "local"), **kw))
    assert a.n == 600  # the 10 repeats were dropped
    shards: list = []
    b = embed_corpus(EmbedConfig(out=str(tmp_path / "ray"), backend="ray", ray_address=cluster, ray_actors=2, **kw),
                     _after_shard=lambda k: shards.append(chunk_shards(tmp_path / "ray.tmp")))
    assert len(shards[0]) == 6  # per file: 2 + 2 + 2 shards (local: 5), same store
    for f in _EMBED_FILES:
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f


def test_ray_chunking_a_user_id_repeated_across_files_is_an_error_naming_both(cluster, tmp_path):
    from subsetlm.corpus.readers import CorpusError
    from subsetlm.embed import EmbedConfig, embed_corpus

    _store(tmp_path)
    d = _split_corpus(tmp_path, with_ids=True)
    cfg = EmbedConfig(inputs=[str(d)], out=str(tmp_path / "ray"), model="hashing", id_field="id", backend="ray",
                      ray_address=cluster)
    with pytest.raises(CorpusError, match=r"duplicate document id 'd10': at \S*a.jsonl:11 and again at \S*c.jsonl:201"):
        embed_corpus(cfg)
    assert not (tmp_path / "ray").exists()


def _die_on_first_call(marker: str) -> None:
    """The first call anywhere on the cluster (``marker`` created atomically) kills its process."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)  # the process dies without a Python exception: Ray sees a system failure and retries


class _DiesOnceInTask:
    """Wraps the embed step's ``func(state, task)``: the first shard anywhere on the cluster kills its actor."""

    def __init__(self, func, marker: Path):
        self.func, self.marker = func, str(marker)

    def __call__(self, state, task):
        _die_on_first_call(self.marker)
        return self.func(state, task)


def test_ray_embedding_actor_killed_is_restarted_and_the_store_is_unchanged(cluster, tmp_path, monkeypatch):
    import subsetlm.embed.run as embed_run
    from subsetlm.embed import EmbedConfig, embed_corpus

    kw = _embed_kw(tmp_path)
    a = embed_corpus(EmbedConfig(out=str(tmp_path / "local"), **kw))
    marker = tmp_path / "actor-killed"
    monkeypatch.setattr(embed_run, "embed_shard", _DiesOnceInTask(embed_run.embed_shard, marker))
    b = embed_corpus(EmbedConfig(out=str(tmp_path / "ray"), backend="ray", ray_address=cluster, ray_actors=2, **kw))
    assert marker.exists()  # an actor process really died
    for f in _EMBED_FILES:
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f


@pytest.mark.parametrize("merge", [0.0, 2.0])
def test_ray_backend_writes_the_same_subset_file_as_local(cluster, tmp_path, merge):
    from subsetlm.select.api import SelectConfig, select

    store = _store(tmp_path)
    kw = dict(store=str(store), budget="60", k=8, partitions=4, seed=3, merge=merge)
    a = select(SelectConfig(out=str(tmp_path / "local"), **kw))
    b = select(SelectConfig(out=str(tmp_path / "ray"), backend="ray", ray_address=cluster, **kw))
    for f in ("subset.parquet", "manifest.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_a_worker_killed_mid_task_is_retried_and_the_result_is_unchanged(cluster, tmp_path):
    from subsetlm.distributed.ray_backend import ray_executor
    from subsetlm.select.partitioned import partitioned_greedy

    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    labels = np.arange(400) % 4
    want = partitioned_greedy(X, labels, 40, k=8, n_jobs=1, seed=0)
    marker = tmp_path / "killed-once"
    run = ray_executor(cluster, max_retries=3)
    got = partitioned_greedy(X, labels, 40, k=8, seed=0, executor=lambda f, tasks: run(_dies_once(f, marker), tasks))
    assert marker.exists()  # a worker process really died
    assert np.array_equal(got.indices, want.indices) and got.objective == want.objective


class _dies_once:
    """Wraps a task function: the first call anywhere on the cluster kills its worker process."""

    def __init__(self, func, marker: Path):
        self.func, self.marker = func, str(marker)

    def __call__(self, task):
        _die_on_first_call(self.marker)
        return self.func(task)


def test_kmeans_assignment_on_ray_gives_the_same_labels(cluster, tmp_path):
    from subsetlm.distributed.ray_backend import ray_executor
    from subsetlm.index import kmeans_partitions

    rng = np.random.default_rng(2)
    X = rng.normal(size=(5000, 8)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    np.save(tmp_path / "x.npy", X)
    Xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    a = kmeans_partitions(Xm, 6, seed=0, block_size=256)
    b = kmeans_partitions(Xm, 6, seed=0, block_size=256, executor=ray_executor(cluster))  # 2 tasks of 16 blocks
    assert np.array_equal(a, b)


def test_select_cli_ray_backend_needs_partitions(tmp_path):
    from subsetlm.select.api import SelectConfig

    with pytest.raises(ValueError, match="--partitions"):
        SelectConfig(store="s", out="o", backend="ray").validate()


def test_index_cli_ray_backend_builds_the_same_knn_graph(cluster, tmp_path):
    from subsetlm.cli import main

    store = _store(tmp_path)
    other = tmp_path / "store-copy"
    shutil.copytree(store, other)
    common = ["--k", "8", "--kind", "ivf", "-q"]
    assert main(["index", str(store), *common]) == 0
    assert main(["index", str(other), *common, "--backend", "ray", "--ray-address", cluster]) == 0
    a, b = store / "graphs" / "knn-k8", other / "graphs" / "knn-k8"
    assert (a / "neighbors.npy").read_bytes() == (b / "neighbors.npy").read_bytes()
    # FAISS's IVF scan sums in an order that depends on its thread count (2 here, 1 in a Ray task)
    np.testing.assert_allclose(np.load(a / "similarities.npy"), np.load(b / "similarities.npy"), rtol=0, atol=1e-6)


def test_an_unfinished_local_run_is_not_resumed_by_the_ray_backend(cluster, tmp_path):
    from subsetlm.embed import EmbedConfig, embed_corpus

    kw = _embed_kw(tmp_path)

    def stop(k: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(EmbedConfig(out=str(tmp_path / "s"), **kw), _after_shard=stop)
    with pytest.raises(ValueError, match="unfinished --backend local run"):
        embed_corpus(EmbedConfig(out=str(tmp_path / "s"), backend="ray", ray_address=cluster, **kw))
    assert embed_corpus(EmbedConfig(out=str(tmp_path / "s"), backend="ray", ray_address=cluster, force=True,
                                    **kw)).n == 600


def test_with_limit_both_executors_cut_the_stream_so_ray_resumes_a_local_run(cluster, tmp_path):
    from subsetlm.embed import EmbedConfig, embed_corpus

    kw = dict(_embed_kw(tmp_path), limit=500)  # --limit counts across files: the serial cut on both executors
    a = embed_corpus(EmbedConfig(out=str(tmp_path / "local"), **kw))

    def stop(k: int) -> None:
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(EmbedConfig(out=str(tmp_path / "s"), **kw), _after_shard=stop)
    resumed: list[int] = []
    b = embed_corpus(EmbedConfig(out=str(tmp_path / "s"), backend="ray", ray_address=cluster, ray_actors=2, **kw),
                     _after_shard=resumed.append)
    assert sorted(resumed) == [2, 3] and b.stats["resumed_samples"] == 256  # shards 0-1 of the local run kept
    for f in _EMBED_FILES:
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f
