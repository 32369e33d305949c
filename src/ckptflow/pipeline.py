"""Stages and their composition.

A ``Stage`` is ``Context -> Result[Context, Error]``. ``pipeline(*stages)`` folds stages with
``bind``, stops at the first failure and names the stage that failed. A ``Pipeline`` is itself a
value (and a stage): stages can be added, removed, replaced and reordered by name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from functools import reduce
from typing import Union

import attrs
from attrs import field, frozen
from returns.result import Failure, Result, Success

from ckptflow.context import Context
from ckptflow.errors import Error, at_stage

__all__ = ["NamedStage", "Pipeline", "Stage", "StageLike", "as_stage", "optional", "pipeline", "stage"]

Stage = Callable[[Context], Result[Context, Error]]
log = logging.getLogger("ckptflow")


@frozen
class NamedStage:
    """A named stage: ``optional`` failures become events; ``edge`` stages do I/O (threaded in async)."""

    name: str
    fn: Stage = field(eq=False)
    optional: bool = False
    edge: bool = False

    def __call__(self, ctx: Context) -> Result[Context, Error]:
        started = time.perf_counter()
        result = self.fn(ctx).alt(lambda err: at_stage(err, self.name))
        elapsed = time.perf_counter() - started
        match result:
            case Success(out):
                return Success(attrs.evolve(out, timings=(*out.timings, (self.name, elapsed))))
            case Failure(err) if self.optional:
                log.info("optional stage %s skipped: %s", self.name, err.message)
                return Success(ctx.with_event("stage.skipped", self.name, kind=err.kind, message=err.message))
        return result


StageLike = Union[NamedStage, "Pipeline", Stage]


def as_stage(s: StageLike, name: str | None = None) -> NamedStage:
    """Name a plain callable after itself; pass named stages through."""
    if isinstance(s, NamedStage):
        return s if name is None else attrs.evolve(s, name=name)
    if isinstance(s, Pipeline):
        return NamedStage(name or "pipeline", s, edge=any(x.edge for x in s.stages))
    label: str = name or getattr(s, "__name__", None) or type(s).__name__
    return NamedStage(label, s)


def stage(name: str | None = None, *, edge: bool = False) -> Callable[[Stage], NamedStage]:
    """Decorator: ``@stage("strip_prefix")`` turns a function into a named stage."""
    return lambda fn: NamedStage(name or fn.__name__, fn, edge=edge)


def optional(s: StageLike) -> NamedStage:
    """The same stage, but its failure is recorded as an event and the load goes on."""
    return attrs.evolve(as_stage(s), optional=True)


def _flatten(stages: Iterable[StageLike]) -> tuple[NamedStage, ...]:
    out: list[NamedStage] = []
    for s in stages:
        out.extend(s.stages if isinstance(s, Pipeline) else (as_stage(s),))
    return tuple(out)


@frozen
class Pipeline:
    """An ordered tuple of named stages; calling it runs them with ``bind``."""

    stages: tuple[NamedStage, ...] = field(converter=_flatten)

    def __call__(self, ctx: Context) -> Result[Context, Error]:
        return self.run(ctx)

    def run(self, ctx: Context) -> Result[Context, Error]:
        start: Result[Context, Error] = Success(ctx)
        return reduce(lambda acc, s: acc.bind(s), self.stages, start)

    async def run_async(self, ctx: Context) -> Result[Context, Error]:
        """Run with edge stages in worker threads so several loads can proceed concurrently."""
        result: Result[Context, Error] = Success(ctx)
        for s in self.stages:
            match result:
                case Success(current):
                    result = await asyncio.to_thread(s, current) if s.edge else s(current)
                case _:
                    return result
        return result

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def _index(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"no stage named {name!r}; stages: {', '.join(self.names)}")
        return self.names.index(name)

    def without(self, *names: str) -> Pipeline:
        for n in names:
            self._index(n)
        return Pipeline(tuple(s for s in self.stages if s.name not in names))

    def replace(self, name: str, new: StageLike) -> Pipeline:
        i = self._index(name)
        return Pipeline((*self.stages[:i], new, *self.stages[i + 1 :]))

    def insert_before(self, name: str, new: StageLike) -> Pipeline:
        i = self._index(name)
        return Pipeline((*self.stages[:i], new, *self.stages[i:]))

    def insert_after(self, name: str, new: StageLike) -> Pipeline:
        i = self._index(name)
        return Pipeline((*self.stages[: i + 1], new, *self.stages[i + 1 :]))

    def then(self, *more: StageLike) -> Pipeline:
        return Pipeline((*self.stages, *more))

    def reorder(self, *names: str) -> Pipeline:
        """The same stages in the order given (every stage named exactly once)."""
        if sorted(names) != sorted(self.names):
            raise ValueError(f"reorder needs each of {', '.join(self.names)} exactly once")
        queues: dict[str, list[NamedStage]] = {}
        for s in self.stages:
            queues.setdefault(s.name, []).append(s)
        return Pipeline(tuple(queues[n].pop(0) for n in names))


def pipeline(*stages: StageLike) -> Pipeline:
    """Compose stages left to right; nested pipelines are flattened (composition is associative)."""
    return Pipeline(stages)
