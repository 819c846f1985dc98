"""One writer per output (issue 18, deliverable 3 / finding 10): a second process writing the same output fails at
once with "another process (pid N) is writing OUT", the winner's output stays valid, and a lock left by a killed
process (kill -9) never blocks a later run.

``test_a_second_writer_fails_fast`` and ``test_concurrent_selects`` fail on the code before issue 18 (the second
select either wiped the first one's OUT.tmp and wrote anyway, or failed with "already exists").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import subsetlm
from subsetlm.cli import main

ROOT = Path(subsetlm.__file__).resolve().parent.parent

_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from subsetlm._stage import Output
    out = Output(Path(sys.argv[1]), {"held": True}, what="subset")
    assert not out.up_to_date(force=False)
    with out.writing(force=False) as tmp:
        (tmp / "part").write_text("half")
        print("ready", flush=True)
        time.sleep(120)
""")


def _holder(out: Path) -> subprocess.Popen:
    """A process in the middle of writing ``out`` (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_writer_fails_fast_and_a_killed_ones_lock_is_ignored(tmp_path, store, capsys):
    from subsetlm.subsets import read_subset

    out = tmp_path / "sub"
    holder = _holder(out)
    try:
        capsys.readouterr()
        assert main(["select", str(store), "--budget", "10", "--k", "8", "--out", str(out), "-q"]) == 2
        err = capsys.readouterr().err
        assert f"another process (pid {holder.pid}) is writing {out}" in err and "wait for it" in err
        assert (out.with_name("sub.tmp") / "part").is_file()  # the other writer's work is left alone
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert out.with_name("sub.lock").exists()  # left behind by kill -9 ...
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--out", str(out), "-q"]) == 0  # ... not held
    assert read_subset(out).size == 10
    assert not out.with_name("sub.lock").exists() and not out.with_name("sub.tmp").exists()


def test_concurrent_selects_into_one_out(tmp_path, store):
    from subsetlm.subsets import read_subset

    out = tmp_path / "sub"
    cmd = [sys.executable, "-m", "subsetlm", "select", str(store), "--budget", "10", "--k", "8", "--out", str(out),
           "-q"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    assert main(["index", str(store), "--k", "8", "-q"]) == 0  # the graph cache exists: the race is on --out
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert any(rc == 0 for rc, _ in results), results
    for rc, err in results:
        assert rc == 0 or "another process" in err, err  # never "already exists" for the same config
    assert read_subset(out).size == 10


def test_lock_is_released_and_reentrant_in_process(tmp_path):
    from subsetlm._io import OutputLockedError, acquire_lock, lock_path, output_lock
    from subsetlm._stage import Output

    out = Output(tmp_path / "o", {"a": 1})
    assert not out.up_to_date(force=False)  # claims the lock ...
    assert lock_path(out.path).is_file()
    with pytest.raises(RuntimeError):
        with out.writing(force=False):  # ... kept while writing (re-entrant) ...
            raise RuntimeError("boom")
    assert not lock_path(out.path).exists()  # ... and released when the write ends, also on failure
    with output_lock(tmp_path / "o"):
        fd = os.open(lock_path(tmp_path / "o"), os.O_RDWR)  # another open file description: as another process
        import fcntl

        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    assert acquire_lock(tmp_path / "missing-parent" / "x") is None  # nothing to lock where nothing exists yet
    assert issubclass(OutputLockedError, FileExistsError)
