"""The train stage contract: config.json is the identity; finished / unfinished / foreign run directories."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from subsetlm.recipes.run import TrainRunConfig, _finished, run_identity, run_output, summary, train_run


# the tlm-only fields, written out here (not imported from the code under test): a bert/gpt2 run's config.json
# never held them
TLM_ONLY = ("task", "rho1", "rho2", "stage2_seeds", "stage2_steps", "stage2_lr")


def _old_config(cfg: TrainRunConfig) -> dict:
    """RUN/config.json as written before the stage contract (finished runs must stay comparable)."""
    skip = ("resume", "force", "device", "progress", "verify") + (TLM_ONLY if cfg.recipe != "tlm" else ())
    d = {k: v for k, v in asdict(cfg).items() if k not in skip}
    return json.loads(json.dumps(d, sort_keys=True, default=str))


@pytest.mark.parametrize("kw", [dict(recipe="bert", corpus=["c.jsonl"], lr=1e-3),
                                dict(recipe="tlm", task="t.jsonl", subset="s", rho1=1, stage2_seeds=0)])
def test_identity_is_the_config_json_of_earlier_runs(tmp_path, kw):
    cfg = TrainRunConfig(out=str(tmp_path / "run"), resume=True, force=False, device="cpu", **kw)
    assert run_identity(cfg) == _old_config(cfg)


def _run_dir(tmp_path, cfg, *, config=None, done=False, checkpoint=False):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(run_identity(cfg) if config is None else config))
    if checkpoint:
        (run / "checkpoints" / "step-0000004").mkdir(parents=True)
    if done:
        (run / "_SUCCESS").write_text("")
    return run


def test_a_finished_run_is_skipped_with_its_config_and_refused_with_another(tmp_path):
    cfg = TrainRunConfig(recipe="bert", out=str(tmp_path / "run"))
    _run_dir(tmp_path, cfg, done=True)
    assert _finished(cfg, run_output(cfg)) is True
    other = TrainRunConfig(recipe="bert", out=str(tmp_path / "run"), lr=0.1)
    with pytest.raises(FileExistsError, match="lr: null != 0.1"):
        _finished(other, run_output(other))
    other.force = True
    assert _finished(other, run_output(other)) is False


def test_an_unfinished_run_resumes_only_with_its_config_and_resume(tmp_path):
    cfg = TrainRunConfig(recipe="bert", out=str(tmp_path / "run"))
    run = _run_dir(tmp_path, cfg, checkpoint=True)  # as written before runs kept stage.json
    with pytest.raises(FileExistsError, match="pass --resume"):
        _finished(cfg, run_output(cfg))
    other = TrainRunConfig(recipe="bert", out=str(tmp_path / "run"), steps=7, resume=True)
    with pytest.raises(ValueError, match="different config .steps: null != 7"):
        _finished(other, run_output(other))
    cfg.resume = True
    out = run_output(cfg)
    assert _finished(cfg, out) is False
    with out.writing(force=False, resume=True) as where:  # the checkpoints are kept for the loop to resume
        assert where == run and (run / "checkpoints" / "step-0000004").is_dir()
    assert (run / "_SUCCESS").is_file() and not (run / "stage.json").exists()
    assert json.loads((run / "config.json").read_text()) == run_identity(cfg)


def test_a_folder_that_is_not_a_run_is_refused_unless_force(tmp_path):
    cfg = TrainRunConfig(recipe="bert", out=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a run directory"):
        _finished(cfg, run_output(cfg))
    cfg.force = True
    assert _finished(cfg, run_output(cfg)) is False


def test_tlm_stage2_is_not_dropped_silently(tmp_path):
    cfg = TrainRunConfig(recipe="tlm", task="t.jsonl", out=str(tmp_path / "run"), corpus=["c.jsonl"])
    with pytest.raises(ValueError, match="train_with_stage2"):
        train_run(cfg)
    assert not (tmp_path / "run").exists()


def test_the_train_stage_runs_stage2_for_tlm_and_prints_what_the_cli_printed(tmp_path, monkeypatch):
    from subsetlm import train as stage

    calls = []
    monkeypatch.setattr(stage, "train_run", lambda cfg, progress=False, finish=None: calls.append(finish))
    stage.train_with_stage2(TrainRunConfig(recipe="tlm", task="t.jsonl", out="r"))
    stage.train_with_stage2(TrainRunConfig(recipe="tlm", task="t.jsonl", out="r", stage2_seeds=0))
    stage.train_with_stage2(TrainRunConfig(recipe="bert", out="r"))
    assert calls == [stage.tlm_stage2, None, None]
    assert stage.STAGE.name == "train" and stage.STAGE.run is stage.train_with_stage2
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "recipe": "bert", "parameters": 1234567, "steps": 12, "train_rows": 40,
        "final_eval": {"val_loss": 5.123456, "val_ppl": 167.9, "val_targets": 300}}))
    assert summary(run) == ("trained bert (1.23M parameters) for 12 steps on 40 rows: val_loss=5.123, "
                            f"val_ppl=167.9; model in {run / 'model'}")
    monkeypatch.setenv("RANK", "1")
    assert summary(run) == ""  # torchrun: rank 0 reports
