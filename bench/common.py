"""What every benchmark shares: its configuration, the table it prints, timing, memory and data helpers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from attrs import field, frozen

__all__ = [
    "MiB",
    "BenchConfig",
    "Table",
    "fresh_dir",
    "median",
    "peak_rss_reset",
    "proc_status",
    "random_file",
    "ratio",
    "interleaved",
    "run_json",
    "sha256_of",
    "time_once",
]

MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent


@frozen(kw_only=True)
class BenchConfig:
    """How big and how often; ``quick`` shrinks sizes and repeats so the suite can be smoke-tested."""

    workdir: Path
    quick: bool = False
    repeats: int = 5

    def size(self, full_mib: int, quick_mib: int) -> int:
        """Bytes for a benchmark: ``full_mib`` normally, ``quick_mib`` in quick mode."""
        return (quick_mib if self.quick else full_mib) * MiB


@frozen(kw_only=True)
class Table:
    """One benchmark's result: a title, column names, rows of cells and notes printed under it."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = field(default=())

    def render(self) -> str:
        """A Markdown table (so the output can be pasted into docs as it is)."""
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
        out = [
            f"### {self.title}",
            "",
            line(self.columns),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        ]
        out += [line(r) for r in self.rows]
        out += ["", *(f"- {n}" for n in self.notes)] if self.notes else []
        return "\n".join(out) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def ratio(value: float, baseline: float) -> str:
    """``value / baseline`` as ``0.93x`` (``0.004x`` below 0.1; ``-`` when the baseline is zero)."""
    if baseline <= 0:
        return "-"
    quotient = value / baseline
    return f"{quotient:.3f}x" if quotient < 0.1 else f"{quotient:.2f}x"


def time_once(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@contextlib.contextmanager
def fresh_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """An empty directory under ``parent``, removed afterwards (every cold run starts from nothing).

    The disk is synced before the directory is handed out, outside any timed window: a method that
    leaves its writeback to the kernel (``curl -o``) must not have the next contender pay for it.
    """
    os.sync()
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def interleaved(names: Sequence[str], repeats: int, *, seed: int = 0) -> Iterator[str]:
    """Each name once per repeat, in a fresh (seeded) order each time, so every method follows a mix
    of others: a run that leaves work for the kernel behind (a large file read back, then deleted)
    does not always burden the same successor."""
    order = random.Random(seed)
    for _ in range(repeats):
        yield from order.sample(list(names), len(names))


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` (in 64 MiB blocks); returns their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        remaining = size
        while remaining:
            block = os.urandom(min(64 * MiB, remaining))
            f.write(block)
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process, in bytes (Linux)."""
    wanted = {"VmRSS", "VmHWM", "RssAnon", "RssFile"}
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in wanted:
                out[key] = int(value.split()[0]) * 1024
    return out


def peak_rss_reset() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def run_json(module: str, *args: str, timeout: float = 600.0) -> dict[str, Any]:
    """Run ``python -m <module> args...`` from the repository root; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
