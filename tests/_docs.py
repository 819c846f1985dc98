"""The synthetic topic corpus the tests generate (no third-party text); shared by conftest and test modules."""

from __future__ import annotations

import numpy as np

TOPICS = {
    "cardio": "heart artery blood pressure cardiac infarction statin hypertension vessel stent".split(),
    "onco": "tumor cancer chemotherapy metastasis oncology radiation carcinoma biopsy lymphoma".split(),
    "neuro": "brain neuron cortex seizure dementia stroke cognitive synapse migraine".split(),
    "infect": "virus bacteria antibiotic infection vaccine pathogen sepsis fever immune".split(),
}
FILLER = "the a of in with and patients study results were was for to on by".split()


def make_docs(n: int, seed: int = 0) -> list[dict]:
    """n synthetic documents over four topics, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    docs = []
    for i in range(n):
        topic = names[i % len(names)]
        words = rng.choice(TOPICS[topic], size=int(rng.integers(12, 40))).tolist()
        words += rng.choice(FILLER, size=len(words) // 2).tolist()
        rng.shuffle(words)
        docs.append({"id": f"doc{i:04d}", "text": " ".join(words).capitalize() + ".", "topic": topic})
    return docs


#: five short sentences the tiny embed-test tokenizers are trained on (tests/embed)
SENTENCES = [
    "the cat sat on the mat",
    "aspirin inhibits platelet aggregation in patients",
    "the heart pumps blood through the arteries",
    "a tumor was found in the brain of the patient",
    "the dog sat on the log",
]
