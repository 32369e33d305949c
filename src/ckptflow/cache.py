"""The content-addressed cache edge: verified blobs by sha256, refs from source identities, resumable parts.

Layout under the root::

    blobs/sha256/<hex>        verified content, named by its digest
    refs/<id-key>/<ver-key>   JSON: identity + version -> blob digest and size
    tmp/<key>.part            downloads in progress (resumable)
    locks/<id-key>.lock       who is downloading an identity (owner pid/host)

Keys are sha256 digests of the identity (and version), so no identity — whatever ``..``, ``/``, NUL or
backslashes it holds — can name a path outside the cache. What to do with an object (``decide``) is a
pure function of the cache's state; the rest of this module is the small set of effects that do it.
Correctness never depends on the lock: it only keeps several processes from downloading the same blob.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from attrs import frozen
from returns.result import Failure, Result, Success

from ckptflow.errors import CacheUnavailable, ChecksumMismatch, Error, NotFound
from ckptflow.events import emit
from ckptflow.sources.base import ObjectInfo

__all__ = [
    "Action",
    "Cache",
    "CacheEntry",
    "CacheState",
    "Fetch",
    "Hit",
    "IdentityLock",
    "LockOwner",
    "PruneReport",
    "Ref",
    "Resume",
    "VerifyReport",
    "admit",
    "blob_path",
    "break_stale_lock",
    "cache_state",
    "decide",
    "default_cache_dir",
    "entries",
    "hash_file",
    "identity_key",
    "identity_lock",
    "ingest_file",
    "is_sha256",
    "lock_is_stale",
    "lookup",
    "lookup_latest",
    "open_cache",
    "part_path",
    "prune",
    "remove_entry",
    "verify",
    "write_ref",
]

_CHUNK = 8 << 20
_HEX = frozenset("0123456789abcdef")
_REF_GRACE = 60.0


def default_cache_dir() -> Path:
    """``$CKPTFLOW_CACHE``, else ``$XDG_CACHE_HOME/ckptflow``, else ``~/.cache/ckptflow``."""
    explicit = os.environ.get("CKPTFLOW_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ckptflow"


@frozen
class Cache:
    """A cache rooted at ``root``; the value only names directories, ``open_cache`` creates them."""

    root: Path

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def locks(self) -> Path:
        return self.root / "locks"


@frozen(kw_only=True)
class Ref:
    """What a source identity at a version resolved to: the blob digest and its size."""

    identity: str
    version: str | None
    sha256: str
    size: int
    created: float


@frozen(kw_only=True)
class CacheEntry:
    """One ref as listed by ``ckptflow cache ls``; ``present`` is False when its blob is gone."""

    identity: str
    version: str | None
    sha256: str
    size: int
    created: float
    path: Path
    present: bool


@frozen(kw_only=True)
class VerifyReport:
    """The result of re-hashing every blob: how many, which were corrupt, which refs dangle."""

    checked: int
    corrupt: tuple[Path, ...] = ()
    dangling: tuple[str, ...] = ()
    removed: bool = False

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.dangling


@frozen(kw_only=True)
class PruneReport:
    """What ``prune`` removed and how many bytes that freed."""

    parts: tuple[Path, ...] = ()
    blobs: tuple[Path, ...] = ()
    refs: tuple[Path, ...] = ()
    locks: tuple[Path, ...] = ()
    freed: int = 0


def is_sha256(text: str) -> bool:
    """True for 64 lowercase hex digits, the only form a blob name takes."""
    return len(text) == 64 and set(text) <= _HEX


def identity_key(*parts: str | None) -> str:
    """A file-name-safe, unambiguous key for an identity (and version)."""
    return hashlib.sha256(json.dumps(list(parts)).encode("utf-8")).hexdigest()


def blob_path(cache: Cache, sha256: str) -> Path:
    """Where the blob with this digest lives (whether or not it exists)."""
    if not is_sha256(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return cache.blobs / sha256


def part_path(cache: Cache, identity: str, version: str | None) -> Path:
    """The resumable download file for an identity at a version."""
    return cache.tmp / f"{identity_key(identity, version)}.part"


def _ref_dir(cache: Cache, identity: str) -> Path:
    return cache.refs / identity_key(identity)


def _ref_file(cache: Cache, identity: str, version: str | None) -> Path:
    return _ref_dir(cache, identity) / f"{identity_key(version)}.json"


def _unavailable(cache: Cache, exc: OSError) -> Failure[Any]:
    detail = exc.strerror or type(exc).__name__
    return Failure(CacheUnavailable(directory=str(cache.root), detail=detail))


def open_cache(root: Path | str) -> Result[Cache, Error]:
    """Create the cache directories under ``root`` and check they can be written."""
    cache = Cache(Path(root).expanduser())
    try:
        for directory in (cache.blobs, cache.refs, cache.tmp, cache.locks):
            directory.mkdir(parents=True, exist_ok=True)
        probe = cache.tmp / f".probe-{os.getpid()}-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return _unavailable(cache, exc)
    return Success(cache)


def hash_file(path: Path, *, limit: int | None = None) -> str:
    """The sha256 hex digest of a file (or of its first ``limit`` bytes); raises ``OSError``."""
    digest = hashlib.sha256()
    remaining = limit
    with path.open("rb") as f:
        while remaining is None or remaining > 0:
            chunk = f.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
            if not chunk:
                break
            digest.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return digest.hexdigest()


def _read_ref(path: Path) -> Ref | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ref = Ref(
            identity=str(data["identity"]),
            version=None if data["version"] is None else str(data["version"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            created=float(data["created"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ref if is_sha256(ref.sha256) else None


def _present(cache: Cache, ref: Ref) -> Path | None:
    path = blob_path(cache, ref.sha256)
    try:
        return path if path.stat().st_size == ref.size else None
    except OSError:
        return None


def _atomic_write(cache: Cache, dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.tmp / f"{dest.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def write_ref(cache: Cache, ref: Ref) -> Result[Path, Error]:
    """Record (atomically) that ``ref.identity`` at ``ref.version`` is the blob ``ref.sha256``."""
    dest = _ref_file(cache, ref.identity, ref.version)
    data = {
        "identity": ref.identity,
        "version": ref.version,
        "sha256": ref.sha256,
        "size": ref.size,
        "created": ref.created,
    }
    try:
        _atomic_write(cache, dest, json.dumps(data, indent=1).encode("utf-8"))
    except OSError as exc:
        return _unavailable(cache, exc)
    return Success(dest)


def lookup(cache: Cache, identity: str, version: str | None) -> Path | None:
    """The cached blob for this identity at this version, if its ref exists and its blob is intact in size."""
    ref = _read_ref(_ref_file(cache, identity, version))
    return None if ref is None or ref.identity != identity else _present(cache, ref)


def _refs_of(cache: Cache, identity: str) -> list[Ref]:
    try:
        files = list(_ref_dir(cache, identity).glob("*.json"))
    except OSError:
        return []
    refs = (_read_ref(f) for f in files)
    return [r for r in refs if r is not None and r.identity == identity]


def lookup_latest(cache: Cache, identity: str) -> Path | None:
    """The most recently cached blob for this identity at any version (offline resolution)."""
    for ref in sorted(_refs_of(cache, identity), key=lambda r: r.created, reverse=True):
        found = _present(cache, ref)
        if found is not None:
            return found
    return None


def _place(cache: Cache, src: Path, sha256: str, *, move: bool) -> Path:
    """Put ``src`` at its blob path atomically: rename when we own it, else copy into tmp/ then rename."""
    dest = blob_path(cache, sha256)
    if move:
        try:
            os.replace(src, dest)
            return dest
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
    staged = cache.tmp / f"{sha256}.{os.getpid()}-{uuid.uuid4().hex}.copy"
    try:
        shutil.copyfile(src, staged)
        os.replace(staged, dest)
    finally:
        staged.unlink(missing_ok=True)
    if move:
        src.unlink(missing_ok=True)
    return dest


def ingest_file(
    cache: Cache,
    src: Path,
    *,
    identity: str,
    version: str | None,
    sha256: str | None = None,
    move: bool = True,
) -> Result[Path, Error]:
    """Hash ``src``, check it against ``sha256`` if given, and place it in blobs/ with a ref.

    With ``move`` the file is ours (a download) and is renamed into place, or deleted on a mismatch;
    without it the file is copied and left untouched.
    """
    try:
        actual = hash_file(src)
    except FileNotFoundError:
        return Failure(NotFound(what=str(src), hint="the file to add to the cache does not exist"))
    except OSError as exc:
        return _unavailable(cache, exc)
    if sha256 is not None and actual != sha256.lower():
        if move:
            src.unlink(missing_ok=True)
        return Failure(
            ChecksumMismatch(what=identity, expected=sha256.lower(), actual=actual, source=identity)
        )
    return admit(cache, src, sha256=actual, identity=identity, version=version, move=move)


def admit(
    cache: Cache, src: Path, *, sha256: str, identity: str, version: str | None, move: bool = True
) -> Result[Path, Error]:
    """Place ``src``, already hashed to ``sha256``, into blobs/ atomically and record its ref."""
    try:
        size = src.stat().st_size
        dest = _place(cache, src, sha256, move=move)
    except OSError as exc:
        return _unavailable(cache, exc)
    ref = Ref(identity=identity, version=version, sha256=sha256, size=size, created=time.time())
    return write_ref(cache, ref).map(lambda _: dest)


# --- deciding what to do, purely -------------------------------------------------------------------


@frozen
class Hit:
    """The blob is in the cache: no body transfer."""

    path: Path


@frozen
class Resume:
    """A partial download of this version exists: continue from ``offset``."""

    offset: int


@frozen
class Fetch:
    """Download from the start (discarding any part)."""


Action = Hit | Resume | Fetch


@frozen(kw_only=True)
class CacheState:
    """What the cache holds for one object: the blob of the expected digest, the ref's blob, a part."""

    known: Path | None = None
    cached: Path | None = None
    cached_sha256: str | None = None
    cached_size: int | None = None
    part_size: int = 0


def decide(state: CacheState, info: ObjectInfo, *, sha256: str | None = None) -> Action:
    """Pooch-style: hit when the content is cached, resume a pinned part, else fetch from the start.

    A ref is a hit only when its size agrees with the store's and its digest with the expected one;
    a part resumes only when the store supports ranges, pins the content (a version, or immutable)
    and announces a size the part does not exceed.
    """
    if state.known is not None:
        return Hit(state.known)
    agrees_size = info.size is None or state.cached_size == info.size
    agrees_digest = sha256 is None or state.cached_sha256 == sha256
    if state.cached is not None and agrees_size and agrees_digest:
        return Hit(state.cached)
    pinned = info.version is not None or info.immutable
    resumable = info.supports_range and pinned and info.size is not None
    if resumable and info.size is not None and 0 < state.part_size <= info.size:
        return Resume(state.part_size)
    return Fetch()


def cache_state(cache: Cache, info: ObjectInfo, *, sha256: str | None = None) -> CacheState:
    """Read, without changing anything, what the cache holds for ``info`` (the input of ``decide``)."""
    known = blob_path(cache, sha256) if sha256 is not None else None
    ref = _read_ref(_ref_file(cache, info.identity, info.version))
    cached = None if ref is None or ref.identity != info.identity else _present(cache, ref)
    try:
        part_size = part_path(cache, info.identity, info.version).stat().st_size
    except OSError:
        part_size = 0
    return CacheState(
        known=known if known is not None and known.is_file() else None,
        cached=cached,
        cached_sha256=ref.sha256 if cached is not None and ref is not None else None,
        cached_size=ref.size if cached is not None and ref is not None else None,
        part_size=part_size,
    )


# --- listing, verifying, pruning -------------------------------------------------------------------


def _all_refs(cache: Cache) -> list[tuple[Path, Ref | None]]:
    return [(f, _read_ref(f)) for f in sorted(cache.refs.glob("*/*.json"))]


def entries(cache: Cache) -> tuple[CacheEntry, ...]:
    """Every ref in the cache with its blob, sorted by identity then newest first."""
    found = [
        CacheEntry(
            identity=ref.identity,
            version=ref.version,
            sha256=ref.sha256,
            size=ref.size,
            created=ref.created,
            path=blob_path(cache, ref.sha256),
            present=_present(cache, ref) is not None,
        )
        for _, ref in _all_refs(cache)
        if ref is not None
    ]
    return tuple(sorted(found, key=lambda e: (e.identity, -e.created)))


def _blobs(cache: Cache) -> list[Path]:
    return sorted(p for p in cache.blobs.iterdir() if p.is_file())


def verify(cache: Cache, *, remove_corrupt: bool = False) -> Result[VerifyReport, Error]:
    """Re-hash every blob; report those whose content no longer matches their name and refs that dangle."""
    try:
        blobs = _blobs(cache)
        corrupt = tuple(p for p in blobs if not is_sha256(p.name) or hash_file(p) != p.name)
        dangling = tuple(
            ref.identity for _, ref in _all_refs(cache) if ref is not None and _present(cache, ref) is None
        )
        if remove_corrupt:
            for path in corrupt:
                path.unlink(missing_ok=True)
    except OSError as exc:
        return _unavailable(cache, exc)
    return Success(
        VerifyReport(checked=len(blobs), corrupt=corrupt, dangling=dangling, removed=remove_corrupt)
    )


def _older(path: Path, age: float, now: float) -> bool:
    try:
        return now - path.stat().st_mtime > age
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def prune(
    cache: Cache,
    *,
    forget: Iterable[str] = (),
    tmp_age: float = 24 * 3600.0,
    now: float | None = None,
) -> Result[PruneReport, Error]:
    """Remove stale parts and locks, refs whose blob is gone, and blobs no ref points at.

    ``forget`` names identities (or blob digests) to drop first, e.g. a checkpoint found corrupt.
    Parts untouched for ``tmp_age`` seconds are stale; fresh refs and blobs are kept for a minute so a
    download finishing at the same moment is not undone.
    """
    clock = time.time() if now is None else now
    dropped = set(forget)
    try:
        refs: list[Path] = []
        live: set[str] = set()
        released: set[str] = set()
        for path, ref in _all_refs(cache):
            gone = ref is None or ref.identity in dropped or ref.sha256 in dropped
            if ref is not None and not gone and _present(cache, ref) is None:
                gone = _older(path, _REF_GRACE, clock)
            if gone:
                refs.append(path)
                path.unlink(missing_ok=True)
                if ref is not None:
                    released.add(ref.sha256)
            elif ref is not None:
                live.add(ref.sha256)
        blobs = [
            p
            for p in _blobs(cache)
            if p.name not in live and (p.name in dropped | released or _older(p, _REF_GRACE, clock))
        ]
        parts = [p for p in sorted(cache.tmp.iterdir()) if p.is_file() and _older(p, tmp_age, clock)]
        locks = [p for p in sorted(cache.locks.glob("*.lock")) if _lock_stale_at(p, clock, tmp_age)]
        locks += [
            p for p in sorted(cache.locks.glob("*.lock.break")) if _older(p, _BREAKER_STALE_AFTER, clock)
        ]
        freed = sum(_size(p) for p in (*blobs, *parts))
        for path in (*blobs, *parts, *locks):
            path.unlink(missing_ok=True)
        for directory in cache.refs.iterdir():
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
    except OSError as exc:
        return _unavailable(cache, exc)
    return Success(
        PruneReport(parts=tuple(parts), blobs=tuple(blobs), refs=tuple(refs), locks=tuple(locks), freed=freed)
    )


def remove_entry(cache: Cache, identity: str) -> Result[PruneReport, Error]:
    """Forget one identity and remove its blobs if nothing else refers to them."""
    return prune(cache, forget=(identity,), tmp_age=float("inf"))


# --- the per-identity lock -------------------------------------------------------------------------


@frozen(kw_only=True)
class LockOwner:
    """Who holds a lock: process id and host, when it was taken, and a token unique to this holder."""

    pid: int
    host: str
    created: float
    token: str


def lock_is_stale(
    owner: LockOwner | None, *, age: float, host: str, owner_alive: bool, stale_after: float
) -> bool:
    """Pure staleness rule: the owner died on this host, or the lock has not been refreshed for too long.

    ``age`` is seconds since the lock was last refreshed; an unreadable lock is judged by age alone.
    """
    if owner is not None and owner.host == host and not owner_alive:
        return True
    return age > stale_after


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_owner(path: Path) -> LockOwner | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockOwner(
            pid=int(data["pid"]),
            host=str(data["host"]),
            created=float(data["created"]),
            token=str(data["token"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _lock_stale_at(path: Path, now: float, stale_after: float) -> bool:
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return False
    owner = _read_owner(path)
    alive = owner is not None and owner.host == socket.gethostname() and _pid_alive(owner.pid)
    return lock_is_stale(
        owner, age=age, host=socket.gethostname(), owner_alive=alive, stale_after=stale_after
    )


class IdentityLock:
    """A held lock; ``refresh`` is the heartbeat that keeps it from looking stale during a long download."""

    def __init__(self, path: Path, owner: LockOwner) -> None:
        self.path = path
        self.owner = owner
        self._refreshed = time.monotonic()

    def refresh(self, *, every: float = 5.0) -> None:
        if time.monotonic() - self._refreshed >= every:
            self._refreshed = time.monotonic()
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        held = _read_owner(self.path)
        if held is not None and held.token == self.owner.token:
            self.path.unlink(missing_ok=True)


def _try_acquire(path: Path) -> IdentityLock | None:
    owner = LockOwner(pid=os.getpid(), host=socket.gethostname(), created=time.time(), token=uuid.uuid4().hex)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"pid": owner.pid, "host": owner.host, "created": owner.created, "token": owner.token}, f)
    return IdentityLock(path, owner)


_BREAKER_STALE_AFTER = 30.0
"""Seconds after which a breaker file (``<lock>.break``) is presumed left by a crashed breaker."""


def break_stale_lock(path: Path, *, stale_after: float, now: float | None = None) -> bool:
    """Remove the lock at ``path`` if it is stale; True when this call removed a stale lock.

    Breaking is itself serialised by a second exclusive file (``<lock>.break``): only its holder judges
    the lock again and removes it, so of several processes (or threads) that saw the same stale lock,
    one removes it and the others find the breaker taken and go back to waiting. The lock a fresh
    holder created in the meantime is never touched: nobody else removes a lock while it is not stale.
    A breaker older than 30 s (its owner died between two system calls) is removed.
    """
    breaker = path.with_name(f"{path.name}.break")
    try:
        os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - breaker.stat().st_mtime > _BREAKER_STALE_AFTER:
                breaker.unlink()
        return False
    try:
        if not _lock_stale_at(path, time.time() if now is None else now, stale_after):
            return False
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    finally:
        breaker.unlink(missing_ok=True)


def _describe_owner(path: Path) -> dict[str, Any]:
    owner = _read_owner(path)
    return {} if owner is None else {"holder_pid": owner.pid, "holder_host": owner.host}


@contextlib.contextmanager
def identity_lock(
    cache: Cache,
    identity: str,
    *,
    wait: float | None = None,
    stale_after: float = 300.0,
    poll: float = 0.1,
) -> Iterator[IdentityLock | None]:
    """Hold the download lock for ``identity``, waiting while a live holder refreshes it.

    Yields the lock, or None when ``wait`` seconds passed (the caller then works without it; the
    cache stays correct, the work may just be duplicated). Stale locks (dead owner on this host, or no
    heartbeat for ``stale_after`` seconds) are broken.
    """
    path = cache.locks / f"{identity_key(identity)}.lock"
    started = time.monotonic()
    waiting = False
    lock = _try_acquire(path)
    while lock is None:
        if _lock_stale_at(path, time.time(), stale_after):
            holder = _describe_owner(path)
            if break_stale_lock(path, stale_after=stale_after):
                emit("cache.lock_broken", stage="fetch", identity=identity, **holder)
        elif wait is not None and time.monotonic() - started >= wait:
            emit("cache.lock_wait_expired", stage="fetch", identity=identity, waited=wait)
            break
        else:
            if not waiting:
                waiting = True
                emit("cache.lock_wait", stage="fetch", identity=identity, **_describe_owner(path))
            time.sleep(poll)
        lock = _try_acquire(path)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
