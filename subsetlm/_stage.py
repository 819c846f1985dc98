"""The stage contract: one config dataclass in, one output written atomically, skip or refuse on re-runs.

Every stage of subsetlm (embed, index, select, retrieve, export, train, eval, demo) is a
function ``run(cfg, progress=False) -> result`` over a config dataclass. Its output is
described by an :class:`Output`: a path, what it is, and an *identity* (the config fields
that change the result, plus the fingerprints of the inputs). The contract:

1. ``Output.up_to_date(force)`` before any work:

   ==========================================  =========================================
   what is at ``path``                         result
   ==========================================  =========================================
   nothing                                     ``False``: build it
   complete (``_SUCCESS``), same identity      ``True``: skip (unless ``force``)
   complete, another identity                  ``FileExistsError`` naming the first
                                               differing field (``force`` replaces it)
   something else (not a complete output)      ``FileExistsError`` (``force`` replaces it)
   ==========================================  =========================================

2. ``with Output.writing(force=..., resume=...) as tmp:`` writes under ``PATH.tmp`` and
   renames it to ``PATH`` at the end, ``_SUCCESS`` last; an exception leaves ``PATH``
   untouched. With ``resume=True`` an unfinished ``PATH.tmp`` with the same identity is
   kept (the stage skips its finished parts); one with another identity is refused
   unless ``force``. A run that stopped on an error (not a kill or Ctrl-C) leaves
   ``PATH.tmp/_FAILED``; a re-run with another identity (e.g. the corpus fixed) discards such a
   run with a warning instead of refusing it.
3. One writer per output: ``up_to_date`` and ``writing`` take an ``flock`` on ``PATH.lock``
   (beside ``PATH.tmp``; removed when the write ends, ignored when left by a killed process),
   so a second process writing the same output fails at once with "another process (pid N)
   is writing PATH" (caches inside a store, ``on_mismatch="rebuild"``, wait for it instead).
4. Single-file outputs (``kind="file"``: eval's RESULTS.json) are written to a temporary
   name and renamed; their identity lives inside the file.
5. An output at a URL (``--out s3://bucket/x``; :func:`check_out` maps it to a local mirror,
   :mod:`subsetlm._mirror`) is checked against the remote first (a complete remote output
   is mirrored, then skipped or refused as above), written locally as any output, and
   published at the end, ``_SUCCESS`` last; a finished run whose upload was cut off is
   published by the next ``up_to_date``.

:class:`Stage` binds a command name to its config class, run function and a one-line
summary of its result, which is all the CLI uses (``cli.py`` holds no logic of its own).

Example
-------
>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> out = Output(root / "sub", {"budget": "0.25"}, what="subset")
>>> out.up_to_date(force=False)
False
>>> with out.writing(force=False) as tmp:
...     _ = (tmp / "data.txt").write_text("x")
>>> out.up_to_date(force=False)
True
>>> Output(root / "sub", {"budget": "0.5"}, what="subset").up_to_date(force=False)
Traceback (most recent call last):
...
FileExistsError: ... holds a subset with a different config (budget: "0.25" != "0.5"); pass --force to replace it or choose another --out
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from subsetlm._io import (SUCCESS, _publish, acquire_lock, dumps_json, is_complete, output_lock, read_json,
                          release_lock, tmp_path_for, write_json_atomic)

logger = logging.getLogger(__name__)

IDENTITY_FILE = "stage.json"  # inside PATH.tmp while a resumable stage runs
FAILED_FILE = "_FAILED"  # inside PATH.tmp: the run stopped on an error (its message)


def portable(obj: Any) -> Any:
    """``obj`` as it reads back from a manifest (JSON round trip: tuples -> lists, numpy -> Python)."""
    return json.loads(dumps_json(obj))


def identity(cfg: Any, drop: Iterable[str] = ()) -> dict[str, Any]:
    """A config dataclass as an identity dict: every field except ``drop`` and the class's ``VOLATILE``.

    ``VOLATILE`` (a class attribute) names the fields that say where or how a stage runs
    (output path, ``force``, worker counts, backend), not what it produces.
    """
    skip = set(drop) | set(getattr(cfg, "VOLATILE", ()))
    return portable({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in skip})


def diff(old: Any, new: Any, prefix: str = "") -> str:
    """Short description of the first differing key of two nested dicts.

    >>> diff({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}})
    'b.c: 2 != 3'
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        a, b = (dumps_json(x).strip().replace("\n", " ")[:80] for x in (old, new))
        return f"{prefix or 'config'}: {a} != {b}"
    for k in sorted(set(old) | set(new), key=str):
        if old.get(k) != new.get(k):
            return diff(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
    return "no difference"


def manifest_config(path: Path) -> Any:
    """The ``config`` recorded in ``path/manifest.json`` (None without one): a ``read_identity``."""
    man = Path(path) / "manifest.json"
    return read_json(man).get("config") if man.is_file() else None


@dataclass
class Output:
    """One stage output and its identity.

    Parameters
    ----------
    path : the output directory (or file, ``kind="file"``).
    identity : JSON-able dict of everything that changes the result (config fields and
        input fingerprints); compared with what a finished output recorded.
    what : noun for messages ("subset", "embedding store", "kNN graph", "run", ...).
    read_identity : ``path -> identity`` of a complete output, for stages whose own files
        record it (e.g. :func:`manifest_config`: the ``config`` of ``path/manifest.json``).
        Default: the ``stage.json`` that :meth:`writing` leaves in the output (for
        ``kind="file"``: the ``config`` key of the JSON file).
    kind : ``"dir"`` (written as ``PATH.tmp``, renamed at the end), ``"inplace"`` (a
        directory written in place, ``_SUCCESS`` last: training runs with checkpoints),
        or ``"file"`` (one JSON file written through a temporary name).
    flag : the option that replaces an output (named in messages).
    on_mismatch : ``"refuse"`` (default: a finished output of another identity is an error
        unless ``force``) or ``"rebuild"`` (caches kept inside another output, e.g. a store's
        kNN graphs and partitions: a stale one is rebuilt, with a warning).
    """

    path: Path
    identity: Any
    what: str = "output"
    read_identity: Callable[[Path], Any] | None = None
    kind: str = "dir"
    flag: str = "--force"
    on_mismatch: str = "refuse"

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.identity = portable(self.identity)
        if self.kind not in ("dir", "inplace", "file"):
            raise ValueError(f"Output.kind={self.kind!r}; expected dir, inplace or file")
        if self.on_mismatch not in ("refuse", "rebuild"):
            raise ValueError(f"Output.on_mismatch={self.on_mismatch!r}; expected refuse or rebuild")

    @property
    def shown(self) -> str:
        """The path as the user gave it (the URL of an output at a URL) for messages."""
        from subsetlm._mirror import display

        return display(self.path)

    @property
    def tmp(self) -> Path:
        """``PATH.tmp``: where a ``dir`` output is written before the rename."""
        return tmp_path_for(self.path)

    def complete(self) -> bool:
        """True when a finished output is at ``path``."""
        if self.kind == "file":
            return self.path.is_file()
        return is_complete(self.path)

    def recorded(self) -> Any:
        """The identity a finished output recorded (None if it recorded none or is unreadable)."""
        try:
            if self.read_identity is not None:
                return portable(self.read_identity(self.path))
            if self.kind == "file":
                data = read_json(self.path)
                return data.get("config") if isinstance(data, dict) else None
            return read_json(self.path / IDENTITY_FILE)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _claim(self) -> None:
        """Take this output's lock (kept until :meth:`writing` ends, or this object is dropped)."""
        if self.kind == "file":
            return
        lock = acquire_lock(self.path, wait=self.on_mismatch == "rebuild")
        if lock is not None:
            weakref.finalize(self, release_lock, lock)
        self._lock = lock

    def release(self) -> None:
        """Give up the claim :meth:`up_to_date` took (the stage will not write after all)."""
        release_lock(getattr(self, "_lock", None))

    def up_to_date(self, force: bool) -> bool:
        """True: a finished output with this identity exists (skip the stage). See the module docstring.

        Another process writing ``path`` raises :class:`~subsetlm._io.OutputLockedError` (a
        ``FileExistsError``); when this returns False, this process holds the output's lock until
        :meth:`writing` ends.
        """
        from subsetlm._mirror import remote_state, sync_output

        self._claim()
        try:
            if not force and self.kind != "file":
                sync_output(self.path, self.what)  # an output at a URL: the remote is the truth
            done = self._up_to_date(force)
            if done and remote_state(self.path) not in (None, "complete"):
                _publish(self.path)  # finished here, but its upload was cut off: finish it
        except BaseException:
            self.release()
            raise
        if done:
            self.release()
        return done

    def _up_to_date(self, force: bool) -> bool:
        if not self.path.exists():
            return False
        if force:
            return False
        if self.complete():
            have = self.recorded()
            if have == self.identity:
                logger.info("%s %s is complete with this config; skipping (pass %s to redo)", self.what,
                            self.shown, self.flag)
                return True
            if have is not None and self.on_mismatch == "rebuild":
                logger.warning("%s %s is stale (%s); rebuilding", self.what, self.path, diff(have, self.identity))
                return False
            if have is not None:
                raise FileExistsError(f"{self.shown} holds {_a(self.what)} with a different config "
                                      f"({diff(have, self.identity)}); pass {self.flag} to replace it or choose "
                                      f"another --out")
        if self.kind == "inplace":  # an unfinished in-place output: the stage decides (resume or refuse)
            return False
        raise FileExistsError(f"{self.shown} exists but is not {_a('complete ' + self.what)} written by this stage; "
                              f"remove it, choose another --out, or pass {self.flag} to replace it")

    def _records_itself(self) -> bool:
        return self.kind == "inplace" and self.read_identity is not None

    def check_resumable(self, where: Path, force: bool) -> bool:
        """True when ``where`` holds an unfinished run of this identity (resume it).

        A run of another identity is refused unless ``force`` (then it is discarded).
        """
        if self._records_itself():  # an in-place output whose own files record the identity (a run's config.json)
            have = self.recorded()
            if have is None:
                return False
        else:
            f = where / IDENTITY_FILE
            if not f.is_file():
                return False
            try:
                have = read_json(f)
            except (OSError, ValueError):
                have = None
        if have == self.identity:
            return True
        failed = where / FAILED_FILE
        if not self._records_itself() and failed.is_file():
            if not getattr(self, "_discard_logged", False):
                logger.warning("discarding the unfinished %s in %s: it stopped on an error (%s) and was run with "
                               "another config (%s); starting over", self.what, where,
                               failed.read_text(errors="replace").strip()[:200], diff(have, self.identity))
                self._discard_logged = True
            return False
        if not force:
            raise FileExistsError(f"{where} holds {_a('unfinished ' + self.what)} with a different config "
                                  f"({diff(have, self.identity)}); resume it with the same options, or pass "
                                  f"{self.flag} to discard it and start over")
        return False

    @contextlib.contextmanager
    def writing(self, *, force: bool, resume: bool = False) -> Iterator[Path]:
        """Yield the directory to write into; on success it becomes ``path`` with ``_SUCCESS`` last.

        ``kind="dir"``: ``PATH.tmp``; kept across a failure when ``resume`` (the next run of
        the same identity continues it), removed otherwise. The identity is written to
        ``stage.json`` first and stays in the output unless ``read_identity`` is given (the
        stage records it itself). ``kind="inplace"``: ``PATH`` itself (``_SUCCESS`` removed
        first); with ``read_identity`` the stage's own file (a run's ``config.json``) is the
        record a resume is checked against, and no ``stage.json`` is written. Not for ``kind="file"`` (use :meth:`write_json`).
        """
        if self.kind == "file":
            raise TypeError("a file output is written with Output.write_json")
        if self.path.exists() and not force and self.kind == "dir" and self.on_mismatch == "refuse":
            raise FileExistsError(f"{self.shown} already exists; pass {self.flag} to replace it")
        with output_lock(self.path, wait=self.on_mismatch == "rebuild"):
            if self.path.exists() and not force and self.kind == "dir" and self.on_mismatch == "refuse":
                same = self.complete() and self.recorded() == self.identity
                raise FileExistsError(f"{self.shown} was written by another process while this one ran"
                                      + (", with the same config: it is up to date (re-run to use it)" if same
                                         else f"; pass {self.flag} to replace it"))
            with self._writing(force, resume) as where:
                yield where

    @contextlib.contextmanager
    def _writing(self, force: bool, resume: bool) -> Iterator[Path]:
        where = self.path if self.kind == "inplace" else self.tmp
        keep = resume and where.is_dir() and self.check_resumable(where, force)
        if where.exists() and not keep:
            if self.kind == "inplace":
                shutil.rmtree(where)
            else:
                _remove(where)
        where.mkdir(parents=True, exist_ok=True)
        (where / SUCCESS).unlink(missing_ok=True)
        (where / FAILED_FILE).unlink(missing_ok=True)
        if not self._records_itself():
            write_json_atomic(where / IDENTITY_FILE, self.identity)
        try:
            yield where
        except BaseException as e:
            if not resume and self.kind == "dir":
                shutil.rmtree(where, ignore_errors=True)
            elif self.kind == "dir" and isinstance(e, Exception):  # kept for a resume, but it failed: mark it
                with contextlib.suppress(OSError):
                    (where / FAILED_FILE).write_text(f"{type(e).__name__}: {str(e)[:500]}\n")
            raise
        if self.read_identity is not None:  # the stage's own files record the identity
            (where / IDENTITY_FILE).unlink(missing_ok=True)
        (where / SUCCESS).write_text("")
        if self.kind == "dir":
            if self.path.exists():
                _remove(self.path)
            os.replace(where, self.path)
        _publish(self.path)

    def write_json(self, data: dict[str, Any]) -> None:
        """Write a ``kind="file"`` output (its identity under ``config``), atomically."""
        if self.kind != "file":
            raise TypeError("write_json is for kind='file' outputs")
        write_json_atomic(self.path, {**data, "config": self.identity})
        _publish(self.path)


def _a(what: str) -> str:
    """``what`` with its indefinite article ("a subset", "an embedding store")."""
    return ("an " if what[:1].lower() in "aeiou" else "a ") + what


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def check_out(out: Any, flag: str = "--out") -> Path:
    """The output path of a stage, refused with a clear message when missing or unusable.

    Raises ``ValueError`` when ``out`` is empty, or when a parent of it is a file. A URL
    (``s3://bucket/x``, any fsspec protocol but ``file://``) gives its local mirror
    (:func:`subsetlm._mirror.local_path`), published when the stage finishes; a missing
    fsspec implementation (``pip install s3fs``) is refused here, before any work.
    """
    from subsetlm._remote import is_url, local_or_url

    if not out:
        raise ValueError(f"no output given: pass {flag} PATH")
    if is_url(out):
        from subsetlm._mirror import local_path

        return local_path(str(out))
    p = Path(local_or_url(out))
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag} {p}: {parent} is a file, not a directory; choose another {flag}")
            break
    return p


@dataclass(frozen=True)
class Stage:
    """A CLI command bound to its stage: ``cli`` builds ``config`` and prints ``summary(run(cfg))``.

    Attributes
    ----------
    name : the command (``select``).
    config : the config dataclass.
    run : ``run(cfg, progress=False) -> result``.
    summary : ``summary(result) -> str``, the line the CLI prints.
    """

    name: str
    config: type
    run: Callable[..., Any]
    summary: Callable[[Any], str]
