"""The benchmark suite runs end to end in quick mode and prints its tables (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_benchmarks_print_a_table_per_measure_and_leave_no_data(tmp_path):
    out = tmp_path / "tables.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--repeats",
            "1",
            "--only",
            "cache_hit",
            "overhead",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "CPUs (nproc)" in done.stdout
    tables = json.loads(out.read_text())
    titles = [t["title"] for t in tables]
    assert any(t.startswith("Cache hit of a 64 MiB checkpoint") for t in titles)
    assert any(t.startswith("A whole load of") for t in titles)
    for table in tables:
        assert table["rows"] and all(len(row) == len(table["columns"]) for row in table["rows"])
        assert f"### {table['title']}" in done.stdout
    hit = next(t for t in tables if t["title"].startswith("Cache hit"))
    assert hit["rows"][0][0] == "pooch.retrieve (re-hash)"
    assert any(row[0].startswith("ckptflow.fetch") for row in hit["rows"])
    assert list((tmp_path / "work").iterdir()) == []
