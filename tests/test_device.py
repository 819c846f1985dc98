"""Device resolution is written once (``subsetlm._device.resolve_device``) and used by every torch stage."""

from __future__ import annotations

import pytest
import torch

from subsetlm._device import resolve_device


def test_resolve_device_names_and_errors(monkeypatch):
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device='tpu'; choose auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"


def test_embed_reexports_the_shared_function():
    from subsetlm.embed import resolve_device as from_embed
    from subsetlm.embed.base import resolve_device as from_base

    assert from_embed is resolve_device and from_base is resolve_device


def test_torch_greedy_validates_the_device():
    import numpy as np

    from subsetlm.select.torch_greedy import torch_greedy

    X = np.eye(4, dtype=np.float32)
    assert torch_greedy(X, 2, device="cpu").info["device"] == "cpu"
    with pytest.raises(ValueError, match="choose auto, cpu, cuda or cuda:N"):
        torch_greedy(X, 2, device="gpu")


def test_training_loop_takes_its_gpu_from_local_rank(monkeypatch):
    from subsetlm.recipes.loop import _device

    assert _device("cpu", 0) == torch.device("cpu")
    with pytest.raises(ValueError, match="choose auto, cpu, cuda or cuda:N"):
        _device("gpu", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert _device("cuda", 0) == _device("auto", 0) == torch.device("cuda", 1)  # 3 % 2 GPUs
    assert _device("cuda:0", 5) == torch.device("cuda", 0)  # an explicit index is kept
    monkeypatch.delenv("LOCAL_RANK")
    assert _device("cuda", 1) == torch.device("cuda", 1)  # the rank when torchrun sets no LOCAL_RANK
