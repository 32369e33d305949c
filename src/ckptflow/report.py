"""Rendering a LoadReport: a text for people and a JSON-safe dict for machines (``--json``). Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import torch

from ckptflow.context import Event, LoadReport

__all__ = ["format_report", "json_safe", "report_as_dict"]

_NOTEWORTHY_STAGES = frozenset({"apply"})
_NOTEWORTHY_NAMES = frozenset({"stage.skipped", "plan.no_scheduler_state"})


def json_safe(value: object) -> Any:
    """The same data built from JSON types only: tensors become their shape and dtype, sets sorted lists."""
    match value:
        case None | bool() | int() | str():
            return value
        case float():
            return value if math.isfinite(value) else str(value)
        case torch.Tensor():
            return {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        case torch.dtype():
            return str(value).removeprefix("torch.")
        case PurePath():
            return str(value)
        case Mapping():
            return {str(k): json_safe(v) for k, v in value.items()}
        case set() | frozenset():
            return sorted((json_safe(v) for v in value), key=str)
        case list() | tuple():
            return [json_safe(v) for v in value]
    return str(value)


def _event_dict(event: Event) -> dict[str, Any]:
    return {"name": event.name, "stage": event.stage, "data": json_safe(event.data)}


def report_as_dict(report: LoadReport) -> dict[str, Any]:
    """Every field of the report as JSON types, plus ``counts``."""
    return {
        "strategy": report.strategy,
        "source": report.source,
        "digest": report.digest,
        "format": report.format,
        "counts": dict(report.counts),
        "loaded": list(report.loaded),
        "parameters_loaded": report.parameters_loaded,
        "skipped": [{"key": s.key, "reason": s.reason} for s in report.skipped],
        "missing": list(report.missing),
        "unexpected": list(report.unexpected),
        "cast": list(report.cast),
        "frozen": [{"module": f.module, "parameters": f.parameters} for f in report.frozen],
        "frozen_parameters": report.frozen_parameters,
        "epoch": report.epoch,
        "global_step": report.global_step,
        "optimizer_restored": report.optimizer_restored,
        "scheduler_restored": report.scheduler_restored,
        "events": [_event_dict(e) for e in report.events],
        "timings": json_safe(dict(report.timings)),
    }


def _row(label: str, value: object) -> str:
    return f"  {label:<20} {value}"


def _items(lines: list[str]) -> list[str]:
    return [f"    - {line}" for line in lines]


def _restored(flag: bool) -> str:
    return "restored" if flag else "not restored"


def _notes(events: tuple[Event, ...]) -> list[str]:
    noteworthy = [e for e in events if e.stage in _NOTEWORTHY_STAGES or e.name in _NOTEWORTHY_NAMES]
    return [f"{e.name}: " + ", ".join(f"{k}={json_safe(v)}" for k, v in e.data.items()) for e in noteworthy]


def format_report(report: LoadReport) -> str:
    """A readable account of a load: every skipped key and why, what kept its initialisation, what froze."""
    lines = [
        _row("strategy", report.strategy),
        _row("source", report.source or "-"),
        _row("format", report.format or "-"),
        _row("sha256", report.digest or "-"),
        _row("loaded", f"{len(report.loaded)} tensors ({report.parameters_loaded:,d} elements)"),
        _row("skipped", len(report.skipped)),
        *_items([f"{s.key}: {s.reason}" for s in report.skipped]),
        _row("kept initialisation", len(report.missing)),
        *_items(list(report.missing)),
    ]
    if report.cast:
        lines += [_row("cast", len(report.cast)), *_items(list(report.cast))]
    lines += [
        _row("frozen", f"{len(report.frozen)} module(s), {report.frozen_parameters:,d} parameters"),
        *_items([f"{f.module}: {f.parameters:,d} parameters" for f in report.frozen]),
        _row("counters", f"epoch {report.epoch}, global step {report.global_step}"),
        _row("optimizer", _restored(report.optimizer_restored)),
        _row("scheduler", _restored(report.scheduler_restored)),
    ]
    notes = _notes(report.events)
    if notes:
        lines += [_row("notes", len(notes)), *_items(notes)]
    return "\n".join(lines)
