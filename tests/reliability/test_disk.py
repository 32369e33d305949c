"""Disk trouble: an unusable cache directory, a disk that fills up mid-download, parts left by a crash.

Tests run as root, so permission bits prove nothing: an unusable directory is one that sits under a
regular file, and a full disk is a file-size limit (``RLIMIT_FSIZE``) on the fetching process.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckptflow.cli import EXIT_CODES, main
from ckptflow.errors import CacheUnavailable
from ckptflow.fetch import fetch
from ckptflow.sources.retry import RetryPolicy
from tests.fixtures.fault_server import Faults, FaultServer
from tests.reliability.helpers import ROOT, BlobAudit

SIZE = 1_500_000
DATA = random.Random(9).randbytes(SIZE)
ONCE = {"retry": RetryPolicy(attempts=1)}


def test_a_cache_dir_under_a_regular_file_is_cache_unavailable_naming_it(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    failure = fetch(url, cache_dir=blocker / "cache").failure()
    assert isinstance(failure, CacheUnavailable)
    assert failure.directory == str(blocker / "cache")
    assert str(blocker / "cache") in failure.message
    assert http_server.count() == 0


@pytest.mark.parametrize("part", ["tmp", "blobs/sha256", "refs", "locks"])
def test_a_cache_whose_subdirectory_is_a_file_is_cache_unavailable(http_server, tmp_path, part):
    url = http_server.put("w.pt", DATA)
    (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / part).write_bytes(b"not a directory")
    failure = fetch(url, cache_dir=tmp_path).failure()
    assert isinstance(failure, CacheUnavailable)
    assert failure.directory == str(tmp_path)


_FULL_DISK = r"""
import json, resource, signal, sys
from returns.result import Failure
from ckptflow.fetch import fetch
from ckptflow.sources.retry import RetryPolicy

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
result = fetch(sys.argv[1], cache_dir=sys.argv[2], options={"retry": RetryPolicy(attempts=2, base=0.01)})
error = result.failure() if isinstance(result, Failure) else None
answer = {"kind": error.kind, "directory": error.directory} if error else {"path": str(result.unwrap())}
print(json.dumps(answer))
"""


@pytest.mark.slow
def test_a_disk_that_fills_up_mid_download_is_cache_unavailable_and_leaves_no_blob(http_server, tmp_path):
    url = http_server.put("w.pt", DATA)
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, url, str(tmp_path), str(SIZE // 3)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "kind": "cache_unavailable",
        "directory": str(tmp_path),
    }
    assert BlobAudit(tmp_path).check() == []


# --- parts left behind ------------------------------------------------------------------------------


def _interrupted(server: FaultServer, name: str, cache_dir: Path) -> Path:
    """Leave a part file as a crashed fetch would: the connection drops, then the server goes down."""
    server.reset()
    url = server.put(name, DATA)
    server.faults = Faults(drop_after=SIZE // 2, fail_from=2)
    before = set((cache_dir / "tmp").glob("*.part"))
    assert fetch(url, cache_dir=cache_dir, options=ONCE).failure().kind == "network_error"
    server.faults = Faults()
    (part,) = set((cache_dir / "tmp").glob("*.part")) - before
    return part


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_cache_prune_removes_a_stale_part_left_by_a_crash_and_keeps_a_fresh_one(
    http_server, tmp_path, capsys
):
    stale = _interrupted(http_server, "old.pt", tmp_path)
    fresh = _interrupted(http_server, "new.pt", tmp_path)
    _age(stale, 7200)
    size = stale.stat().st_size
    code = main(["cache", "prune", "--cache-dir", str(tmp_path), "--older-than", "3600", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert str(stale) in out["removed"] and str(fresh) not in out["removed"]
    assert out["freed"] >= size > 0
    assert not stale.exists() and fresh.exists()


def test_after_pruning_a_stale_part_the_next_fetch_starts_from_the_beginning(http_server, tmp_path, capsys):
    stale = _interrupted(http_server, "w.pt", tmp_path)
    _age(stale, 7200)
    main(["cache", "prune", "--cache-dir", str(tmp_path), "--older-than", "3600"])
    http_server.requests.clear()
    assert fetch(http_server.url("w.pt"), cache_dir=tmp_path).unwrap().read_bytes() == DATA
    assert [r.range for r in http_server.requests if r.method == "GET"] == [None]


def test_a_stale_lock_left_by_a_crash_is_pruned_too(tmp_path, capsys):
    lock = tmp_path / "locks" / "abc.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 1, "host": "gone", "created": 0.0, "token": "t"}))
    _age(lock, 7200)
    assert main(["cache", "prune", "--cache-dir", str(tmp_path), "--older-than", "3600"]) == 0
    assert not lock.exists()


def test_cache_verify_reports_a_blob_damaged_on_disk(http_server, tmp_path, capsys):
    url = http_server.put("w.pt", DATA)
    path = fetch(url, cache_dir=tmp_path).unwrap()
    path.write_bytes(b"bit rot")
    code = main(["cache", "verify", "--cache-dir", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_CODES["checksum_mismatch"]
    assert out["ok"] is False and out["corrupt"] == [str(path)]
