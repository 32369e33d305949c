"""One measured cold fetch in a fresh process: ``python -m bench.fetch_worker URL CACHE_DIR``.

Prints one JSON line: wall seconds and the peak RSS the fetch added (peak reset just before it).
"""

from __future__ import annotations

import json
import sys
import time

import ckptflow as cf
from bench.common import peak_rss_reset, proc_status


def main(url: str, cache_dir: str) -> None:
    reset = peak_rss_reset()
    before = proc_status()
    started = time.perf_counter()
    cf.fetch(url, cache_dir=cache_dir, progress=False).unwrap()
    seconds = time.perf_counter() - started
    after = proc_status()
    baseline = before["VmRSS"] if reset else before["VmHWM"]
    print(
        json.dumps({"seconds": seconds, "peak_added": max(0, after["VmHWM"] - baseline), "peak_reset": reset})
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
