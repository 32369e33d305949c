"""One measured cold fetch in a fresh process: ``python -m bench.fetch_worker URL CACHE_DIR [urllib3]``.

Prints one JSON line: wall seconds, the CPU seconds the process spent (user and system, all threads)
and the peak RSS the fetch added (peak reset just before it). ``urllib3`` uses the benchmark's
prototype transport instead of httpx's.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import ckptflow as cf
from bench.common import peak_rss_reset, proc_status


def main(url: str, cache_dir: str, transport: str = "httpx") -> None:
    chosen = None
    if transport == "urllib3":
        from bench.urllib3_transport import Urllib3Transport

        chosen = Urllib3Transport()
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
