"""Device resolution shared by every stage that runs torch: ``auto`` -> ``cuda`` when present, else ``cpu``.

Example
-------
>>> resolve_device("cpu")
'cpu'
>>> resolve_device("tpu")
Traceback (most recent call last):
...
ValueError: device='tpu'; choose auto, cpu, cuda or cuda:N
"""

from __future__ import annotations


def resolve_device(device: str | None = "auto") -> str:
    """``"auto"``/None -> ``"cuda"`` when ``torch.cuda.is_available()`` else ``"cpu"``; others checked.

    Raises ``ValueError`` for an unknown name, or for ``cuda`` when torch sees no GPU.
    """
    spec = "auto" if device is None else str(device)
    if spec not in ("auto", "cpu", "cuda") and not (spec.startswith("cuda:") and spec[5:].isdigit()):
        raise ValueError(f"device={spec!r}; choose auto, cpu, cuda or cuda:N")
    if spec == "cpu":
        return spec
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ValueError(f"device={spec!r} but torch sees no CUDA GPU; use --device cpu or auto")
    return spec
