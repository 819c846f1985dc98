"""Label words for prompt-based classification: which vocabulary word(s) stand for each label.

``--label-words`` chooses them when ``--verbalizer LABEL=WORD`` does not (the override
wins for every label it names, in every mode):

auto         (default) ``name`` for the labels whose name has a word of its own, ``search``
             for the rest.
name         each label's *own* word: the first word of its name that no other label's name
             contains (words shared across labels are not specific: in "Abnormality of the
             eye" / "... of the ear" that leaves "eye" and "ear"; a word of 5+ letters that
             starts another label's word, or that one starts, counts as shared too:
             "Abnormal" / "Abnormality"), is not a function word,
             is one token of the model's vocabulary (GPT-2: with its leading space) and is
             not another label's word. A label with none is an error.
search       LM-BFF's automatic label words (Gao et al., 2021), kept cheap: one forward pass
             of the un-tuned model over at most :data:`SEARCH_EXAMPLES` training examples
             (balanced over labels) gives each label's mean log-probability over the
             vocabulary at the ``{mask}`` position; each label's candidates are its
             :data:`SEARCH_CANDIDATES` most likely whole-word tokens, ranked by how much
             more likely they are for that label's examples than for the other labels'
             (mean over labels), and assigned greedily, best first, so words stay distinct.
multi-token  no single word: each label is its whole name (``_`` read as a space), scored by
             the mean log-probability of its tokens — for a BERT-family model as many
             ``[MASK]`` slots as the name has tokens, filled at once; for GPT-2 the name as
             the continuation of the prompt.

The choice is recorded in RESULTS.json: ``{"method", "words": {label: word}, "source":
{label: "given" | "name" | "search"}}``.

Example
-------
>>> vocab = {"eye": 1, "ear": 2, "abnormality": 3, "of": 4, "the": 5}
>>> name_words(["Abnormality of the eye", "Abnormality of the ear", "Abnormality"], vocab.get)
{'Abnormality of the eye': 'eye', 'Abnormality of the ear': 'ear'}
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

MODES = ("auto", "name", "search", "multi-token")
#: training examples one search scores (one forward pass each), balanced over the labels
SEARCH_EXAMPLES = 256
#: per label, its most likely whole-word tokens that the search ranks by label-specificity
SEARCH_CANDIDATES = 100
#: words never chosen from a label's name: they say nothing about the label
FUNCTION_WORDS = frozenset("a an the of and or in on at to for with by from as into via vs versus per is are be "
                           "not no other others".split())
_HOW = ("pass --verbalizer LABEL=WORD for it, or --label-words multi-token (whole label names, "
        "any number of tokens)")


@dataclass
class LabelWords:
    """The label words of one prompt model: ``words[label]`` and where each came from."""

    method: str
    words: dict[str, str]
    source: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"method": self.method, "words": dict(self.words), "source": dict(self.source)}


def _name_tokens(label: str) -> list[tuple[str, str]]:
    """``(lowercased, as written)`` for each distinct word of a label name, in order."""
    seen, out = set(), []
    for w in re.findall(r"[^\W_]+", str(label)):
        if w.lower() not in seen:
            seen.add(w.lower())
            out.append((w.lower(), w))
    return out


def phrase(label: str) -> str:
    """A label as a multi-token verbalizer: ``case_report`` -> ``case report``."""
    return re.sub(r"[_\s]+", " ", str(label)).strip()


def name_words(labels: Sequence[str], token_of: Callable[[str], int | None], need: Sequence[str] | None = None,
               taken: Sequence[int] = ()) -> dict[str, str]:
    """``{label: word}`` for the labels of ``need`` (default all) whose name has a word of its own.

    A label's word is the first word of its name that no other name in ``labels`` contains
    (nor a word it starts or that starts it, at 5+ letters), is not in :data:`FUNCTION_WORDS`,
    and is one token (``token_of(word)`` is its id, None when it is not one token) not in
    ``taken`` or already chosen; the word is tried lowercased, then as written. Labels
    without one are left out.
    """
    words = {lab: _name_tokens(lab) for lab in labels}
    owners: dict[str, set] = {}
    for lab, ws in words.items():
        for w, _ in ws:
            owners.setdefault(w, set()).add(lab)

    def shared(w: str, lab: str) -> bool:
        return any(o != lab for v, labs in owners.items() for o in labs
                   if v == w or (min(len(v), len(w)) >= 5 and (v.startswith(w) or w.startswith(v))))

    used, out = set(taken), {}
    for lab in (labels if need is None else need):
        for low, written in words[lab]:
            if low in FUNCTION_WORDS or shared(low, lab):
                continue
            for form in dict.fromkeys((low, written)):
                tid = token_of(form)
                if tid is not None and tid not in used:
                    out[lab] = form
                    used.add(tid)
                    break
            if lab in out:
                break
    return out


def word_tokens(tokenizer: Any, causal: bool) -> dict[int, str]:
    """``{token id: word}`` for the vocabulary tokens that are a whole alphabetic word.

    BERT WordPiece: not a special token and not a ``##`` continuation; byte-level BPE
    (GPT-2): a token that starts a word (``Ġ``) — the word is what follows the marker.
    Function words (:data:`FUNCTION_WORDS`) are left out.
    """
    special = set(tokenizer.all_special_ids)
    out = {}
    for i, t in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if i in special or t is None:
            continue
        if t[:1] in ("Ġ", "▁"):
            w = t[1:]
        elif causal or t.startswith("##"):
            continue
        else:
            w = t
        if len(w) >= 2 and w.isalpha() and w.lower() not in FUNCTION_WORDS:
            out[i] = w
    return out


def search_words(mean_logp: np.ndarray, have: np.ndarray, need: Sequence[int], candidates: dict[int, str],
                 verify: Callable[[str], int | None] | None = None, taken: Sequence[int] = (),
                 k: int = SEARCH_CANDIDATES) -> dict[int, tuple[int, str]]:
    """LM-BFF-style label words: ``{label index: (token id, word)}`` for each label of ``need``.

    Parameters
    ----------
    mean_logp : (C, V) each label's mean log-probability of every token at the prompt position.
    have : (C,) bool, the labels that had examples (the others' rows are ignored).
    need : label indices to choose words for (each must have examples).
    candidates : ``{token id: word}``, the tokens that may be chosen (:func:`word_tokens`).
    verify : ``word -> token id`` (None when the word is not that one token); a candidate that
        fails is skipped.
    taken : token ids already used by other labels.

    A label's score for token v is ``mean_logp[c, v] - mean over other labels c' of
    mean_logp[c', v]``, over its ``k`` most likely candidates (all candidates when those run
    out); pairs are assigned best score first, one token per label.
    """
    C, V = mean_logp.shape
    cand_ids = np.array(sorted(candidates), dtype=np.int64)
    used, bad, out = set(taken), set(), {}
    rel = {}
    for c in need:
        others = [o for o in range(C) if o != c and have[o]]
        rel[c] = mean_logp[c] - (mean_logp[others].mean(0) if others else 0.0)
    for width in (k, len(cand_ids)):
        pairs = []
        for c in need:
            if c in out:
                continue
            top = cand_ids[np.argsort(-mean_logp[c, cand_ids], kind="stable")[:width]]
            pairs += [(-float(rel[c][v]), c, int(v)) for v in top]
        for _, c, v in sorted(pairs):
            if c in out or v in used or v in bad:
                continue
            if verify is not None and verify(candidates[v]) != v:
                bad.add(v)
                continue
            out[c] = (v, candidates[v])
            used.add(v)
        if len(out) == len(need):
            break
    return out


def _pieces(scorer: Any, word: str) -> list[str]:
    return scorer.tokenizer.convert_ids_to_tokens(scorer.tokens_of(word))


def _check_distinct(ids: dict[str, int], words: dict[str, str], source: dict[str, str], scorer: Any) -> None:
    seen: dict[int, str] = {}
    for lab, tid in ids.items():
        if tid in seen:
            a = seen[tid]
            tok = scorer.tokenizer.convert_ids_to_tokens([tid])[0]
            raise ValueError(f"labels {a!r} ({source[a]} word {words[a]!r}) and {lab!r} ({source[lab]} word "
                             f"{words[lab]!r}) map to the same token {tok!r}; each label needs its own word: pass "
                             f"--verbalizer {lab}=WORD with another word, or --label-words multi-token")
        seen[tid] = lab


def _search(scorer: Any, labels: Sequence[str], need: list[str], train_texts: Sequence[str],
            train_labels: np.ndarray, taken: Sequence[int], device: str) -> dict[str, str]:
    C = len(labels)
    y = np.asarray(train_labels)
    per = max(2, SEARCH_EXAMPLES // C)
    rows = np.concatenate([np.flatnonzero(y == c)[:per] for c in range(C)]).astype(np.int64)
    have = np.bincount(y[rows], minlength=C) > 0
    empty = [lab for lab in need if not have[labels.index(lab)]]
    if empty:
        raise ValueError(f"label words for {empty} are searched on the training set, which has no example of "
                         f"them ({len(y)} examples); use a larger --train-size, or {_HOW}")
    sums = None
    for s in range(0, len(rows), 32):
        idx = rows[s:s + 32]
        lp = scorer.prompt_log_probs([train_texts[i] for i in idx], device=device).cpu().numpy()  # (b, V)
        sums = np.zeros((C, lp.shape[1]), dtype=np.float64) if sums is None else sums
        np.add.at(sums, y[idx], lp)
    mean = sums / np.maximum(np.bincount(y[rows], minlength=C), 1)[:, None]
    cands = {i: w for i, w in word_tokens(scorer.tokenizer, scorer.causal).items() if i < mean.shape[1]}
    got = search_words(mean, have, [labels.index(lab) for lab in need], cands, verify=scorer.token_of, taken=taken)
    missing = [lab for lab in need if labels.index(lab) not in got]
    if missing:
        raise ValueError(f"the search found no free single-token word for labels {missing} ({len(cands)} whole-word "
                         f"tokens in the vocabulary); {_HOW}")
    logger.info("label words searched on %d training examples: %s", len(rows),
                ", ".join(f"{lab}={got[labels.index(lab)][1]}" for lab in need))
    return {lab: got[labels.index(lab)][1] for lab in need}


def choose_label_words(scorer: Any, labels: Sequence[str], given: dict[str, str] | None = None, mode: str = "auto",
                       train_texts: Sequence[str] | None = None, train_labels: Any = None,
                       device: str = "cpu") -> LabelWords:
    """The label words of a prompt model (module docstring); ``given`` (``--verbalizer``) wins.

    ``scorer`` is a :class:`~subsetlm.evaluate.models.PromptScorer` (its ``tokenizer``,
    ``causal``, ``tokens_of``, ``token_of`` and, for a search, ``prompt_log_probs``);
    ``train_labels`` are indices into ``labels``. Raises ``ValueError`` when a word cannot be
    found or two labels share one.
    """
    if mode not in MODES:
        raise ValueError(f"label_words={mode!r}; choose one of: {', '.join(MODES)}")
    labels = [str(lab) for lab in labels]
    given = {str(k): str(v) for k, v in (given or {}).items()}
    unknown = [k for k in given if k not in labels]
    if unknown:
        raise ValueError(f"--verbalizer names {unknown}, not labels of this task; its labels are {labels}")
    source = {lab: ("given" if lab in given else "name") for lab in labels}
    if mode == "multi-token":
        words = {lab: given.get(lab, phrase(lab)) for lab in labels}
        seqs: dict[tuple, str] = {}
        for lab in labels:
            t = tuple(scorer.tokens_of(words[lab]))
            if not t:
                raise ValueError(f"label {lab!r}: {words[lab]!r} has no tokens; pass --verbalizer {lab}=WORDS")
            if t in seqs:
                raise ValueError(f"labels {seqs[t]!r} and {lab!r} are the same tokens ({list(t)}) as multi-token "
                                 f"label words; tell them apart with --verbalizer {lab}=WORDS")
            seqs[t] = lab
        return LabelWords(mode, words, source)
    words, ids = {}, {}
    for lab, w in given.items():
        tid = scorer.token_of(w)
        if tid is None:
            raise ValueError(f"verbalizer word {w!r} for label {lab!r} is {len(scorer.tokens_of(w))} tokens of this "
                             f"vocabulary ({_pieces(scorer, w)}); label words are one token each: choose a word "
                             f"that is one token with --verbalizer {lab}=WORD, or use --label-words multi-token")
        words[lab], ids[lab] = w, tid
    _check_distinct(ids, words, source, scorer)
    need = [lab for lab in labels if lab not in given]
    if mode in ("auto", "name") and need:
        found = name_words(labels, scorer.token_of, need=need, taken=list(ids.values()))
        for lab, w in found.items():
            words[lab], ids[lab] = w, scorer.token_of(w)
        need = [lab for lab in need if lab not in found]
        if need and mode == "name":
            raise ValueError(f"--label-words name: labels {need} have no word of their own in their name that is one "
                             f"token of this vocabulary (a word no other label's name contains); use --label-words "
                             f"auto (searches the training set for those) or multi-token, or pass --verbalizer "
                             f"LABEL=WORD for each")
    if need:
        if train_texts is None or train_labels is None or not len(train_texts):
            raise ValueError(f"labels {need} need label words searched on training examples, and none were given; "
                             f"{_HOW}")
        for lab, w in _search(scorer, labels, need, train_texts, train_labels, list(ids.values()), device).items():
            words[lab], ids[lab], source[lab] = w, scorer.token_of(w), "search"
    _check_distinct({lab: ids[lab] for lab in labels}, words, source, scorer)
    return LabelWords(mode, {lab: words[lab] for lab in labels}, source)
