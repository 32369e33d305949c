"""Checkpoint layouts: recognise what was deserialized and take it apart, purely.

``detect_format`` names the layout; ``extract`` splits a payload into a state dict, a ``TrainingState``
and JSON-friendly metadata. Where each layout keeps its parts is data (``LAYOUTS``), not branches.
Nothing here reads a file or changes the payload: every dict returned is new, tensors are shared
and never modified.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from attrs import cmp_using, evolve, field, frozen
from returns.result import Failure, Result, Success

from ckptflow.context import Context, StateDict, TrainingState, state_equal, tree_equal
from ckptflow.errors import Error, InvalidConfig, StageFailed, UnknownFormat
from ckptflow.pipeline import NamedStage
from ckptflow.stages.keys import strip_prefix_keys

__all__ = [
    "FORMATS",
    "FORMAT_STAGES",
    "LAYOUTS",
    "LIGHTNING_MARKERS",
    "LIGHTNING_PREFIX",
    "Extracted",
    "Layout",
    "SafetensorsPayload",
    "auto_strip_prefix",
    "detect",
    "detect_format",
    "extract",
    "extract_stage",
    "is_state_dict",
    "jsonable",
]

LIGHTNING_MARKERS = ("callbacks", "optimizer_states", "lr_schedulers", "loops")
"""Top-level keys only Lightning writes; two of them (or ``pytorch-lightning_version``) mark its layout."""

LIGHTNING_PREFIX = "model."
_LIGHTNING_VERSION = "pytorch-lightning_version"
_REPR_LIMIT = 200


@frozen
class SafetensorsPayload:
    """What reading a safetensors file gives: its tensors and its string metadata header."""

    tensors: Mapping[str, torch.Tensor] = field(eq=cmp_using(eq=tree_equal), repr=False)
    metadata: Mapping[str, str] = field(factory=dict)


@frozen(kw_only=True)
class Layout:
    """Where a checkpoint layout keeps each part; the first key present with the right shape wins."""

    state: tuple[str, ...]
    optimizer: tuple[str, ...] = ()
    scheduler: tuple[str, ...] = ()
    epoch: tuple[str, ...] = ()
    step: tuple[str, ...] = ()


LAYOUTS: Mapping[str, Layout] = {
    "lightning": Layout(
        state=("state_dict",),
        optimizer=("optimizer_states",),
        scheduler=("lr_schedulers",),
        epoch=("epoch",),
        step=("global_step",),
    ),
    "pytorch": Layout(
        state=("model_state_dict", "state_dict", "model"),
        optimizer=("optimizer_state_dict", "optimizer"),
        scheduler=("scheduler_state_dict", "lr_scheduler_state_dict", "scheduler", "lr_scheduler"),
        epoch=("epoch",),
        step=("global_step", "step"),
    ),
}


@frozen
class Extracted:
    """A payload taken apart: the weights, what a resume needs, and what describes the checkpoint."""

    state: StateDict = field(eq=cmp_using(eq=state_equal), repr=False)
    training: TrainingState = field(factory=TrainingState)
    metadata: Mapping[str, Any] = field(factory=dict)


def is_state_dict(value: object) -> bool:
    """A mapping from string names to tensors (possibly empty)."""
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def _has_tensor(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, Mapping):
        return any(_has_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    return False


def jsonable(value: object) -> Any:
    """A JSON-friendly copy: mappings, lists and scalars kept; any other object as a short ``repr``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 1] + "…"


def _unknown(raw: object) -> Failure[Error]:
    """``UnknownFormat`` listing the payload's top-level keys (or its type when it is not a mapping)."""
    keys = [str(k) for k in raw] if isinstance(raw, Mapping) else [f"<{type(raw).__name__}, not a mapping>"]
    return Failure(UnknownFormat(keys=keys))


def _is_lightning(raw: Mapping[Any, Any]) -> bool:
    marked = _LIGHTNING_VERSION in raw or sum(k in raw for k in LIGHTNING_MARKERS) >= 2
    return marked and is_state_dict(raw.get("state_dict"))


def _is_pytorch(raw: Mapping[Any, Any]) -> bool:
    return any(is_state_dict(raw.get(k)) for k in LAYOUTS["pytorch"].state)


def _is_bare_state_dict(raw: Mapping[Any, Any]) -> bool:
    return len(raw) > 0 and is_state_dict(raw)


_RECOGNISERS: Mapping[str, Callable[[Mapping[Any, Any]], bool]] = {
    "lightning": _is_lightning,
    "pytorch": _is_pytorch,
    "state_dict": _is_bare_state_dict,
}
"""Mapping layouts in the order they are tried: the first that recognises a payload names it."""


def detect_format(raw: object) -> Result[str, Error]:
    """Name the layout of a deserialized payload: lightning, pytorch, state_dict or safetensors."""
    if isinstance(raw, SafetensorsPayload):
        return Success("safetensors")
    if isinstance(raw, Mapping):
        for name, recognise in _RECOGNISERS.items():
            if recognise(raw):
                return Success(name)
    return _unknown(raw)


def _first(raw: Mapping[Any, Any], keys: tuple[str, ...], accept: Callable[[object], bool]) -> str | None:
    return next((k for k in keys if k in raw and accept(raw[k])), None)


def _as_count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    return None


def _is_count(value: object) -> bool:
    return _as_count(value) is not None


def _is_states(value: object) -> bool:
    return isinstance(value, Mapping) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, Mapping) for v in value)
    )


def _states(value: object) -> tuple[Mapping[str, Any], ...]:
    if isinstance(value, Mapping):
        return (value,)
    return tuple(value) if isinstance(value, (list, tuple)) else ()


def _take_apart(raw: Mapping[Any, Any], layout: Layout) -> Extracted:
    state_key = _first(raw, layout.state, is_state_dict)
    optimizer_key = _first(raw, layout.optimizer, _is_states)
    scheduler_key = _first(raw, layout.scheduler, _is_states)
    epoch_key = _first(raw, layout.epoch, _is_count)
    step_key = _first(raw, layout.step, _is_count)
    used = {state_key, optimizer_key, scheduler_key, epoch_key, step_key}
    rest = {str(k): v for k, v in raw.items() if k not in used}
    training = TrainingState(
        epoch=_as_count(raw[epoch_key]) if epoch_key else None,
        global_step=_as_count(raw[step_key]) if step_key else None,
        optimizer_states=_states(raw[optimizer_key]) if optimizer_key else (),
        scheduler_states=_states(raw[scheduler_key]) if scheduler_key else (),
        extra=rest,
    )
    metadata = {k: jsonable(v) for k, v in rest.items() if not _has_tensor(v)}
    return Extracted(dict(raw[state_key]) if state_key else {}, training, metadata)


def _extract_layout(name: str) -> Callable[[object], Result[Extracted, Error]]:
    def run(raw: object) -> Result[Extracted, Error]:
        if isinstance(raw, Mapping) and _RECOGNISERS[name](raw):
            return Success(_take_apart(raw, LAYOUTS[name]))
        return _unknown(raw)

    return run


def _extract_state_dict(raw: object) -> Result[Extracted, Error]:
    if isinstance(raw, Mapping) and _is_bare_state_dict(raw):
        return Success(Extracted(dict(raw)))
    return _unknown(raw)


def _extract_safetensors(raw: object) -> Result[Extracted, Error]:
    if isinstance(raw, SafetensorsPayload):
        return Success(Extracted(dict(raw.tensors), metadata=dict(raw.metadata)))
    return _unknown(raw)


FORMATS: Mapping[str, Callable[[object], Result[Extracted, Error]]] = {
    "lightning": _extract_layout("lightning"),
    "pytorch": _extract_layout("pytorch"),
    "state_dict": _extract_state_dict,
    "safetensors": _extract_safetensors,
}
"""Each known format name and how a payload of that format is taken apart."""


def extract(raw: object, fmt: str) -> Result[Extracted, Error]:
    """Take a payload of format ``fmt`` apart; ``UnknownFormat`` when it is not laid out that way."""
    extractor = FORMATS.get(fmt)
    if extractor is None:
        known = ", ".join(FORMATS)
        problem = f"format: unknown {fmt!r}; use one of {known}"
        return Failure(InvalidConfig(problems=(problem,)))
    return extractor(raw)


def _missing(what: str, stage: str, before: str) -> Failure[Error]:
    return Failure(StageFailed(detail=f"the context has no {what}: put {stage} after {before}", stage=stage))


def _detect(ctx: Context) -> Result[Context, Error]:
    if ctx.format is not None:
        return Success(ctx.with_event("format.detected", "detect", format=ctx.format, preset=True))
    if ctx.raw is None:
        return _missing("deserialized payload", "detect", "read")
    return detect_format(ctx.raw).map(
        lambda fmt: evolve(ctx, format=fmt).with_event("format.detected", "detect", format=fmt, preset=False)
    )


def _extract(ctx: Context) -> Result[Context, Error]:
    if ctx.raw is None or ctx.format is None:
        return _missing("payload or format", "extract", "read and detect")

    def into(ex: Extracted) -> Context:
        out = evolve(ctx, state=ex.state, training=ex.training, metadata={**ctx.metadata, **ex.metadata})
        return out.with_event(
            "checkpoint.extracted",
            "extract",
            format=ctx.format,
            tensors=len(ex.state),
            optimizer_states=len(ex.training.optimizer_states),
            scheduler_states=len(ex.training.scheduler_states),
            epoch=ex.training.epoch,
            global_step=ex.training.global_step,
        )

    return extract(ctx.raw, ctx.format).map(into)


def _auto_strip_prefix(ctx: Context) -> Result[Context, Error]:
    if ctx.state is None:
        return _missing("state dict", "auto_strip_prefix", "extract")
    if ctx.format != "lightning":
        return Success(ctx)
    without = [k for k in ctx.state if not k.startswith(LIGHTNING_PREFIX)]
    if not ctx.state or without:
        reason = (
            "the state dict is empty"
            if not ctx.state
            else f"{len(without)} of {len(ctx.state)} keys lack it (e.g. {without[0]!r})"
        )
        return Success(
            ctx.with_event("prefix.kept", "auto_strip_prefix", prefix=LIGHTNING_PREFIX, reason=reason)
        )
    return strip_prefix_keys(ctx.state, LIGHTNING_PREFIX).map(
        lambda state: evolve(ctx, state=state).with_event(
            "prefix.stripped", "auto_strip_prefix", prefix=LIGHTNING_PREFIX, keys=len(state)
        )
    )


detect = NamedStage("detect", _detect)
"""ctx.raw → ctx.format; a format already set (by the caller or the reader) is kept."""

extract_stage = NamedStage("extract", _extract)
"""ctx.raw and ctx.format → ctx.state, ctx.training and ctx.metadata."""

auto_strip_prefix = NamedStage("auto_strip_prefix", _auto_strip_prefix)
"""For Lightning checkpoints, strip ``model.`` when every key has it; otherwise keep keys and say why."""

FORMAT_STAGES: tuple[NamedStage, ...] = (detect, extract_stage, auto_strip_prefix)
"""The default way from a deserialized payload to a state dict: ``pipeline(read, *FORMAT_STAGES)``."""
