"""Many fetchers of one reference at once: one download in total, one path for all; stale locks taken over."""

from __future__ import annotations

import contextvars
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from returns.result import Result

from ckptflow.cache import identity_key
from ckptflow.errors import Error
from ckptflow.events import collect
from ckptflow.fetch import fetch
from ckptflow.sources.http import url_identity
from ckptflow.sources.retry import RetryPolicy
from tests.fixtures.fault_server import Faults, FaultServer
from tests.reliability.helpers import BlobAudit, open_gate, start_fetchers

SIZE = 4 * 1024 * 1024
DATA = random.Random(11).randbytes(SIZE)
FAST = {"retry": RetryPolicy(base=0.01, cap=0.05)}
FETCHERS = 8


@pytest.fixture(scope="module")
def eight_processes(
    http_server_session: FaultServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Eight processes released at the same moment to fetch one slow URL into one cache."""
    server = http_server_session
    server.reset()
    work = tmp_path_factory.mktemp("eight")
    url = server.put("shared.pt", DATA)
    server.faults = Faults(delay=0.01)
    gate = work / "gate"
    gate.mkdir()
    audit = BlobAudit(work / "cache")
    try:
        fetchers = start_fetchers(url, work / "cache", FETCHERS, gate=gate)
        open_gate(gate, FETCHERS)
        audit.watch(lambda: fetchers.process.poll() is not None, every=0.01)
        answers = fetchers.answers()
        return {
            "answers": answers,
            "bytes": server.bytes_served,
            "gets": server.count("GET"),
            "blobs": audit.check(),
        }
    finally:
        server.reset()


@pytest.mark.slow
def test_eight_processes_download_the_file_once(eight_processes):
    assert eight_processes["bytes"] <= 1.1 * SIZE
    assert eight_processes["gets"] == 1


@pytest.mark.slow
def test_the_eight_fetchers_are_distinct_processes(eight_processes):
    assert len({answer["pid"] for answer in eight_processes["answers"]}) == FETCHERS


@pytest.mark.slow
def test_eight_processes_all_get_the_same_verified_path(eight_processes):
    paths = {answer["path"] for answer in eight_processes["answers"]}
    assert len(paths) == 1
    assert Path(paths.pop()).read_bytes() == DATA
    assert len(eight_processes["blobs"]) == 1


def test_eight_threads_download_the_file_once_and_share_the_path(http_server, tmp_path):
    url = http_server.put("shared.pt", DATA)
    http_server.faults = Faults(delay=0.005)
    together = threading.Barrier(FETCHERS)
    results: list[Result[Path, Error]] = []

    def worker() -> None:
        together.wait()
        results.append(fetch(url, cache_dir=tmp_path, options=FAST))

    threads = [threading.Thread(target=worker) for _ in range(FETCHERS)]
    audit = BlobAudit(tmp_path)
    for t in threads:
        t.start()
    audit.watch(lambda: not any(t.is_alive() for t in threads))
    assert http_server.bytes_served <= 1.1 * SIZE
    assert http_server.count("GET") == 1
    assert len({r.unwrap() for r in results}) == 1
    assert results[0].unwrap().read_bytes() == DATA


# --- locks left behind ----------------------------------------------------------------------------


def _lock_file(cache_dir: Path, url: str) -> Path:
    locks = cache_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return locks / f"{identity_key(url_identity(url))}.lock"


def _dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(finished.stdout)


def _fetch_in_thread(url: str, cache_dir: Path) -> tuple[threading.Thread, list[Result[Path, Error]]]:
    out: list[Result[Path, Error]] = []
    run = contextvars.copy_context().run
    thread = threading.Thread(target=run, args=(lambda: out.append(fetch(url, cache_dir=cache_dir)),))
    thread.start()
    return thread, out


def test_a_lock_left_by_a_dead_process_is_taken_over(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    lock = _lock_file(tmp_path, url)
    owner = {"pid": _dead_pid(), "host": socket.gethostname(), "created": time.time(), "token": "dead"}
    lock.write_text(json.dumps(owner))
    with collect() as seen:
        assert fetch(url, cache_dir=tmp_path).unwrap().read_bytes() == DATA
    (broken,) = [e for e in seen.events if e.name == "cache.lock_broken"]
    assert broken.data["holder_pid"] == owner["pid"]
    assert not lock.exists()


def test_a_lock_without_a_heartbeat_for_too_long_is_taken_over(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    lock = _lock_file(tmp_path, url)
    lock.write_text(json.dumps({"pid": 1, "host": "another-node", "created": 0.0, "token": "old"}))
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    with collect() as seen:
        assert fetch(url, cache_dir=tmp_path).unwrap().read_bytes() == DATA
    assert "cache.lock_broken" in [e.name for e in seen.events]


def test_a_live_lock_on_another_node_is_waited_for_until_it_goes_stale(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    lock = _lock_file(tmp_path, url)
    lock.write_text(json.dumps({"pid": 1, "host": "another-node", "created": time.time(), "token": "live"}))
    options = {"lock_stale_after": 0.5}
    with collect() as seen:
        assert fetch(url, cache_dir=tmp_path, options=options).unwrap().read_bytes() == DATA
    names = [e.name for e in seen.events]
    assert names.index("cache.lock_wait") < names.index("cache.lock_broken") < names.index("fetch.started")


def test_fetchers_queued_behind_a_stale_lock_still_download_once(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    http_server.faults = Faults(delay=0.005)
    lock = _lock_file(tmp_path, url)
    lock.write_text(
        json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "created": 0.0, "token": "x"})
    )
    started = [_fetch_in_thread(url, tmp_path) for _ in range(4)]
    for thread, _ in started:
        thread.join(timeout=120)
    assert {out[0].unwrap() for _, out in started} == {started[0][1][0].unwrap()}
    assert http_server.count("GET") == 1
