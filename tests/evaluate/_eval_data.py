"""An easy 4-class topic task (generated, no third-party text)."""

from __future__ import annotations

import numpy as np

TOPIC_WORDS = {
    "cardio": "heart artery blood pressure cardiac infarction statin hypertension vessel stent".split(),
    "onco": "tumor cancer chemotherapy metastasis oncology radiation carcinoma biopsy lymphoma growth".split(),
    "neuro": "brain neuron cortex seizure dementia stroke cognitive synapse migraine nerve".split(),
    "infect": "virus bacteria antibiotic infection vaccine pathogen sepsis fever immune host".split(),
}
FILLER = "the a of in with and patients study results were was for to on by".split()


def task_rows(n: int, seed: int = 0) -> list[dict]:
    """n labelled texts: topic words mixed with filler; the label is the topic. Unbalanced 4:3:2:1."""
    rng = np.random.default_rng(seed)
    names = ["cardio"] * 4 + ["onco"] * 3 + ["neuro"] * 2 + ["infect"]
    rows = []
    for i in range(n):
        lab = names[i % len(names)]
        words = list(rng.choice(TOPIC_WORDS[lab], size=8)) + list(rng.choice(FILLER, size=12))
        rng.shuffle(words)
        rows.append({"id": f"ex{i:04d}", "text": " ".join(words), "label": lab})
    return rows
