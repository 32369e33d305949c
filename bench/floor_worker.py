"""The floor under an HTTP fetch with ckptflow's guarantees, with no HTTP library at all:
``python -m bench.floor_worker URL OUT [PARTS] [BUFFER_KIB]``.

Fetches ``URL`` into ``OUT`` the leanest way the standard library allows while keeping what ckptflow
promises: ranged parts of 32 MiB, ``PARTS`` at a time (default 4), each read with ``http.client``'s
``readinto`` into one reused buffer (``BUFFER_KIB``, default 256) and written with ``pwrite``; a thread
hashes the file (sha256) in order as parts complete; the file is flushed (``fsync``) at the end. No
retries, resume, verification against an expected digest or cache: a lower bound, not a client.
Prints one JSON line: wall seconds, user and system CPU seconds.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

__all__ = ["main"]

_PART = 32 << 20


def _size(host: str, port: int, path: str) -> int:
    conn = http.client.HTTPConnection(host, port)
    conn.request("HEAD", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return int(response.headers["Content-Length"])


def main(url: str, out: str, parts_at_a_time: str = "4", buffer_kib: str = "256") -> None:
    where = urlsplit(url)
    host, port, path = where.hostname or "127.0.0.1", where.port or 80, where.path
    size = _size(host, port, path)
    parts = [(start, min(start + _PART, size)) for start in range(0, size, _PART)]
    fd = os.open(out, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.posix_fallocate(fd, 0, size)
    todo: Iterator[tuple[int, int]] = iter(parts)
    take = threading.Lock()
    landed: set[int] = set()
    changed = threading.Condition()

    def download() -> None:
        conn = http.client.HTTPConnection(host, port)
        buffer = bytearray(int(buffer_kib) * 1024)
        view = memoryview(buffer)
        while True:
            with take:
                part = next(todo, None)
            if part is None:
                return
            start, end = part
            conn.request("GET", path, headers={"Range": f"bytes={start}-{end - 1}"})
            response = conn.getresponse()
            offset = start
            while offset < end:
                n = response.readinto(buffer)
                if not n:
                    raise RuntimeError(f"part at {start} ended at {offset}")
                pending = view[:n]
                while pending:
                    written = os.pwrite(fd, pending, offset)
                    pending, offset = pending[written:], offset + written
            with changed:
                landed.add(start)
                changed.notify_all()

    digest: list[str] = []

    def hash_in_order() -> None:
        sha = hashlib.sha256()
        reader = os.open(out, os.O_RDONLY)
        buffer = memoryview(bytearray(8 << 20))
        for start, end in parts:
            with changed:
                changed.wait_for(lambda s=start: s in landed)
            offset = start
            while offset < end:
                n = os.preadv(reader, [buffer[: min(len(buffer), end - offset)]], offset)
                sha.update(buffer[:n])
                offset += n
        os.close(reader)
        digest.append(sha.hexdigest())

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    threads = [threading.Thread(target=download) for _ in range(int(parts_at_a_time))]
    threads.append(threading.Thread(target=hash_in_order))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    os.fsync(fd)
    os.close(fd)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_user": after.ru_utime - before.ru_utime,
                "cpu_system": after.ru_stime - before.ru_stime,
                "sha256": digest[0] if digest else None,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
