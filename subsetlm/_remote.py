"""fsspec URLs: corpora, stores, subsets and exports at ``s3://``, ``gs://``, ``hf://``, ``memory://`` ...

Anything with a protocol (``PROTO://...``) other than ``file://`` goes through `fsspec
<https://filesystem-spec.readthedocs.io>`_; local paths (and ``file://`` URLs, turned into
local paths) stay on the plain ``open`` / ``os`` fast path. This module holds the read side
used by the corpus readers (:class:`RemotePath`: the few ``pathlib`` methods they need);
:mod:`subsetlm._mirror` stages outputs locally and publishes them (``_SUCCESS`` last), and
mirrors remote stores and subsets into the cache to read them.

The protocol's package must be installed (``s3fs`` for ``s3://``, ``gcsfs`` for ``gs://``;
``hf://`` comes with ``huggingface_hub``); credentials and endpoints come from the usual
places of that package (``AWS_*`` variables, ``~/.aws``, fsspec's ``FSSPEC_S3_*`` config).

Example
-------
>>> is_url("s3://bucket/corpus.jsonl.gz"), is_url("data/corpus.jsonl"), is_url("file:///tmp/x")
(True, False, False)
>>> import fsspec
>>> fsspec.filesystem("memory").pipe("/doc/a.jsonl", b'{"text": "x"}\\n')
>>> p = RemotePath("memory://doc/a.jsonl")
>>> p.name, p.is_file(), p.read_bytes()
('a.jsonl', True, b'{"text": "x"}\\n')
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

__all__ = ["RemoteError", "is_url", "local_or_url", "filesystem", "RemotePath", "as_path", "cache_root", "SUCCESS"]

SUCCESS = "_SUCCESS"
"""The marker every finished output holds, written (and uploaded) last (re-exported by :mod:`subsetlm._io`)."""

_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# protocol -> the package that implements it (what the error tells the user to install)
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "az": "adlfs",
             "abfss": "adlfs", "hf": "huggingface_hub", "http": "aiohttp", "https": "aiohttp"}


class RemoteError(ValueError):
    """A URL that cannot be used: its fsspec implementation is missing, or it is unreachable or incomplete."""


def protocol(s: Any) -> str | None:
    """The protocol of a URL (``"s3"``), or None for a plain path."""
    m = _PROTOCOL.match(str(s))
    return m.group(1).lower() if m else None


def is_url(s: Any) -> bool:
    """True for a URL that goes through fsspec (any ``PROTO://`` except ``file://``)."""
    return isinstance(s, RemotePath) or protocol(s) not in (None, "file")


def local_or_url(s: Any) -> str:
    """``s`` as a string, with a ``file://`` URL turned into its local path."""
    s = str(s)
    if protocol(s) == "file":
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(s).path)
    return s


def filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` of ``url``; a missing implementation names its package."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - installed with datasets
        raise RemoteError(f"{url}: reading URLs needs fsspec: pip install fsspec") from None
    proto = protocol(url) or "file"
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        pkg = _PACKAGES.get(proto)
        hint = f"pip install {pkg}" if pkg else "install the fsspec implementation of this protocol"
        raise RemoteError(f"{url}: {proto}:// URLs need the {pkg or proto} package, which is not installed "
                          f"({e}); {hint}") from None
    except ValueError as e:
        raise RemoteError(f"{url}: not a usable URL ({e}); known protocols: s3://, gs://, hf://, memory://, "
                          f"or a local path") from None


def cache_root() -> Path:
    """``$SUBSETLM_CACHE`` or ``~/.cache/subsetlm`` (not created: :func:`subsetlm._io.cache_dir` creates it)."""
    return Path(os.environ.get("SUBSETLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "subsetlm"))


def url_hash(url: str) -> str:
    """A short stable key of a URL (cache directory names)."""
    return hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:16]


def join(url: str, *parts: str) -> str:
    """``url`` with posix ``parts`` appended."""
    out = url.rstrip("/")
    for p in parts:
        if p:
            out = f"{out}/{p.strip('/')}"
    return out


class RemotePath:
    """A file or folder at an fsspec URL, with the ``pathlib`` methods the corpus readers use.

    ``str()`` is the URL (what error messages and ``FILE:LINE`` locations show); there is
    no ``__fspath__``, so it can never be opened as a local path by mistake. Picklable (the
    URL only), so a Ray task can read it.
    """

    is_remote = True

    def __init__(self, url: str) -> None:
        u = str(url)
        self.url = u.rstrip("/") if not u.endswith("://") else u

    def _fs(self) -> tuple[Any, str]:
        return filesystem(self.url)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __truediv__(self, other: str) -> "RemotePath":
        return RemotePath(join(self.url, str(other)))

    @property
    def name(self) -> str:
        return posixpath.basename(self._fs()[1].rstrip("/"))

    def exists(self) -> bool:
        fs, p = self._fs()
        return bool(fs.exists(p))

    def is_file(self) -> bool:
        fs, p = self._fs()
        return bool(fs.isfile(p))

    def is_dir(self) -> bool:
        fs, p = self._fs()
        return bool(fs.isdir(p))

    def open(self, mode: str = "rb") -> BinaryIO:
        fs, p = self._fs()
        return fs.open(p, mode)

    def read_bytes(self) -> bytes:
        fs, p = self._fs()
        return bytes(fs.cat_file(p))

    def stat(self) -> SimpleNamespace:
        """``st_size`` and ``token`` (size and the store's change marker: ETag, mtime or creation time)."""
        fs, p = self._fs()
        info = fs.info(p)
        return SimpleNamespace(st_size=int(info.get("size") or 0), token=token(info))

    def files(self) -> list[str]:
        """Every file under this folder, as sorted posix paths relative to it."""
        fs, p = self._fs()
        root = p.rstrip("/")
        rel = [f[len(root):].lstrip("/") for f in fs.find(root, withdirs=False)]
        return sorted(r for r in rel if r)


def token(info: dict[str, Any]) -> str:
    """What says an object changed, from an fsspec ``info`` dict: size plus ETag / mtime / creation time."""
    mark = next((info[k] for k in ("ETag", "etag", "md5Hash", "crc32c", "mtime", "LastModified", "last_modified",
                                   "created") if info.get(k) is not None), "")
    if hasattr(mark, "timestamp"):  # a datetime here, a float there (fsspec's memory fs: info vs find)
        mark = mark.timestamp()
    return f"{info.get('size')}:{mark}"


def as_path(s: Any) -> Any:
    """A :class:`RemotePath` for a URL, else a local ``pathlib.Path`` (``file://`` URLs too, ``~`` expanded)."""
    if isinstance(s, RemotePath):
        return s
    if is_url(s):
        return RemotePath(str(s))
    return Path(local_or_url(s)).expanduser()


def sha256_stream(fh: Any, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of what a binary file object yields from its position to the end, read in chunks."""
    h = hashlib.sha256()
    while True:
        b = fh.read(chunk)
        if not b:
            break
        h.update(b)
    return h.hexdigest()


def sha256(path: RemotePath, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a remote file's bytes, streamed (what :func:`subsetlm._io.sha256_file` is locally)."""
    with path.open("rb") as fh:
        return sha256_stream(fh, chunk)
