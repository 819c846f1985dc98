"""Fine-tuning, prompting and distillation beat the majority class on an easy task; ``subsetlm eval``."""

from __future__ import annotations

import json

import pytest

from subsetlm.cli import main
from subsetlm.evaluate.run import EvalConfig, evaluate_model

FAST = dict(seeds=1, max_steps=120, min_steps=120, lr=2e-3, device="cpu")


def _check(res):
    base = res["majority_baseline"]["macro_f1"]
    for size, r in res["results"].items():
        assert r["macro_f1"]["mean"] > base + 0.3, (size, r["macro_f1"], base)
        assert r["accuracy"]["mean"] > res["majority_baseline"]["accuracy"]


@pytest.mark.parametrize("method", ["finetune", "prompt"])
def test_bert_methods_beat_majority(tmp_path, bert_run, task_file, verbalizer, method):
    res = evaluate_model(EvalConfig(model=str(bert_run), task=str(task_file), method=method, out=str(tmp_path / "r.json"),
                                    train_sizes=["all"], verbalizer=verbalizer, **FAST))
    _check(res)
    assert json.loads((tmp_path / "r.json").read_text())["results"]["all"]["runs"][0]["train_size"] > 100


def test_distill_student_is_half_depth_and_beats_majority(tmp_path, bert_run, task_file):
    res = evaluate_model(EvalConfig(model=str(bert_run), task=str(task_file), method="distill", teacher="finetune",
                                    out=str(tmp_path / "kd.json"), train_sizes=["64"], **FAST))
    _check(res)
    run = res["results"]["64"]["runs"][0]
    assert run["parameters"] < run["teacher"]["parameters"]  # a smaller student
    assert run["unlabelled"] > 0 and run["train_size"] == 64


@pytest.mark.parametrize("method", ["finetune", "prompt"])
def test_gpt2_methods_beat_majority(tmp_path, gpt2_run, task_file, verbalizer, method):
    res = evaluate_model(EvalConfig(model=str(gpt2_run), task=str(task_file), method=method,
                                    out=str(tmp_path / "g.json"), verbalizer=verbalizer, **FAST))
    _check(res)


def test_eval_cli_writes_results_skips_and_refuses(tmp_path, bert_run, task_file, capsys):
    out = tmp_path / "cli.json"
    args = ["eval", "--model", str(bert_run), "--task", str(task_file), "--method", "finetune", "--train-size", "32",
            "64", "--seeds", "2", "--max-steps", "30", "--out", str(out), "-q"]
    assert main(args) == 0
    res = json.loads(out.read_text())
    assert set(res["results"]) == {"32", "64"} and len(res["results"]["32"]["runs"]) == 2
    r = res["results"]["32"]
    assert r["macro_f1"]["std"] >= 0 and len(r["macro_f1"]["values"]) == 2
    assert "macro-F1" in capsys.readouterr().out
    mtime = out.stat().st_mtime_ns
    assert main(args) == 0 and out.stat().st_mtime_ns == mtime  # same config: skipped
    assert main([*args[:-3], "--max-steps", "31", "--out", str(out), "-q"]) == 2  # different config: refused
    assert main(["eval", "--model", str(bert_run), "--task", str(task_file), "--method", "prompt",
                 "--verbalizer", "cardio=heart", "onco=heart", "--out", str(tmp_path / "p.json"), "-q"]) == 2
    assert "map to the same token 'heart'" in capsys.readouterr().err
    assert main(["eval", "--model", str(bert_run), "--task", str(task_file), "--method", "distill",
                 "--out", str(tmp_path / "d.json"), "-q"]) == 2
    assert "--teacher" in capsys.readouterr().err


def test_prompting_an_rts_model_is_a_clear_error(tmp_path, task_file):
    from _eval_data import task_rows

    from subsetlm.recipes.base import build_recipe

    texts = [r["text"] for r in task_rows(100)]
    r = build_recipe("rts", texts, preset="tiny", seq_len=64)
    r.model.save_pretrained(tmp_path / "rts")
    r.tokenizer.save_pretrained(tmp_path / "rts")
    with pytest.raises(ValueError, match="no MLM head"):
        evaluate_model(EvalConfig(model=str(tmp_path / "rts"), task=str(task_file), method="prompt",
                                  out=str(tmp_path / "x.json"), **FAST))
