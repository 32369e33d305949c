"""What the pipeline costs on top of torch: a whole load against the raw calls, each stage's share, the
price of composing a stage, and planning a 10,000-key checkpoint.

In-process, page cache warm, model already built. The raw calls are what ckptflow does underneath:
``torch.load(weights_only=True, mmap=True)`` and ``load_state_dict``; ckptflow adds the static
safety scan of the pickle, format detection, matching and the report.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch
from returns.result import Success

import ckptflow as cf
from bench.common import BenchConfig, Table, median, ratio, time_once
from ckptflow.context import Context, ModelSpec, TrainingState
from ckptflow.pipeline import NamedStage, pipeline
from ckptflow.stages.strategies import plan_for

__all__ = ["NAME", "run"]

NAME = "overhead"


class _Wide(torch.nn.Module):
    def __init__(self, tensors: int, numel: int) -> None:
        super().__init__()
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(numel)) for _ in range(tensors))


def _timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: imports, page cache, allocator
    gc.collect()
    return median([time_once(fn) for _ in range(repeats)])


def _interleaved(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each method, the methods taking turns (after one warm-up call each)."""
    for fn in methods.values():
        fn()
    gc.collect()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            times[name].append(time_once(fn))
    return {name: median(t) for name, t in times.items()}


def _load_tables(config: BenchConfig) -> tuple[Table, Table]:
    tensors, numel = (50, 20_000) if config.quick else (100, 250_000)  # 4 MB or 100 MB of float32
    model = _Wide(tensors, numel)
    path = config.workdir / "overhead.pt"
    torch.save({k: torch.rand_like(v) for k, v in model.state_dict().items()}, path)
    repeats = max(5, config.repeats * 2)
    reports = []
    raw_mmap, raw, full = (
        "torch.load(mmap=True) + load_state_dict",
        "torch.load + load_state_dict",
        "ckptflow",
    )
    try:
        medians = _interleaved(
            {
                raw_mmap: lambda: model.load_state_dict(
                    torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                ),
                raw: lambda: model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)),
                full: lambda: reports.append(cf.load(model, path).unwrap()),
            },
            repeats,
        )
    finally:
        path.unlink(missing_ok=True)
    size = tensors * numel * 4
    whole = Table(
        title=(
            f"A whole load of a {size / 1e6:.0f} MB checkpoint, {tensors} tensors "
            f"(median of {repeats}, methods taking turns)"
        ),
        columns=("method", "milliseconds", "x raw torch (mmap)"),
        rows=(
            (raw_mmap, f"{medians[raw_mmap] * 1000:.1f}", "1.00x"),
            (raw, f"{medians[raw] * 1000:.1f}", ratio(medians[raw], medians[raw_mmap])),
            (
                "ckptflow.load (fetch, read, detect, extract, plan, freeze, apply)",
                f"{medians[full] * 1000:.1f}",
                ratio(medians[full], medians[raw_mmap]),
            ),
        ),
        notes=("ckptflow's extra is itemised in the per-stage table below",),
    )
    stages = sorted({name for report in reports for name in report.timings})
    per_stage = [(name, median([r.timings.get(name, 0.0) for r in reports[1:]])) for name in stages]
    stage_table = Table(
        title="Where ckptflow.load spends its time, per stage (from the report's timings)",
        columns=("stage", "milliseconds", "share"),
        rows=tuple(
            (name, f"{seconds * 1000:.2f}", f"{seconds / medians[full]:.0%}")
            for name, seconds in sorted(per_stage, key=lambda item: -item[1])
        ),
    )
    return whole, stage_table


def _identity(ctx: Context) -> Success[Context]:
    return Success(ctx)


def _composition_row(config: BenchConfig) -> tuple[str, str, str]:
    count = 1000
    chain = pipeline(*(NamedStage(f"s{i}", _identity) for i in range(count)))
    start = Context(source="bench")
    per_run = _timed(lambda: chain(start), max(3, config.repeats))
    return ("one composed stage (1,000 identity stages / 1,000)", f"{per_run / count * 1e6:.1f} µs", "")


def _planning_rows(config: BenchConfig) -> list[tuple[str, str, str]]:
    keys = 10_000
    state = {f"encoder.layer{i // 10}.block{i % 10}.weight": torch.zeros(4) for i in range(keys)}
    spec = ModelSpec.from_state(state)
    training = TrainingState()
    repeats = max(5, config.repeats * 2)
    rows = []
    for strategy in ("weights_only", "transfer_learning"):
        seconds = _timed(lambda s=strategy: plan_for(s, state, spec, training).unwrap(), repeats)
        rows.append(
            (f"plan {keys:,} keys, {strategy}", f"{seconds * 1000:.1f} ms", "target: well under 100 ms")
        )
    return rows


def run(config: BenchConfig) -> tuple[Table, ...]:
    whole, stages = _load_tables(config)
    micro = Table(
        title="Pure-core costs",
        columns=("measure", "median", "note"),
        rows=(_composition_row(config), *_planning_rows(config)),
    )
    return whole, stages, micro
