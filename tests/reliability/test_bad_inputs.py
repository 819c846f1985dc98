"""R1, the bad-input catalogue (issue 18): each kind of bad input, one row, and what must happen.

Each row builds its input in a fresh work folder and runs one command in-process
(``subsetlm.cli.main``, as tests/test_cli.py does) or one Python API call. It asserts
- the exit status: 2 = refused, 0 = handled (empty texts skipped, a 5 MB document chunked);
- a refusal is ONE line, ``subsetlm CMD: error: ...`` (an API call: one ``ValueError`` /
  ``TypeError`` line, the types the CLI turns into that line), with no traceback, holding the
  row's ``needles`` (the file / line / field or option) and ``fix`` (how to fix it);
- a refused run leaves no ``_SUCCESS`` anywhere under the work folder, so no later run
  trusts half an output; a handled one leaves a finished output and a warning that says
  what was dropped and where.
:func:`test_no_traceback_reaches_stderr` runs a few rows as real processes.

Rows of the catalogue that are helper A's (issue 18's integrity and locking work) live
elsewhere: a store whose ``embeddings.npy`` was truncated or altered after ``_SUCCESS``, a
subset file that is corrupt or belongs to another store -> tests/reliability/test_integrity.py;
an ``--out`` that is a file or not writable, two processes writing one ``--out`` ->
tests/reliability/test_locking.py.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from subsetlm.cli import main

REPO = Path(__file__).resolve().parents[2]
GOOD = [{"text": "aspirin lowers the risk of heart attack in older adults"},
        {"text": "the telescope resolved two faint galaxies near the cluster core"},
        {"text": "stock markets fell sharply after the central bank raised rates"}]


def _jsonl(w: Path, lines: list[Any], name: str = "c.jsonl") -> Path:
    """A JSONL file of ``lines`` (dicts are dumped, str / bytes written as they are)."""
    raw = b"".join((json.dumps(x).encode() if isinstance(x, dict) else x if isinstance(x, bytes)
                    else x.encode()) + b"\n" for x in lines)
    (w / name).write_bytes(raw)
    return w / name


def _embed(w: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return ["embed", *map(str, inputs), "--out", str(w / "out"), "--model", "hashing", *extra]


def _X(n: int = 60, d: int = 8, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _with(X: np.ndarray, row: int, value: float) -> np.ndarray:
    X = X.copy()
    X[row, 0] = value
    return X


# ------------------------------------------------------------------------------ corpus inputs (embed)
def malformed_jsonl(w, store):
    p = _jsonl(w, [GOOD[0], '{"text": "unterminated', GOOD[1]])
    return _embed(w, p), [f"{p}:2", "malformed JSON"]


def empty_text_skipped(w, store):
    p = _jsonl(w, [GOOD[0], {"text": ""}, GOOD[1], {"text": "   "}, GOOD[2]])
    return _embed(w, p), ["skipped 2 document(s)", f"{p}:2", f"{p}:4", "'text'"]


def all_texts_empty(w, store):
    p = _jsonl(w, [{"text": ""}, {"text": None}])
    return _embed(w, p), ["all 2 documents", str(p), "'text'"]


def missing_text(w, store):
    p = _jsonl(w, [GOOD[0], {"body": "a text under another name"}])
    return _embed(w, p), [f"{p}:2", "no text field 'text'", "fields present: body"]


def non_string_text(w, store):
    p = _jsonl(w, [GOOD[0], {"text": 42}])
    return _embed(w, p), [f"{p}:2", "'text' must be a string"]


def lone_surrogate(w, store):
    p = _jsonl(w, [GOOD[0], '{"text": "a \\ud800 b"}'])
    return _embed(w, p), [f"{p}:2", "'text'", "surrogate"]


def non_utf8(w, store):
    p = _jsonl(w, [GOOD[0], b'{"text": "caf\xe9 au lait"}'])
    return _embed(w, p), [f"{p}:2", "invalid UTF-8", "0xe9"]


def truncated_gz(w, store):
    data = gzip.compress(b"".join(json.dumps(d).encode() + b"\n" for d in GOOD * 200))
    p = w / "c.jsonl.gz"
    p.write_bytes(data[: len(data) // 2])
    return _embed(w, p), [str(p), "truncated"]


def truncated_zst(w, store):
    import zstandard

    data = zstandard.ZstdCompressor().compress(b"".join(json.dumps(d).encode() + b"\n" for d in GOOD * 200))
    p = w / "c.jsonl.zst"
    p.write_bytes(data[: len(data) - 5])
    return _embed(w, p), [str(p), "truncated", "inside a frame"]


def empty_file(w, store):
    p = w / "c.jsonl"
    p.write_bytes(b"")
    return _embed(w, p), [str(p), "no documents found"]


def unsupported_file(w, store):
    p = w / "c.csv"
    p.write_text("text\nhello\n")
    return _embed(w, p), [str(p), "unsupported file type", ".jsonl"]


def mixed_folder(w, store):
    d = w / "corpus"
    (d / "notes").mkdir(parents=True)
    _jsonl(d, GOOD[:2], "a.jsonl")
    (d / "notes" / "x.txt").write_text("a plain text document about ribosomes and proteins")
    pq.write_table(pa.table({"text": ["parquet document one about rivers", "parquet document two on lakes"]}),
                   d / "b.parquet")
    (d / "readme.csv").write_text("not a corpus file")
    return _embed(w, d), ["ignoring 1 file(s)", "readme.csv", ".parquet"]


def duplicate_ids_different_text(w, store):
    p = _jsonl(w, [{"id": "a", **GOOD[0]}, {"id": "b", **GOOD[1]}, {"id": "a", **GOOD[2]}])
    return _embed(w, p, extra=("--id-field", "id")), ["duplicate document id 'a'", f"{p}:1", f"{p}:3"]


def duplicate_ids_same_text(w, store):
    p = _jsonl(w, [{"id": "a", **GOOD[0]}, {"id": "b", **GOOD[1]}, {"id": "a", **GOOD[0]}])
    return _embed(w, p, extra=("--id-field", "id")), ["duplicate document id 'a'", f"{p}:1", f"{p}:3"]


def duplicate_texts_without_ids(w, store):
    p = _jsonl(w, [GOOD[0], GOOD[1], GOOD[0]])
    return _embed(w, p), ["dropped 1 exact duplicate", f"{p}:3"]


def five_mb_document(w, store):
    words = np.random.default_rng(0).integers(0, 5000, size=800_000)
    text = " ".join(f"w{i}" for i in words)  # ~4.7 MB, one document
    assert len(text) > 4_500_000
    p = _jsonl(w, [{"text": text}, GOOD[0]])
    return _embed(w, p, extra=("--max-tokens", "4096")), []


# ------------------------------------------------------------------------------ select options
def _select(w, store, *flags):
    return ["select", str(store), "--out", str(w / "sub"), "--k", "8", *flags]


def budget_zero(w, store):
    return _select(w, store, "--budget", "0"), ["budget '0'", "count must be >= 1"]


def budget_negative(w, store):
    return _select(w, store, "--budget=-5"), ["budget '-5'"]


def budget_above_n(w, store):
    return _select(w, store, "--budget", "61"), ["budget=61 > n=60"]


def budget_1_5(w, store):
    return _select(w, store, "--budget", "1.5"), ["budget '1.5'", "neither a fraction in (0, 1] nor a whole number"]


def budget_tokens_abc(w, store):
    return _select(w, store, "--budget", "tokens:abc"), ["budget 'tokens:abc'", "not a number"]


def k_zero(w, store):
    return ["select", str(store), "--out", str(w / "sub"), "--k", "0"], ["k=0"]


def k_above_n(w, store):
    return ["select", str(store), "--out", str(w / "sub"), "--k", "100"], ["k=100 > n=60"]


def index_k_zero(w, store):
    return ["index", str(store), "--k", "0"], ["k=0"]


def config_unknown_key(w, store):
    cfg = w / "run.yaml"
    cfg.write_text("budgett: 10\n")
    return _select(w, store, "--config", str(cfg)), ["'budgett'", str(cfg)]


def config_wrong_type(w, store):
    cfg = w / "run.yaml"
    cfg.write_text("k: many\n")
    return _select(w, store, "--config", str(cfg)), ["SelectConfig.k", "'many'", str(cfg)]


def config_not_yaml(w, store):
    cfg = w / "run.yaml"
    cfg.write_text("k: [8\nbudget: 10\n")
    return _select(w, store, "--config", str(cfg)), ["could not parse config file", str(cfg)]


def config_export_unknown_key(w, store):
    assert main(_select(w, store, "--budget", "5", "-q")) == 0
    cfg = w / "export.yaml"
    cfg.write_text(f"out: {w / 'e.jsonl'}\nbogus: 1\n")
    return ["export", str(w / "sub"), "--config", str(cfg)], ["unknown ExportConfig field 'bogus'", str(cfg)]


def inspect_plot_under_a_file(w, store):
    assert main(_select(w, store, "--budget", "5", "-q")) == 0
    (w / "notes.txt").write_text("a file, not a folder")
    return ["inspect", str(w / "sub"), "--plot", str(w / "notes.txt" / "x.png")], ["--plot", "notes.txt",
                                                                                   "is a file"]


def eval_unfinished_run(w, store):
    """A training run killed before its model/ was written (only the identity file, or checkpoints too)."""
    run = w / "run"
    (run / "checkpoints" / "step-0000003").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"recipe": "bert", "preset": "tiny", "steps": 12}))
    task = _jsonl(w, [{"text": t["text"], "label": str(i % 2)} for i, t in enumerate(GOOD * 4)], "task.jsonl")
    return (["eval", "--model", str(run), "--task", str(task), "--out", str(w / "e.json")],
            [str(run), "unfinished training run", "step-0000003"])


def export_csv(w, store):
    assert main(_select(w, store, "--budget", "5", "-q")) == 0
    return ["export", str(w / "sub"), "--out", str(w / "x.csv")], ["--out", "x.csv", ".jsonl, .jsonl.gz or .parquet"]


# ------------------------------------------------------------------------------ Python API (select_array)
def _api(make: Callable[[], Callable[[], Any]], needles: list[str]) -> Callable:
    """A row's build for an API call: ``make()`` (run in the test, not at import) gives the call."""
    def build(w, store):
        return make(), needles
    return build


def _select_array(*args, **kw):
    from subsetlm.select.array_api import select_array

    return lambda: select_array(*args, **kw)


def _graph(n: int, k: int):
    from subsetlm.index import knn_graph

    return knn_graph(_X(n), k=k)


API_ROWS = {
    "api-nan-embedding": (lambda: _select_array(_with(_X(), 3, np.nan), 5, k=4), ["row 3", "NaN"], "re-embed"),
    "api-inf-embedding": (lambda: _select_array(_with(_X(), 7, np.inf), 5, k=4), ["row 7", "inf"], "re-embed"),
    "api-1d-embeddings": (lambda: _select_array(_X()[:, 0], 5, k=4), ["(60,)"], "2-D (n, d)"),
    "api-3d-embeddings": (lambda: _select_array(_X()[None], 5, k=4), ["(1, 60, 8)"], "2-D (n, d)"),
    "api-int-embeddings": (lambda: _select_array(np.ones((60, 8), np.int64), 5, k=4), ["int64"], "astype"),
    "api-nan-query": (lambda: _select_array(_X(), 5, k=4, function="fl-mi", queries=_with(_X(3), 2, np.nan)),
                      ["queries row 2", "NaN"], "re-embed that query"),
    "api-query-dimension": (lambda: _select_array(_X(), 5, k=4, function="fl-mi", queries=_X(3, 4)),
                            ["dimension 4", "8"], "same model"),
    "api-k-zero": (lambda: _select_array(_X(), 5, k=0), ["k=0"], "k >= 1"),
    "api-budget-above-n": (lambda: _select_array(_X(), 61, k=4), ["budget=61 > n=60"], "lower"),
    # finding 3: a graph that does not fit X (other rows, other k)
    "api-graph-other-rows": (lambda: _select_array(_X(30), 5, graph=_graph(60, 8)), ["60 rows", "X has 30"],
                             "build it on these"),
    "api-graph-other-k": (lambda: _select_array(_X(), 5, k=16, graph=_graph(60, 8)), ["k=8", "k=16"],
                          "pass k=8"),
    # finding 8: negative partitions; a token budget on all-zero token counts
    "api-partitions-negative": (lambda: _select_array(_X(), 5, k=4, partitions=-2), ["partitions=-2"], "P > 1"),
    "api-all-zero-tokens": (lambda: _select_array(_X(), "tokens:10", k=4, n_tokens=np.zeros(60)),
                            ["all 60 samples have n_tokens == 0"], "count or fraction budget"),
}


@dataclass
class Row:
    build: Callable[[Path, Path], tuple[Any, list[str]]]
    fix: str            # the words of the message that say how to fix it
    rc: int = 2         # 2 = refused with one line; 0 = handled (warning for what was dropped)
    kept: Callable[[int], bool] | None = None  # rc 0: the store's sample count is right


ROWS: dict[str, Row] = {
    "malformed-jsonl-line": Row(malformed_jsonl, "JSON Lines"),
    "empty-text-skipped": Row(empty_text_skipped, "Fix or drop those records", rc=0, kept=lambda n: n == 3),
    "all-texts-empty": Row(all_texts_empty, "--text-field"),
    "missing-text-field": Row(missing_text, "--text-field"),
    "non-string-text": Row(non_string_text, "--text-field"),
    "lone-surrogate-escape": Row(lone_surrogate, "fix or drop the escape"),
    "non-utf8-bytes": Row(non_utf8, "iconv"),
    "truncated-gz": Row(truncated_gz, "re-create or re-download"),
    "truncated-zst": Row(truncated_zst, "re-create or re-download"),
    "empty-file": Row(empty_file, "check the path"),
    "unsupported-extension": Row(unsupported_file, "Convert the file"),
    # 2 jsonl + 2 parquet + 1 txt documents; the .csv ignored
    "folder-of-mixed-formats": Row(mixed_folder, "supported", rc=0, kept=lambda n: n == 5),
    "duplicate-ids-different-text": Row(duplicate_ids_different_text, "--id-field"),
    "duplicate-ids-same-text": Row(duplicate_ids_same_text, "--id-field"),
    "duplicate-texts-without-ids": Row(duplicate_texts_without_ids, "collide", rc=0, kept=lambda n: n == 2),
    # chunked into many 4096-token samples, not cut to one
    "5mb-single-document": Row(five_mb_document, "", rc=0, kept=lambda n: n > 150),
    "budget-0": Row(budget_zero, "accepted forms"),
    "budget-negative": Row(budget_negative, "accepted forms"),
    "budget-above-n": Row(budget_above_n, "lower --budget"),
    "budget-1.5": Row(budget_1_5, "accepted forms"),
    "budget-tokens-abc": Row(budget_tokens_abc, "accepted forms"),
    "k-0": Row(k_zero, "k >= 1"),
    "k-above-n": Row(k_above_n, "--k 60"),
    "index-k-0": Row(index_k_zero, "k >= 1"),
    "config-unknown-key": Row(config_unknown_key, "valid fields"),
    "config-wrong-type": Row(config_wrong_type, "give a value of that type"),
    "config-not-yaml": Row(config_not_yaml, "fix the syntax"),
    "export-config-unknown-key": Row(config_export_unknown_key, "valid fields"),
    "export-out-csv": Row(export_csv, "choose one of those names"),
    "inspect-plot-under-a-file": Row(inspect_plot_under_a_file, "choose another --plot"),
    "eval-unfinished-train-run": Row(eval_unfinished_run, "--resume"),
    **{name: Row(_api(make, needles), fix) for name, (make, needles, fix) in API_ROWS.items()},
    # helper A's rows (test_integrity.py / test_locking.py): embeddings-truncated-after-success,
    # embeddings-altered-after-success, subset-corrupt, subset-of-another-store, out-is-a-file,
    # out-not-writable, two-writers-one-out
}


def _successes(w: Path) -> list[Path]:
    return sorted(w.rglob("_SUCCESS"))


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input(name, tmp_path, rstore, capsys, caplog):
    row = ROWS[name]
    w = tmp_path / "work"
    w.mkdir()
    what, needles = row.build(w, rstore)
    if callable(what):  # a Python API call: one ValueError / TypeError line
        with pytest.raises((ValueError, TypeError)) as exc:
            what()
        msg = str(exc.value)
        assert "\n" not in msg, msg
        for needle in needles + [row.fix]:
            assert needle in msg, (needle, msg)
        return
    capsys.readouterr()
    caplog.clear()
    rc = main([*what, "-q"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert rc == row.rc, err
    if row.rc == 0:  # handled: a finished output, and a warning that says what was dropped and where
        from subsetlm.embed import EmbeddingStore

        assert (w / "out" / "_SUCCESS").exists() and row.kept(EmbeddingStore.open(w / "out").n)
        warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        for needle in needles + [row.fix]:
            assert needle in warned, (needle, warned)
        return
    errors = [line for line in err.splitlines() if line.startswith(f"subsetlm {what[0]}: error: ")]
    assert len(errors) == 1, err
    for needle in needles + [row.fix]:
        assert needle in errors[0], (needle, errors[0])
    assert _successes(w) == [] or name.startswith(("export", "inspect")), _successes(w)  # made a subset first
    assert not (w / "out" / "_SUCCESS").exists() and not (w / "e.jsonl").exists() and not (w / "x.csv").exists()


SUBPROCESS_ROWS = ["malformed-jsonl-line", "truncated-zst", "budget-1.5",
                   "config-wrong-type"]


@pytest.mark.parametrize("name", SUBPROCESS_ROWS)
def test_no_traceback_reaches_stderr(name, tmp_path, rstore):
    """A real process: stderr is exactly the one error line, exit status 2."""
    w = tmp_path / "work"
    w.mkdir()
    argv, needles = ROWS[name].build(w, rstore)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "subsetlm", *argv, "-q"], cwd=w, env=env, capture_output=True,
                          text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"subsetlm {argv[0]}: error: "), proc.stderr
    assert all(n in lines[0] for n in needles)
    assert _successes(w) == []


# ------------------------------------------------------------------------------ findings 3, 4, 5, 7, 8
def _cli_config(argv: list[str]) -> Any:
    """The config dataclass the CLI builds for ``argv`` (nothing is run)."""
    import importlib

    from subsetlm.cli import _config, build_parser

    args = build_parser().parse_args(argv)
    return _config(importlib.import_module(args.stage).STAGE.config, args)


def test_config_numbers_read_like_their_flags(tmp_path):
    """Finding 5: ``budget: 85`` / ``0.25`` in YAML is the string the flag gives, for every command."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("budget: 85\n")
    assert _cli_config(["retrieve", "--config", str(cfg)]).budget == "85"
    assert _cli_config(["demo", "--config", str(cfg)]).budget == "85"
    cfg.write_text("reselect_budget: 0.25\ncorpus: c.jsonl\nrecipe: gpt2\nout: run\n")
    train = _cli_config(["train", "--config", str(cfg)])
    assert (train.reselect_budget, train.corpus, train.recipe) == ("0.25", ["c.jsonl"], "gpt2")
    train.validate()  # recipe from the file: no --recipe needed
    cfg.write_text("recipe: tlm\nout: run\n")
    with pytest.raises(ValueError, match="recipe: tlm and task: T in --config"):
        _cli_config(["train", "--config", str(cfg)]).validate()
    cfg.write_text("budget: true\n")
    with pytest.raises(TypeError, match=f"RetrieveConfig.budget expects .* got True .* {cfg}"):
        _cli_config(["retrieve", "--config", str(cfg)])
    cfg.write_text("1: 2\n")
    with pytest.raises(ValueError, match="key 1 .int. is not a field name"):
        _cli_config(["select", "--config", str(cfg)])


def test_export_honours_its_config(tmp_path, rstore):
    """Finding 5: export reads --config like every command (out, order)."""
    sub, out = tmp_path / "sub", tmp_path / "e.jsonl"
    assert main(["select", str(rstore), "--budget", "6", "--k", "8", "--out", str(sub), "-q"]) == 0
    cfg = tmp_path / "export.yaml"
    cfg.write_text(f"subset: {sub}\nout: {out}\norder: index\nfields: [id, index]\n")
    assert main(["export", "--config", str(cfg), "-q"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and list(rows[0]) == ["id", "index"]
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows)


def test_wordless_texts_embed_to_unit_rows(tmp_path):
    """Finding 7: punctuation-only chunks are unit vectors (one shared direction), not zero rows."""
    from subsetlm.embed import EmbeddingStore, get_embedder

    emb = get_embedder("hashing", dim=32).fit([d["text"] for d in GOOD])
    X = emb.embed([".", "a", "—", "", GOOD[0]["text"]])
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    assert (X[:4] == X[0]).all() and abs(float(X[0] @ X[4])) < 0.9
    p = _jsonl(tmp_path, [GOOD[0], {"text": "."}, {"text": "?!"}, GOOD[1]])
    assert main(["embed", str(p), "--out", str(tmp_path / "s"), "--model", "hashing", "-q"]) == 0
    store = EmbeddingStore.open(tmp_path / "s")
    norms = np.linalg.norm(np.asarray(store.embeddings, dtype=np.float32), axis=1)
    assert store.manifest["normalized"] and store.n == 4
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)  # float16 rows


def test_surrogate_pairs_still_read(tmp_path):
    """Finding 4's fix refuses lone surrogates only: an escaped pair is one character."""
    from subsetlm.corpus.readers import CorpusConfig, iter_documents

    p = _jsonl(tmp_path, ['{"text": "smile \\ud83d\\ude00 please", "id": "x\\u00e9"}'])
    docs = [d for b in iter_documents(CorpusConfig([str(p)], id_field="id")) for d in b]
    assert docs[0].text == "smile \U0001F600 please" and docs[0].id == "xé"


def test_a_graph_gives_select_array_its_k():
    """Finding 3: with graph= and no k, the graph's k is used (the same subset as k=8)."""
    from subsetlm.select.array_api import select_array

    X = _X()
    a = select_array(X, 6, graph=_graph(60, 8))
    b = select_array(X, 6, k=8)
    assert a.indices.tolist() == b.indices.tolist()


def test_some_zero_token_counts_warn_once_naming_rows():
    """Finding 8: some zero counts -> one warning (also with partitions) naming rows; all zero -> an error."""
    import warnings

    from subsetlm.select.array_api import select_array

    tokens = np.full(60, 5)
    tokens[[2, 9]] = 0
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        sel = select_array(_X(), "tokens:40", k=4, n_tokens=tokens, partitions=2, n_jobs=1)
    zero = [str(w.message) for w in seen if "n_tokens == 0" in str(w.message)]
    assert len(zero) == 1 and "2 of 60 samples" in zero[0] and "rows 2, 9" in zero[0], zero
    assert np.maximum(tokens, 1)[sel.indices].sum() <= 40
