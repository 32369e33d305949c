"""How a cold HTTP fetch scales with size: time, throughput and the memory it adds, 64 MiB to 1 GiB.

Each fetch runs in a fresh process (``bench.fetch_worker``) against the loopback file server; memory
is the peak RSS added by the fetch, which stays bounded by parts in flight, not by the file's size.
"""

from __future__ import annotations

import shutil

from bench.common import BenchConfig, MiB, Table, fresh_dir, median, random_file, run_json
from bench.servers import file_server_process
from ckptflow.sources.parts import DEFAULT_MAX_CONCURRENCY

__all__ = ["NAME", "run"]

NAME = "scaling"


def run(config: BenchConfig) -> Table:
    sizes = (16 * MiB, 64 * MiB) if config.quick else (64 * MiB, 256 * MiB, 1024 * MiB)
    root = config.workdir / "scaling-src"
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in sizes:
            name = f"{size // MiB}.bin"
            random_file(root / name, size)
            results = []
            with file_server_process(root) as base:
                for _ in range(config.repeats):
                    with fresh_dir(config.workdir, "scaling-") as cache:
                        results.append(run_json("bench.fetch_worker", f"{base}/{name}", str(cache)))
            (root / name).unlink()
            seconds = median([r["seconds"] for r in results])
            added = median([r["peak_added"] for r in results])
            rows.append(
                (f"{size // MiB} MiB", f"{seconds:.2f}", f"{size / MiB / seconds:.0f}", f"{added / MiB:.0f}")
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return Table(
        title=f"ckptflow.fetch over loopback HTTP by size (median of {config.repeats}, fresh process each)",
        columns=("size", "seconds", "MiB/s", "peak RSS added (MiB)"),
        rows=tuple(rows),
        notes=(
            f"objects of 64 MiB and more go in parallel 32 MiB parts, {DEFAULT_MAX_CONCURRENCY} at a time",
        ),
    )
