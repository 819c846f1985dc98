"""Outputs at fsspec URLs: staged in a local mirror, published with ``_SUCCESS`` last; remote outputs read through it.

Stores are memory-mapped ``.npy`` files and subsets Parquet tables, so a stage never
writes an object store in place. An output URL (``--out s3://bucket/store``) maps to a
local **mirror** directory, ``$SUBSETLM_CACHE/remote/<sha256(url)[:16]>/<name>``
(:func:`local_path`), that the stage writes as it writes any local output (``NAME.tmp``,
a rename, ``_SUCCESS`` last, the lock, the resume of a killed run: the mirror path is
the same on every run). When the local output is complete, :func:`publish` uploads it:

1. the remote ``_SUCCESS`` is deleted first (from then on the remote directory is not
   trusted), and remote files the new output no longer has are removed;
2. every data file is uploaded (one object per file: a ``put`` is atomic per object on an
   object store, and a file a killed upload already sent is not sent again);
3. ``_SUCCESS`` is uploaded last.

A run killed during the upload leaves the remote without ``_SUCCESS``: readers refuse it,
and the next run of the same command finds its complete mirror and finishes the upload.

Reading a store or subset URL (:func:`fetch`) mirrors it into the same directory, after
checking the remote ``_SUCCESS``; each file is downloaded again only when its remote
version (size plus ETag / mtime, :func:`subsetlm._remote.token`) differs from the one the
mirror holds, so a changed remote is re-fetched and an unchanged one costs one listing.
The manifest checksums are then verified locally, as for any output.

Example (it writes under the cache directory; ``tests/test_remote.py`` runs the same)
-------
>>> import fsspec
>>> d = local_path("memory://bkt/out")                                            # doctest: +SKIP
>>> d.name, url_of(d), url_of(d / "graphs" / "knn-k8")                            # doctest: +SKIP
('out', 'memory://bkt/out', 'memory://bkt/out/graphs/knn-k8')
>>> d.mkdir(); _ = (d / "a.txt").write_text("x"); _ = (d / "_SUCCESS").write_text("")  # doctest: +SKIP
>>> publish(d)                                                                     # doctest: +SKIP
>>> sorted(fsspec.filesystem("memory").ls("/bkt/out", detail=False))               # doctest: +SKIP
['/bkt/out/_SUCCESS', '/bkt/out/a.txt']
>>> fetch("memory://bkt/out") == d                                                 # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from subsetlm._remote import SUCCESS, RemoteError, cache_root, filesystem, is_url, join, local_or_url, token, url_hash

logger = logging.getLogger(__name__)

__all__ = ["local_path", "url_of", "fetch", "local_copy", "publish", "sync_output", "remote_state", "display"]

_ROOT = "remote"         # under the cache dir
_STATE = "remote.json"   # beside the mirror: {"url", "files": {relpath: {"remote": token, "local": [size, mtime_ns]}}}


def _base() -> Path:
    return cache_root() / _ROOT


def local_path(url: str) -> Path:
    """The local mirror of ``url`` (created on first use; the same path on every run)."""
    url = local_or_url(url).rstrip("/")
    if not is_url(url):
        return Path(url)
    _, inner = filesystem(url)  # a missing implementation (s3fs ...) fails here, before any work
    name = inner.rstrip("/").rpartition("/")[2] or "root"
    root = _base() / url_hash(url)
    root.mkdir(parents=True, exist_ok=True)
    state = root / _STATE
    if not state.is_file():
        _write_json(state, {"url": url, "files": {}})
    return root / name


def _split(path: Any) -> tuple[Path, str, list[str]] | None:
    """``(mirror root, url, parts below the mirrored directory)`` of a path inside a mirror, else None."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(_base())))
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) < 2:
        return None
    root = _base() / parts[0]
    try:
        url = json.loads((root / _STATE).read_text(encoding="utf-8"))["url"]
    except (OSError, ValueError, KeyError):
        return None
    if parts[1] != url.rstrip("/").rpartition("/")[2] and parts[1] != "root":
        return None  # NAME.tmp, NAME.lock: not the mirrored directory itself
    return root, url, list(parts[2:])


def url_of(path: Any) -> str | None:
    """The URL a local path mirrors (a sub-path maps to the same sub-path of the URL), else None."""
    if path is None or is_url(path):
        return None
    s = _split(path)
    return None if s is None else join(s[1], *s[2])


def display(path: Any) -> str:
    """``path`` as the user named it: the URL of a mirror, else the path itself."""
    return url_of(path) or str(path)


def _load_state(root: Path) -> dict[str, Any]:
    try:
        state = json.loads((root / _STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    state.setdefault("files", {})
    return state


def _save_state(root: Path, state: dict[str, Any]) -> None:
    _write_json(root / _STATE, state)


def _write_json(path: Path, obj: Any) -> None:
    """Through a temporary name (this module sits below :mod:`subsetlm._io`, which publishes through it)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _skip(rel: str) -> bool:
    """Files never published or mirrored: partial writes, locks, staging copies."""
    parts = rel.split("/")
    return any(p.endswith((".tmp", ".lock", ".part")) for p in parts)


def _remote_files(fs: Any, inner: str) -> dict[str, dict[str, Any]]:
    root = inner.rstrip("/")
    try:
        found = fs.find(root, withdirs=False, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for full, info in found.items():
        rel = full[len(root):].lstrip("/") if full.startswith(root) else full.rpartition(root + "/")[2]
        if rel and not _skip(rel):
            out[rel] = info
    return out


def _local_stat(p: Path) -> list[int]:
    st = p.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def remote_state(path: Any) -> str | None:
    """For a mirror path: ``"complete"`` (the remote has ``_SUCCESS``), ``"incomplete"`` or ``"missing"``; else None."""
    url = url_of(path)
    if url is None:
        return None
    fs, inner = filesystem(url)
    if fs.isfile(join(inner, SUCCESS)):
        return "complete"
    return "incomplete" if fs.exists(inner) else "missing"


def fetch(url: str, what: str = "output") -> Path:
    """Mirror the complete output at ``url`` locally and return the local directory.

    Raises
    ------
    RemoteError
        Nothing at ``url``, or no ``_SUCCESS`` there (an interrupted or running write).
    """
    url = local_or_url(url).rstrip("/")
    if not is_url(url):
        return Path(url)
    local = local_path(url)
    _sync_down(url, local, local.parent, "", what)
    return local


def local_copy(path: Any, what: str, error: type[Exception] = RemoteError) -> Path:
    """``path`` as a local ``Path``: itself, or for a URL its mirror (:func:`fetch`), a refusal raised as ``error``."""
    if not is_url(path):
        return Path(local_or_url(path))
    try:
        return fetch(str(path), what=what)
    except RemoteError as e:
        raise error(str(e)) from None


def _sync_down(url: str, local: Path, root: Path, prefix: str, what: str) -> None:
    """Make ``local`` (the part ``prefix`` of the mirror at ``root``) a copy of the complete output at ``url``."""
    fs, inner = filesystem(url)
    try:
        files = _remote_files(fs, inner)
    except OSError as e:
        raise RemoteError(f"{url}: cannot list it ({e}); check the URL, its credentials and that it is reachable") \
            from None
    if not files:
        raise RemoteError(f"{url}: no {what} at this URL; check the URL, or create it (e.g. --out {url})")
    if SUCCESS not in files:
        raise RemoteError(f"{url}: incomplete {what} (no {SUCCESS} marker): its write was interrupted or is still "
                          f"running; re-run the command that writes it (the same command finishes an interrupted "
                          f"upload)")
    state = _load_state(root)
    have = state["files"]
    key = (lambda rel: f"{prefix}/{rel}" if prefix else rel)
    mine = {k[len(prefix) + 1:] if prefix else k: k for k in have if not prefix or k.startswith(prefix + "/")}
    stale = [rel for rel in mine if rel not in files]
    todo = [rel for rel, info in sorted(files.items())
            if have.get(key(rel), {}).get("remote") != token(info) or not _same_local(local / rel, have.get(key(rel)))]
    if not todo and not stale and (local / SUCCESS).is_file():
        return
    logger.info("fetching %d file(s) of %s into %s", len(todo), url, local)
    (local / SUCCESS).unlink(missing_ok=True)  # the mirror is not a complete output until the end
    todo = [rel for rel in todo if rel != SUCCESS] + [SUCCESS]
    for rel in stale:
        (local / rel).unlink(missing_ok=True)
        have.pop(key(rel), None)
    for rel in todo:  # _SUCCESS last
        dest = local / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
        try:
            fs.get_file(join(inner, rel), str(part))
            os.replace(part, dest)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        have[key(rel)] = {"remote": token(files[rel]), "local": _local_stat(dest)}
        _save_state(root, state)
    _save_state(root, state)


def sync_output(path: Any, what: str = "output") -> None:
    """Before a stage looks at its output ``path`` (a mirror): bring the mirror in line with the remote.

    The remote complete: mirror it (the stage then skips or refuses as for a local output).
    Nothing at the URL although the mirror's copy was published or fetched: the remote was
    deleted, so the stale copy is dropped (the stage rebuilds). Otherwise (no remote
    ``_SUCCESS``) the mirror stays: a finished run whose upload was cut off is published
    by :meth:`subsetlm._stage.Output.up_to_date`, an unfinished one resumes.
    """
    import shutil

    s = _split(path)
    if s is None:
        return
    root, base_url, parts = s
    url, prefix = join(base_url, *parts), "/".join(parts)
    status = remote_state(path)
    if status == "complete":
        _sync_down(url, Path(path), root, prefix, what)
        return
    have = _load_state(root)["files"]
    if status == "missing" and (Path(path) / SUCCESS).is_file() and f"{prefix}/{SUCCESS}".lstrip("/") in have:
        logger.warning("%s was deleted since this machine last saw it; dropping the local copy %s", url, path)
        shutil.rmtree(path)


def _same_local(p: Path, rec: dict[str, Any] | None) -> bool:
    try:
        return rec is not None and _local_stat(p) == rec.get("local")
    except OSError:
        return False


def _local_files(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                  if p.is_file() and not _skip(p.relative_to(path).as_posix()))


def publish(path: Any) -> None:
    """Upload the finished local output ``path`` to the URL it mirrors, ``_SUCCESS`` last (a no-op elsewhere).

    A file: one upload (atomic per object). A directory: the remote ``_SUCCESS`` is removed
    first, stale remote files next, then the data files (those a killed upload already sent
    are skipped), then ``_SUCCESS``.
    """
    s = _split(path)
    if s is None:
        return
    root, base_url, parts = s
    url = join(base_url, *parts)
    prefix = "/".join(parts)
    fs, inner = filesystem(url)
    path = Path(path)
    state = _load_state(root)
    have = state["files"]
    if path.is_file():
        _put(fs, path, inner, have, prefix or ".")
        _save_state(root, state)
        logger.info("uploaded %s", url)
        return
    local = _local_files(path)
    if SUCCESS not in local:
        raise RemoteError(f"{path}: not a complete output (no {SUCCESS}); nothing to publish to {url}")
    if fs.exists(join(inner, SUCCESS)):
        fs.rm_file(join(inner, SUCCESS))
        have.pop(join(prefix, SUCCESS).lstrip("/"), None)
        _save_state(root, state)
    remote = _remote_files(fs, inner)
    for rel in sorted(set(remote) - set(local)):
        fs.rm_file(join(inner, rel))
        have.pop(join(prefix, rel).lstrip("/"), None)
    data = [rel for rel in local if rel != SUCCESS]
    sent = 0
    for rel in data:
        key = join(prefix, rel).lstrip("/")
        rec = have.get(key)
        if rel in remote and rec is not None and rec.get("remote") == token(remote[rel]) \
                and _same_local(path / rel, rec):
            continue  # this very file is there already (a resumed upload, an unchanged cache)
        _put(fs, path / rel, join(inner, rel), have, key)
        _save_state(root, state)
        sent += 1
    _put(fs, path / SUCCESS, join(inner, SUCCESS), have, join(prefix, SUCCESS).lstrip("/"))
    _save_state(root, state)
    logger.info("published %s: %d of %d file(s) uploaded, %s last", url, sent, len(data), SUCCESS)


def _put(fs: Any, src: Path, dest: str, have: dict[str, Any], key: str) -> None:
    """Upload one file (one object) and record the versions of both copies."""
    parent = dest.rstrip("/").rpartition("/")[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.put_file(str(src), dest)
    have[key] = {"remote": token(fs.info(dest)), "local": _local_stat(src)}
