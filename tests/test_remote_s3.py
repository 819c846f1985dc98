"""Corpora, stores, subsets and exports on S3: an S3-compatible server (moto) on 127.0.0.1, read and written
through s3fs. Skipped, saying why, when moto or s3fs is missing or the server cannot start."""

from __future__ import annotations

import gzip
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import uuid

import pytest

from subsetlm.cli import main

DOCS = [{"id": f"s3-{i}", "text": f"topic {i % 4} " + " ".join(f"w{j}" for j in range(i % 9))} for i in range(40)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """``{endpoint_url, key, secret}`` of a moto S3 server on 127.0.0.1 (stopped after the module)."""
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install s3fs; it is in the dev extra)")
    server_mod = pytest.importorskip("moto.server", reason="moto is not installed (pip install 'moto[s3]' flask "
                                                           "flask-cors; they are in the dev extra)")
    port = _free_port()
    try:
        server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    except Exception as e:  # noqa: BLE001 - any failure to start is a reason to skip, stated
        pytest.skip(f"the moto S3 server could not start on 127.0.0.1:{port}: {type(e).__name__}: {e}")
    yield {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """``(fs, "s3://BUCKET")``: a fresh bucket; fsspec's ``s3`` config points at the server, the cache is private."""
    import fsspec
    import s3fs

    conf = {"key": s3_server["key"], "secret": s3_server["secret"],
            "client_kwargs": {"endpoint_url": s3_server["endpoint_url"]}}
    monkeypatch.setitem(fsspec.config.conf, "s3", conf)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the bucket's region: no location constraint
    monkeypatch.setenv("SUBSETLM_CACHE", str(tmp_path / "cache"))
    fs = s3fs.S3FileSystem(**conf)
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    fs.pipe(f"{bucket}/in/corpus.jsonl.gz", gzip.compress("".join(json.dumps(d) + "\n" for d in DOCS).encode()))
    yield fs, f"s3://{bucket}", conf
    fs.rm(bucket, recursive=True)


def _keys(fs, prefix):
    return sorted(k.split(prefix, 1)[1].lstrip("/") for k in fs.find(prefix))


def test_embed_select_export_on_s3(s3, tmp_path):
    fs, url, _ = s3
    bucket = url[5:]
    assert main(["embed", f"{url}/in/corpus.jsonl.gz", "--out", f"{url}/store", "--model", "hashing", "-q"]) == 0
    assert "_SUCCESS" in _keys(fs, f"{bucket}/store") and "embeddings.npy" in _keys(fs, f"{bucket}/store")
    assert main(["select", f"{url}/store", "--budget", "5", "--k", "6", "--out", f"{url}/sub", "-q"]) == 0
    assert main(["export", f"{url}/sub", "--out", f"{url}/sel.jsonl.gz", "-q"]) == 0
    rows = [json.loads(line) for line in gzip.decompress(fs.cat(f"{bucket}/sel.jsonl.gz")).splitlines()]
    assert len(rows) == 5 and {r["doc_id"] for r in rows} <= {d["id"] for d in DOCS}  # the corpus's own ids

    # the same on local paths: the same bytes
    assert main(["embed", f"{url}/in/corpus.jsonl.gz", "--out", str(tmp_path / "store"), "--model", "hashing",
                 "-q"]) == 0
    assert fs.cat(f"{bucket}/store/embeddings.npy") == (tmp_path / "store" / "embeddings.npy").read_bytes()

    from subsetlm import _mirror

    calls = []
    real = _mirror._sync_down
    _mirror._sync_down = lambda *a: (calls.append(a[0]), real(*a))[1]
    try:  # read again: the mirror is current, nothing is downloaded (one listing)
        from subsetlm.embed import EmbeddingStore

        before = {p: p.stat().st_mtime_ns for p in (_mirror.local_path(f"{url}/store")).rglob("*") if p.is_file()}
        assert EmbeddingStore.open(f"{url}/store").n == 40
        after = {p: p.stat().st_mtime_ns for p in (_mirror.local_path(f"{url}/store")).rglob("*") if p.is_file()}
        assert before and before == after and calls  # the mirror exists and nothing in it was re-downloaded
    finally:
        _mirror._sync_down = real


_CHILD = textwrap.dedent("""
    import json, os, sys, time
    import fsspec
    fsspec.config.conf["s3"] = json.loads(os.environ["TEST_S3_CONF"])
    from subsetlm import _mirror
    real = _mirror._put
    def slow(fs, src, dest, have, key):
        if dest.endswith("/_SUCCESS"):
            print("data files uploaded", flush=True)
            time.sleep(120)
        real(fs, src, dest, have, key)
    _mirror._put = slow
    _mirror.publish(_mirror.local_path(sys.argv[1]))
""")


def test_a_killed_upload_to_s3_leaves_no_success(s3):
    """A child process uploading a finished subset is killed (SIGKILL) between the data files and _SUCCESS."""
    fs, url, conf = s3
    bucket = url[5:]
    assert main(["embed", f"{url}/in/corpus.jsonl.gz", "--out", f"{url}/store", "--model", "hashing", "-q"]) == 0
    assert main(["index", f"{url}/store", "--k", "6", "-q"]) == 0
    from subsetlm import _mirror

    real = _mirror.publish
    _mirror.publish = lambda path: None  # finish the subset locally, upload nothing yet
    try:
        assert main(["select", f"{url}/store", "--budget", "5", "--k", "6", "--out", f"{url}/sub", "-q"]) == 0
    finally:
        _mirror.publish = real
    assert not fs.exists(f"{bucket}/sub")

    env = dict(os.environ, TEST_S3_CONF=json.dumps(conf))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, f"{url}/sub"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 120)
        assert ready, "the uploading child printed nothing in 120 s"
        line = child.stdout.readline()
        assert line.strip() == "data files uploaded", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    keys = _keys(fs, f"{bucket}/sub")
    assert "subset.parquet" in keys and "manifest.json" in keys and "_SUCCESS" not in keys

    from subsetlm.subsets import read_subset
    from subsetlm.subsets.format import SubsetError

    with pytest.raises(SubsetError, match=rf"{url}/sub: incomplete subset \(no _SUCCESS marker\)"):
        read_subset(f"{url}/sub")
    # the same command again: the finished local mirror is found and the upload finished
    assert main(["select", f"{url}/store", "--budget", "5", "--k", "6", "--out", f"{url}/sub", "-q"]) == 0
    assert "_SUCCESS" in _keys(fs, f"{bucket}/sub")
    assert read_subset(f"{url}/sub").size == 5
