"""A fetching process killed with SIGKILL half-way: the next fetch resumes, and blobs/ is never partial.

The scenario runs once per download mode (one stream, and parallel ranged parts with their ledger),
because a fresh interpreter is slow to start; each test checks one fact of it.
"""

from __future__ import annotations

import contextvars
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from returns.result import Result

from ckptflow.errors import Error
from ckptflow.events import collect
from ckptflow.fetch import fetch
from tests.fixtures.fault_server import Faults, FaultServer
from tests.reliability.helpers import BlobAudit, start_fetchers

SIZE = 32 * 1024 * 1024
DATA = random.Random(7).randbytes(SIZE)


def _settled(server: FaultServer) -> int:
    """The bytes served once the killed connection's handler has stopped writing."""
    last = -1
    while server.bytes_served != last:
        last = server.bytes_served
        time.sleep(0.1)
    return last


MODES: dict[str, dict[str, Any]] = {
    "stream": {},
    "parallel": {"parallel_threshold": 1 << 20, "part_size": 512 * 1024, "max_concurrency": 4},
}


def _kill_half_way(
    server: FaultServer, url: str, cache_dir: Path, audit: BlobAudit, options: dict[str, Any]
) -> None:
    child = start_fetchers(url, cache_dir, options=options)
    try:
        audit.watch(lambda: server.bytes_served >= SIZE // 2 or child.process.poll() is not None, every=0.002)
        assert child.process.poll() is None, "the fetching process ended before it could be killed"
        os.kill(child.process.pid, signal.SIGKILL)
    finally:
        child.process.kill()
        child.process.communicate()
    assert child.process.returncode == -signal.SIGKILL


def _fetch_while_auditing(
    url: str, cache_dir: Path, audit: BlobAudit, options: dict[str, Any]
) -> Result[Path, Error]:
    holder: list[Result[Path, Error]] = []
    run = contextvars.copy_context().run
    again = lambda: holder.append(fetch(url, cache_dir=cache_dir, options=options))  # noqa: E731
    worker = threading.Thread(target=run, args=(again,))
    worker.start()
    audit.watch(lambda: not worker.is_alive())
    worker.join()
    return holder[0]


@pytest.fixture(scope="module", params=sorted(MODES))
def crash(
    request: pytest.FixtureRequest,
    http_server_session: FaultServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """Kill a fetching process at about 50%, look at the cache, then fetch again: what each step saw."""
    options = MODES[request.param]
    server = http_server_session
    server.reset()
    cache_dir = tmp_path_factory.mktemp("crash")
    url = server.put("big.pt", DATA)
    server.faults = Faults(delay=0.004)
    audit = BlobAudit(cache_dir)
    try:
        _kill_half_way(server, url, cache_dir, audit, options)
        first = _settled(server)
        after_kill = {
            "blobs": audit.check(),
            "looks": audit.looks,
            "parts": [p.stat().st_size for p in (cache_dir / "tmp").glob("*.part")],
            "ledgers": list((cache_dir / "tmp").glob("*.parts")),
            "locks": list((cache_dir / "locks").iterdir()),
        }
        server.faults = Faults()
        with collect() as seen:
            result = _fetch_while_auditing(url, cache_dir, audit, options)
        yield {
            "first": first,
            "second": server.bytes_served - first,
            "after_kill": after_kill,
            "result": result,
            "events": seen.events,
            "mode": request.param,
            "blobs": audit.check(),
            "locks": list((cache_dir / "locks").iterdir()),
        }
    finally:
        server.reset()


@pytest.mark.slow
def test_the_process_was_killed_about_half_way(crash):
    assert SIZE // 2 <= crash["first"] < SIZE


@pytest.mark.slow
def test_blobs_hold_nothing_while_and_after_a_process_is_killed_mid_download(crash):
    assert crash["after_kill"]["blobs"] == []
    assert crash["after_kill"]["looks"] > 10


@pytest.mark.slow
def test_the_killed_process_leaves_a_resumable_part_and_its_lock(crash):
    (part,) = crash["after_kill"]["parts"]
    assert part > 0
    assert len(crash["after_kill"]["locks"]) == 1
    assert len(crash["after_kill"]["ledgers"]) == (1 if crash["mode"] == "parallel" else 0)


@pytest.mark.slow
def test_the_next_fetch_has_the_whole_file(crash):
    assert crash["result"].unwrap().read_bytes() == DATA


@pytest.mark.slow
def test_the_next_fetch_resumes_and_the_server_sends_less_than_sixty_percent(crash):
    assert crash["second"] < 0.6 * SIZE
    (resumed,) = [e for e in crash["events"] if e.name == "fetch.resumed"]
    assert resumed.data["offset"] >= SIZE // 3


@pytest.mark.slow
def test_blobs_only_ever_hold_the_verified_file(crash):
    assert [p.name for p in crash["blobs"]] == [crash["result"].unwrap().name]


@pytest.mark.slow
def test_the_dead_process_lock_is_taken_over(crash):
    assert "cache.lock_broken" in [e.name for e in crash["events"]]
    assert crash["locks"] == []
