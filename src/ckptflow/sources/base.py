"""The contract between a storage backend and the one download engine.

A backend (HTTP, S3, GCS, Azure) only knows how to describe an object (``stat``) and how to open a
byte range of it (``open``). Everything else — cache lookup, resume, retry with backoff, hashing,
checksum verification, atomic placement — is done once, by the engine in ``ckptflow.sources.transfer``,
for every backend. Backends report transient trouble as a ``Transient`` failure (or by raising
``Interrupted`` while a body is being read) so the engine can retry; every other failure is a final
``ckptflow.errors`` value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from attrs import field, frozen
from returns.result import Result

from ckptflow.errors import Error

__all__ = [
    "Body",
    "FetchSettings",
    "Interrupted",
    "ObjectInfo",
    "Progress",
    "RemoteObject",
    "SourceSpec",
    "Transient",
    "TransferError",
]

Progress = Callable[[int, int | None], None]
"""Progress callback: ``(bytes_done, total_or_None)``."""


@frozen(kw_only=True)
class ObjectInfo:
    """What a backend knows of an object before reading it.

    ``identity`` names the object without secrets (e.g. ``s3://bucket/key``); ``version`` pins the
    content (ETag, VersionId, generation, run id); ``checksums`` holds the store's own digests by
    algorithm (``md5`` hex, ``crc32c`` base64) for verification when no sha256 is given.
    """

    identity: str
    size: int | None
    version: str | None = None
    supports_range: bool = True
    checksums: Mapping[str, str] = field(factory=dict)
    immutable: bool = False


@frozen(kw_only=True)
class Transient:
    """A failure worth retrying (connect/read error, 429, 5xx), with the server's ``Retry-After``."""

    cause: str
    retry_after: float | None = None


TransferError = Error | Transient


class Interrupted(Exception):
    """Raised by a ``Body`` iterator when the connection fails mid-body; the engine retries."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class Body(Protocol):
    """An open response body. ``start`` is the offset it really begins at (0 when Range was ignored)."""

    start: int

    def chunks(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class RemoteObject(Protocol):
    """One object in a store, bound to its client (httpx client, botocore client, ...).

    ``identity`` names the object without secrets; the engine keys the cache by it, so offline mode
    can resolve the object before making any request.
    """

    @property
    def identity(self) -> str: ...

    def stat(self) -> Result[ObjectInfo, TransferError]:
        """One cheap request (HEAD / head_object) describing the object."""
        ...

    def open(self, info: ObjectInfo, start: int = 0, end: int | None = None) -> Result[Body, TransferError]:
        """Open bytes ``[start, end)`` pinned to ``info.version`` (If-Range / If-Match)."""
        ...


@frozen(kw_only=True)
class FetchSettings:
    """How to fetch, independent of where from: cache location, expected digest, modes, test hooks.

    ``transport`` lets tests hand an ``httpx`` transport (or a backend its own client) to the edge;
    ``options`` carries backend-specific extras without widening this value for each backend.
    """

    cache_dir: Path
    sha256: str | None = None
    progress: Progress | bool | None = None
    offline: bool = False
    verify: bool = False
    timeout: float = 30.0
    transport: Any = None
    options: Mapping[str, Any] = field(factory=dict)


@frozen(kw_only=True)
class SourceSpec:
    """A registered backend: its config ``type``, URI schemes, and how to parse a URI and fetch.

    ``fetch`` returns the verified local path (in the cache, or the file itself for local sources).
    """

    name: str
    schemes: tuple[str, ...]
    config_type: type
    from_uri: Callable[[str], Result[Any, Error]]
    fetch: Callable[[Any, FetchSettings], Result[Path, Error]]
    description: str = ""
