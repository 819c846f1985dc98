"""R4, fuzzing (issue 18): mutated corpus files and config files never get past the one-line errors.

Property-based (``hypothesis``) mutation of valid inputs: JSON Lines (plain, ``.gz``,
``.zst``), ``.txt`` and Parquet corpus files are read to the end with
:func:`~subsetlm.corpus.readers.iter_documents` and chunked; generated YAML / JSON config
files go through the loader (:func:`~subsetlm._config.load_config_file`,
:func:`~subsetlm._config.build_config`) and the stage config's ``validate()``. Properties:

- every failure is one of :data:`USER_ERRORS`, the exceptions ``subsetlm.cli.main`` prints
  as one ``subsetlm CMD: error: ...`` line (a corpus failure is a ``CorpusError``), and its
  message is a single line;
- a reader either yields documents (non-empty ``str`` texts) or fails that way: no other
  exception, and no hang (``pytest-timeout`` bounds each test).

The default run draws ~180 cases (derandomized, so CI is reproducible; a few seconds);
``pytest -m slow`` draws 1,000 per target (random, 6,000 in all) and 200 mutated files
through ``subsetlm embed`` end to end.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from subsetlm.corpus.readers import CorpusConfig, CorpusError, iter_documents

# what subsetlm.cli.main turns into one `subsetlm CMD: error: ...` line (its `except` clause)
USER_ERRORS = (ValueError, TypeError, FileExistsError, FileNotFoundError)


def _fast(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


SLOW = settings(max_examples=1000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DOCS = [{"id": "a1", "text": "Aspirin inhibits platelet aggregation.", "year": 2001},
        {"id": 7, "text": "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F600 \\ \" \t tabs", "year": None},
        {"id": "c3", "text": "   leading spaces and a very long word " + "x" * 300},
        {"id": "d4", "text": "line one\nline two\r\nline three"}]
VALID_JSONL = b"".join(json.dumps(d, ensure_ascii=i % 2 == 0).encode() + b"\n" for i, d in enumerate(DOCS))
TOKENS = [b"\\ud800", b"\\udfff", b'"', b"{", b"}", b"\x00", b"\xff", b"\xc3", b"null", b"\n", b"\r", b"[]",
          b'"text": 1', b'"id": [1]', b"\\", b"\xef\xbb\xbf", b" " * 64, b"1e999", b"NaN"]

# one mutation: (kind, position, payload); positions wrap around the current length
MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "replace", "repeat"]),
                     st.integers(0, 1 << 20), st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=8)))
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=6)


def mutate(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    """``data`` after the byte-level ``ops`` (deterministic)."""
    b = bytearray(data)
    for kind, pos, payload in ops:
        i = pos % (len(b) + 1)
        if kind == "flip" and b:
            b[i % len(b)] ^= payload[0] or 0xFF
        elif kind == "insert":
            b[i:i] = payload
        elif kind == "delete":
            del b[i:i + len(payload)]
        elif kind == "truncate":
            del b[i:]
        elif kind == "replace":
            b[i:i + len(payload)] = payload
        elif kind == "repeat":
            b[i:i] = b[max(0, i - 40):i]
    return bytes(b)


def _read(path: Path, **kw: Any) -> int:
    """Read (and chunk) a corpus file to the end; the documents' count, or a one-line CorpusError."""
    from subsetlm.corpus.chunking import WhitespaceSplitter, iter_samples

    cfg = CorpusConfig([str(path)], block_size=3, max_tokens=8, **kw)
    n = 0
    try:
        for block in iter_documents(cfg):
            for d in block:
                assert isinstance(d.text, str) and d.text.strip()
                d.text.encode("utf-8")  # valid Unicode: no lone surrogate got through
                n += 1
        for _ in iter_samples(cfg, WhitespaceSplitter()):
            pass
    except CorpusError as e:
        _one_line(e)
        return -1
    return n


def _one_line(e: BaseException) -> None:
    msg = str(e)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ------------------------------------------------------------------------------ corpus readers
def _jsonl_case(fuzz_dir: Path, ops, id_field: bool) -> None:
    p = fuzz_dir / "m.jsonl"
    p.write_bytes(mutate(VALID_JSONL, ops))
    _read(p, id_field="id" if id_field else None)


def _compressed_case(fuzz_dir: Path, ops, codec: str, where: str) -> None:
    import zstandard

    pack = gzip.compress if codec == "gz" else zstandard.ZstdCompressor().compress
    # mutate the text before compressing (valid stream, bad content) or the compressed bytes
    data = pack(mutate(VALID_JSONL, ops)) if where == "content" else mutate(pack(VALID_JSONL), ops)
    p = fuzz_dir / f"m.jsonl.{codec}"
    p.write_bytes(data)
    _read(p)


def _txt_case(fuzz_dir: Path, ops) -> None:
    d = fuzz_dir / "txt"
    d.mkdir(exist_ok=True)
    (d / "doc.txt").write_bytes(mutate("Ein Text \u00fcber Ribosomen.\nZweite Zeile.".encode(), ops))
    _read(d)


def _parquet_bytes(column: Any) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(len(column))], "text": column}), buf)
    return buf.getvalue()


VALID_PARQUET = _parquet_bytes([d["text"] for d in DOCS])
COLUMNS = st.one_of(st.lists(st.one_of(st.none(), st.text(max_size=20)), min_size=1, max_size=5),
                    st.lists(st.integers(-5, 5), min_size=1, max_size=5),
                    st.lists(st.binary(max_size=8), min_size=1, max_size=5))


def _parquet_case(fuzz_dir: Path, ops, column) -> None:
    p = fuzz_dir / "m.parquet"
    p.write_bytes(mutate(VALID_PARQUET, ops) if ops else _parquet_bytes(column))
    _read(p, id_field="id")


# ------------------------------------------------------------------------------ config loader
def _stage_configs() -> list[type]:
    import importlib

    mods = ["embed.run", "index.run", "select.api", "retrieve.run", "subsets.export", "train", "evaluate.run",
            "select.dedup_run", "select.dsir_run", "subsets.inspect", "demo"]
    return [importlib.import_module(f"subsetlm.{m}").STAGE.config for m in mods]


CONFIGS = _stage_configs()
FIELDS = sorted({f for cls in CONFIGS for f in cls.__dataclass_fields__})
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["0.25", "tokens:abc", "-1", "auto", "", "nan", "1e999"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)
CONFIG_DICTS = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), VALUES, max_size=5)


def _config_case(fuzz_dir: Path, cls: type, text: str, suffix: str) -> None:
    from subsetlm._config import build_config, load_config_file

    p = fuzz_dir / f"run{suffix}"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = build_config(cls, load_config_file(p), {}, file=p)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except USER_ERRORS as e:
        _one_line(e)


def _dump(data: dict, suffix: str) -> str:
    import yaml

    if suffix == ".json":
        return json.dumps(data, allow_nan=True)
    return yaml.safe_dump(data, allow_unicode=True)


# ------------------------------------------------------------------------------ the tests
# each property twice: a fast derandomized draw in the default run, 1,000 random draws under -m slow
J = {"ops": MUTATIONS, "id_field": st.booleans()}
C = {"ops": MUTATIONS, "codec": st.sampled_from(["gz", "zst"]), "where": st.sampled_from(["content", "stream"])}
T = {"ops": MUTATIONS}
P = {"ops": st.one_of(st.just([]), MUTATIONS), "column": COLUMNS}
D = {"cls": st.sampled_from(CONFIGS), "data": CONFIG_DICTS, "suffix": st.sampled_from([".yaml", ".json"])}
X = {"cls": st.sampled_from(CONFIGS), "text": st.text(max_size=80), "suffix": st.sampled_from([".yaml", ".json"])}
FAST = pytest.mark.timeout(120)


@FAST
@_fast(60)
@given(**J)
def test_fuzz_jsonl(fuzz_dir, ops, id_field):
    _jsonl_case(fuzz_dir, ops, id_field)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@SLOW
@given(**J)
def test_fuzz_jsonl_slow(fuzz_dir, ops, id_field):
    _jsonl_case(fuzz_dir, ops, id_field)


@FAST
@_fast(40)
@given(**C)
def test_fuzz_compressed(fuzz_dir, ops, codec, where):
    _compressed_case(fuzz_dir, ops, codec, where)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@SLOW
@given(**C)
def test_fuzz_compressed_slow(fuzz_dir, ops, codec, where):
    _compressed_case(fuzz_dir, ops, codec, where)


@FAST
@_fast(15)
@given(**T)
def test_fuzz_txt(fuzz_dir, ops):
    _txt_case(fuzz_dir, ops)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@SLOW
@given(**T)
def test_fuzz_txt_slow(fuzz_dir, ops):
    _txt_case(fuzz_dir, ops)


@FAST
@_fast(25)
@given(**P)
@example(ops=[("flip", 109, b"\x00")], column=[None])  # a corrupt string page: UnicodeDecodeError escaped
def test_fuzz_parquet(fuzz_dir, ops, column):
    _parquet_case(fuzz_dir, ops, column)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@SLOW
@given(**P)
def test_fuzz_parquet_slow(fuzz_dir, ops, column):
    _parquet_case(fuzz_dir, ops, column)


@FAST
@_fast(30)
@given(**D)
def test_fuzz_config_dict(fuzz_dir, cls, data, suffix):
    _config_case(fuzz_dir, cls, _dump(data, suffix), suffix)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@SLOW
@given(**D)
def test_fuzz_config_dict_slow(fuzz_dir, cls, data, suffix):
    _config_case(fuzz_dir, cls, _dump(data, suffix), suffix)


@FAST
@_fast(15)
@given(**X)
def test_fuzz_config_text(fuzz_dir, cls, text, suffix):
    _config_case(fuzz_dir, cls, text, suffix)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@SLOW
@given(**X)
def test_fuzz_config_text_slow(fuzz_dir, cls, text, suffix):
    _config_case(fuzz_dir, cls, text, suffix)


def test_the_fuzzers_start_from_valid_inputs(fuzz_dir):
    """The base files read cleanly (so mutations start from good input), and mutate() is pure."""
    ops = [("flip", 3, b"\x01"), ("insert", 10, b"xyz"), ("truncate", 200, b"a")]
    assert mutate(VALID_JSONL, ops) == mutate(VALID_JSONL, ops) != VALID_JSONL
    p = fuzz_dir / "valid.jsonl"
    p.write_bytes(VALID_JSONL)
    assert _read(p, id_field="id") == len(DOCS)
    p = fuzz_dir / "valid.parquet"
    p.write_bytes(VALID_PARQUET)
    assert _read(p, id_field="id") == len(DOCS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@settings(SLOW, max_examples=200)
@given(ops=MUTATIONS)
def test_fuzz_cli_embed_slow(fuzz_dir, ops):
    """End to end through ``subsetlm.cli.main`` (in-process; test_bad_inputs.py runs real processes):
    ``embed`` on a mutated file exits 0 with a store, or 2 with one error line and no traceback."""
    import contextlib

    from subsetlm.cli import main

    p = fuzz_dir / "cli.jsonl"
    p.write_bytes(mutate(VALID_JSONL * 3, ops))
    out = fuzz_dir / "cli-store"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["embed", str(p), "--out", str(out), "--model", "hashing", "--force", "-q"])
    assert rc in (0, 2) and "Traceback" not in err.getvalue(), err.getvalue()
    if rc == 0:
        assert (out / "_SUCCESS").exists()
    else:
        errors = [line for line in err.getvalue().splitlines() if "error:" in line]
        assert len(errors) == 1 and errors[0].startswith("subsetlm embed: error: "), err.getvalue()
