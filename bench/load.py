"""Load a checkpoint into a model: wall time and the peak RSS the load adds, against torch's own calls.

Each run is a fresh process (``bench.load_worker``) with the model already built; the file is in the
page cache for every method alike. Copying loads write into a materialised model; ``assign`` loads
start from a model on the ``meta`` device. Baselines: ``torch.load`` + ``load_state_dict`` (torch's
default, reading the file into memory), and the same with ``mmap=True``.
"""

from __future__ import annotations

from bench.common import BenchConfig, MiB, Table, median, ratio, run_json

__all__ = ["NAME", "run"]

NAME = "load"

_LABELS = {
    "torch": "torch.load + load_state_dict",
    "torch-mmap": "torch.load(mmap=True) + load_state_dict",
    "ckptflow": "ckptflow.load",
    "torch-assign": "torch.load + load_state_dict(assign=True)",
    "torch-mmap-assign": "torch.load(mmap=True) + load_state_dict(assign=True)",
    "ckptflow-assign": "ckptflow.load(assign=True)",
}


def run(config: BenchConfig) -> Table:
    layers, dim = (4, 2048) if config.quick else (16, 4096)
    path = config.workdir / "load.pt"
    expected = run_json("bench.load_worker", "make", str(path), str(layers), str(dim))["check"]
    size = path.stat().st_size
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in _LABELS}
    notes: list[str] = []
    try:
        for _ in range(config.repeats):
            for mode in _LABELS:
                result = run_json("bench.load_worker", mode, str(path), str(layers), str(dim))
                if result["check"] != expected:
                    raise RuntimeError(f"{mode} loaded other values than the checkpoint holds")
                if not result["peak_reset"] and not notes:
                    notes.append("peak RSS could not be reset: peaks include everything since process start")
                results[mode].append(result)
    finally:
        path.unlink(missing_ok=True)
    rows = []
    for mode, label in _LABELS.items():
        baseline = "torch-assign" if mode.endswith("assign") else "torch"
        seconds = median([r["seconds"] for r in results[mode]])
        added = median([r["peak_added"] for r in results[mode]])
        base_seconds = median([r["seconds"] for r in results[baseline]])
        rows.append(
            (
                label,
                f"{seconds:.3f}",
                ratio(seconds, base_seconds),
                f"{added / MiB:.0f}",
                f"{added / size:.2f}x",
            )
        )
    return Table(
        title=(
            f"Load a {size / MiB:.0f} MiB checkpoint into a model "
            f"(median of {config.repeats}, fresh process each)"
        ),
        columns=("method", "seconds", "x torch baseline", "peak RSS added (MiB)", "x checkpoint size"),
        rows=tuple(rows),
        notes=(
            "peak RSS added: VmHWM after the load minus VmRSS before it (peak reset via "
            "/proc/self/clear_refs); file pages mapped by mmap count as resident while mapped",
            "x torch baseline: against torch.load + load_state_dict, with assign=True for the assign rows",
            *notes,
        ),
    )
