"""Law checks for stages: purity, idempotence, composition and shape preservation, run by hypothesis.

Each ``check_*`` draws contexts (``ckptflow.testing.strategies.contexts()`` unless given), returns None
when the law holds and raises ``AssertionError`` naming what differs (path, before → after) when it
does not. Call them from a plain test function, not from inside another ``@given`` test.
"""

from __future__ import annotations

import copy
import enum
import reprlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import PurePath
from typing import Any

import attrs
import torch
from attrs import frozen
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.strategies import SearchStrategy
from returns.result import Failure, Result, Success

from ckptflow.context import Context, StateDict
from ckptflow.errors import Error
from ckptflow.pipeline import StageLike, as_stage, pipeline
from ckptflow.testing import strategies

__all__ = [
    "DEFAULT_MAX_EXAMPLES",
    "check_composes",
    "check_idempotent",
    "check_preserves_shapes",
    "check_pure",
]

DEFAULT_MAX_EXAMPLES = 25
_MAX_PROBLEMS = 12
_IMMUTABLE = (
    str,
    bytes,
    int,
    float,
    complex,
    bool,
    type(None),
    PurePath,
    torch.dtype,
    torch.device,
    enum.Enum,
)
_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def _run_law(
    law: Callable[[Context], None], contexts: SearchStrategy[Context] | None, max_examples: int
) -> None:
    """Run ``law`` on drawn contexts; hypothesis shrinks a failure to a small example and re-raises it."""

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=tuple(p for p in settings().phases if p is not Phase.explain),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(ctx=contexts if contexts is not None else strategies.contexts())
    def law_holds(ctx: Context) -> None:
        law(ctx)

    law_holds()


def _call(stage: StageLike, ctx: Context) -> Result[Context, Error]:
    return as_stage(stage)(ctx)


# -- describing values -------------------------------------------------------------------------------


def _show_tensor(t: torch.Tensor) -> str:
    head = f"tensor{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"
    if t.is_meta:
        return f"{head} on meta"
    flat = t.detach().reshape(-1)
    values = ", ".join(str(v) for v in flat[:6].tolist())
    more = ", …" if flat.numel() > 6 else ""
    return f"{head} [{values}{more}]"


def _show(x: object) -> str:
    return _show_tensor(x) if isinstance(x, torch.Tensor) else _short.repr(x)


def _describe_state(state: StateDict | None) -> str:
    if state is None:
        return "None"
    entries = [f"{k}: {str(v.dtype).removeprefix('torch.')}{tuple(v.shape)}" for k, v in state.items()]
    return "{" + ", ".join(entries) + "}"


def _fail_if(subject: str, claim: str, problems: list[str], ctx: Context) -> None:
    if not problems:
        return
    listed = "\n".join(f"  - {p}" for p in problems[:_MAX_PROBLEMS])
    rest = f"\n  … and {len(problems) - _MAX_PROBLEMS} more" if len(problems) > _MAX_PROBLEMS else ""
    raise AssertionError(f"{subject} {claim}:\n{listed}{rest}\n  input state: {_describe_state(ctx.state)}")


# -- comparing values --------------------------------------------------------------------------------


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exact equality, NaN equal to NaN (a NaN that stays NaN is not a change)."""
    if a.is_meta or b.is_meta:
        return True
    if not (a.is_floating_point() or a.is_complex()):
        return bool(torch.equal(a, b))
    nan_a, nan_b = a.isnan(), b.isnan()
    return bool(torch.equal(nan_a, nan_b)) and bool(torch.equal(a[~nan_a], b[~nan_b]))


def _tensor_differences(a: object, b: object, path: str) -> list[str]:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return [f"{path}: {_show(a)} → {_show(b)}"]
    out = [
        f"{path}: dtype {a.dtype} → {b.dtype}" if a.dtype != b.dtype else "",
        f"{path}: shape {tuple(a.shape)} → {tuple(b.shape)}" if a.shape != b.shape else "",
        f"{path}: device {a.device} → {b.device}" if a.device != b.device else "",
    ]
    if not any(out) and not _same_values(a, b):
        out.append(f"{path}: values changed: {_show_tensor(a)} → {_show_tensor(b)}")
    return [line for line in out if line]


def _mapping_differences(a: Mapping[Any, Any], b: Mapping[Any, Any], path: str) -> list[str]:
    removed = [k for k in a if k not in b]
    added = [k for k in b if k not in a]
    kept_a = [k for k in a if k in b]
    kept_b = [k for k in b if k in a]
    out = [
        f"{path}: key(s) removed: {', '.join(map(repr, removed))}" if removed else "",
        f"{path}: key(s) added: {', '.join(map(repr, added))}" if added else "",
        f"{path}: key order changed: {_short.repr(kept_a)} → {_short.repr(kept_b)}"
        if kept_a != kept_b
        else "",
    ]
    nested = [d for k in kept_a for d in _differences(a[k], b[k], f"{path}[{k!r}]")]
    return [line for line in out if line] + nested


def _differences(a: object, b: object, path: str) -> list[str]:
    """Every way ``b`` differs from ``a`` (tensors by dtype, shape and values), each with its path."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return _tensor_differences(a, b, path)
    cls = type(a)
    if cls is type(b) and attrs.has(cls):
        names = [f.name for f in attrs.fields(cls) if f.eq]
        return [d for n in names for d in _differences(getattr(a, n), getattr(b, n), f"{path}.{n}")]
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return _mapping_differences(a, b, path)
    if isinstance(a, (list, tuple)) and type(a) is type(b) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {_show(a)} → {_show(b)}"]


def _result_differences(
    a: Result[Context, Error], b: Result[Context, Error], ignore: Collection[str] = ()
) -> list[str]:
    match a, b:
        case Success(x), Success(y):
            return _differences(x, attrs.evolve(y, **{name: getattr(x, name) for name in ignore}), "context")
        case Failure(x), Failure(y):
            return [] if x == y else [f"failure {x.kind}: {x.message} → {y.kind}: {y.message}"]
        case Success(_), Failure(y):
            return [f"succeeded → failed with {y.kind}: {y.message}"]
        case Failure(x), Success(_):
            return [f"failed with {x.kind}: {x.message} → succeeded"]
    raise TypeError(f"stages must return a Result, got {type(a).__name__} and {type(b).__name__}")


# -- snapshots for purity ----------------------------------------------------------------------------


def _copy(x: Any) -> Any:
    """A deep copy of a context's contents (tensors cloned), to compare the input against afterwards."""
    if isinstance(x, _IMMUTABLE):
        return x
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    cls = type(x)
    if attrs.has(cls):
        return attrs.evolve(x, **{f.alias: _copy(getattr(x, f.name)) for f in attrs.fields(cls) if f.init})
    if isinstance(x, Mapping):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    if type(x) is tuple:
        return tuple(_copy(v) for v in x)
    try:
        return copy.deepcopy(x)
    except (TypeError, copy.Error):
        return x


def _children(x: object, path: str) -> Iterator[tuple[str, object]]:
    cls = type(x)
    if attrs.has(cls):
        yield from ((f"{path}.{f.name}", getattr(x, f.name)) for f in attrs.fields(cls))
    elif isinstance(x, Mapping):
        yield from ((f"{path}[{k!r}]", v) for k, v in x.items())
    elif isinstance(x, (list, tuple)):
        yield from ((f"{path}[{i}]", v) for i, v in enumerate(x))


def _tensors(x: object, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(x, torch.Tensor):
        yield path, x
    else:
        for child_path, child in _children(x, path):
            yield from _tensors(child, child_path)


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except RuntimeError:  # inference-mode tensors have no version counter
        return None


def _data_ptr(t: torch.Tensor) -> int | None:
    try:
        return int(t.data_ptr())
    except RuntimeError:  # sparse and some wrapper tensors have no single data pointer
        return None


@frozen
class _Mark:
    """Identity of one input tensor: the object, its storage pointer, version counter and grad flag."""

    tensor: torch.Tensor = attrs.field(eq=False)
    data_ptr: int | None
    version: int | None
    requires_grad: bool

    @classmethod
    def of(cls, t: torch.Tensor) -> _Mark:
        return cls(t, _data_ptr(t), _version(t), t.requires_grad)


def _mark_differences(marks: Mapping[str, _Mark], ctx: Context) -> list[str]:
    now = dict(_tensors(ctx, "input"))
    out: list[str] = []
    for path, mark in marks.items():
        t = now.get(path)
        if t is None:
            continue
        if t is not mark.tensor:
            out.append(f"{path}: tensor replaced by another object in the input container")
        elif (v := _version(t)) != mark.version:
            out.append(f"{path}: modified in place (version counter {mark.version} → {v})")
        elif (p := _data_ptr(t)) != mark.data_ptr:
            out.append(f"{path}: storage swapped (data_ptr {mark.data_ptr} → {p})")
        elif t.requires_grad != mark.requires_grad:
            out.append(f"{path}: requires_grad {mark.requires_grad} → {t.requires_grad}")
    return out


# -- the laws ----------------------------------------------------------------------------------------


def check_pure(
    stage: StageLike,
    contexts: SearchStrategy[Context] | None = None,
    *,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
) -> None:
    """The stage leaves its input untouched (dicts, tensors, metadata, events) and is deterministic.

    Tensors are compared by value and by identity: the same object, storage pointer, ``_version``
    counter (any in-place op bumps it) and ``requires_grad``.
    """
    name = as_stage(stage).name

    def law(ctx: Context) -> None:
        before = _copy(ctx)
        marks = {path: _Mark.of(t) for path, t in _tensors(ctx, "input")}
        first = _call(stage, ctx)
        changed = _differences(before, ctx, "input") + _mark_differences(marks, ctx)
        _fail_if(f"stage {name!r}", "is not pure: it changed its input", changed, before)
        second = _call(stage, ctx)
        differs = _result_differences(first, second)
        _fail_if(
            f"stage {name!r}", "is not deterministic: two runs on the same input differ", differs, before
        )

    _run_law(law, contexts, max_examples)


def check_idempotent(
    stage: StageLike,
    contexts: SearchStrategy[Context] | None = None,
    *,
    ignore: Collection[str] = (),
    max_examples: int = DEFAULT_MAX_EXAMPLES,
) -> None:
    """Applying the stage twice gives what applying it once gives (``ignore`` names Context fields to skip,
    e.g. ``("events",)`` for a stage that records an event each time it runs)."""
    named = as_stage(stage)

    def law(ctx: Context) -> None:
        once = named(ctx)
        twice = once.bind(named)
        differs = _result_differences(once, twice, ignore)
        _fail_if(
            f"stage {named.name!r}", "is not idempotent: applied twice it differs from once", differs, ctx
        )

    _run_law(law, contexts, max_examples)


def check_composes(
    stage_a: StageLike,
    stage_b: StageLike,
    stage_c: StageLike | None = None,
    *,
    contexts: SearchStrategy[Context] | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
) -> None:
    """``pipeline(a, b)(ctx)`` equals ``a(ctx).bind(b)``, and composing with a third stage (``a`` again
    unless given) is associative: ``pipeline(pipeline(a, b), c) == pipeline(a, pipeline(b, c))``."""
    a, b = as_stage(stage_a), as_stage(stage_b)
    c = as_stage(stage_c if stage_c is not None else stage_a)

    def law(ctx: Context) -> None:
        composed = f"pipeline({a.name}, {b.name})"
        bound = a(ctx).bind(b)
        differs = _result_differences(bound, pipeline(a, b)(ctx))
        _fail_if(composed, f"differs from {a.name}(ctx).bind({b.name})", differs, ctx)
        left = pipeline(pipeline(a, b), c)(ctx)
        right = pipeline(a, pipeline(b, c))(ctx)
        grouped = f"pipeline(pipeline({a.name}, {b.name}), {c.name})"
        _fail_if(
            grouped,
            f"differs from pipeline({a.name}, pipeline({b.name}, {c.name}))",
            _result_differences(left, right),
            ctx,
        )
        _fail_if(
            grouped,
            "differs from binding the three stages in turn",
            _result_differences(bound.bind(c), left),
            ctx,
        )

    _run_law(law, contexts, max_examples)


def _shape_changes(before: StateDict, after: StateDict) -> list[str]:
    """Tensors whose shape changed: by name, or for a new name, a shape no removed input tensor had."""
    originals = {id(t) for t in before.values()}
    freed = Counter(tuple(t.shape) for k, t in before.items() if k not in after)
    out: list[str] = []
    for key, t in after.items():
        shape = tuple(t.shape)
        if id(t) in originals:
            continue
        if key in before:
            was = tuple(before[key].shape)
            out.extend([f"state[{key!r}]: shape {was} → {shape}"] if was != shape else [])
        elif freed[shape] > 0:
            freed[shape] -= 1
        else:
            out.append(
                f"state[{key!r}]: new key with shape {shape}, which no renamed or removed input tensor had"
            )
    return out


def check_preserves_shapes(
    stage: StageLike,
    contexts: SearchStrategy[Context] | None = None,
    *,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
) -> None:
    """On success, no tensor of the state dict changes shape (tensors may be renamed, dropped or cast)."""
    named = as_stage(stage)

    def law(ctx: Context) -> None:
        match named(ctx):
            case Success(out) if ctx.state is not None and out.state is not None:
                changes = _shape_changes(ctx.state, out.state)
                _fail_if(f"stage {named.name!r}", "does not preserve shapes", changes, ctx)

    _run_law(law, contexts, max_examples)
