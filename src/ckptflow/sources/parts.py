"""Parallel ranged downloads: which parts, which are done, and the hash of the finished prefix.

A large object whose store answers byte ranges is fetched as fixed-size parts, each by its own thread
writing at its offset into the one preallocated ``.part`` file. Three pieces live here:

* the decision (pure): ``parallel_settings`` reads the knobs from ``FetchSettings.options``,
  ``plan_parts`` cuts ``[0, size)`` into parts, ``wants_parallel`` says whether an object qualifies;
* the ledger (a sidecar ``<key>.parts`` next to ``<key>.part``): the layout it was written for and
  the index of every completed part, so a later run fetches only the missing parts. It is written
  before the part file is extended, so a part file with holes always has one;
* ``PrefixHasher``: digests must see the bytes in order, but parts finish out of order. The hasher
  keeps a frontier; the thread whose bytes land exactly at the frontier hashes them in-stream, and
  bytes that were written ahead of it are read back (from the page cache) once the frontier reaches
  them, so nothing is read twice unless it arrived early.

``PartsDownload`` runs the parts on a bounded thread pool: every part retried on its own with the
engine's retry policy (resuming inside the part), pinned to the object's version, stopped as a whole
at the first final failure, at a server that ignored the range (``RangeIgnored``, the engine then
falls back to one stream) or when the object changed (``Changed``).
"""

from __future__ import annotations

import contextvars
import ctypes
import functools
import json
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from attrs import frozen
from returns.result import Failure, Result, Success

from ckptflow.errors import Error, InvalidConfig
from ckptflow.sources.base import Body, Interrupted, ObjectInfo, RemoteObject, TransferError, Transient
from ckptflow.sources.retry import RetryPolicy, with_retries

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_PART_SIZE",
    "DEFAULT_THRESHOLD",
    "LEDGER_SUFFIX",
    "MAX_CONCURRENCY",
    "MIN_PART_SIZE",
    "Changed",
    "Done",
    "Ledger",
    "ParallelSettings",
    "Part",
    "PartsDownload",
    "PartsOutcome",
    "PrefixHasher",
    "RangeIgnored",
    "Stopped",
    "connection_pool_size",
    "contiguous_prefix",
    "ledger_path",
    "parallel_settings",
    "parts_within",
    "plan_parts",
    "read_ledger",
    "record_part",
    "remove_ledger",
    "start_writeback",
    "wants_parallel",
    "write_ledger",
]

MiB = 1 << 20
DEFAULT_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 32 * MiB


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


DEFAULT_MAX_CONCURRENCY = max(2, min(8, 2 * _cores()))
"""Parts in flight by default: two per core the process may use, from 2 to 8. More parts help a link
that gives each connection a share of its bandwidth; on a machine with few cores, more threads than
that contend for the CPU and the disk (``docs/performance.md``)."""
MIN_PART_SIZE = 64 * 1024
MAX_CONCURRENCY = 64
LEDGER_SUFFIX = ".parts"
_READ_BACK = 8 * MiB
_POSITIONED_IO = hasattr(os, "pwrite") and hasattr(os, "preadv")  # not on Windows: one stream there
_HANDOFF = 8 * MiB
_DEFAULT_POOL = 10


# --- the decision (pure) ---------------------------------------------------------------------------


@frozen(kw_only=True)
class ParallelSettings:
    """When and how to split a download: objects of ``threshold`` bytes or more, in ``part_size`` parts,
    at most ``max_concurrency`` at a time (1 turns parallel downloads off)."""

    threshold: int = DEFAULT_THRESHOLD
    part_size: int = DEFAULT_PART_SIZE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY


_BOUNDS: Mapping[str, tuple[str, int, int]] = {
    "parallel_threshold": ("threshold", 0, 1 << 62),
    "part_size": ("part_size", MIN_PART_SIZE, 1 << 40),
    "max_concurrency": ("max_concurrency", 1, MAX_CONCURRENCY),
}


def parallel_settings(options: Mapping[str, Any]) -> Result[ParallelSettings, Error]:
    """The parallel-download knobs in ``FetchSettings.options``, defaults for those not given.

    ``parallel_threshold`` (bytes, default 64 MiB), ``part_size`` (bytes, default 32 MiB; 16 to 64 MiB
    suits most links), ``max_concurrency`` (1 to 64, default two per core, from 2 to 8). Every bad
    value is reported at once.
    """
    chosen: dict[str, int] = {}
    problems: list[str] = []
    for key, (name, low, high) in _BOUNDS.items():
        if key not in options:
            continue
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"options.{key}: expected a whole number from {low} to {high}, got {value!r}")
        else:
            chosen[name] = value
    if problems:
        return Failure(InvalidConfig(problems=tuple(problems)))
    return Success(ParallelSettings(**chosen))


def connection_pool_size(options: Mapping[str, Any]) -> int:
    """Connections a source's client should keep: at least one per concurrent part."""
    chosen = parallel_settings(options)
    concurrency = chosen.unwrap().max_concurrency if isinstance(chosen, Success) else DEFAULT_MAX_CONCURRENCY
    return max(_DEFAULT_POOL, concurrency)


@frozen
class Part:
    """Bytes ``[start, end)`` of the object, the ``index``-th part."""

    index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_parts(size: int, part_size: int) -> tuple[Part, ...]:
    """Cut ``[0, size)`` into parts of ``part_size`` bytes (the last one shorter)."""
    if part_size <= 0:
        raise ValueError(f"part_size must be positive, got {part_size}")
    return tuple(
        Part(index, start, min(size, start + part_size))
        for index, start in enumerate(range(0, size, part_size))
    )


def wants_parallel(info: ObjectInfo, settings: ParallelSettings) -> bool:
    """Parallel only for an object of known size at or over the threshold, more than one part long,
    whose store answers ranges and pins the content (a version, or immutable), so parts cannot mix
    two versions; and only where the OS offers positioned reads and writes (not on Windows)."""
    pinned = info.version is not None or info.immutable
    return (
        _POSITIONED_IO
        and info.supports_range
        and pinned
        and info.size is not None
        and info.size >= settings.threshold
        and info.size > settings.part_size
        and settings.max_concurrency > 1
    )


def contiguous_prefix(parts: Sequence[Part], done: Iterable[int]) -> int:
    """How many bytes from 0 the ``done`` parts cover without a gap."""
    finished = set(done)
    held = 0
    for part in parts:
        if part.index not in finished:
            break
        held = part.end
    return held


def parts_within(parts: Sequence[Part], prefix: int) -> frozenset[int]:
    """The parts lying wholly inside the first ``prefix`` bytes."""
    return frozenset(p.index for p in parts if p.end <= prefix)


# --- the ledger (a small effect) -------------------------------------------------------------------


@frozen(kw_only=True)
class Ledger:
    """What a ledger file holds: the layout it was written for, and the completed part indices."""

    size: int
    version: str | None
    part_size: int
    done: frozenset[int] = frozenset()


def ledger_path(part_file: Path) -> Path:
    """The ledger beside a part file (``<key>.part`` → ``<key>.parts``)."""
    return part_file.with_suffix(LEDGER_SUFFIX)


def write_ledger(path: Path, ledger: Ledger) -> None:
    """Write (atomically) a ledger with its header and completed parts; raises ``OSError``."""
    header = json.dumps({"size": ledger.size, "version": ledger.version, "part_size": ledger.part_size})
    lines = [header, *(str(i) for i in sorted(ledger.done))]
    staged = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    staged.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(staged, path)


def record_part(path: Path, index: int) -> None:
    """Append one completed part to the ledger (one short ``O_APPEND`` write); raises ``OSError``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, f"{index}\n".encode("ascii"))
    finally:
        os.close(fd)


def read_ledger(path: Path) -> Ledger | None:
    """The ledger at ``path``, or None when there is none or its header is unreadable.

    Only newline-terminated lines count: a torn last line (a crash mid-append) is ignored, and that
    part is simply fetched again.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    header, *lines = text.split("\n")[:-1] or [""]
    try:
        data = json.loads(header)
        size, part_size, version = int(data["size"]), int(data["part_size"]), data["version"]
    except (ValueError, KeyError, TypeError):
        return None
    if size < 0 or part_size <= 0 or not (version is None or isinstance(version, str)):
        return None
    count = len(range(0, size, part_size))
    done = frozenset(int(line) for line in lines if line.isdigit() and int(line) < count)
    return Ledger(size=size, version=version, part_size=part_size, done=done)


def remove_ledger(path: Path) -> None:
    """Forget the ledger (after the part file it describes was placed, truncated or discarded)."""
    path.unlink(missing_ok=True)


# --- hashing in order while parts land out of order ------------------------------------------------


class PrefixHasher:
    """Feeds ``update`` the file's bytes in order while parts are written out of order, from any thread.

    Writers call ``wrote`` after their bytes are on disk; one thread runs ``follow``, which hashes from
    the frontier onwards as soon as bytes there exist, so writers never wait for the hash. A chunk
    written right where the hash will continue is handed over in memory (up to ``handoff`` bytes
    queued); everything else is read back from ``fd``, i.e. from the page cache, once, when the
    frontier reaches it.
    """

    def __init__(
        self,
        update: Callable[[bytes | memoryview], None],
        fd: int,
        parts: Sequence[Part],
        done: Iterable[int],
        *,
        handoff: int = _HANDOFF,
    ) -> None:
        self._update = update
        self._fd = fd
        self._parts = tuple(parts)
        self._size = self._parts[-1].end if self._parts else 0
        finished = set(done)
        self._written = [p.length if p.index in finished else 0 for p in self._parts]
        self._frontier = 0
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._handoff = handoff
        self._closed = False
        self._cond = threading.Condition()
        self._buffer = bytearray(_READ_BACK)
        self.read_back = 0
        self.in_memory = 0

    @property
    def frontier(self) -> int:
        """How many bytes from 0 have been hashed."""
        with self._cond:
            return self._frontier

    def written(self, part: Part) -> int:
        """How many bytes of ``part``, from its start, are on disk."""
        with self._cond:
            return self._written[part.index]

    def wrote(self, part: Part, offset: int, data: bytes) -> None:
        """``data`` is now on disk at ``offset`` (inside ``part``, right after its earlier bytes)."""
        with self._cond:
            self._written[part.index] = offset + len(data) - part.start
            if offset == self._frontier + self._queued and self._queued + len(data) <= self._handoff:
                self._queue.append(data)
                self._queued += len(data)
            self._cond.notify()

    def close(self) -> None:
        """No more bytes will be written: ``follow`` returns once it has hashed what there is."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def follow(self) -> int:
        """Hash in order as bytes arrive, until all are hashed or ``close`` leaves nothing to wait for;
        returns the frontier."""
        while True:
            with self._cond:
                step = self._next()
                while step is None and not self._closed:
                    self._cond.wait()
                    step = self._next()
                if step is None:
                    return self._frontier
            if isinstance(step, bytes):
                self._update(step)
                self.in_memory += len(step)
                advanced = len(step)
            else:
                advanced = self._hash_file(*step)
            with self._cond:
                self._frontier += advanced
                if isinstance(step, bytes):
                    self._queued -= advanced

    def _next(self) -> bytes | tuple[int, int] | None:
        """Under the lock: the next chunk to hash (handed over, or a range of the file), or None."""
        if self._queue:
            return self._queue.popleft()
        if self._frontier >= self._size:
            return None
        part = self._parts[self._frontier // self._parts[0].length]
        limit = part.start + self._written[part.index]
        return (self._frontier, min(limit, self._frontier + _READ_BACK)) if limit > self._frontier else None

    def _hash_file(self, start: int, limit: int) -> int:
        view = memoryview(self._buffer)
        offset = start
        while offset < limit:
            got = os.preadv(self._fd, [view[: limit - offset]], offset)
            if got <= 0:
                raise OSError(f"the part file ends at byte {offset}, before {limit} bytes already written")
            self._update(view[:got])
            offset += got
        self.read_back += limit - start
        return limit - start


# --- running the parts -----------------------------------------------------------------------------


@frozen
class Done:
    """Every part is on disk and hashed."""


@frozen
class Stopped:
    """This part gave up because another one ended the download."""


@frozen
class RangeIgnored:
    """The store answered a ranged GET with other bytes (no 206, or more than asked): use one stream."""

    part: int
    detail: str


@frozen
class Changed:
    """The object changed (version or size) while the parts were being fetched."""

    info: ObjectInfo


PartsOutcome = Done | Stopped | RangeIgnored | Changed

_DONE = Done()
_STOPPED = Stopped()


def _settles(result: Result[PartsOutcome, Error]) -> bool:
    """Whether a part's result decides the download (a failure, a fallback, a change)."""
    return not (isinstance(result, Success) and isinstance(result.unwrap(), (Done, Stopped)))


_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    call = libc.sync_file_range
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return call


def start_writeback(fd: int, start: int, length: int) -> None:
    """Ask the kernel to begin writing ``[start, start + length)`` to disk now, without waiting (Linux),
    so the ``fsync`` before placing the file only waits for the last parts."""
    if sys.platform == "linux":
        _sync_file_range()(fd, start, length, _SYNC_FILE_RANGE_WRITE)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class PartsDownload:
    """One parallel download of the missing ``todo`` parts of ``info`` into ``fd`` (preallocated).

    Callbacks keep this free of the engine: ``on_bytes(n)`` after ``n`` bytes landed, ``on_part(part)``
    after a part completed (the engine records it in the ledger), ``on_retry(part, attempt, failure,
    delay)`` before a part is retried.
    """

    def __init__(
        self,
        obj: RemoteObject,
        info: ObjectInfo,
        *,
        fd: int,
        todo: Sequence[Part],
        hasher: PrefixHasher,
        policy: RetryPolicy,
        concurrency: int,
        on_bytes: Callable[[int], None],
        on_part: Callable[[Part], None],
        on_retry: Callable[[Part, int, Transient, float], None],
    ) -> None:
        self.obj, self.info, self.fd = obj, info, fd
        self.todo = tuple(todo)
        self.hasher, self.policy = hasher, policy
        self.concurrency = max(1, min(concurrency, len(self.todo)))
        self.on_bytes, self.on_part, self.on_retry = on_bytes, on_part, on_retry
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._first: Result[PartsOutcome, Error] | None = None

    def run(self) -> Result[PartsOutcome, Error]:
        """Fetch every part while this thread hashes behind them; the first outcome other than ``Done``
        stops the other parts and is returned."""
        if not self.todo:
            self.hasher.close()
            self.hasher.follow()
            return Success(_DONE)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="ckptflow-part") as pool:
            futures = [pool.submit(contextvars.copy_context().run, self._settle, p) for p in self.todo]
            remaining = [len(futures)]

            def finished(future: Future[Result[PartsOutcome, Error]]) -> None:
                failed = future.exception() is not None
                with self._lock:
                    remaining[0] -= 1
                    last = remaining[0] == 0
                if failed:
                    self._stop.set()
                if last or failed:
                    self.hasher.close()

            for future in futures:
                future.add_done_callback(finished)
            try:
                self.hasher.follow()
            finally:
                self._stop.set()
                self.hasher.close()
            for future in futures:
                future.result()  # a programming error in a part is raised here, not hidden
        return self._first if self._first is not None else Success(_DONE)

    def _settle(self, part: Part) -> Result[PartsOutcome, Error]:
        """One part; a result that decides the download stops the others (the first one wins)."""
        result = self._part(part)
        if _settles(result):
            with self._lock:
                if self._first is None:
                    self._first = result
            self._stop.set()
            self.hasher.close()
        return result

    def _part(self, part: Part) -> Result[PartsOutcome, Error]:
        """One part, retried on its own; a retry first asks the store whether the object changed."""
        mark = [self.hasher.written(part)]
        tries = [0]

        def attempt() -> Result[PartsOutcome, TransferError]:
            tries[0] += 1
            if self._stop.is_set():
                return Success(_STOPPED)
            if tries[0] > 1:
                match self.obj.stat():
                    case Success(fresh) if (fresh.version, fresh.size) != (self.info.version, self.info.size):
                        return Success(Changed(fresh))
                    case Failure(_) as failed:
                        return failed
            mark[0] = self.hasher.written(part)
            start = part.start + mark[0]
            if start >= part.end:
                return Success(_DONE)
            return self.obj.open(self.info, start, part.end).bind(
                lambda body: self._stream(part, start, body)
            )

        return with_retries(
            attempt,
            self.policy,
            what=self.info.identity,
            progressed=lambda: self.hasher.written(part) > mark[0],
            on_retry=lambda n, failure, delay: self.on_retry(part, n, failure, delay),
            sleep=self._pause,
        )

    def _pause(self, delay: float) -> None:
        """Wait before a retry, but no longer once the download has been stopped."""
        self._stop.wait(delay)

    def _stream(self, part: Part, start: int, body: Body) -> Result[PartsOutcome, TransferError]:
        try:
            if body.start != start:
                return Success(
                    RangeIgnored(part.index, f"asked for byte {start}, got a body from {body.start}")
                )
            offset = start
            for chunk in body.chunks():
                if self._stop.is_set():
                    return Success(_STOPPED)
                if offset + len(chunk) > part.end:
                    return Success(RangeIgnored(part.index, f"more than the {part.length} bytes asked for"))
                _pwrite_all(self.fd, chunk, offset)
                self.hasher.wrote(part, offset, chunk)
                offset += len(chunk)
                self.on_bytes(len(chunk))
        except Interrupted as exc:
            return Failure(Transient(cause=exc.cause))
        finally:
            body.close()
        if offset < part.end:
            return Failure(Transient(cause=f"part {part.index} ended at byte {offset} of {part.end}"))
        start_writeback(self.fd, part.start, part.length)
        self.on_part(part)
        return Success(_DONE)
