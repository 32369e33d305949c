"""Key and dtype transforms over state dicts, as plain functions and as stages.

Every function takes a state dict and returns ``Result[dict[str, Tensor], Error]``: a NEW dict (the
input dict and its tensors are never changed), or ``InvalidConfig`` when the arguments are wrong or a
rename would make two keys collide. One shape for all of them, so they chain with ``bind`` in a script::

    strip_prefix_keys(sd, "module.").bind(lambda s: cast_state(s, "bfloat16"))

The stage factories (``rename``, ``strip_prefix``, ...) apply the same functions to ``ctx.state``, name
themselves after their arguments (``strip_prefix('model.')``) and record an event with counts.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

import torch
from attrs import evolve, frozen
from returns.result import Failure, Result, Success

from ckptflow.context import Context, StateDict
from ckptflow.errors import Error, InvalidConfig, StageFailed
from ckptflow.pipeline import NamedStage

__all__ = [
    "DTYPES",
    "TRANSFORMS",
    "TransformFactory",
    "add_prefix",
    "add_prefix_keys",
    "cast",
    "cast_state",
    "exclude",
    "exclude_keys",
    "include",
    "include_keys",
    "rename",
    "rename_keys",
    "resolve_dtype",
    "strip_prefix",
    "strip_prefix_keys",
    "transform_from_config",
]

Tensors = dict[str, torch.Tensor]

DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float32": torch.float32,
        "float64": torch.float64,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "half": torch.float16,
        "fp32": torch.float32,
        "float": torch.float32,
        "fp64": torch.float64,
        "double": torch.float64,
    }
)
"""Names a cast accepts, in configs and as strings."""


def _invalid(*problems: str) -> Failure[Error]:
    return Failure(InvalidConfig(problems=problems))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_dtype(dtype: torch.dtype | str) -> Result[torch.dtype, Error]:
    """A floating dtype from itself or its name (``"bfloat16"``, ``"fp16"``, ...)."""
    resolved = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if resolved is None or not resolved.is_floating_point:
        known = ", ".join(sorted({_dtype_name(d) for d in DTYPES.values()}))
        return _invalid(f"dtype: cannot cast to {dtype!r}; use a floating dtype: {known}")
    return Success(resolved)


def _remap(state: StateDict, new_key: Callable[[str], str], what: str) -> Result[Tensors, Error]:
    """Rename every key with ``new_key`` keeping order; two keys becoming one is a failure naming both."""
    sources: dict[str, list[str]] = {}
    for key in state:
        sources.setdefault(new_key(key), []).append(key)
    collisions = [
        f"{what}: keys {', '.join(map(repr, olds))} would all become {new!r}"
        for new, olds in sources.items()
        if len(olds) > 1
    ]
    if collisions:
        return _invalid(*collisions)
    return Success({new_key(k): v for k, v in state.items()})


def _compile(pattern: str | re.Pattern[str], repl: str) -> Result[re.Pattern[str], Error]:
    """The pattern compiled, with the replacement template checked against its groups."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        return _invalid(f"pattern: invalid regular expression {pattern!r} ({err})")
    try:
        compiled.sub(repl, "")
    except (re.error, IndexError) as err:  # Python reports unknown group names as IndexError
        return _invalid(f"repl: invalid replacement {repl!r} for pattern {compiled.pattern!r} ({err})")
    return Success(compiled)


def rename_keys(state: StateDict, pattern: str | re.Pattern[str], repl: str) -> Result[Tensors, Error]:
    """Replace ``pattern`` (a regular expression) by ``repl`` in every key (``re.sub``)."""
    return _compile(pattern, repl).bind(
        lambda compiled: _remap(state, lambda k: compiled.sub(repl, k), f"rename {compiled.pattern!r}")
    )


def _check_prefix(prefix: str) -> Result[str, Error]:
    return Success(prefix) if prefix else _invalid("prefix: must not be empty")


def strip_prefix_keys(state: StateDict, prefix: str) -> Result[Tensors, Error]:
    """Remove ``prefix`` once from the keys that start with it; other keys are kept as they are."""
    return _check_prefix(prefix).bind(
        lambda p: _remap(state, lambda k: k.removeprefix(p), f"strip_prefix {p!r}")
    )


def add_prefix_keys(state: StateDict, prefix: str) -> Result[Tensors, Error]:
    """Put ``prefix`` in front of every key."""
    return _check_prefix(prefix).bind(lambda p: _remap(state, lambda k: p + k, f"add_prefix {p!r}"))


def _select(state: StateDict, globs: tuple[str, ...], keep_matching: bool) -> Result[Tensors, Error]:
    if not globs:
        return _invalid("globs: give at least one glob pattern, e.g. 'encoder.*'")
    return Success({k: v for k, v in state.items() if any(fnmatchcase(k, g) for g in globs) is keep_matching})


def include_keys(state: StateDict, *globs: str) -> Result[Tensors, Error]:
    """Keep only keys matching at least one glob (``*`` also matches dots: ``encoder.*``)."""
    return _select(state, globs, keep_matching=True)


def exclude_keys(state: StateDict, *globs: str) -> Result[Tensors, Error]:
    """Drop keys matching any glob."""
    return _select(state, globs, keep_matching=False)


def _cast_one(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() and tensor.dtype != dtype else tensor


def cast_state(state: StateDict, dtype: torch.dtype | str) -> Result[Tensors, Error]:
    """Floating tensors converted to ``dtype`` (new tensors); integer, bool and complex tensors untouched."""
    return resolve_dtype(dtype).map(lambda d: {k: _cast_one(v, d) for k, v in state.items()})


def _state_stage(
    name: str,
    transform: Callable[[StateDict], Result[Tensors, Error]],
    counts: Callable[[StateDict, Tensors], Mapping[str, object]],
) -> NamedStage:
    """A stage applying ``transform`` to ``ctx.state`` and recording ``transform.<kind>`` with counts."""
    event = "transform." + name.split("(", 1)[0]

    def run(ctx: Context) -> Result[Context, Error]:
        before = ctx.state
        if before is None:
            return Failure(
                StageFailed(detail=f"the context has no state dict: put {name} after extract", stage=name)
            )
        return transform(before).map(
            lambda after: evolve(ctx, state=after).with_event(event, name, **counts(before, after))
        )

    return NamedStage(name, run)


def _call_name(factory: str, *args: object) -> str:
    return f"{factory}({', '.join(map(repr, args))})"


def _renamed(before: StateDict, after: Tensors) -> Mapping[str, object]:
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    return {"renamed": changed, "unchanged": len(after) - changed}


def _filtered(before: StateDict, after: Tensors) -> Mapping[str, object]:
    return {"kept": len(after), "dropped": len(before) - len(after)}


def rename(pattern: str, repl: str) -> NamedStage:
    """Stage: ``rename_keys`` on ctx.state."""
    return _state_stage(
        _call_name("rename", pattern, repl), lambda s: rename_keys(s, pattern, repl), _renamed
    )


def strip_prefix(prefix: str) -> NamedStage:
    """Stage: ``strip_prefix_keys`` on ctx.state."""
    return _state_stage(_call_name("strip_prefix", prefix), lambda s: strip_prefix_keys(s, prefix), _renamed)


def add_prefix(prefix: str) -> NamedStage:
    """Stage: ``add_prefix_keys`` on ctx.state."""
    return _state_stage(_call_name("add_prefix", prefix), lambda s: add_prefix_keys(s, prefix), _renamed)


def include(*globs: str) -> NamedStage:
    """Stage: ``include_keys`` on ctx.state."""
    return _state_stage(_call_name("include", *globs), lambda s: include_keys(s, *globs), _filtered)


def exclude(*globs: str) -> NamedStage:
    """Stage: ``exclude_keys`` on ctx.state."""
    return _state_stage(_call_name("exclude", *globs), lambda s: exclude_keys(s, *globs), _filtered)


def cast(dtype: torch.dtype | str) -> NamedStage:
    """Stage: ``cast_state`` on ctx.state, named after the dtype (``cast('bfloat16')``)."""
    label = dtype if isinstance(dtype, str) else _dtype_name(dtype)

    def counts(before: StateDict, after: Tensors) -> Mapping[str, object]:
        changed = sum(before[k].dtype != after[k].dtype for k in after)
        return {"dtype": label, "cast": changed, "unchanged": len(after) - changed}

    return _state_stage(_call_name("cast", label), lambda s: cast_state(s, dtype), counts)


TransformFactory = Callable[..., NamedStage]

TRANSFORMS: Mapping[str, TransformFactory] = MappingProxyType(
    {
        "rename": rename,
        "strip_prefix": strip_prefix,
        "add_prefix": add_prefix,
        "include": include,
        "exclude": exclude,
        "cast": cast,
    }
)
"""The built-in transforms by config name; config arguments are the factory's parameter names."""


def _strings(value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


@frozen
class _Call:
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


def _bind_args(factory: TransformFactory, args: Mapping[str, object]) -> Result[_Call, Error]:
    """How to call ``factory`` with config ``args``: each value a string (a list of them for ``*param``)."""
    params = list(inspect.signature(factory).parameters.values())
    names = [p.name for p in params]
    problems = [f"{k}: unexpected argument; expected {', '.join(names)}" for k in args if k not in names]
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for p in params:
        if p.name not in args:
            if p.kind is p.VAR_POSITIONAL or (p.default is p.empty and p.kind is not p.VAR_KEYWORD):
                problems.append(f"{p.name}: missing")
            continue
        given = args[p.name]
        strings = _strings(given)
        if p.kind is p.VAR_POSITIONAL:
            if strings is None:
                problems.append(f"{p.name}: expected a string or a list of strings, got {given!r}")
            positional.extend(strings or ())
        elif not isinstance(given, str):
            problems.append(f"{p.name}: expected a string, got {type(given).__name__}")
        elif p.kind is p.KEYWORD_ONLY:
            keywords[p.name] = given
        else:
            positional.append(given)
    return _invalid(*problems) if problems else Success(_Call(tuple(positional), keywords))


def transform_from_config(
    name: str, args: Mapping[str, object], *, transforms: Mapping[str, TransformFactory] = TRANSFORMS
) -> Result[NamedStage, Error]:
    """The stage a config entry names, e.g. ``("strip_prefix", {"prefix": "model."})``.

    Arguments are strings (a list of strings for ``include``/``exclude`` ``globs``), checked here by a
    dry run on an empty state dict, so a bad regex or dtype fails at config time. Problems are
    reported relative to the entry (``prefix: missing``).
    """
    factory = transforms.get(name)
    if factory is None:
        return _invalid(f"name: unknown transform {name!r}; known: {', '.join(sorted(transforms))}")
    return (
        _bind_args(factory, args)
        .map(lambda call: factory(*call.args, **call.kwargs))
        .bind(lambda built: built.fn(Context(state={})).map(lambda _: built))
    )
