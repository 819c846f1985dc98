"""``torchrun`` with two CPU processes (gloo): DDP trains, rank 0 alone writes, C-RTS counts stay in sync."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")


def _torchrun() -> str:
    cand = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return cand if os.path.exists(cand) else shutil.which("torchrun")


@pytest.mark.parametrize("recipe", ["crts"])
def test_torchrun_two_processes(tmp_path, corpus_jsonl, recipe):
    run = tmp_path / "ddp"
    cmd = [_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "subsetlm.cli", "train", "--recipe", recipe,
           "--corpus", str(corpus_jsonl), "--out", str(run), "--steps", "12", "--batch-size", "8", "--seq-len", "64",
           "--save-every", "6", "--eval-every", "0", "--device", "cpu", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    assert res["steps"] == 12 and res["samples"] == 12 * 8  # global batch: 8 rows per step over both processes
    logs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logs if "loss" in m] == [10, 12]  # one writer, no duplicated lines
    st = torch.load(run / "checkpoints" / "step-0000012" / "state.pt", weights_only=False)
    K = st["recipe"]["crts"]["counts"]
    # the count matrix moved by the replacements of *both* processes: one process sees half the batch
    assert float((K - 1).abs().sum()) > 0
    from transformers import BertForTokenClassification

    assert BertForTokenClassification.from_pretrained(run / "model").config.num_labels == 2


@pytest.mark.slow
def test_torchrun_sigkill_and_resume_matches_uninterrupted(tmp_path, corpus_jsonl):
    import signal
    import time

    def cmd(run):
        return [_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "subsetlm.cli", "train", "--recipe",
                "bert", "--corpus", str(corpus_jsonl), "--out", str(run), "--steps", "24", "--batch-size", "8",
                "--seq-len", "64", "--save-every", "4", "--eval-every", "0", "--device", "cpu", "-q"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd(tmp_path / "full"), env=env, check=True, capture_output=True, timeout=600)
    p = subprocess.Popen(cmd(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (tmp_path / "cut" / "checkpoints" / "step-0000008").exists():
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    subprocess.run(cmd(tmp_path / "cut") + ["--resume"], env=env, check=True, capture_output=True, timeout=600)
    a = (tmp_path / "full" / "model" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "cut" / "model" / "model.safetensors").read_bytes()
