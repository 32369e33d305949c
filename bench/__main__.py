"""Run the benchmark suite: ``python -m bench [--quick] [--only NAME ...] [--repeats N] [--json FILE]``.

Each benchmark runs ckptflow and its baseline in the same run, against the same loopback servers, and
prints a Markdown table of medians and ratios. ``--quick`` uses small sizes and two repeats (a smoke
run); without it the sizes are those of docs/performance.md. Data lives in a temporary directory
(``--workdir`` to choose where) that is removed at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BenchConfig, Table

BENCHMARKS = ("http", "s3", "cache_hit", "load", "overhead", "scaling")
_MODULES = {
    "http": "bench.http_fetch",
    "s3": "bench.s3_fetch",
    "cache_hit": "bench.cache_hit",
    "load": "bench.load",
    "overhead": "bench.overhead",
    "scaling": "bench.scaling",
}


def machine() -> str:
    """One line naming the machine the numbers come from."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            total_kib = int(f.readline().split()[1])
        memory = f"{total_kib / (1 << 20):.1f} GiB RAM"
    except OSError:
        memory = "RAM unknown"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs (nproc), {memory}, "
        f"Python {platform.python_version()}, load average {load:.2f} at start"
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repeats (smoke run)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    parser.add_argument("--repeats", type=int, help="repeats per method (default 5, quick 2)")
    parser.add_argument("--workdir", type=Path, help="where to put temporary data (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the tables as JSON to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    names = args.only or list(BENCHMARKS)
    repeats = args.repeats or (2 if args.quick else 5)
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ckptflow-bench-", dir=parent))
    config = BenchConfig(workdir=workdir, quick=args.quick, repeats=repeats)
    print(f"# ckptflow benchmarks{' (quick)' if args.quick else ''}\n\n{machine()}\n", flush=True)
    tables: list[Table] = []
    try:
        for name in names:
            started = time.perf_counter()
            produced = importlib.import_module(_MODULES[name]).run(config)
            for table in produced if isinstance(produced, tuple) else (produced,):
                tables.append(table)
                print(table.render(), flush=True)
            print(f"({name}: {time.perf_counter() - started:.0f}s)\n", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps([t.as_dict() for t in tables], indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
