"""HTTP cold fetch: ckptflow against ``curl -o``, one httpx stream and ``pooch.retrieve``, on one server.

Every method downloads the same file from the same loopback server (its own process, ``sendfile`` with
Range support) into an empty directory; runs alternate between methods so background load hits all
of them alike. ckptflow and pooch also verify a sha256 (ckptflow always hashes what it caches); curl
and the plain httpx stream do not, so ``curl -o`` followed by ``openssl dgst -sha256`` (hardware SHA)
is shown as the like-for-like line.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

import ckptflow as cf
from bench.common import (
    BenchConfig,
    MiB,
    Table,
    fresh_dir,
    interleaved,
    median,
    random_file,
    ratio,
    time_once,
)
from bench.servers import file_server_process
from ckptflow.sources.parts import DEFAULT_MAX_CONCURRENCY
from ckptflow.sources.wire import BlockTransport

__all__ = ["NAME", "run"]

NAME = "http"


def _curl(url: str, dest: Path) -> None:
    subprocess.run(["curl", "-s", "-f", "-o", str(dest / "out.bin"), url], check=True)


def _curl_then_hash(url: str, dest: Path) -> None:
    _curl(url, dest)
    subprocess.run(["openssl", "dgst", "-sha256", str(dest / "out.bin")], check=True, capture_output=True)


def _httpx_stream(url: str, dest: Path) -> None:
    with httpx.Client() as client, client.stream("GET", url) as response, (dest / "out.bin").open("wb") as f:
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 20):
            f.write(chunk)


def _pooch(digest: str) -> Callable[[str, Path], None]:
    def fetch(url: str, dest: Path) -> None:
        import pooch

        pooch.get_logger().setLevel("WARNING")
        pooch.retrieve(url, known_hash=f"sha256:{digest}", fname="out.bin", path=dest, progressbar=False)

    return fetch


def _ckptflow(url: str, dest: Path) -> None:
    cf.fetch(url, cache_dir=dest, progress=False).unwrap()


def _ckptflow_block(url: str, dest: Path) -> None:
    cf.fetch(url, cache_dir=dest, progress=False, transport=BlockTransport()).unwrap()


def methods(digest: str) -> dict[str, Callable[[str, Path], None]]:
    """The contenders, baseline first."""
    return {
        "curl -o": _curl,
        "curl -o, then openssl dgst -sha256": _curl_then_hash,
        "httpx, one stream": _httpx_stream,
        "pooch.retrieve (sha256)": _pooch(digest),
        "ckptflow.fetch": _ckptflow,
        "ckptflow.fetch, transport=BlockTransport()": _ckptflow_block,
    }


def run(config: BenchConfig) -> Table:
    size = config.size(1024, 64)
    root = config.workdir / "http-src"
    root.mkdir(parents=True, exist_ok=True)
    digest = random_file(root / "ckpt.bin", size)
    contenders = methods(digest)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        with file_server_process(root) as base:
            url = f"{base}/ckpt.bin"
            for name in interleaved(list(contenders), config.repeats):
                with fresh_dir(config.workdir, "http-") as dest:
                    times[name].append(time_once(lambda f=contenders[name], d=dest: f(url, d)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base_time = median(times["curl -o"])
    rows = tuple(
        (name, f"{median(t):.2f}", f"{size / MiB / median(t):.0f}", ratio(median(t), base_time))
        for name, t in times.items()
    )
    return Table(
        title=f"HTTP cold fetch of {size // MiB} MiB over loopback (median of {config.repeats})",
        columns=("method", "seconds", "MiB/s", "x curl -o"),
        rows=rows,
        notes=(
            "ckptflow.fetch: default settings (httpx's transport, parallel parts of 32 MiB, "
            f"{DEFAULT_MAX_CONCURRENCY} at a time here, sha256 while receiving, fsync before the atomic "
            "rename into the cache); methods take turns in a shuffled order each round",
        ),
    )
