"""Where a cold HTTP fetch spends its CPU: ``python -m bench.profile_http [--size-mib N]``.

Runs ``curl -o`` and ``ckptflow.fetch`` (with httpx's transport, the default, and with
``BlockTransport``) and the floor under both (``bench.floor_worker``: the same parts, hash and flush
with nothing but ``http.client``) against the loopback file server, each in a fresh process, and
prints the wall, user and system CPU seconds of each; then, if py-spy is installed,
samples a fetch with each transport while a thread holds the GIL and lists the functions doing it.
"""

from __future__ import annotations

import argparse
import collections
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import MiB, Table, fresh_dir, interleaved, random_file, run_json, time_once
from bench.servers import file_server_process
from ckptflow.sources.parts import DEFAULT_MAX_CONCURRENCY

__all__ = ["main"]

_CPU_ROWS: dict[str, str | None] = {
    "curl -o": None,
    "ckptflow.fetch (httpx's transport, the default)": "default",
    "ckptflow.fetch (BlockTransport)": "block",
    "floor: stdlib http.client, 256 KiB reused buffers, same parts, hash and flush": "floor",
}


def _where(frame: str) -> str:
    """``func (path/to/file.py:line)`` as ``func (file.py)``: lines vary, the function is what counts."""
    name, _, place = frame.partition(" (")
    return f"{name} ({place.split(':')[0].rsplit('/', 2)[-1] if place else '?'})"


def _curl_cpu(url: str, dest: Path) -> tuple[float, float, float]:
    """Wall, user CPU and system CPU seconds of one ``curl -o``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = time_once(lambda: subprocess.run(["curl", "-s", "-o", str(dest / "o"), url], check=True))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def _samples(url: str, workdir: Path, transport: str) -> collections.Counter[str] | None:
    """py-spy samples of the fetch while a thread holds the GIL, by innermost function."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    raw = workdir / "profile.txt"
    with fresh_dir(workdir, "prof-") as cache:
        subprocess.run(
            [spy, "record", "--gil", "-r", "250", "-f", "raw", "-o", str(raw), "--",
             sys.executable, "-m", "bench.fetch_worker", url, str(cache), transport],
            check=True,
            capture_output=True,
        )  # fmt: skip
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(marker in f for f in frames for marker in ("PartsDownload", "fetch (ckptflow/fetch.py")):
            counts[_where(frames[-1])] += int(count)
    return counts


def _ablation(url: str, workdir: Path, repeats: int) -> Table:
    """ckptflow.fetch with fewer parts at a time, and without the durability flush (diagnosis only)."""
    import ckptflow as cf
    import ckptflow.sources.parts as parts_module
    import ckptflow.sources.transfer as transfer_module

    fsync, writeback = transfer_module.os.fsync, parts_module.start_writeback
    variants = {
        f"default ({DEFAULT_MAX_CONCURRENCY} parts at a time here)": ({}, True),
        "8 parts at a time": ({"max_concurrency": 8}, True),
        "4 parts at a time": ({"max_concurrency": 4}, True),
        "2 parts at a time": ({"max_concurrency": 2}, True),
        "default, no fsync/writeback (ablation)": ({}, False),
    }
    times: dict[str, list[float]] = {"curl -o": [], **{name: [] for name in variants}}
    try:
        for _ in range(repeats):
            with fresh_dir(workdir, "curl-") as dest:
                times["curl -o"].append(_curl_cpu(url, dest)[0])
            for name, (options, durable) in variants.items():
                transfer_module.os.fsync = fsync if durable else (lambda fd: None)
                parts_module.start_writeback = writeback if durable else (lambda *a: None)
                with fresh_dir(workdir, "cf-") as cache:
                    fetch = lambda c=cache, o=options: cf.fetch(url, cache_dir=c, progress=False, options=o)  # noqa: E731
                    times[name].append(time_once(lambda f=fetch: f().unwrap()))
    finally:
        transfer_module.os.fsync = fsync
        parts_module.start_writeback = writeback
    base = statistics.median(times["curl -o"])
    rows = tuple(
        (name, f"{statistics.median(t):.2f}", f"{statistics.median(t) / base:.2f}x")
        for name, t in times.items()
    )
    return Table(
        title=f"ckptflow.fetch variants, median of {repeats}",
        columns=("variant", "seconds", "x curl -o"),
        rows=rows,
        notes=("the ablations patch the engine in this process only, to measure what durability costs",),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_http")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each variant")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ckptflow-profile-"))
    try:
        digest = random_file(workdir / "ckpt.bin", args.size_mib * MiB)
        with file_server_process(workdir) as base:
            url = f"{base}/ckpt.bin"
            runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in _CPU_ROWS}
            for name in interleaved(list(_CPU_ROWS), args.repeats):
                with fresh_dir(workdir, "cpu-") as dest:
                    if _CPU_ROWS[name] is None:
                        runs[name].append(_curl_cpu(url, dest))
                    elif _CPU_ROWS[name] == "floor":
                        parts = str(DEFAULT_MAX_CONCURRENCY)
                        r = run_json("bench.floor_worker", url, str(dest / "out.bin"), parts)
                        if r["sha256"] != digest:
                            raise RuntimeError("the floor worker hashed other bytes than the server holds")
                        runs[name].append((r["seconds"], r["cpu_user"], r["cpu_system"]))
                    else:
                        r = run_json("bench.fetch_worker", url, str(dest), _CPU_ROWS[name])
                        runs[name].append((r["seconds"], r["cpu_user"], r["cpu_system"]))
            rows = [
                (name, *(f"{statistics.median(r[i] for r in measured):.2f}" for i in range(3)))
                for name, measured in runs.items()
            ]
            title = f"CPU for a {args.size_mib} MiB cold fetch, fresh process each (median of {args.repeats})"
            columns = ("method", "wall s", "user CPU s", "system CPU s")
            print(Table(title=title, columns=columns, rows=tuple(rows)).render())
            print(_ablation(url, workdir, args.repeats).render())
            profiles = {t: _samples(url, workdir, t) for t in ("default", "block")}
        for transport, counts in profiles.items():
            if counts is None:
                print("py-spy is not installed: pip install py-spy for where the GIL-holding time goes")
                break
            total = sum(counts.values())
            top = tuple((name, f"{n / total:.0%}") for name, n in counts.most_common(12))
            print(
                Table(
                    title=f"ckptflow.fetch ({transport} transport): functions holding the GIL",
                    columns=("innermost function", "share of GIL-holding samples"),
                    rows=top,
                    notes=(f"py-spy --gil at 250 Hz, {total} samples in the fetch (all threads)",),
                ).render()
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
