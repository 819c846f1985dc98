"""``subsetlm train`` end to end: subset file in, run directory out; kill -9 and --resume; biobert."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


from subsetlm.cli import main

TINY = ["--steps", "12", "--batch-size", "8", "--seq-len", "64", "--save-every", "4", "--eval-every", "6", "-q"]


def test_train_on_a_subset_file_writes_a_loadable_run(tmp_path, store_and_subset):
    store, sub = store_and_subset
    run = tmp_path / "run"
    assert main(["train", "--recipe", "bert", "--subset", str(sub), "--out", str(run), *TINY]) == 0
    for f in ("config.json", "tokenizer/tokenizer.json", "metrics.jsonl", "model/config.json", "results.json",
              "_SUCCESS"):
        assert (run / f).exists(), f
    from transformers import AutoTokenizer, BertForMaskedLM

    from subsetlm.subsets import read_subset

    model = BertForMaskedLM.from_pretrained(run / "model")
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert model.config.vocab_size == len(tok)
    res = json.loads((run / "results.json").read_text())
    held = json.loads((run / "config.json").read_text())
    assert res["steps"] == 12 and res["train_rows"] <= read_subset(sub).size and held["subset"] == str(sub)
    assert "val_loss" in res["final_eval"]
    mtime = (run / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(["train", "--recipe", "bert", "--subset", str(sub), "--out", str(run), *TINY]) == 0  # skip
    assert (run / "model" / "model.safetensors").stat().st_mtime_ns == mtime
    assert main(["train", "--recipe", "bert", "--subset", str(sub), "--out", str(run), "--lr", "0.1", *TINY]) == 2


def test_subset_needs_its_store(tmp_path, store_and_subset, corpus_jsonl, capsys):
    _, sub = store_and_subset
    code = main(["train", "--recipe", "bert", "--subset", str(sub), "--corpus", str(corpus_jsonl),
                 "--out", str(tmp_path / "r"), *TINY])
    assert code == 2 and "not a store" in capsys.readouterr().err
    assert not (tmp_path / "r" / "_SUCCESS").exists()
    code = main(["train", "--recipe", "bert", "--subset", str(sub), "--warmup-steps", "3",
                 "--out", str(tmp_path / "r2"), *TINY])
    assert code == 2 and "exclude each other" in capsys.readouterr().err
    assert main(["train", "--recipe", "t5", "--corpus", str(corpus_jsonl), "--out", str(tmp_path / "r3")]) == 2
    assert "choose one of" in capsys.readouterr().err


def _train_cmd(run, corpus):
    return [sys.executable, "-m", "subsetlm.cli", "train", "--recipe", "gpt2", "--corpus", str(corpus), "--out",
            str(run), "--steps", "40", "--batch-size", "4", "--seq-len", "64", "--save-every", "5",
            "--eval-every", "0", "-q"]


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path, corpus_jsonl):
    env = dict(os.environ)
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_train_cmd(full, corpus_jsonl), check=True, env=env, capture_output=True)
    p = subprocess.Popen(_train_cmd(cut, corpus_jsonl), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((cut / "checkpoints").glob("step-0000010")):
        time.sleep(0.05)
        assert p.poll() is None, "the run ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (cut / "_SUCCESS").exists()
    code = subprocess.run(_train_cmd(cut, corpus_jsonl), env=env, capture_output=True, text=True)
    assert code.returncode == 2 and "--resume" in code.stderr  # no silent restart
    subprocess.run(_train_cmd(cut, corpus_jsonl) + ["--resume"], check=True, env=env, capture_output=True)
    a = (full / "model" / "model.safetensors").read_bytes()
    b = (cut / "model" / "model.safetensors").read_bytes()
    assert a == b
    la = [json.loads(x)["loss"] for x in (full / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    lb = [json.loads(x)["loss"] for x in (cut / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert la == lb


def test_biobert_continues_from_a_bert_run_with_its_tokenizer(tmp_path, corpus_jsonl):
    bert = tmp_path / "bert"
    assert main(["train", "--recipe", "bert", "--corpus", str(corpus_jsonl), "--out", str(bert), *TINY]) == 0
    bio = tmp_path / "bio"
    assert main(["train", "--recipe", "biobert", "--corpus", str(corpus_jsonl), "--init-from", str(bert),
                 "--out", str(bio), *TINY]) == 0
    assert (bio / "tokenizer" / "tokenizer.json").read_text() == (bert / "model" / "tokenizer.json").read_text()
    res = json.loads((bio / "results.json").read_text())
    first = json.loads((bert / "results.json").read_text())
    # continued pretraining starts where bert ended, so it ends lower than bert's own final loss
    assert res["final_eval"]["val_loss"] < first["final_eval"]["val_loss"]
