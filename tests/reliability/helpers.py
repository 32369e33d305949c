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
import json, os, sys, time
from pathlib import Path
from returns.result import Failure
from ckptflow.fetch import fetch
from ckptflow.sources.retry import RetryPolicy

url, cache_dir, gate, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
extra = json.loads(sys.argv[5])

def run(name):
    if gate:
        Path(gate, f"ready-{name}").touch()
        while not Path(gate, "go").exists():
            time.sleep(0.002)
    options = {"retry": RetryPolicy(base=0.01, cap=0.05), **extra}
    result = fetch(url, cache_dir=cache_dir, options=options)
    if isinstance(result, Failure):
        return {"pid": os.getpid(), "kind": result.failure().kind}
    return {"pid": os.getpid(), "path": str(result.unwrap())}

if count == 1:
    print(json.dumps([run(0)]))
else:
    children = []
    for i in range(count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                Path(gate, f"answer-{i}.json").write_text(json.dumps(run(i)))
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    print(json.dumps([json.loads(Path(gate, f"answer-{i}.json").read_text()) for i in range(count)]))
    sys.exit(max(codes))
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
    """A fresh interpreter fetching a URL, itself or through ``count`` processes forked after its imports."""

    process: subprocess.Popen[str]

    def answers(self, timeout: float = 240.0) -> list[dict[str, Any]]:
        """Each fetching process's pid and its path (or failure kind)."""
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, f"fetching process failed:\n{err}"
        result: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
        return result


def start_fetchers(
    url: str,
    cache_dir: Path,
    count: int = 1,
    *,
    gate: Path | None = None,
    options: dict[str, Any] | None = None,
) -> Fetcher:
    """Fetch ``url`` from ``count`` processes: a fresh interpreter, forked after its imports when count > 1.

    With ``gate`` each waits for ``gate/go`` once ready (``gate/ready-<i>``), so all start at once;
    forking from the fresh interpreter pays the import of torch once, not once per process.
    ``options`` (JSON-able) join the fetch options.
    """
    assert count == 1 or gate is not None, "several fetchers need a gate directory for their answers"
    return Fetcher(
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CHILD,
                url,
                str(cache_dir),
                str(gate or ""),
                str(count),
                json.dumps(options or {}),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )


def open_gate(gate: Path, count: int, *, timeout: float = 240.0) -> None:
    """Wait until ``count`` fetchers are ready (imports done), then let them all go at once."""
    deadline = time.monotonic() + timeout
    while len(list(gate.glob("ready-*"))) < count:
        assert time.monotonic() < deadline, "fetching processes did not start"
        time.sleep(0.02)
    (gate / "go").touch()
