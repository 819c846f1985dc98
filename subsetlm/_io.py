"""Shared file helpers: atomic directories and files, fingerprints, JSON.

Every stage writes to a temporary name next to its destination and renames at
the end, so a killed run never leaves a half-written output behind.

Example
-------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "out"
>>> with atomic_dir(d) as tmp:
...     _ = (tmp / "a.txt").write_text("x")
>>> (d / "_SUCCESS").exists()
True
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from subsetlm._remote import SUCCESS, cache_root, sha256_stream  # noqa: F401  (re-exported: SUCCESS is defined once, there)

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


def tmp_path_for(dest: Path) -> Path:
    """The temporary sibling used while ``dest`` is being written (stable, so runs can resume)."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".tmp")


def is_complete(path: Path) -> bool:
    """True when ``path`` is a directory whose ``_SUCCESS`` marker exists."""
    return (Path(path) / SUCCESS).is_file()


@contextlib.contextmanager
def atomic_dir(dest: Path, *, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``dest`` (with ``_SUCCESS``) on success.

    Parameters
    ----------
    dest : Path
        Final directory.
    resume : bool
        Keep an existing ``dest.tmp`` (a killed earlier run) instead of wiping it.
    overwrite : bool
        Replace an existing complete ``dest``; otherwise an existing ``dest`` raises
        ``FileExistsError``.

    On an exception the temporary directory is left in place when ``resume`` is true
    (so the next run resumes) and removed otherwise; ``dest`` is never touched.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(
            f"{dest} already exists; pass --force (overwrite=True) to replace it"
        )
    with output_lock(dest):
        if dest.exists() and not overwrite:  # written by another process while this one worked
            raise FileExistsError(f"{dest} was written by another process while this one ran; pass --force "
                                  f"(overwrite=True) to replace it")
        tmp = tmp_path_for(dest)
        if tmp.exists() and not resume:
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            yield tmp
        except BaseException:
            if not resume:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        (tmp / SUCCESS).write_text("")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        _publish(dest)


def _publish(dest: Path) -> None:
    """Upload a finished output to the URL it stands for (``--out s3://...``; a no-op for local outputs)."""
    from subsetlm._mirror import publish

    publish(dest)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def dumps_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as deterministic JSON, atomically."""
    write_bytes_atomic(Path(path), dumps_json(obj).encode("utf-8"))


def read_json(path: Path) -> Any:
    with open(path, "r", encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# -- integrity on read: checksums of the data files ------------------------------------------
_BLOCK = 1 << 24  # 16 MiB reads: hashing streams, memory stays flat whatever the file size


class IntegrityError(ValueError):
    """A data file does not match the checksum its output recorded (altered or truncated after ``_SUCCESS``)."""


def _hasher(algo: str) -> Any:
    if algo == "xxh3_64":
        import xxhash

        return xxhash.xxh3_64()
    if algo == "crc32":
        return _Crc32()
    raise KeyError(algo)


class _Crc32:
    def __init__(self) -> None:
        self.v = 0

    def update(self, b: Any) -> None:
        self.v = zlib.crc32(b, self.v)

    def hexdigest(self) -> str:
        return f"{self.v:08x}"


def checksum_algorithm() -> str:
    """``xxh3_64`` (xxhash, installed with ``datasets``: ~10 GB/s) or, without it, ``crc32`` (zlib, ~3 GB/s)."""
    try:
        import xxhash  # noqa: F401

        return "xxh3_64"
    except ImportError:  # pragma: no cover - datasets depends on xxhash
        return "crc32"


def file_checksum(path: Path, algo: str | None = None, *, also: Any = None) -> str:
    """``"ALGO:HEX"`` of a file's bytes, streamed in 16 MiB blocks (a fast non-cryptographic hash).

    ``also``: another hashlib-style object fed the same blocks (one read for two digests).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "x"; _ = f.write_bytes(b"abc")
    >>> file_checksum(f, "crc32")
    'crc32:352441c2'
    """
    algo = algo or checksum_algorithm()
    h = _hasher(algo)
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "rb") as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            if also is not None:
                also.update(view[:n])
    return f"{algo}:{h.hexdigest()}"


def checksums(root: Path, names: Iterable[str]) -> dict[str, str]:
    """``{name: file_checksum(root / name)}`` for the data files ``names`` (relative paths), sorted by name."""
    return {n: file_checksum(Path(root) / n) for n in sorted(names)}


def data_files(root: Path, skip: Iterable[str] = ()) -> list[str]:
    """The relative paths of every regular file under ``root`` (sorted), except ``skip`` and ``*.tmp``."""
    root = Path(root)
    skip = set(skip)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink() and str(p.relative_to(root)) not in skip
                  and not p.name.endswith(".tmp"))


_VERIFIED: dict[tuple[str, int, int, str], bool] = {}  # (realpath, size, mtime_ns, checksum): verified in this process


def verify_checksums(root: Path, recorded: dict[str, str] | None, *, what: str, fix: str) -> None:
    """Check the files ``recorded`` (``{relative name: "ALGO:HEX"}``) under ``root``; raise on a mismatch.

    Each file is hashed at most once per process while its size and mtime are unchanged.
    ``recorded`` None (written before checksums existed): accepted with a warning.

    Raises
    ------
    IntegrityError
        One line naming the file, what differs, and ``fix`` (how to rebuild it).
    """
    root = Path(root)
    if not recorded:
        logger.warning("%s %s records no checksums (written by an older subsetlm): its files are not verified; "
                       "rebuilding it with --force adds them", what, root)
        return
    for name, want in sorted(recorded.items()):
        f = root / name
        try:
            st = f.stat()
        except FileNotFoundError:
            raise IntegrityError(f"{f}: missing, but {what} {root} lists it; {fix}") from None
        key = (os.path.realpath(f), st.st_size, st.st_mtime_ns, str(want))
        if key in _VERIFIED:
            continue
        algo = str(want).partition(":")[0]
        try:
            have = file_checksum(f, algo)
        except KeyError:
            logger.warning("%s: checksum algorithm %r is not available here; not verified", f, algo)
            continue
        if have != want:
            raise IntegrityError(f"{f}: checksum {have} != {want} recorded when {what} {root} was written: the file "
                                 f"was altered or truncated after it was finished; {fix}")
        _VERIFIED[key] = True


def load_npy(path: Path, mmap_mode: str | None = "r", *, fix: str) -> Any:
    """``np.load`` of a ``.npy`` data file; a corrupt header or a truncated file is one ``IntegrityError``
    naming the file and ``fix`` (instead of a SyntaxError or "mmap length is greater than file size")."""
    import numpy as np

    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: missing; {fix}") from None
    except (ValueError, SyntaxError, OSError, EOFError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise IntegrityError(f"{path}: not a readable .npy file ({msg}): it is truncated or corrupt; {fix}") from None


# -- one writer per output: a lock file next to PATH.tmp ----------------------------------------
class OutputLockedError(FileExistsError):
    """Another live process is writing the same output."""


class _Lock:
    """An ``flock``-ed ``PATH.lock``; the kernel drops the lock when its holder dies (kill -9 included)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd


_HELD: dict[str, _Lock] = {}  # lock file -> the lock this process holds on it


def lock_path(dest: Path) -> Path:
    """``PATH.lock``: the lock file of output ``PATH`` (beside ``PATH.tmp``)."""
    dest = Path(dest)
    return dest.with_name(dest.name + LOCK_SUFFIX)


def _holder(lp: Path) -> str:
    try:
        pid = lp.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


def acquire_lock(dest: Path, *, wait: bool = False) -> _Lock | None:
    """Lock output ``dest`` for this process: ``flock`` on ``dest.lock`` (re-entrant within a process).

    Returns the lock, or None where no lock file can be made (a read-only directory: nothing will
    be written there by this process either, or a platform without ``fcntl``). ``wait``: block
    until the holder finishes; otherwise a held lock raises :class:`OutputLockedError` at once.
    A lock file left by a killed process is not held (the kernel released it) and is taken over.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    lp = lock_path(dest)
    key = os.path.abspath(lp)
    if key in _HELD:
        return _HELD[key]
    if not lp.parent.is_dir():
        return None
    while True:
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(f"another process ({_holder(lp)}) is writing {dest}; wait for it to finish "
                                    f"(then re-run: a finished identical output is skipped), or choose another "
                                    f"--out") from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder we waited for removed the file: lock the current one instead
            same = os.stat(lp).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    lock = _HELD[key] = _Lock(lp, fd)
    return lock


def release_lock(lock: _Lock | None) -> None:
    """Release ``lock`` (remove its file first, then unlock); a no-op for None or a released lock."""
    if lock is None:
        return
    key = os.path.abspath(lock.path)
    if _HELD.get(key) is not lock:
        return
    del _HELD[key]
    with contextlib.suppress(OSError):
        lock.path.unlink()
    os.close(lock.fd)


@contextlib.contextmanager
def output_lock(dest: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold ``dest``'s lock while the body writes ``dest``; released at the end, also when this process
    already held it (a stage's claim from :meth:`subsetlm._stage.Output.up_to_date` ends with the write)."""
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(dest, wait=wait)
    try:
        yield
    finally:
        release_lock(lock)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, streamed."""
    with open(path, "rb") as fh:
        return sha256_stream(fh, chunk)


def hash_unit(seed: int, key: str) -> float:
    """A seeded hash of ``key`` mapped to [0, 1): the first 8 bytes of sha256("seed:key") / 2**64.

    Used wherever a split must depend only on a key (validation rows, task splits).

    >>> 0.0 <= hash_unit(0, "doc-1") < 1.0, hash_unit(0, "doc-1") == hash_unit(0, "doc-1")
    (True, True)
    """
    h = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def hash_split(seed: int, key: str, fractions: tuple[float, float, float]) -> str:
    """``train`` / ``validation`` / ``test`` for ``key`` by :func:`hash_unit` and the split ``fractions``.

    >>> hash_split(0, "doc-1", (1.0, 0.0, 0.0))
    'train'
    """
    u = hash_unit(seed, key)
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_dir() -> Path:
    """Where fetched corpora and the mirrors of remote outputs live: ``$SUBSETLM_CACHE`` or ``~/.cache/subsetlm``."""
    p = cache_root()
    p.mkdir(parents=True, exist_ok=True)
    return p
