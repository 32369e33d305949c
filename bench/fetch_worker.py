"""One measured cold fetch in a fresh process: ``python -m bench.fetch_worker URL CACHE_DIR [default|block]``.

Prints one JSON line: wall seconds, the CPU seconds the process spent (user and system, all threads)
and the peak RSS the fetch added (peak reset just before it). ``block`` hands the fetch
``ckptflow.sources.wire.BlockTransport`` instead of httpx's own transport (the default).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import ckptflow as cf
from bench.common import peak_rss_reset, proc_status
from ckptflow.sources.wire import BlockTransport


def main(url: str, cache_dir: str, transport: str = "default") -> None:
    chosen = BlockTransport() if transport == "block" else None
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
