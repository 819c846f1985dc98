"""write_subset / read_subset: round trip, determinism, every validation error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from subsetlm._io import read_json
from subsetlm.subsets import (
    SCHEMA_VERSION,
    SubsetError,
    SubsetStoreMismatch,
    read_subset,
    write_subset,
)

from .conftest import example_inputs


def test_round_trip(store, tmp_path):
    inp = example_inputs()
    out = write_subset(tmp_path / "sub", store=store, stats={"select_seconds": 1.5}, **inp)
    assert sorted(p.name for p in out.iterdir()) == [
        "_SUCCESS", "manifest.json", "stats.json", "subset.parquet"
    ]
    sub = read_subset(out, store=store)
    b = inp["indices"].size
    assert sub.size == len(sub) == b
    np.testing.assert_array_equal(sub.indices, inp["indices"])
    np.testing.assert_array_equal(sub.ranks, np.arange(b))
    np.testing.assert_array_equal(sub.gains, inp["gains"])
    np.testing.assert_array_equal(sub.weights, inp["weights"])
    np.testing.assert_array_equal(sub.partitions, inp["partitions"])
    assert sub.ids.tolist() == store.ids[inp["indices"]].tolist()
    assert sub.indices.dtype == np.int64 and sub.partitions.dtype == np.int32

    m = sub.manifest
    assert m["schema_version"] == SCHEMA_VERSION and m["kind"] == "subsetlm.subset"
    assert m["size"] == b and m["n_ground"] == store.n
    assert m["store"] == {
        "path": str(store.path),
        "path_from_subset": "../store",
        "fingerprint": store.fingerprint,
        "corpus_fingerprint": store.manifest["corpus_fingerprint"],
        "model": {"name": "toy-model", "dim": store.dim},
        "dim": store.dim,
    }
    assert m["config"] == inp["manifest"]["config"] and m["seed"] == 0
    # ratio is filled from objective / upper_bound when the caller leaves it out
    assert m["certificate"]["ratio"] == pytest.approx(41.5 / 50.0)
    assert m["certificate"]["random_objective"] == 30.25
    assert set(m["versions"]) >= {"subsetlm", "numpy", "faiss", "python"}
    stats = read_json(out / "stats.json")
    assert stats["select_seconds"] == 1.5 and stats["write_seconds"] >= 0

    # the parquet file has exactly the documented schema, readable by plain pyarrow
    t = pq.read_table(out / "subset.parquet")
    assert t.schema.names == ["id", "index", "rank", "gain", "weight", "partition"]
    assert [str(f.type) for f in t.schema] == ["string", "int64", "int64", "double", "double", "int32"]
    assert t.schema.metadata is None or b"pandas" not in t.schema.metadata


def test_manifest_is_strict_json(store, tmp_path):
    inp = example_inputs()
    inp["manifest"]["certificate"].update(random_objective=float("nan"), lift=float("inf"))
    inp["manifest"]["extra"] = [np.float64("-inf"), 1.5]
    out = write_subset(tmp_path / "s", store=store, **inp)
    text = (out / "manifest.json").read_text()
    m = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert m["certificate"]["random_objective"] is None and m["certificate"]["lift"] is None
    assert m["extra"] == [None, 1.5]


def test_defaults_for_weights_and_partitions(store, tmp_path):
    inp = example_inputs()
    inp["weights"] = None
    inp["partitions"] = None
    sub = read_subset(write_subset(tmp_path / "s", store=store, **inp))
    assert sub.weights.tolist() == [1.0] * sub.size
    assert sub.partitions.tolist() == [0] * sub.size


def test_byte_identical_for_identical_inputs(store, tmp_path):
    a = write_subset(tmp_path / "a", store=store, stats={"t": 1.0}, **example_inputs())
    b = write_subset(tmp_path / "b", store=store, stats={"t": 2.0}, **example_inputs())
    for name in ("subset.parquet", "manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # and a different input does change the bytes (the comparison can fail)
    inp = example_inputs()
    inp["gains"] = inp["gains"] + 1e-9
    c = write_subset(tmp_path / "c", store=store, **inp)
    assert (a / "subset.parquet").read_bytes() != (c / "subset.parquet").read_bytes()


def test_empty_subset(store, tmp_path):
    inp = dict(indices=np.zeros(0, np.int64), gains=np.zeros(0), manifest={"seed": 1})
    sub = read_subset(write_subset(tmp_path / "e", store=store, **inp), store=store)
    assert sub.size == 0 and sub.indices.dtype == np.int64


def test_overwrite(store, tmp_path):
    write_subset(tmp_path / "s", store=store, **example_inputs())
    with pytest.raises(FileExistsError, match="already exists"):
        write_subset(tmp_path / "s", store=store, **example_inputs())
    inp = example_inputs(b=5)
    write_subset(tmp_path / "s", store=store, overwrite=True, **inp)
    assert read_subset(tmp_path / "s").size == 5


# ----------------------------------------------------------------- write-side errors


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda d: d.update(indices=np.r_[d["indices"][:-1], 60]), r"indices\[11\] = 60 is outside the store's rows \[0, 60\)"),
        (lambda d: d.update(indices=np.r_[d["indices"][:-1], -1]), r"indices\[11\] = -1 is outside"),
        (lambda d: d.update(indices=np.r_[d["indices"][:-1], d["indices"][2]]), r"index \d+ is selected twice \(positions \[2, 11\]\)"),
        (lambda d: d["gains"].__setitem__(4, np.nan), r"gains\[4\] = nan is not finite"),
        (lambda d: d["gains"].__setitem__(0, np.inf), r"gains\[0\] = inf is not finite"),
        (lambda d: d.update(gains=d["gains"][:-1]), r"gains has length 11 but indices has length 12"),
        (lambda d: d.update(weights=d["weights"][:3]), r"weights has length 3 but indices has length 12"),
        (lambda d: d.update(partitions=np.zeros(13, np.int32)), r"partitions has length 13"),
        (lambda d: d["weights"].__setitem__(1, -2.0), r"weights\[1\] = -2.0 is negative"),
        (lambda d: d.update(indices=d["indices"].astype(float)), r"indices must be integers, got dtype float64"),
        (lambda d: d.update(indices=d["indices"].reshape(3, 4)), r"indices must be 1-D, got shape \(3, 4\)"),
        (lambda d: d["manifest"].update(size=3), r"manifest keys \['size'\] are filled by write_subset"),
    ],
)
def test_write_validation_leaves_nothing(store, tmp_path, change, pattern):
    inp = example_inputs()
    change(inp)
    dest = tmp_path / "bad"
    with pytest.raises(SubsetError, match=pattern):
        write_subset(dest, store=store, **inp)
    assert not dest.exists() and not (tmp_path / "bad.tmp").exists()


def test_failed_write_midway_leaves_nothing(store, tmp_path, monkeypatch):
    import subsetlm.subsets.format as fmt

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fmt.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        write_subset(tmp_path / "s", store=store, **example_inputs())
    assert list(tmp_path.iterdir()) == [tmp_path / "store"]


def test_unserialisable_manifest_fails_before_writing(store, tmp_path):
    inp = example_inputs()
    inp["manifest"]["config"] = {"fn": object()}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_subset(tmp_path / "s", store=store, **inp)
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------ read-side errors


@pytest.fixture
def written(store, tmp_path):
    return write_subset(tmp_path / "sub", store=store, **example_inputs())


def _edit_manifest(path, **kv):
    m = read_json(path / "manifest.json")
    m.update(kv)
    (path / "manifest.json").write_text(json.dumps(m))


def _edit_table(path, fn):
    """Rewrite subset.parquet as another writer would, recording its checksum (these tests check the schema)."""
    from subsetlm._io import file_checksum

    t = pq.read_table(path / "subset.parquet")
    pq.write_table(fn(t), path / "subset.parquet")
    man = json.loads((path / "manifest.json").read_text())
    man["checksums"]["subset.parquet"] = file_checksum(path / "subset.parquet")
    (path / "manifest.json").write_text(json.dumps(man))


def test_wrong_store_fingerprint(written, other_store, store):
    with pytest.raises(SubsetStoreMismatch) as e:
        read_subset(written, store=other_store)
    msg = str(e.value)
    assert f"selected from a store with fingerprint {store.fingerprint[:12]}" in msg
    assert f"but {other_store.path} has {other_store.fingerprint[:12]}" in msg
    assert "re-run subsetlm select on this store" in msg


def test_bad_schema_version(written):
    _edit_manifest(written, schema_version=7)
    with pytest.raises(SubsetError, match=r"schema_version 7 is not supported; this subsetlm reads schema_version 1"):
        read_subset(written)


def test_wrong_kind(written):
    _edit_manifest(written, kind="subsetlm.embeddings")
    with pytest.raises(SubsetError, match=r"kind 'subsetlm.embeddings', expected 'subsetlm.subset'"):
        read_subset(written)


def test_missing_column(written):
    _edit_table(written, lambda t: t.drop_columns(["gain"]))
    with pytest.raises(SubsetError, match=r"missing column\(s\) \['gain'\]"):
        read_subset(written)


def test_wrong_column_type(written):
    _edit_table(written, lambda t: t.set_column(3, "gain", pa.array([str(x) for x in t["gain"].to_pylist()])))
    with pytest.raises(SubsetError, match=r"column 'gain' has type string, expected double"):
        read_subset(written)


def test_compatible_types_are_cast(written):
    # int32 index / large_string ids (other writers) are accepted and normalised
    _edit_table(written, lambda t: t.set_column(1, "index", t["index"].cast(pa.int32())).set_column(0, "id", t["id"].cast(pa.large_string())))
    sub = read_subset(written)
    assert sub.table.schema.field("index").type == pa.int64()


def test_ranks_must_be_selection_order(written):
    _edit_table(written, lambda t: t.set_column(2, "rank", pa.array(np.r_[1, 0, np.arange(2, t.num_rows)], pa.int64())))
    with pytest.raises(SubsetError, match=r"'rank' must be 0..11 in row order; row 0 has rank 1"):
        read_subset(written)


def test_index_out_of_range_on_read(written, store):
    _edit_table(written, lambda t: t.set_column(1, "index", pa.array(np.r_[t["index"].to_numpy()[:-1], 99], pa.int64())))
    with pytest.raises(SubsetError, match=r"row 11 has index 99 outside \[0, n_ground=60\)"):
        read_subset(written)
    # with a smaller store than n_ground said, the store check names the store
    _edit_manifest(written, n_ground=1000)
    with pytest.raises(SubsetStoreMismatch, match=r"row 11 has index 99 but store .* has only 60 rows"):
        read_subset(written, store=store)


def test_duplicate_indices_on_read(written):
    _edit_table(written, lambda t: t.set_column(1, "index", pa.array(np.r_[t["index"].to_numpy()[:-1], t["index"].to_numpy()[0]], pa.int64())))
    with pytest.raises(SubsetError, match=r"column 'index' has 1 duplicate"):
        read_subset(written)


def test_mismatched_ids(written, store):
    ids = read_subset(written).ids.tolist()
    ids[5] = "someone-else"
    _edit_table(written, lambda t: t.set_column(0, "id", pa.array(ids, pa.string())))
    read_subset(written)  # fine without a store
    with pytest.raises(SubsetStoreMismatch, match=r"row 5 has id 'someone-else' at index \d+ but store .* has id '.*' there \(1 mismatched rows\)"):
        read_subset(written, store=store)


def test_size_mismatch(written):
    _edit_manifest(written, size=3)
    with pytest.raises(SubsetError, match=r"size = 3 but subset.parquet has 12 rows"):
        read_subset(written)


def test_incomplete_directory(written):
    (written / "_SUCCESS").unlink()
    with pytest.raises(SubsetError, match=r"not a complete subset directory \(no _SUCCESS marker\)"):
        read_subset(written)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no subset at"):
        read_subset(tmp_path / "nope")


def test_flat_layout(written, store, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(written / "subset.parquet", flat / "pick.parquet")
    shutil.copy(written / "manifest.json", flat / "pick.json")
    ref = read_subset(written)
    for p in (flat / "pick.parquet", flat / "pick.json", flat / "pick"):
        sub = read_subset(p, store=store)
        assert sub.table.equals(ref.table) and sub.manifest == ref.manifest
    (flat / "pick.json").unlink()
    with pytest.raises(SubsetError, match=r"flat layout needs pick.parquet and pick.json"):
        read_subset(flat / "pick.parquet")
