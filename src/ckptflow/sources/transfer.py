"""The one download engine every remote backend uses.

``download(obj, settings)``: stat (with retries) → cache decision (hit / resume / fetch) → stream into a
resumable ``tmp/<key>.part`` while hashing → retry with backoff on ``Transient``/``Interrupted``, resuming
from the current offset pinned to the object's version → verify size, sha256 (or the store's md5/crc32c)
→ atomic rename into ``blobs/`` plus a ref. Offline mode (``settings.offline`` or ``CKPTFLOW_OFFLINE=1``)
answers from refs alone without any request.

Large objects whose store answers ranges go in parallel parts (``ckptflow.sources.parts``): each part is
a ranged ``open(info, start, end)`` pinned to the version, written at its offset into the preallocated
part file, retried on its own; a ledger beside the part file lists the finished parts so a later run
fetches only the missing ones; the digests follow the finished prefix. A store that ignores Range
sends the download back to one stream.

Backend-independent knobs in ``settings.options``: ``retry`` (a ``RetryPolicy``), ``lock_wait`` (seconds
to wait for another process downloading the same object; default: while it is alive) and
``lock_stale_after`` (seconds without a heartbeat after which a lock is broken), and the parallel knobs
``parallel_threshold``, ``part_size`` and ``max_concurrency`` (see ``parts.parallel_settings``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import logging
import os
import sys
import threading
import uuid
from pathlib import Path
from typing import IO, Any, Protocol

import attrs
from returns.result import Failure, Result, Success

from ckptflow.cache import (
    Cache,
    Hit,
    IdentityLock,
    Resume,
    admit,
    blob_path,
    cache_state,
    decide,
    hash_file,
    identity_lock,
    is_sha256,
    lookup_latest,
    open_cache,
    part_path,
)
from ckptflow.errors import CacheUnavailable, ChecksumMismatch, Error, InvalidConfig, NotFound
from ckptflow.events import emit
from ckptflow.sources.base import (
    Body,
    FetchSettings,
    Interrupted,
    ObjectInfo,
    RemoteObject,
    TransferError,
    Transient,
)
from ckptflow.sources.parts import (
    Changed,
    Done,
    Ledger,
    ParallelSettings,
    Part,
    PartsDownload,
    PartsOutcome,
    PrefixHasher,
    RangeIgnored,
    Stopped,
    contiguous_prefix,
    ledger_path,
    parallel_settings,
    parts_within,
    plan_parts,
    read_ledger,
    record_part,
    remove_ledger,
    wants_parallel,
    write_ledger,
)
from ckptflow.sources.progress import progress_sink
from ckptflow.sources.retry import RetryPolicy, policy_from, with_retries

try:
    _crc32c_module: Any = importlib.import_module("google_crc32c")
except ImportError:  # optional: crc32c checksums are then not verified
    _crc32c_module = None

if sys.platform != "win32":
    import fcntl

__all__ = ["download", "is_offline", "log", "log_event", "resolve_offline", "use_cached"]

log = logging.getLogger("ckptflow")
_OFFLINE_VALUES = frozenset({"1", "true", "yes", "on"})
_READ = 8 << 20


def is_offline(settings: FetchSettings) -> bool:
    """Offline when the settings say so or ``CKPTFLOW_OFFLINE`` is set to 1/true/yes/on."""
    return settings.offline or os.environ.get("CKPTFLOW_OFFLINE", "").strip().lower() in _OFFLINE_VALUES


def log_event(name: str, identity: str, **data: Any) -> None:
    """Log one engine event (``record.ckptflow_event``/``ckptflow_data``); ``events.collect`` sees it."""
    emit(name, stage="fetch", identity=identity, **data)


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


class _Crc32c:
    def __init__(self) -> None:
        self._checksum: Any = _crc32c_module.Checksum()

    def update(self, data: bytes | memoryview, /) -> None:
        self._checksum.update(data if isinstance(data, bytes) else bytes(data))

    def result(self) -> str:
        return base64.b64encode(self._checksum.digest()).decode("ascii")


class _Digests:
    """sha256 always; md5 and crc32c too when the store announced them (so they can be checked)."""

    def __init__(self, info: ObjectInfo) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False) if "md5" in info.checksums else None
        self.crc32c = _Crc32c() if "crc32c" in info.checksums and _crc32c_module is not None else None

    def update(self, data: bytes | memoryview) -> None:
        hashers: list[_Hasher | None] = [self.sha256, self.md5, self.crc32c]
        for hasher in hashers:
            if hasher is not None:
                hasher.update(data)

    def mismatch(self, info: ObjectInfo) -> tuple[str, str, str] | None:
        """The first store checksum that disagrees, as ``(algorithm, expected, actual)``."""
        computed = {
            "md5": self.md5.hexdigest() if self.md5 is not None else None,
            "crc32c": self.crc32c.result() if self.crc32c is not None else None,
        }
        for algorithm, expected in info.checksums.items():
            actual = computed.get(algorithm)
            wanted = expected.lower() if algorithm == "md5" else expected
            if actual is not None and actual != wanted:
                return algorithm, wanted, actual
        return None


def _exclusive(f: IO[bytes]) -> bool:
    """Try to hold the part file exclusively (released by the OS if this process dies)."""
    if sys.platform == "win32":
        return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _open_part(path: Path) -> tuple[IO[bytes], Path, bool]:
    """The shared resumable part if no one else writes it, else a private one: correctness needs no lock."""
    shared = path.open("a+b")
    if _exclusive(shared):
        return shared, path, True
    shared.close()
    private = path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex}.part")
    return private.open("a+b"), private, False


def _resumable(info: ObjectInfo) -> bool:
    return info.supports_range and (info.version is not None or info.immutable)


class _Transfer:
    """The mutable state of one transfer (file, offset, digests); lives only inside ``download``."""

    def __init__(
        self,
        cache: Cache,
        obj: RemoteObject,
        info: ObjectInfo,
        settings: FetchSettings,
        policy: RetryPolicy,
        sha256: str | None,
        lock: IdentityLock | None,
        parallel: ParallelSettings,
    ) -> None:
        self.cache, self.obj, self.info, self.settings = cache, obj, info, settings
        self.policy, self.sha256, self.lock, self.parallel = policy, sha256, lock, parallel
        self.identity = info.identity
        self.digests = _Digests(info)
        self.offset = 0
        self.mark = 0
        self.retrying = False
        self.inherited = False
        self.sink = progress_sink(settings.progress, info.identity)
        self.received = 0
        self._progress_lock = threading.Lock()

    def run(self) -> Result[Path, Error]:
        action = decide(cache_state(self.cache, self.info, sha256=self.sha256), self.info, sha256=self.sha256)
        if isinstance(action, Hit):
            log_event("cache.hit", self.identity, path=str(action.path))
            return Success(action.path)
        try:
            self.file, self.path, shared = _open_part(part_path(self.cache, self.identity, self.info.version))
        except OSError as exc:
            return self._unwritable(exc)
        self.ledger = ledger_path(self.path)
        try:
            held = action.offset if isinstance(action, Resume) and shared else 0
            ledger = read_ledger(self.ledger) if shared else None
            log_event("fetch.started", self.identity, size=self.info.size, version=self.info.version)
            return self._fetch(held, ledger)
        except OSError as exc:  # the part file could not be written (disk full, permissions)
            return self._unwritable(exc)
        finally:
            self.file.close()
            self.sink.close()
            if not shared:
                self.path.unlink(missing_ok=True)
                remove_ledger(self.ledger)

    def _fetch(self, held: int, ledger: Ledger | None) -> Result[Path, Error]:
        """Continue from what the part file holds: in parallel parts when the object qualifies, else one
        stream from the longest prefix that can be trusted."""
        if wants_parallel(self.info, self.parallel):
            return self._parallel(self._finished_parts(held, ledger))
        self._reset(self._trusted_prefix(held, ledger))
        remove_ledger(self.ledger)
        self.inherited = self.offset > 0
        if self.offset:
            log_event("fetch.resumed", self.identity, offset=self.offset)
        return self._download()

    def _verifiable(self) -> bool:
        known = {"md5"} | ({"crc32c"} if _crc32c_module is not None else set())
        return self.sha256 is not None or bool(known & set(self.info.checksums))

    def _describes(self, ledger: Ledger | None, held: int) -> bool:
        """A ledger speaks for the part file only when written for this object and the file is whole-size."""
        return (
            ledger is not None
            and (ledger.size, ledger.version) == (self.info.size, self.info.version)
            and held == ledger.size
        )

    def _trusted_prefix(self, held: int, ledger: Ledger | None) -> int:
        """How many leading bytes of the part file are known good.

        With a ledger that describes the file: its finished parts' contiguous prefix. A ledger for
        another layout of the object means holes may be anywhere: nothing. Without a ledger the file was
        written in order (a ledger is always written before a file is extended for parts), except that
        a whole-size file that nothing can verify is not trusted.
        """
        if ledger is not None and self._describes(ledger, held):
            return contiguous_prefix(plan_parts(ledger.size, ledger.part_size), ledger.done)
        if ledger is not None and (ledger.size, ledger.version) != (self.info.size, self.info.version):
            return 0
        if held == self.info.size and not self._verifiable():
            return 0
        return held

    def _finished_parts(self, held: int, ledger: Ledger | None) -> frozenset[int]:
        parts = self._parts()
        if (
            ledger is not None
            and self._describes(ledger, held)
            and ledger.part_size == self.parallel.part_size
        ):
            return ledger.done
        return parts_within(parts, self._trusted_prefix(held, ledger))

    def _parts(self) -> tuple[Part, ...]:
        assert self.info.size is not None  # wants_parallel holds
        return plan_parts(self.info.size, self.parallel.part_size)

    def _parallel(self, done: frozenset[int]) -> Result[Path, Error]:
        """Fetch the missing parts concurrently, then verify and place as for one stream."""
        parts = self._parts()
        size = parts[-1].end
        write_ledger(
            self.ledger,
            Ledger(size=size, version=self.info.version, part_size=self.parallel.part_size, done=done),
        )
        self.file.truncate(size)
        todo = [p for p in parts if p.index not in done]
        self.digests = _Digests(self.info)
        self.inherited = bool(done)
        self.received = sum(p.length for p in parts if p.index in done)
        if done:
            log_event("fetch.resumed", self.identity, offset=self.received, parts=len(done))
        log_event(
            "fetch.parallel",
            self.identity,
            parts=len(parts),
            missing=len(todo),
            part_size=self.parallel.part_size,
            concurrency=min(self.parallel.max_concurrency, len(todo)),
        )
        fd = os.open(self.path, os.O_RDWR)
        try:
            hasher = PrefixHasher(self.digests.update, fd, parts, done)
            outcome = PartsDownload(
                self.obj,
                self.info,
                fd=fd,
                todo=todo,
                hasher=hasher,
                policy=self.policy,
                concurrency=self.parallel.max_concurrency,
                on_bytes=self._landed,
                on_part=lambda part: record_part(self.ledger, part.index),
                on_retry=self._on_part_retry,
            ).run()
        finally:
            os.close(fd)
        return outcome.bind(lambda result: self._after_parts(result, hasher))

    def _after_parts(self, outcome: PartsOutcome, hasher: PrefixHasher) -> Result[Path, Error]:
        """All parts in: verify and place. A store ignoring Range, or a changed object: one fresh stream."""
        match outcome:
            case Done():
                self.offset = hasher.frontier
                log_event(
                    "fetch.parts_done",
                    self.identity,
                    hashed_in_memory=hasher.in_memory,
                    read_back=hasher.read_back,
                )
                return self._finish(None)
            case Changed(info):
                log_event("fetch.restarted", self.identity, reason="the object changed during the download")
                self.info = attrs.evolve(info, identity=self.identity)
            case RangeIgnored(_, detail) if self._refresh_info():
                log_event("fetch.restarted", self.identity, reason=f"the object changed: {detail}")
            case RangeIgnored(_, detail):
                log_event(
                    "fetch.fallback", self.identity, reason=f"the store ignored a ranged read: {detail}"
                )
            case Stopped():
                raise AssertionError("a stopped part never decides a download")
        self._reset(0)
        remove_ledger(self.ledger)
        self.inherited = False
        return self._download()

    def _refresh_info(self) -> bool:
        """Describe the object afresh (keeping the cache identity); True when its version or size changed."""
        fresh = self.obj.stat()
        if not isinstance(fresh, Success):
            return False
        before = (self.info.version, self.info.size)
        self.info = attrs.evolve(fresh.unwrap(), identity=self.identity)
        return (self.info.version, self.info.size) != before

    def _landed(self, n: int) -> None:
        """Progress from several threads: one running total, reported in order."""
        with self._progress_lock:
            self.received += n
            self.sink.update(self.received, self.info.size)
        if self.lock is not None:
            self.lock.refresh()

    def _on_part_retry(self, part: Part, attempt: int, failure: Transient, delay: float) -> None:
        log_event(
            "fetch.retry",
            self.identity,
            attempt=attempt,
            cause=failure.cause,
            delay=round(delay, 3),
            part=part.index,
        )
        if self.lock is not None:
            self.lock.refresh(every=0.0)

    def _download(self) -> Result[Path, Error]:
        result = with_retries(
            self._attempt,
            self.policy,
            what=self.identity,
            progressed=lambda: self.offset > self.mark,
            on_retry=self._on_retry,
        )
        return result.bind(self._finish)

    def _unwritable(self, exc: OSError) -> Result[Path, Error]:
        detail = exc.strerror or type(exc).__name__
        return Failure(CacheUnavailable(directory=str(self.cache.root), detail=detail, source=self.identity))

    def _reset(self, start: int) -> None:
        """Keep the first ``start`` bytes of the part and re-hash them."""
        self.file.truncate(start)
        self.file.seek(0)
        self.digests = _Digests(self.info)
        remaining = start
        while remaining > 0:
            chunk = self.file.read(min(_READ, remaining))
            if not chunk:
                break
            self.digests.update(chunk)
            remaining -= len(chunk)
        self.offset = start - remaining
        self.file.truncate(self.offset)

    def _on_retry(self, attempt: int, failure: Transient, delay: float) -> None:
        log_event("fetch.retry", self.identity, attempt=attempt, cause=failure.cause, delay=round(delay, 3))
        if self.lock is not None:
            self.lock.refresh(every=0.0)

    def _restat(self) -> Result[None, TransferError]:
        """Before a retry: learn whether the object changed; a change (or no pinning) restarts from zero."""

        def compare(fresh: ObjectInfo) -> None:
            changed = (fresh.version, fresh.size) != (self.info.version, self.info.size)
            self.info = attrs.evolve(fresh, identity=self.identity)
            if changed or not _resumable(fresh):
                self._reset(0)

        return self.obj.stat().map(compare)

    def _attempt(self) -> Result[None, TransferError]:
        self.mark = self.offset
        ready: Result[None, TransferError] = self._restat() if self.retrying else Success(None)
        self.retrying = True
        return ready.bind(lambda _: self._transfer())

    def _transfer(self) -> Result[None, TransferError]:
        size = self.info.size
        if size is not None and self.offset > size:
            self._reset(0)
        if size is not None and self.offset == size:
            return Success(None)
        return self.obj.open(self.info, self.offset).bind(self._stream)

    def _align(self, body: Body) -> Result[None, TransferError]:
        """Accept where the body really starts: earlier (Range ignored, object changed) truncates the part."""
        if body.start > self.offset:
            return Failure(Transient(cause=f"body starts at byte {body.start}, past the {self.offset} held"))
        if body.start < self.offset:
            log_event("fetch.restarted", self.identity, held=self.offset, start=body.start)
            self._refresh_info()
            self._reset(body.start)
        return Success(None)

    def _stream(self, body: Body) -> Result[None, TransferError]:
        try:
            aligned = self._align(body)
            if isinstance(aligned, Failure):
                return aligned
            for chunk in body.chunks():
                self.file.write(chunk)
                self.digests.update(chunk)
                self.offset += len(chunk)
                self.sink.update(self.offset, self.info.size)
                if self.lock is not None:
                    self.lock.refresh()
                if self.info.size is not None and self.offset > self.info.size:
                    return Failure(Transient(cause=f"more than the announced {self.info.size} bytes"))
        except Interrupted as exc:
            return Failure(Transient(cause=exc.cause))
        finally:
            body.close()
        size = self.info.size
        if size is not None and self.offset < size:
            return Failure(Transient(cause=f"body ended at byte {self.offset} of {size}"))
        return Success(None)

    def _discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)
        remove_ledger(self.ledger)

    def _mismatch(self, actual: str) -> ChecksumMismatch | None:
        """The expected sha256 if given, else the store's own checksums, against what was received."""
        if self.sha256 is not None:
            if actual == self.sha256:
                return None
            return ChecksumMismatch(
                what=self.identity, expected=self.sha256, actual=actual, source=self.identity
            )
        wrong = self.digests.mismatch(self.info)
        if wrong is None:
            return None
        algorithm, expected, got = wrong
        return ChecksumMismatch(
            what=self.identity, expected=expected, actual=got, algorithm=algorithm, source=self.identity
        )

    def _finish(self, _: None) -> Result[Path, Error]:
        """Verify, then place. A part inherited from an earlier run that fails gets one fresh download."""
        self.file.flush()
        os.fsync(self.file.fileno())
        actual = self.digests.sha256.hexdigest()
        wrong = self._mismatch(actual)
        if wrong is not None and self.inherited:
            self.inherited = False
            log_event("fetch.restarted", self.identity, reason="the resumed part did not verify")
            self._reset(0)
            return self._fetch(0, None)
        if wrong is not None:
            self._discard()
            return Failure(wrong)
        placed = admit(
            self.cache, self.path, sha256=actual, identity=self.identity, version=self.info.version, move=True
        )
        if isinstance(placed, Success):
            remove_ledger(self.ledger)
            log_event("fetch.done", self.identity, size=self.offset, sha256=actual)
        return placed


def _intact(path: Path) -> bool:
    """Re-hash a blob against its name; a corrupt one is removed so it is fetched again."""
    try:
        if hash_file(path) == path.name:
            return True
    except OSError:
        return False
    log_event("cache.corrupt", path.name, path=str(path))
    path.unlink(missing_ok=True)
    return False


def use_cached(path: Path, identity: str, settings: FetchSettings) -> Path | None:
    """A cached blob ready to use (re-hashed first when ``settings.verify``), or None if it was corrupt."""
    if settings.verify and not _intact(path):
        return None
    log_event("cache.hit", identity, path=str(path))
    return path


def resolve_offline(
    cache: Cache, identity: str | None, settings: FetchSettings, sha256: str | None
) -> Result[Path, Error]:
    """Answer offline from refs alone: the newest cached blob of ``identity``, else NotFound saying so."""
    found = lookup_latest(cache, identity) if identity is not None else None
    if found is not None and (sha256 is None or found.name == sha256):
        hit = use_cached(found, identity or found.name, settings)
        if hit is not None:
            return Success(hit)
    wanted = f" with sha256 {sha256}" if sha256 else ""
    return Failure(
        NotFound(
            what=identity or "the object",
            hint=(
                f"offline mode (offline=True or CKPTFLOW_OFFLINE=1) reads only the cache at {cache.root}, "
                f"which holds no copy{wanted}; fetch it once online or turn offline mode off"
            ),
            source=identity,
        )
    )


def _cached(cache: Cache, info: ObjectInfo, settings: FetchSettings, sha256: str | None) -> Path | None:
    action = decide(cache_state(cache, info, sha256=sha256), info, sha256=sha256)
    return use_cached(action.path, info.identity, settings) if isinstance(action, Hit) else None


def _online(
    cache: Cache,
    obj: RemoteObject,
    info: ObjectInfo,
    settings: FetchSettings,
    policy: RetryPolicy,
    sha256: str | None,
    parallel: ParallelSettings,
) -> Result[Path, Error]:
    cached = _cached(cache, info, settings, sha256)
    if cached is not None:
        return Success(cached)
    wait = settings.options.get("lock_wait")
    stale_after = float(settings.options.get("lock_stale_after", 300.0))
    with identity_lock(cache, info.identity, wait=wait, stale_after=stale_after) as lock:
        return _Transfer(cache, obj, info, settings, policy, sha256, lock, parallel).run()


def download(
    obj: RemoteObject,
    settings: FetchSettings,
    *,
    policy: RetryPolicy | None = None,
    identity: str | None = None,
) -> Result[Path, Error]:
    """Get ``obj`` into the cache at ``settings.cache_dir`` (or find it there) and return the blob's path.

    ``identity`` (default: ``obj.identity`` when the object has one) keys the cache, so offline mode can
    resolve from it without a request; without one, the identity ``stat`` reports is used and offline
    mode cannot resolve. ``policy`` overrides ``settings.options["retry"]``.
    """
    sha256 = settings.sha256.strip().lower() if settings.sha256 else None
    if sha256 is not None and not is_sha256(sha256):
        return Failure(InvalidConfig(problems=(f"sha256: expected 64 hex digits, got {settings.sha256!r}",)))
    chosen = parallel_settings(settings.options)
    if not isinstance(chosen, Success):
        return Failure(chosen.failure())
    parallel = chosen.unwrap()
    name = identity if identity is not None else getattr(obj, "identity", None)
    retry = policy if policy is not None else policy_from(settings.options)

    def run(cache: Cache) -> Result[Path, Error]:
        known = blob_path(cache, sha256) if sha256 is not None else None
        if known is not None and known.is_file():
            hit = use_cached(known, name or known.name, settings)
            if hit is not None:
                return Success(hit)
        if is_offline(settings):
            return resolve_offline(cache, name, settings, sha256)
        stat = with_retries(
            obj.stat,
            retry,
            what=name or "the remote object",
            on_retry=lambda n, failure, delay: log_event(
                "fetch.retry", name or "?", attempt=n, cause=failure.cause, delay=round(delay, 3)
            ),
        )
        keyed = stat.map(lambda info: info if name is None else attrs.evolve(info, identity=name))
        return keyed.bind(lambda info: _online(cache, obj, info, settings, retry, sha256, parallel))

    return open_cache(settings.cache_dir).bind(run)


# Former private names, still imported by ckptflow.sources.mlflow; use the public ones above.
_event = log_event
_hit = use_cached
_offline = resolve_offline
