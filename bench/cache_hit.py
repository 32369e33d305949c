"""Cache hit of a large checkpoint: ckptflow against pooch, which re-hashes the whole file on every call.

Both were given the file once (not timed). ckptflow answers a hit from its refs: by URL it makes one
HEAD request to learn the version, with a known sha256 it makes none; pooch re-reads and re-hashes
the file to compare it with ``known_hash`` each time.
"""

from __future__ import annotations

import shutil

import ckptflow as cf
from bench.common import BenchConfig, MiB, Table, median, random_file, ratio, time_once
from bench.servers import file_server_process

__all__ = ["NAME", "run"]

NAME = "cache_hit"


def run(config: BenchConfig) -> Table:
    import pooch

    pooch.get_logger().setLevel("WARNING")
    size = config.size(1024, 64)
    root = config.workdir / "hit-src"
    root.mkdir(parents=True, exist_ok=True)
    digest = random_file(root / "ckpt.bin", size)
    cache = config.workdir / "hit-ckptflow"
    pooch_dir = config.workdir / "hit-pooch"
    times: dict[str, list[float]] = {
        "pooch.retrieve (re-hash)": [],
        "ckptflow.fetch by URL (one HEAD)": [],
        "ckptflow.fetch with sha256 (no request)": [],
    }
    try:
        with file_server_process(root) as base:
            url = f"{base}/ckpt.bin"
            cf.fetch(url, cache_dir=cache, progress=False).unwrap()
            known = f"sha256:{digest}"
            pooch.retrieve(url, known_hash=known, fname="ckpt.bin", path=pooch_dir, progressbar=False)
            for _ in range(config.repeats):
                times["pooch.retrieve (re-hash)"].append(
                    time_once(lambda: pooch.retrieve(url, known_hash=known, fname="ckpt.bin", path=pooch_dir))
                )
                times["ckptflow.fetch by URL (one HEAD)"].append(
                    time_once(lambda: cf.fetch(url, cache_dir=cache, progress=False).unwrap())
                )
                times["ckptflow.fetch with sha256 (no request)"].append(
                    time_once(lambda: cf.fetch(url, cache_dir=cache, sha256=digest, progress=False).unwrap())
                )
    finally:
        for path in (root, cache, pooch_dir):
            shutil.rmtree(path, ignore_errors=True)
    base = median(times["pooch.retrieve (re-hash)"])
    rows = tuple((name, f"{median(t) * 1000:.1f}", ratio(median(t), base)) for name, t in times.items())
    return Table(
        title=f"Cache hit of a {size // MiB} MiB checkpoint (median of {config.repeats})",
        columns=("method", "milliseconds", "x pooch"),
        rows=rows,
    )
