"""One measured cold fetch in a fresh process: ``python -m bench.fetch_worker URL CACHE_DIR [block|h11]``.

Prints one JSON line: wall seconds, the CPU seconds the process spent (user and system, all threads)
and the peak RSS the fetch added (peak reset just before it). ``block`` is ckptflow's default
transport; ``h11`` hands the fetch httpx's own transport instead, for comparison.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import httpx

import ckptflow as cf
from bench.common import peak_rss_reset, proc_status


def main(url: str, cache_dir: str, transport: str = "block") -> None:
    chosen = httpx.HTTPTransport() if transport == "h11" else None
    reset = peak_rss_reset()
    before = proc_status()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    cf.fetch(url, cache_dir=cache_dir, progress=False, transport=chosen).unwrap()
    seconds = time.perf_counter() - started
    used = resource.getrusage(resource.RUSAGE_SELF)
    after = proc_status()
    baseline = before["VmRSS"] if reset else before["VmHWM"]
    result = {
        "seconds": seconds,
        "cpu_user": used.ru_utime - cpu.ru_utime,
        "cpu_system": used.ru_stime - cpu.ru_stime,
        "peak_added": max(0, after["VmHWM"] - baseline),
        "peak_reset": reset,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
