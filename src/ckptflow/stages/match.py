"""Matching a state dict against a ModelSpec: which tensor goes where, and why the others do not.

Pure: reads names, shapes and dtypes, never copies a tensor and never mutates its inputs. The plan's
``assign`` is a new dict whose values are the checkpoint's own tensor objects. Linear in the number of
keys (dict lookups only), so 10,000-key checkpoints plan instantly.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from attrs import frozen
from returns.result import Failure, Result, Success

from ckptflow.context import LoadPlan, ModelSpec, SkippedKey, StateDict, TensorSpec
from ckptflow.errors import Error, IncompatibleState, NothingMatched

__all__ = [
    "NOT_IN_MODEL",
    "castable",
    "dtype_reason",
    "plan_exact",
    "plan_transfer",
    "prefix_hint",
    "shape_reason",
]

NOT_IN_MODEL = "not in model"


def _shape_text(shape: Iterable[int]) -> str:
    return str(tuple(int(s) for s in shape))


def shape_reason(ckpt: Iterable[int], model: Iterable[int]) -> str:
    """``shape mismatch: ckpt (10, 64) vs model (3, 64)``."""
    return f"shape mismatch: ckpt {_shape_text(ckpt)} vs model {_shape_text(model)}"


def dtype_reason(ckpt: torch.dtype, model: torch.dtype) -> str:
    """``dtype not castable: ckpt torch.float32 vs model torch.int64``."""
    return f"dtype not castable: ckpt {ckpt} vs model {model}"


def castable(source: torch.dtype, target: torch.dtype) -> bool:
    """Whether copying a ``source`` tensor into a ``target`` one keeps its meaning.

    Same-kind and widening casts are fine, and so is narrowing within floating point (float32 →
    bfloat16); float → integer or complex → real would silently drop information, so they are refused.
    """
    both_float = source.is_floating_point and target.is_floating_point
    return source == target or both_float or torch.can_cast(source, target)


@frozen(kw_only=True)
class _Comparison:
    """Every checkpoint key sorted into matched / skipped, plus the model tensors with no source."""

    assign: dict[str, torch.Tensor]
    skipped: tuple[SkippedKey, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    cast: tuple[str, ...]


def _reason(tensor: torch.Tensor, spec: TensorSpec | None) -> str | None:
    if spec is None:
        return NOT_IN_MODEL
    if tuple(tensor.shape) != spec.shape:
        return shape_reason(tensor.shape, spec.shape)
    if not castable(tensor.dtype, spec.dtype):
        return dtype_reason(tensor.dtype, spec.dtype)
    return None


def _compare(state: StateDict, spec: ModelSpec) -> _Comparison:
    model = spec.tensors
    matched: dict[str, torch.Tensor] = {}
    skipped: list[SkippedKey] = []
    for key, tensor in state.items():
        reason = _reason(tensor, model.get(key))
        if reason is None:
            matched[key] = tensor
        else:
            skipped.append(SkippedKey(key, reason))
    assign = {name: matched[name] for name in model if name in matched}
    return _Comparison(
        assign=assign,
        skipped=tuple(skipped),
        missing=tuple(name for name in model if name not in matched),
        unexpected=tuple(key for key in state if key not in model),
        cast=tuple(name for name, t in assign.items() if t.dtype != model[name].dtype),
    )


def _plan(strategy: str, c: _Comparison) -> LoadPlan:
    return LoadPlan(
        strategy=strategy,
        assign=c.assign,
        skipped=c.skipped,
        missing=c.missing,
        unexpected=c.unexpected,
        cast=c.cast,
    )


def _dotted_prefixes(keys: Iterable[str]) -> list[str]:
    """Every dotted prefix all ``keys`` share (``model.``, ``model.encoder.``), shortest first."""
    parts = [key.split(".")[:-1] for key in keys]
    if not parts:
        return []
    lo, hi = min(parts), max(parts)  # lexicographic extremes share exactly the common prefix
    pairs = zip(lo, hi, strict=False)
    depth = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(lo), len(hi)))
    return [".".join(lo[:n]) + "." for n in range(1, depth + 1)]


def _matches_after(state: StateDict, spec: ModelSpec, strip: str, add: str) -> int:
    model = spec.tensors
    count = 0
    for key, tensor in state.items():
        target = model.get(add + key[len(strip) :])
        count += target is not None and tuple(tensor.shape) == target.shape
    return count


def _rename_text(strip: str, add: str) -> str:
    steps = [f"strip_prefix({strip!r})" if strip else "", f"add_prefix({add!r})" if add else ""]
    return " then ".join(s for s in steps if s)


def prefix_hint(state: StateDict, spec: ModelSpec) -> str | None:
    """If a common key prefix is all that keeps names apart, the transforms that would align them."""
    strips = ["", *_dotted_prefixes(state)]
    adds = ["", *_dotted_prefixes(spec.tensors)]
    candidates = [(strip, add) for strip in strips for add in adds if strip != add]
    scored = [
        (_matches_after(state, spec, strip, add), -len(strip) - len(add), strip, add)
        for strip, add in candidates
    ]
    best = max(scored, default=(0, 0, "", ""))
    count, _, strip, add = best
    if count == 0:
        return None
    where = [
        f"all checkpoint keys start with {strip!r}" if strip else "",
        f"all model keys start with {add!r}" if add else "",
    ]
    return (
        f"{' and '.join(w for w in where if w)}: add the transform {_rename_text(strip, add)} "
        f"({count} tensor(s) would then match)"
    )


def _nothing_matched_hint(state: StateDict, spec: ModelSpec) -> str:
    found = prefix_hint(state, spec)
    if found is not None:
        return found
    if not state:
        return "the checkpoint holds no tensors"
    if not spec.tensors:
        return "the model has no parameters or buffers"
    shared = sum(key in spec.tensors for key in state)
    if shared:
        return (
            f"{shared} name(s) match but every shape differs: the checkpoint was saved from a different "
            "architecture or size"
        )
    return (
        "no checkpoint key names a model tensor: rename keys (rename/strip_prefix/add_prefix) to align them"
    )


def plan_transfer(
    state: StateDict, spec: ModelSpec, *, strategy: str = "transfer_learning"
) -> Result[LoadPlan, Error]:
    """Load every tensor whose name and shape match; skip the rest with a reason; fail if none match."""
    c = _compare(state, spec)
    if not c.assign:
        return Failure(
            NothingMatched(
                hint=_nothing_matched_hint(state, spec),
                checkpoint_keys=tuple(state)[:3],
                model_keys=tuple(spec.tensors)[:3],
            )
        )
    return Success(_plan(strategy, c))


def _mismatched(c: _Comparison) -> tuple[str, ...]:
    return tuple(
        f"{s.key} ({s.reason.removeprefix('shape mismatch: ')})"
        for s in c.skipped
        if s.reason != NOT_IN_MODEL
    )


def plan_exact(
    state: StateDict, spec: ModelSpec, *, strict: bool, strategy: str = "weights_only"
) -> Result[LoadPlan, Error]:
    """Names must line up. Strict: any missing/unexpected/mismatched key fails with all of them listed.

    Non-strict: load the intersection of name and shape, and report the rest as skipped or missing.
    """
    c = _compare(state, spec)
    if strict and (c.missing or c.unexpected or c.skipped):
        hint = None if c.assign else prefix_hint(state, spec)
        return Failure(
            IncompatibleState(
                missing=tuple(name for name in c.missing if name not in state),
                unexpected=c.unexpected,
                mismatched=_mismatched(c),
                detail=f"hint: {hint}" if hint else "",
            )
        )
    return Success(_plan(strategy, c))
