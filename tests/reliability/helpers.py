"""Shared by the reliability tests: blob audits and fetching processes started in a fresh interpreter."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import define, field

__all__ = ["BlobAudit", "Fetcher", "blob_dir", "open_gate", "start_fetchers"]

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, sys, time
from pathlib import Path
from returns.result import Failure
from ckptflow.fetch import fetch
from ckptflow.sources.retry import RetryPolicy

url, cache_dir, gate, name = sys.argv[1:5]
if gate:
    Path(gate, f"ready-{name}").touch()
    while not Path(gate, "go").exists():
        time.sleep(0.002)
result = fetch(url, cache_dir=cache_dir, options={"retry": RetryPolicy(base=0.01, cap=0.05)})
answer = {"kind": result.failure().kind} if isinstance(result, Failure) else {"path": str(result.unwrap())}
print(json.dumps(answer))
"""


def blob_dir(cache_dir: Path) -> Path:
    return cache_dir / "blobs" / "sha256"


@define
class BlobAudit:
    """Checks, as often as it is asked, that every file in ``blobs/`` is complete and verified."""

    cache_dir: Path
    looks: int = 0
    _verified: set[tuple[str, int, int]] = field(factory=set)

    def check(self) -> list[Path]:
        """Every blob now present; raises AssertionError on a file whose bytes do not hash to its name."""
        self.looks += 1
        directory = blob_dir(self.cache_dir)
        found = sorted(directory.iterdir()) if directory.is_dir() else []
        for path in found:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            seen = (path.name, stat.st_size, stat.st_mtime_ns)
            if seen in self._verified:
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest == path.name, f"blobs/ holds an unverified file {path.name} ({stat.st_size} bytes)"
            self._verified.add(seen)
        return found

    def watch(self, done: Callable[[], bool], *, every: float = 0.005) -> None:
        """Check repeatedly until ``done()``; at least once after it."""
        while not done():
            self.check()
            time.sleep(every)
        self.check()


@define
class Fetcher:
    """A fetching process in a fresh interpreter: its handle and, once finished, its JSON answer."""

    process: subprocess.Popen[str]

    def answer(self, timeout: float = 240.0) -> dict[str, Any]:
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, f"fetching process failed:\n{err}"
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def start_fetchers(url: str, cache_dir: Path, count: int, *, gate: Path | None = None) -> list[Fetcher]:
    """Start ``count`` interpreters fetching ``url``; with ``gate`` they wait for ``gate/go`` after import."""
    return [
        Fetcher(
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, url, str(cache_dir), str(gate or ""), str(i)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        for i in range(count)
    ]


def open_gate(gate: Path, count: int, *, timeout: float = 240.0) -> None:
    """Wait until ``count`` fetchers are ready (imports done), then let them all go at once."""
    deadline = time.monotonic() + timeout
    while len(list(gate.glob("ready-*"))) < count:
        assert time.monotonic() < deadline, "fetching processes did not start"
        time.sleep(0.02)
    (gate / "go").touch()
