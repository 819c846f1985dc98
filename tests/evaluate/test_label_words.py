"""Label words for prompting without hand-written verbalizers: own-name words, LM-BFF search, multi-token names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _eval_data import TOPIC_WORDS, task_rows
from subsetlm.cli import main
from subsetlm.evaluate.label_words import name_words, search_words
from subsetlm.evaluate.models import PromptScorer
from subsetlm.evaluate.run import EvalConfig, evaluate_model

FAST = dict(seeds=1, max_steps=120, min_steps=120, lr=2e-3, device="cpu")
#: the topic task with multi-word label names sharing their first words; "Disorder" has no word of its own
NAMES = {"cardio": "Disorder of the heart", "onco": "Disorder of the tumor", "neuro": "Disorder of the brain",
         "infect": "Disorder"}
HPO = ["Abnormality of the eye", "Abnormality of the ear", "Abnormality of the nervous system",
       "Abnormality of the cardiovascular system", "Abnormality of the respiratory system",
       "Abnormality of the digestive system", "Abnormality of the genitourinary system",
       "Abnormality of the musculoskeletal system", "Abnormality of the integument",
       "Abnormality of the immune system", "Abnormality of blood and blood-forming tissues",
       "Abnormality of metabolism/homeostasis", "Abnormality of the endocrine system", "Abnormality of head or neck",
       "Abnormality of limbs", "Abnormality of the breast", "Abnormality of the voice",
       "Abnormality of the thoracic cavity", "Abnormality of prenatal development or birth", "Growth abnormality",
       "Neoplasm", "Constitutional symptom", "Abnormal cellular phenotype"]


@pytest.fixture(scope="module")
def named_task(tmp_path_factory):
    p = tmp_path_factory.mktemp("named") / "named.jsonl"
    p.write_text("".join(json.dumps({**r, "label": NAMES[r["label"]]}) + "\n" for r in task_rows(320)))
    return p


def _scorer(run, labels, **kw):
    s = PromptScorer.from_run(run, labels, **kw)
    s.eval()
    return s


def test_own_name_words_of_the_23_hpo_classes_are_distinct_and_specific():
    vocab = "eye ear nervous respiratory digestive immune blood metabolism endocrine head neck limbs breast voice " \
            "cavity prenatal development birth growth neoplasm symptom cellular phenotype system abnormality " \
            "abnormal of the and or tissues forming".split()
    ids = {w: i for i, w in enumerate(vocab)}
    got = name_words(HPO, ids.get)
    assert len(HPO) == 23
    assert got == {
        "Abnormality of the eye": "eye", "Abnormality of the ear": "ear", "Abnormality of the nervous system": "nervous",
        "Abnormality of the respiratory system": "respiratory", "Abnormality of the digestive system": "digestive",
        "Abnormality of the immune system": "immune", "Abnormality of blood and blood-forming tissues": "blood",
        "Abnormality of metabolism/homeostasis": "metabolism", "Abnormality of the endocrine system": "endocrine",
        "Abnormality of head or neck": "head", "Abnormality of limbs": "limbs", "Abnormality of the breast": "breast",
        "Abnormality of the voice": "voice", "Abnormality of the thoracic cavity": "cavity",
        "Abnormality of prenatal development or birth": "prenatal", "Growth abnormality": "growth",
        "Neoplasm": "neoplasm", "Constitutional symptom": "symptom",
        "Abnormal cellular phenotype": "cellular"}  # "abnormal" is shared with "abnormality"
    # cardiovascular / genitourinary / musculoskeletal / integument are not one token: left for the search
    assert len(set(got.values())) == len(got)
    assert "Abnormality of the eye" not in name_words(HPO, ids.get, taken=[ids["eye"]])  # a taken token is not reused


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_many_labels_sharing_their_first_words_get_distinct_words_without_a_verbalizer(which, bert_run, gpt2_run):
    run = {"bert": bert_run, "gpt2": gpt2_run}[which]
    words = [w for ws in TOPIC_WORDS.values() for w in ws][:23]
    labels = [f"Abnormality of the {w}" for w in words] + ["Abnormality of the cardiovascular system",
                                                          "Abnormality of the nervous system"]
    texts = [r["text"] for r in task_rows(100)]
    y = np.arange(100) % len(labels)
    s = _scorer(run, labels, train_texts=texts, train_labels=y)
    chosen = s.label_words.as_dict()
    assert chosen["method"] == "auto"
    assert {lab: chosen["words"][lab] for lab in labels[:23]} == dict(zip(labels, words))
    assert all(chosen["source"][lab] == "name" for lab in labels[:23])
    assert chosen["source"][labels[23]] == chosen["source"][labels[24]] == "search"  # no own single-token word
    assert len(set(chosen["words"].values())) == len(labels)
    assert len(set(s.label_ids.tolist())) == len(labels)
    assert s(**s.encode(texts[:3])).shape == (3, len(labels))


def test_search_prefers_label_specific_likely_tokens_and_keeps_them_distinct():
    cands = {0: "common", 1: "heart", 2: "tumor", 3: "brain", 5: "rare"}  # token 4: not a whole word
    M = np.array([[-0.5, -1.0, -5.0, -5.0, -0.1, -20.0],
                  [-0.5, -5.0, -1.0, -5.0, -0.1, -30.0],
                  [-0.5, -1.2, -5.0, -3.5, -0.1, -30.0]])
    have = np.array([True, True, True])
    # label 0: heart (-1 vs mean(-5, -1.2): +2.1); label 2 also likes heart (+1.8) but less: it gets brain (+1.5);
    # "common" is the likeliest token for everyone, so specific to no one; "rare" is outside label 0's top 3
    assert search_words(M, have, [0, 1, 2], cands, k=3) == {0: (1, "heart"), 1: (2, "tumor"), 2: (3, "brain")}
    assert search_words(M, have, [0], cands, k=5)[0] == (5, "rare")  # +10, once it is a candidate
    assert search_words(M, have, [2], cands, k=3, taken=[3]) == {2: (1, "heart")}
    ids = {w: i for i, w in cands.items()}
    got = search_words(M, have, [0, 1, 2], cands, k=3, verify=lambda w: None if w == "heart" else ids[w])
    assert got == {0: (0, "common"), 1: (2, "tumor"), 2: (3, "brain")}  # "heart" is not one token: skipped


def _direct_mean_log_prob(s: PromptScorer, text: str, label: str) -> float:
    """The label's mean token log-probability, from one unpadded sequence through ``lm(...).logits``."""
    tok = s.tokenizer
    enc = lambda x: tok(x, add_special_tokens=False)["input_ids"]  # noqa: E731
    lab = enc(" " + label) if s.causal else enc(label)
    if s.causal:  # "{text} Topic:{mask}"
        prefix = enc(text) + enc(" Topic:")
        ids, first = prefix + lab, len(prefix) - 1
    else:  # "{text} Topic: {mask}."
        prefix = [tok.cls_token_id] + enc(text) + enc(" Topic: ")
        ids, first = prefix + [tok.mask_token_id] * len(lab) + enc(".") + [tok.sep_token_id], len(prefix)
    with torch.no_grad():
        lp = torch.log_softmax(s.lm(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return float(np.mean([lp[first + j, t].item() for j, t in enumerate(lab)]))


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_multi_token_scores_are_the_mean_log_prob_of_the_label_tokens(which, bert_run, gpt2_run):
    run = {"bert": bert_run, "gpt2": gpt2_run}[which]
    labels = ["heart artery", "tumor", "brain cortex seizure dementia", "virus bacteria", "the fever"]
    s = _scorer(run, labels, label_words="multi-token")
    assert s.multi_token and s.verbalizer == dict(zip(labels, labels))
    texts = [r["text"] for r in task_rows(6, seed=3)]
    texts[1] = " ".join(texts[1].split()[:4])  # lengths differ: padding
    with torch.no_grad():
        got = s(**s.encode(texts)).numpy()
    want = np.array([[_direct_mean_log_prob(s, t, lab) for lab in labels] for t in texts])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()  # the label ranked first is the one with the best mean
    n_tok = np.array([len(s.tokens_of(lab)) for lab in labels])
    assert n_tok.max() > 1 and not np.allclose(got * n_tok, want)  # a mean, not a sum


def test_errors_say_what_was_wrong_and_how_to_fix_it(bert_run):
    labels = list(NAMES.values())
    with pytest.raises(ValueError, match=r"'Disorder of the heart' \(given word 'heart'\) and 'Disorder' \(given word "
                                         r"'heart'\) map to the same token 'heart'.*--verbalizer Disorder=WORD"):
        _scorer(bert_run, labels, verbalizer={"Disorder of the heart": "heart", "Disorder": "heart"})
    with pytest.raises(ValueError, match=r"'abnormality' for label 'Disorder' is \d+ tokens.*multi-token"):
        _scorer(bert_run, labels, verbalizer={"Disorder": "abnormality"})
    with pytest.raises(ValueError, match=r"--verbalizer names \['disorder'\], not labels of this task"):
        _scorer(bert_run, labels, verbalizer={"disorder": "virus"})
    with pytest.raises(ValueError, match=r"--label-words name: labels \['Disorder'\] have no word of their own"):
        _scorer(bert_run, labels, label_words="name")
    with pytest.raises(ValueError, match=r"labels \['Disorder'\] need label words searched on training examples"):
        _scorer(bert_run, labels)
    with pytest.raises(ValueError, match=r"labels 'Case report' and 'case_report' are the same tokens"):
        _scorer(bert_run, ["Case report", "case_report"], label_words="multi-token")  # BERT lowercases
    with pytest.raises(ValueError, match=r"--label-words 'first'; choose one of: auto, name, search, multi-token"):
        EvalConfig(model="m", task="t", method="prompt", label_words="first").validate()
    s = _scorer(bert_run, labels, verbalizer={"Disorder": "virus"}, label_words="name")  # the override fills the gap
    assert s.verbalizer["Disorder"] == "virus" and s.label_words.source["Disorder"] == "given"


def test_the_override_wins_and_its_word_is_not_reused(bert_run):
    labels = list(NAMES.values())
    texts = [r["text"] for r in task_rows(80)]
    y = np.arange(80) % 4
    s = _scorer(bert_run, labels, verbalizer={"Disorder": "brain"}, train_texts=texts, train_labels=y)
    assert s.verbalizer["Disorder"] == "brain" and s.label_words.source["Disorder"] == "given"
    # "brain" was the own word of "Disorder of the brain": taken, so that label's word is searched
    assert s.label_words.source["Disorder of the brain"] == "search" and s.verbalizer["Disorder of the brain"] != "brain"
    assert s.verbalizer["Disorder of the heart"] == "heart" and len(set(s.label_ids.tolist())) == 4
    m = _scorer(bert_run, labels, verbalizer={"Disorder": "virus infection"}, label_words="multi-token")
    assert m.verbalizer == {**{v: v for v in labels[:3]}, "Disorder": "virus infection"}


def test_prompt_eval_picks_words_itself_and_records_them(tmp_path, bert_run, named_task):
    res = evaluate_model(EvalConfig(model=str(bert_run), task=str(named_task), method="prompt",
                                    out=str(tmp_path / "r.json"), **FAST))
    base = res["majority_baseline"]
    r = res["results"]["all"]
    assert r["macro_f1"]["mean"] > base["macro_f1"] + 0.3 and r["accuracy"]["mean"] > base["accuracy"]
    on_disk = json.loads((tmp_path / "r.json").read_text())
    chosen = on_disk["label_words"]
    assert chosen == on_disk["results"]["all"]["runs"][0]["label_words"]
    assert chosen["method"] == "auto" and on_disk["config"]["label_words"] == "auto"
    assert {k: chosen["words"][k] for k in list(NAMES.values())[:3]} == {
        "Disorder of the heart": "heart", "Disorder of the tumor": "tumor", "Disorder of the brain": "brain"}
    assert chosen["source"]["Disorder"] == "search" and chosen["words"]["Disorder"] not in ("heart", "tumor", "brain")


@pytest.mark.slow  # 1.5-2.5 min each on 2 cores; the scores themselves are checked exactly by the test above
@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_multi_token_prompting_learns_the_task(tmp_path, which, bert_run, gpt2_run, named_task):
    run = {"bert": bert_run, "gpt2": gpt2_run}[which]
    res = evaluate_model(EvalConfig(model=str(run), task=str(named_task), method="prompt", label_words="multi-token",
                                    out=str(tmp_path / "m.json"), **FAST))
    r, base = res["results"]["all"], res["majority_baseline"]
    assert r["macro_f1"]["mean"] > base["macro_f1"] + 0.3, (r["macro_f1"], base)
    assert res["label_words"] == {"method": "multi-token", "words": {v: v for v in NAMES.values()},
                                  "source": {v: "name" for v in NAMES.values()}}


def test_distill_with_a_prompt_teacher_uses_the_same_label_words(tmp_path, bert_run, named_task):
    from subsetlm.evaluate.task import few_shot
    from subsetlm.task import load_task

    res = evaluate_model(EvalConfig(model=str(bert_run), task=str(named_task), method="distill", teacher="prompt",
                                    out=str(tmp_path / "kd.json"), train_sizes=["64"], seeds=1, max_steps=8,
                                    min_steps=8, max_unlabelled=50, max_test=20, device="cpu"))
    teacher = res["results"]["64"]["runs"][0]["teacher"]
    task = load_task(named_task)
    train, _ = few_shot(task.train, 64, 0)
    same = _scorer(bert_run, task.labels, train_texts=train.texts, train_labels=train.labels)
    assert teacher["label_words"] == same.label_words.as_dict() == res["label_words"]
    assert teacher["label_words"]["source"]["Disorder"] == "search"
    assert res["config"]["label_words"] == "auto"


def test_cli_label_words_and_the_override_win(tmp_path, bert_run, named_task, capsys):
    out = tmp_path / "cli.json"
    assert main(["eval", "--model", str(bert_run), "--task", str(named_task), "--method", "prompt", "--train-size",
                 "32", "--seeds", "1", "--max-steps", "5", "--label-words", "name", "--verbalizer", "Disorder=virus",
                 "--out", str(out), "-q"]) == 0
    chosen = json.loads(out.read_text())["label_words"]
    assert chosen["method"] == "name" and chosen["words"]["Disorder"] == "virus"
    assert chosen["source"] == {"Disorder of the heart": "name", "Disorder of the tumor": "name",
                                "Disorder of the brain": "name", "Disorder": "given"}
    printed = capsys.readouterr().out
    assert "label words (name): " in printed and "Disorder of the heart=heart" in printed and "Disorder=virus" in printed
    with pytest.raises(SystemExit):
        main(["eval", "--model", str(bert_run), "--task", str(named_task), "--method", "prompt",
              "--label-words", "first", "--out", str(tmp_path / "x.json"), "-q"])
    assert "invalid choice: 'first'" in capsys.readouterr().err
