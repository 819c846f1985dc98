"""Helpers shared by the recipe tests."""

from __future__ import annotations

import numpy as np

CYCLES = {
    "cardio": "heart artery blood pressure cardiac infarction statin hypertension vessel stent".split(),
    "onco": "tumor cancer chemotherapy metastasis oncology radiation carcinoma biopsy lymphoma growth".split(),
    "neuro": "brain neuron cortex seizure dementia stroke cognitive synapse migraine nerve".split(),
    "infect": "virus bacteria antibiotic infection vaccine pathogen sepsis fever immune host".split(),
}


def cyclic_texts(n: int, seed: int = 0) -> list[str]:
    """n texts, each a topic's fixed word cycle from a random offset: easy to learn, so losses must fall."""
    rng = np.random.default_rng(seed)
    names = sorted(CYCLES)
    out = []
    for i in range(n):
        cyc = CYCLES[names[i % len(names)]]
        start, length = int(rng.integers(0, len(cyc))), int(rng.integers(20, 40))
        out.append(" ".join(cyc[(start + j) % len(cyc)] for j in range(length)))
    return out


def tiny_recipe(name: str, texts, seed: int = 0, **kw):
    from subsetlm.recipes.base import build_recipe

    return build_recipe(name, texts, preset="tiny", seq_len=64, seed=seed, **kw)
