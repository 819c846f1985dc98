"""The run-directory layout that ``subsetlm train`` writes and ``subsetlm eval`` (and ``--init-from``) read.

::

    RUN/
      config.json        the run's identity (the train config minus where/how fields)
      tokenizer/         the trained tokenizer (+ token_clusters.npy for crts)
      checkpoints/       step-NNNNNNN/state.pt (the newest ``keep_checkpoints``)
      metrics.jsonl      loss, lr, tokens/s per log step; val_loss / val_ppl per evaluation
      reselection/       rounds.jsonl and round-NNN/ subset files (INGENIOUS runs)
      model/             final model + tokenizer (``AutoModel*.from_pretrained``)
      stage2.json        TLM stage 2 (fine-tuning on the task), ``subsetlm eval``'s RESULTS.json format
      results.json       final held-out metrics, steps, tokens, parameters, wall time (+ ``stage2``)
      _SUCCESS           written last

Example
-------
>>> import tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> (run / MODEL).mkdir()
>>> _ = (run / MODEL / "config.json").write_text("{}")
>>> model_dir(run) == run / MODEL
True
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG = "config.json"
MODEL = "model"
TOKENIZER = "tokenizer"
RESULTS = "results.json"
STAGE2 = "stage2.json"


def _is_run(p: Path) -> bool:
    """Whether ``p`` is (the start of) a ``subsetlm train`` run rather than a ``save_pretrained`` folder."""
    if any((p / d).exists() for d in (TOKENIZER, "checkpoints", "metrics.jsonl")):
        return True
    try:  # a run's identity file: the train config (recipe, preset, ...), no transformers model_type
        cfg = json.loads((p / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "recipe" in cfg and "model_type" not in cfg


def model_dir(run: str | Path) -> Path:
    """``RUN/model`` of a training run, or a ``save_pretrained`` folder itself.

    Raises ``ValueError`` when neither holds a ``config.json``, or when ``run`` is a training
    run that has not finished (killed or still running: no ``model/`` yet).
    """
    p = Path(run)
    if not (p / MODEL / "config.json").is_file() and _is_run(p):
        ckpts = sorted((p / "checkpoints").glob("step-*")) if (p / "checkpoints").is_dir() else []
        last = f"; its newest checkpoint is {ckpts[-1].name}" if ckpts else ""
        raise ValueError(f"{run}: an unfinished training run (no {MODEL}/ yet{last}); finish it by re-running "
                         f"the `subsetlm train ... --out {run}` command that started it with --resume, "
                         f"then pass this directory again")
    for cand in (p / MODEL, p):
        if (cand / "config.json").is_file():
            return cand
    raise ValueError(f"{run}: no config.json in {p} or {p / MODEL}; pass a finished run directory "
                     f"(subsetlm train --out RUN) or a save_pretrained folder")
