"""The local source: bare paths and ``file://`` URIs, used in place (never copied into the cache)."""

from __future__ import annotations

from pathlib import Path

from returns.result import Failure, Result, Success

from ckptflow.cache import hash_file
from ckptflow.config.schema import LocalSource
from ckptflow.config.uris import local_from_uri
from ckptflow.errors import AccessDenied, ChecksumMismatch, Error, NotFound
from ckptflow.sources.base import FetchSettings, SourceSpec

__all__ = ["SOURCE", "fetch_local", "local_from_uri"]


def fetch_local(config: LocalSource, settings: FetchSettings) -> Result[Path, Error]:
    """The file's own path once it exists (and, with ``settings.sha256``, has that digest)."""
    path = Path(config.path).expanduser()
    if path.is_dir():
        return Failure(NotFound(what=str(path), hint="it is a directory; name the checkpoint file inside it"))
    if not path.is_file():
        return Failure(NotFound(what=str(path), hint="check the path; no such file"))
    if settings.sha256:
        expected = settings.sha256.strip().lower()
        try:
            actual = hash_file(path)
        except PermissionError:
            return Failure(AccessDenied(what=str(path), detail="the file is not readable"))
        if actual != expected:
            return Failure(
                ChecksumMismatch(
                    what=str(path), expected=expected, actual=actual, discarded=False, source=str(path)
                )
            )
    return Success(path.resolve())


SOURCE = SourceSpec(
    name="local",
    schemes=("file",),
    config_type=LocalSource,
    from_uri=local_from_uri,
    fetch=fetch_local,
    description="local paths and file:// URIs, used in place without copying",
)
