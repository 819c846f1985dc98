"""The eval stage contract: RESULTS.json's config is the identity; the verbalizer list; the printed summary."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from subsetlm.evaluate.run import STAGE, EvalConfig, evaluate_model, run_eval, summary


def _old_config(cfg: EvalConfig) -> dict:
    """What RESULTS.json recorded as ``config`` before the stage contract (kept: old results stay comparable)."""
    d = {k: v for k, v in asdict(cfg).items() if k not in ("force", "device", "out")}
    if not cfg.prompted():  # label_words came later; only configs that prompt record it
        d.pop("label_words")
    return json.loads(json.dumps(d, sort_keys=True))


def test_verbalizer_list_becomes_the_dict_and_the_same_identity():
    as_list = EvalConfig(model="m", task="t", method="prompt", verbalizer=["cardio=heart", "onco=tumor=x"])
    as_dict = EvalConfig(model="m", task="t", method="prompt", verbalizer={"cardio": "heart", "onco": "tumor=x"})
    assert as_list.verbalizer == {"cardio": "heart", "onco": "tumor=x"}
    from subsetlm._stage import identity

    assert identity(as_list) == identity(as_dict) == _old_config(as_dict)
    with pytest.raises(ValueError, match=r"--verbalizer 'onco': expected LABEL=WORD"):
        EvalConfig(model="m", task="t", verbalizer=["cardio=heart", "onco"])


def _results(config: dict) -> dict:
    run = {"accuracy": 0.5, "macro_f1": 0.25}
    return {"method": "finetune", "model": "m", "task": "t", "labels": ["a", "b"],
            "majority_baseline": {"label": "a", "accuracy": 0.6, "macro_f1": 0.375},
            "results": {"32": {"accuracy": {"mean": 0.5, "std": 0.0, "values": [0.5]},
                               "macro_f1": {"mean": 0.25, "std": 0.125, "values": [0.25]}, "runs": [run]}},
            "config": config}


def test_same_config_is_read_back_another_is_refused(tmp_path):
    cfg = EvalConfig(model=str(tmp_path / "no-model"), task=str(tmp_path / "no-task"), out=str(tmp_path / "r.json"))
    prev = _results(_old_config(cfg))
    (tmp_path / "r.json").write_text(json.dumps(prev))
    assert evaluate_model(cfg) == prev  # nothing is loaded: the model and task do not even exist
    cfg.device = "cpu"  # where it runs is not part of the identity
    assert evaluate_model(cfg) == prev
    cfg.max_steps = 31
    with pytest.raises(FileExistsError, match="max_steps: 400 != 31"):
        evaluate_model(cfg)
    (tmp_path / "r.json").write_text(json.dumps({"results": {}}))  # no config: not written by this stage
    with pytest.raises(FileExistsError, match="not a complete evaluation"):
        evaluate_model(cfg)


def test_the_stage_needs_an_out_file_and_prints_what_the_cli_printed(tmp_path):
    cfg = EvalConfig(model="m", task="t")
    with pytest.raises(ValueError, match="no output given"):
        run_eval(cfg)
    out = tmp_path / "r.json"
    out.write_text(json.dumps(_results({})))
    assert STAGE.name == "eval" and STAGE.config is EvalConfig and STAGE.summary is summary
    assert summary(out) == (
        "finetune train=32: accuracy 0.5000 ± 0.0000, macro-F1 0.2500 ± 0.1250 over 1 seeds\n"
        f"majority baseline (a): accuracy 0.6000, macro-F1 0.3750; wrote {out}")
