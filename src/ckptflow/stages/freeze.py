"""Freeze resolution: module path patterns to the parameter names whose ``requires_grad`` goes off.

A pattern is a dotted module path or a glob over paths (``encoder``, ``encoder.layers.*``,
``*.norm``), matched against the model's module paths and parameter names. It covers what it matches
and everything beneath, by whole path components: ``encoder`` covers ``encoder.layers.0.weight`` but
never ``encoder_data.weight``. Unfreeze wins over freeze for the parameters it covers. Pure.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Iterator, Mapping
from fnmatch import fnmatchcase

import attrs
from attrs import frozen
from returns.result import Failure, Result, Success

from ckptflow.context import Context, FrozenModule, ModelSpec
from ckptflow.errors import Error, FreezeTargetNotFound, StageFailed
from ckptflow.pipeline import stage

__all__ = ["FreezeResolution", "freeze", "resolve_freeze"]

_GLOB = frozenset("*?[")
_CLOSE_MATCHES = 5


@frozen(kw_only=True)
class FreezeResolution:
    """Parameter names to freeze (unfreeze already subtracted) and to unfreeze, and the frozen modules.

    ``frozen_modules`` lists the outermost matched paths in model order, each with the number of
    parameter elements it freezes.
    """

    freeze: frozenset[str] = frozenset()
    unfreeze: frozenset[str] = frozenset()
    frozen_modules: tuple[FrozenModule, ...] = ()


def _ancestors(name: str) -> Iterator[str]:
    """``a.b.c`` → ``a``, ``a.b``, ``a.b.c``."""
    start = 0
    while (dot := name.find(".", start)) != -1:
        yield name[:dot]
        start = dot + 1
    yield name


def _matches(pattern: str, paths: Mapping[str, None]) -> list[str]:
    if _GLOB.isdisjoint(pattern):
        return [pattern] if pattern in paths else []
    return [p for p in paths if fnmatchcase(p, pattern)]


def _matched(patterns: Iterable[str], paths: Mapping[str, None]) -> Result[dict[str, None], Error]:
    """Every path any pattern matches (ordered as ``paths``); the first pattern matching none fails."""
    found: set[str] = set()
    for pattern in patterns:
        hits = _matches(pattern, paths)
        if not hits:
            close = difflib.get_close_matches(pattern, list(paths), n=_CLOSE_MATCHES)
            return Failure(FreezeTargetNotFound(target=pattern, close_matches=close))
        found.update(hits)
    return Success({p: None for p in paths if p in found})


def _outermost(name: str, matched: Mapping[str, None]) -> str | None:
    return next((a for a in _ancestors(name) if a in matched), None)


def _resolve(
    sizes: Mapping[str, int], frozen_paths: Mapping[str, None], unfrozen_paths: Mapping[str, None]
) -> FreezeResolution:
    unfreeze = {name for name in sizes if _outermost(name, unfrozen_paths) is not None}
    owners = {name: _outermost(name, frozen_paths) for name in sizes}
    frozen_counts = dict.fromkeys(frozen_paths, 0)
    covered = dict.fromkeys(frozen_paths, 0)
    for name, owner in owners.items():
        if owner is not None:
            covered[owner] += 1
            frozen_counts[owner] += 0 if name in unfreeze else sizes[name]
    outermost = [p for p in frozen_paths if _outermost(p, frozen_paths) == p]
    return FreezeResolution(
        freeze=frozenset(n for n, owner in owners.items() if owner is not None and n not in unfreeze),
        unfreeze=frozenset(unfreeze),
        frozen_modules=tuple(
            FrozenModule(p, frozen_counts[p]) for p in outermost if frozen_counts[p] or not covered[p]
        ),
    )


def resolve_freeze(
    spec: ModelSpec, freeze: Iterable[str], unfreeze: Iterable[str] = ()
) -> Result[FreezeResolution, Error]:
    """Resolve patterns against ``spec``; a pattern matching nothing fails, naming close matches."""
    sizes = {name: math.prod(t.shape) for name, t in spec.tensors.items() if t.parameter}
    paths = dict.fromkeys((*spec.modules, *sizes))
    return _matched(freeze, paths).bind(
        lambda frozen_paths: _matched(unfreeze, paths).map(
            lambda unfrozen_paths: _resolve(sizes, frozen_paths, unfrozen_paths)
        )
    )


@stage("freeze")
def freeze(ctx: Context) -> Result[Context, Error]:
    """Add ``ctx.options.freeze``/``unfreeze`` to ``ctx.plan`` as parameter names and frozen modules."""
    options = ctx.options
    if not options.freeze and not options.unfreeze:
        return Success(ctx)
    if ctx.spec is None or ctx.plan is None:
        return Failure(
            StageFailed(detail="the context has no spec or plan; run the plan stage before freeze")
        )
    spec, plan = ctx.spec, ctx.plan
    resolved = resolve_freeze(spec, options.freeze, options.unfreeze)
    return resolved.map(
        lambda r: attrs.evolve(
            ctx,
            plan=attrs.evolve(plan, freeze=r.freeze, unfreeze=r.unfreeze, frozen_modules=r.frozen_modules),
        ).with_event(
            "freeze.resolved",
            "freeze",
            modules=[m.module for m in r.frozen_modules],
            frozen=len(r.freeze),
            unfrozen=len(r.unfreeze),
        )
    )
