"""The embed stage's shard plan, its two cuts, one duplicate check on both, and the stage wiring."""

from __future__ import annotations

import dataclasses
import json
import logging
import re

import pytest
from test_store import CALLS, FILES, cfg_for, corpus, expected_samples, write_corpus  # noqa: F401 (fixture)

from subsetlm._stage import identity
from subsetlm.corpus.chunking import WhitespaceSplitter
from subsetlm.corpus.readers import CorpusConfig, CorpusError
from subsetlm.distributed import IN_PROCESS
from subsetlm.embed import EmbedConfig, embed_corpus
from subsetlm.embed import run as run_mod
from subsetlm.embed.shards import PLAN_FILE, ShardPlan, listed_chunks


@pytest.fixture
def per_file(monkeypatch):
    """Runs the stage as a distributed executor would (per-file plan, chunk tasks), but in this process."""
    monkeypatch.setattr(run_mod, "executor_for", lambda *a, **kw: IN_PROCESS)


def _folder(tmp_path, with_ids: bool):
    """Three corpus files; the third repeats 5 documents of the first."""
    src = write_corpus(tmp_path / "all.jsonl", 90).read_text().splitlines()
    if not with_ids:
        src = [json.dumps({"text": json.loads(x)["text"]}) for x in src]
    d = tmp_path / "split"
    d.mkdir()
    for name, lines in {"a.jsonl": src[:40], "b.jsonl": src[40:70], "c.jsonl": src[70:] + src[10:15]}.items():
        (d / name).write_text("\n".join(lines) + "\n")
    return d


def test_serial_tasks_cut_the_stream_skip_finished_shards_and_count_them(corpus):  # noqa: F811 - the corpus fixture
    ccfg = CorpusConfig([str(corpus)], max_tokens=8)
    samples = expected_samples(corpus)
    plan = ShardPlan.choose(16, per_file=False)
    done = {0: 16, 2: 16}
    tasks = list(plan.tasks(None, ccfg, WhitespaceSplitter(), done, None))
    n = -(-len(samples) // 16)
    assert plan.n_shards == n and [k for k, _ in tasks] == [k for k in range(n) if k not in done]
    for k, table in tasks:
        assert table.column("id").to_pylist() == [s.id for s in samples[16 * k:16 * (k + 1)]]
    plan.check_finished({k: 1 for k in range(n)}, corpus)
    with pytest.raises(ValueError, match=r"shard\(s\) \[99\] beyond"):
        plan.check_finished({**{k: 1 for k in range(n)}, 99: 1}, corpus)
    with pytest.raises(ValueError, match="shard 1 of the unfinished run holds 5 samples.*--force"):
        list(ShardPlan.choose(16, per_file=False).tasks(None, ccfg, WhitespaceSplitter(), {1: 5}, None))


def test_a_plan_is_recorded_and_an_unfinished_run_cut_otherwise_is_refused(tmp_path):
    ShardPlan.choose(16, per_file=False).record(tmp_path)
    ShardPlan.choose(16, per_file=False).record(tmp_path)  # the same plan: resumed
    with pytest.raises(ValueError, match=r"unfinished --backend local run \(its shards are cut serially\)"):
        ShardPlan.choose(16, per_file=True).record(tmp_path)
    with pytest.raises(ValueError, match=r"unfinished run with a different config \(shard_size: 16 != 32\)"):
        ShardPlan.choose(32, per_file=False).record(tmp_path)
    assert json.loads((tmp_path / PLAN_FILE).read_text()) == {"cut": "serial", "shard_size": 16}


def test_per_file_plan_drops_repeats_across_files_and_writes_the_same_store(tmp_path, per_file, monkeypatch, caplog):
    d = _folder(tmp_path, with_ids=False)
    monkeypatch.setattr(run_mod, "executor_for", lambda *a, **kw: None)
    with caplog.at_level(logging.WARNING):
        a = embed_corpus(cfg_for(d, tmp_path / "serial"))
    serial_warning = [r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()]
    caplog.clear()
    monkeypatch.setattr(run_mod, "executor_for", lambda *a, **kw: IN_PROCESS)
    seen = []
    with caplog.at_level(logging.WARNING):
        b = embed_corpus(cfg_for(d, tmp_path / "files"),
                         _after_shard=lambda k: seen.append(listed_chunks(tmp_path / "files.tmp")))
    per_file_warning = [r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()]
    assert a.stats["docs"] == b.stats["docs"] == 90  # the 5 repeats were dropped on both paths
    assert sorted({p.parent.name for p in seen[0]}) == ["in-00000", "in-00001", "in-00002"]  # cut per file
    for f in FILES:
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f
    assert [w.split(" (e.g.")[0] for w in serial_warning] == [w.split(" (e.g.")[0] for w in per_file_warning] \
        == ["dropped 5 exact duplicate document(s) without ids"]
    assert not (b.path / "chunks").exists() and not (b.path / PLAN_FILE).exists()


def test_with_limit_a_distributed_executor_cuts_the_stream_serially(tmp_path, per_file):
    """--limit counts documents across files: the per-file cut cannot honour it, so the serial cut is recorded."""
    d = _folder(tmp_path, with_ids=False)
    plans = {}

    def plan_of(name):
        return lambda k: plans.setdefault(name, []).append(
            (json.loads((tmp_path / f"{name}.tmp" / PLAN_FILE).read_text()), listed_chunks(tmp_path / f"{name}.tmp")))

    limited = embed_corpus(cfg_for(d, tmp_path / "limited", limit=50), _after_shard=plan_of("limited"))
    assert plans["limited"] and all(p == ({"cut": "serial", "shard_size": 16}, None) for p in plans["limited"])
    assert limited.stats["docs"] == 50  # the first 50 documents: all of a.jsonl and 10 of b.jsonl
    embed_corpus(cfg_for(d, tmp_path / "whole"), _after_shard=plan_of("whole"))  # the same executor, no limit
    assert plans["whole"][0][0] == {"cut": "per-file", "shard_size": 16} and plans["whole"][0][1]


def test_a_user_id_repeated_across_files_is_the_same_error_on_both_cuts(tmp_path, per_file, monkeypatch):
    d = _folder(tmp_path, with_ids=True)
    with pytest.raises(CorpusError) as files:
        embed_corpus(cfg_for(d, tmp_path / "files", id_field="id"))
    monkeypatch.setattr(run_mod, "executor_for", lambda *a, **kw: None)
    with pytest.raises(CorpusError) as serial:
        embed_corpus(cfg_for(d, tmp_path / "serial", id_field="id"))
    assert str(files.value) == str(serial.value)
    assert f"duplicate document id 'd0010': at {d / 'a.jsonl'}:11 and again at {d / 'c.jsonl'}:21" in str(files.value)
    assert not (tmp_path / "files").exists()


def test_per_file_run_killed_resumes_byte_identical_and_refuses_the_other_cut(tmp_path, corpus, per_file,  # noqa: F811 - the corpus fixture
                                                                            monkeypatch):
    full = embed_corpus(cfg_for(corpus, tmp_path / "full"))

    def kill(k):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_corpus(cfg_for(corpus, tmp_path / "s"), _after_shard=kill)
    monkeypatch.setattr(run_mod, "executor_for", lambda *a, **kw: None)
    with pytest.raises(ValueError, match="unfinished --backend ray run.*same backend.*--force"):
        embed_corpus(cfg_for(corpus, tmp_path / "s"))
    monkeypatch.setattr(run_mod, "executor_for", lambda *a, **kw: IN_PROCESS)
    resumed = embed_corpus(cfg_for(corpus, tmp_path / "s"))
    assert resumed.stats["resumed_samples"] == 32
    for f in FILES:
        assert (resumed.path / f).read_bytes() == (full.path / f).read_bytes(), f


def test_volatile_fields_reuse_the_store_and_the_identity_is_unchanged(corpus, tmp_path):  # noqa: F811 - the corpus fixture
    cfg = cfg_for(corpus, tmp_path / "s")
    first = embed_corpus(cfg)
    n_calls = CALLS["embed"]
    for change in (dict(batch_size=3), dict(shard_size=5), dict(block_size=7), dict(device="cpu"),
                   dict(ray_actors=2), dict(ray_address="auto")):
        again = embed_corpus(dataclasses.replace(cfg, **change))
        assert again.fingerprint == first.fingerprint
    assert CALLS["embed"] == n_calls, "a volatile field must not make the store look out of date"
    # what is left of the config once the volatile fields are dropped: each of these is in the store's identity
    assert sorted(identity(cfg)) == ["dtype", "embedder_options", "id_field", "inputs", "limit", "max_tokens",
                                     "model", "text_field"]
    assert sorted(first.manifest["config"]) == ["chunking", "corpus_fingerprint", "dtype", "embedder_options",
                                                "model", "model_spec"]


def test_stage_runs_embed_corpus_and_prints_the_store_summary(corpus, tmp_path):  # noqa: F811 - the corpus fixture
    assert run_mod.STAGE.name == "embed" and run_mod.STAGE.config is EmbedConfig
    store = run_mod.STAGE.run(cfg_for(corpus, tmp_path / "s"))
    assert store.path == tmp_path / "s" and store.stats["docs"] == 120
    line = run_mod.STAGE.summary(store)
    assert re.fullmatch(rf"120 docs \({store.n} samples\) -> 8-d float16 with test-fake in \d+\.\d s "
                        rf"\(\d+\.\d docs/s\): {re.escape(str(tmp_path / 's'))}", line), line


def test_a_store_of_another_config_is_both_a_value_and_a_file_exists_error(corpus, tmp_path):  # noqa: F811 - the corpus fixture
    embed_corpus(cfg_for(corpus, tmp_path / "s"))
    with pytest.raises(FileExistsError, match=r"different config \(dtype"):
        embed_corpus(cfg_for(corpus, tmp_path / "s", dtype="float32"))
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="not a complete embedding store.*--force"):
        embed_corpus(cfg_for(corpus, tmp_path / "junk"))


class _Bar:
    """Stands in for tqdm: records the initial count and every update."""

    bars: list = []

    def __init__(self, desc=None, unit=None, initial=0):
        self.n, self.updates = initial, []
        _Bar.bars.append(self)

    def update(self, n):
        self.n += n
        self.updates.append(n)

    def close(self):
        pass


def test_the_progress_bar_counts_every_sample_once_live_from_the_shard_work(corpus, tmp_path, monkeypatch):  # noqa: F811 - the corpus fixture
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    monkeypatch.setattr("subsetlm.embed.shards._PROGRESS_STEP", 5)  # several updates per shard of 16
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(cfg_for(corpus, tmp_path / "s"), progress=True,
                     _after_shard=lambda k: (_ for _ in ()).throw(KeyboardInterrupt()) if k == 1 else None)
    store = embed_corpus(cfg_for(corpus, tmp_path / "s"), progress=True)
    first, resumed = _Bar.bars[-2:]
    assert first.updates[:4] == [5, 5, 5, 1] and first.n == 32  # reported per part, while the shard is embedded
    assert resumed.n == store.n and resumed.n - sum(resumed.updates) == 32  # the resumed run starts at 32
