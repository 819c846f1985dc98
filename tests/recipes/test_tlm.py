"""TLM stage 1: the joint loss, the ρ1 batch cycle, resumable streams, and the recipe end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _recipe_data import cyclic_texts
from subsetlm.recipes.tlm import TaskBatch, is_task_batch, tlm_loss

WORDS = {"cardio": "heart artery cardiac infarction statin", "onco": "tumor chemotherapy metastasis biopsy",
         "neuro": "brain neuron cortex seizure"}


def _task_file(tmp: Path, n: int = 90) -> Path:
    rng = np.random.default_rng(0)
    names = sorted(WORDS)
    rows = []
    for i in range(n):
        lab = names[i % 3]
        split = "train" if i < 60 else ("validation" if i < 75 else "test")
        rows.append({"id": f"e{i}", "text": " ".join(rng.choice(WORDS[lab].split(), size=10)), "label": lab,
                     "split": split})
    p = tmp / "task.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _recipe(task_texts, labels, rho1=3, rho2=20.0):
    from subsetlm.recipes.base import build_recipe

    return build_recipe("tlm", cyclic_texts(80), preset="tiny", seq_len=32, seed=0,
                        task=(task_texts, np.asarray(labels), ["a", "b", "c"]), rho1=rho1, rho2=rho2)


def test_tlm_loss_formula():
    assert float(tlm_loss(torch.tensor(2.0), torch.tensor(1.0), 20.0)) == pytest.approx((20 * 2 + 1) / 21)
    assert float(tlm_loss(torch.tensor(2.0), None, 20.0)) == 2.0


def test_joint_loss_of_a_task_batch_matches_a_hand_computed_one():
    texts = ["heart artery cardiac", "tumor biopsy", "brain cortex seizure neuron"]
    r = _recipe(texts, [0, 1, 2], rho2=4.0)
    model = r.model.eval()
    batch = r.collate(TaskBatch("task", [r.task_tokens[i] for i in range(3)], np.array([0, 1, 2])))
    gen = torch.Generator().manual_seed(3)
    c = r.corrupt(batch, torch.Generator().manual_seed(3))
    loss, stats = r.step_loss(model, batch, gen, "cpu")
    with torch.no_grad():  # the same quantities through the plain transformers modules
        h = model.mlm.bert(input_ids=c["inputs"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = model.mlm.cls(h)
        keep = c["labels"] != -100
        mlm = torch.nn.functional.cross_entropy(logits[keep], c["labels"][keep])
        task = torch.nn.functional.cross_entropy(model.head(h[:, 0]), torch.tensor([0, 1, 2]))
    assert float(loss.detach()) == pytest.approx(float((4.0 * mlm + task) / 5.0), rel=1e-5)
    assert stats["mlm_loss"] == pytest.approx(float(mlm), rel=1e-5)
    assert stats["task_loss"] == pytest.approx(float(task), rel=1e-5)
    ext = r.collate(TaskBatch("external", [r.task_tokens[0]]))  # external batch: MLM only
    loss_e, stats_e = r.step_loss(model, ext, torch.Generator().manual_seed(1), "cpu")
    assert "task_loss" not in stats_e and float(loss_e.detach()) == pytest.approx(stats_e["mlm_loss"], rel=1e-6)


@pytest.mark.parametrize("rho1", [0, 1, 3, 7])
def test_batches_follow_the_rho1_cycle_and_resume(rho1):
    from subsetlm.subsets.sampler import SubsetSampler

    texts = [f"word{i} word{i + 1}" for i in range(20)]
    r = _recipe(texts, np.arange(20) % 3, rho1=rho1)
    ext_rows = np.arange(40)
    stream = r.make_stream(SubsetSampler(ext_rows, seed=0), lambda rows: [np.array([5, 6, 7])] * len(rows), 4, 0)
    kinds = [stream.next().kind for _ in range(8 * (rho1 + 1))]
    assert kinds == (["task"] + ["external"] * rho1) * 8
    assert [is_task_batch(i, rho1) for i in range(len(kinds))] == [k == "task" for k in kinds]
    state = stream.state_dict()
    a = [stream.next() for _ in range(5)]
    s2 = r.make_stream(SubsetSampler(ext_rows, seed=0), lambda rows: [np.array([5, 6, 7])] * len(rows), 4, 0)
    s2.load_state_dict(state)
    b = [s2.next() for _ in range(5)]
    for x, y in zip(a, b):
        assert x.kind == y.kind and (x.labels is None) == (y.labels is None)
        if x.labels is not None:
            assert np.array_equal(x.labels, y.labels)
            assert all(np.array_equal(p, q) for p, q in zip(x.seqs, y.seqs))


def test_task_batch_labels_follow_their_rows_and_split_across_ranks():
    texts = [f"tok{i}" for i in range(12)]
    labels = np.arange(12) % 3
    r = _recipe(texts, labels)
    from subsetlm.subsets.sampler import SubsetSampler

    stream = r.make_stream(SubsetSampler(np.arange(10), seed=0), lambda rows: [np.array([1])] * len(rows), 6, 0)
    b = stream.next()
    assert b.kind == "task"
    for s, lab in zip(b.seqs, b.labels):  # each row's label is the label of the text it came from
        i = next(j for j in range(12) if np.array_equal(r.task_tokens[j], s))
        assert labels[i] == lab
    half = b[1::2]
    assert len(half) == 3 and np.array_equal(half.labels, b.labels[1::2])


def test_tlm_train_cli_end_to_end_with_retrieve(tmp_path):
    """retrieve (bm25, plain corpus) -> train --recipe tlm -> stage 2 -> a loadable model."""
    from subsetlm.cli import main

    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        for i, t in enumerate(cyclic_texts(120)):
            fh.write(json.dumps({"id": f"d{i:03d}", "text": t}) + "\n")
    task = _task_file(tmp_path)
    sub, run = tmp_path / "subset", tmp_path / "run"
    assert main(["retrieve", str(corpus), "--id-field", "id", "--task", str(task), "--k", "20", "--budget", "40",
                 "--out", str(sub), "-q"]) == 0
    assert main(["train", "--recipe", "tlm", "--corpus", str(corpus), "--id-field", "id", "--subset", str(sub),
                 "--task", str(task), "--steps", "24", "--batch-size", "8", "--seq-len", "32", "--rho1", "1", "--stage2-steps", "30",
                 "--out", str(run), "-q"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["recipe"] == "tlm" and res["train_rows"] <= 40 and res["steps"] == 24
    assert 0.0 <= res["stage2"]["macro_f1"]["mean"] <= 1.0 and (run / "stage2.json").is_file()
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in log)
    from transformers import BertForMaskedLM

    BertForMaskedLM.from_pretrained(str(run / "model"), local_files_only=True)
    assert (run / "model" / "task_head.pt").is_file() and (run / "model" / "labels.json").is_file()
    # the subset belongs to this corpus: a changed corpus is refused
    other = tmp_path / "other.jsonl"
    other.write_text(corpus.read_text().replace("heart", "hearts", 1))
    assert main(["train", "--recipe", "tlm", "--corpus", str(other), "--id-field", "id", "--subset", str(sub),
                 "--task", str(task), "--steps", "2", "--out", str(tmp_path / "run2"), "-q"]) == 2


def test_task_goes_with_tlm_only(tmp_path):
    from subsetlm.recipes.run import TrainRunConfig

    with pytest.raises(ValueError, match="a task goes with the tlm recipe"):
        TrainRunConfig(recipe="bert", task="t.jsonl", out=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="a task goes with the tlm recipe"):
        TrainRunConfig(recipe="tlm", out=str(tmp_path)).validate()


def test_interrupted_tlm_run_resumes_to_the_same_weights(tmp_path, data):
    """The mixed stream (both samplers and the cycle counter) is in the checkpoint."""
    from subsetlm.recipes.callbacks import Callback
    from subsetlm.recipes.loop import TrainConfig, train

    class StopAt(Callback):
        def on_step_end(self, state, control, ctx):
            control.should_stop = state.step == 7

    texts = [" ".join(WORDS[k].split() * 2) for k in sorted(WORDS)] * 10
    labels = np.arange(30) % 3

    def recipe(tok=None):
        from subsetlm.recipes.base import build_recipe

        return build_recipe("tlm", [data.texts[i] for i in data.train_rows], preset="tiny", seq_len=32, seed=0,
                            tokenizer=tok, task=(texts, labels, ["a", "b", "c"]), rho1=2)

    def cfg(out):
        return TrainConfig(out=str(out), steps=12, batch_size=6, lr=2e-3, log_every=3, save_every=3, eval_batches=2)

    full = train(recipe(), data, cfg(tmp_path / "full"))
    train(recipe(), data, cfg(tmp_path / "cut"), callbacks=[StopAt()])
    res = train(recipe(str(tmp_path / "cut" / "model")), data, cfg(tmp_path / "cut"), resume=True)
    assert res.state.step == 12 and res.state.tokens_seen == full.state.tokens_seen
    a = torch.load(tmp_path / "full" / "checkpoints" / "step-0000012" / "state.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "step-0000012" / "state.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("head.") for k in a)  # the task head is trained and checkpointed too


def test_tlm_options_are_part_of_a_runs_identity_only_for_tlm(tmp_path):
    """Runs of other recipes finished before the tlm options existed must still compare equal."""
    from subsetlm.recipes.run import TLM_FIELDS, TrainRunConfig, run_identity as _portable

    bert = _portable(TrainRunConfig(recipe="bert", out=str(tmp_path)))
    tlm = _portable(TrainRunConfig(recipe="tlm", task="t.jsonl", out=str(tmp_path)))
    assert not set(TLM_FIELDS) & set(bert) and set(TLM_FIELDS) <= set(tlm)
    assert _portable(TrainRunConfig(recipe="bert", out=str(tmp_path), rho1=7)) == bert
