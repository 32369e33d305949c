"""Strategies as a table of data: what each one restores, read by one ``plan`` stage.

A strategy is a row (how weights are matched, whether the optimizer and schedulers come back, whether
counters are kept or reset, the default strictness). The ``plan`` stage looks its row up and never
branches on a strategy's name, so a new strategy is a new row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Literal

import attrs
from attrs import frozen
from returns.result import Failure, Result, Success

from ckptflow.context import Context, LoadPlan, ModelSpec, StateDict, TrainingState
from ckptflow.errors import Error, IncompatibleState, InvalidConfig, StageFailed
from ckptflow.pipeline import NamedStage
from ckptflow.stages.match import plan_exact, plan_transfer

__all__ = ["STRATEGIES", "Counters", "Matching", "StrategyRow", "plan", "plan_for", "planner"]

Matching = Literal["exact", "by_shape"]
Counters = Literal["keep", "reset"]


@frozen(kw_only=True)
class StrategyRow:
    """What a strategy restores.

    ``weights``: ``exact`` (names must line up; ``strict`` decides whether gaps fail) or ``by_shape``
    (load whatever matches by name and shape, report the rest; strictness does not apply).
    ``counters``: ``keep`` reports the checkpoint's epoch/step, ``reset`` reports 0/0.
    """

    weights: Matching
    optimizer: bool
    scheduler: bool
    counters: Counters
    strict: bool
    description: str


STRATEGIES: Mapping[str, StrategyRow] = MappingProxyType(
    {
        "weights_only": StrategyRow(
            weights="exact",
            optimizer=False,
            scheduler=False,
            counters="keep",
            strict=True,
            description="model weights only, names and shapes must match; the counters are reported as saved",
        ),
        "warm_start": StrategyRow(
            weights="exact",
            optimizer=True,
            scheduler=True,
            counters="keep",
            strict=True,
            description="exact resume: weights, optimizer, schedulers, epoch and global step",
        ),
        "cold_start": StrategyRow(
            weights="exact",
            optimizer=False,
            scheduler=False,
            counters="reset",
            strict=True,
            description="pretrained weights for a new run: epoch and global step start at 0",
        ),
        "transfer_learning": StrategyRow(
            weights="by_shape",
            optimizer=False,
            scheduler=False,
            counters="reset",
            strict=False,
            description="load every tensor matching by name and shape; report each skipped key and why",
        ),
    }
)

_Planner = Callable[[StateDict, ModelSpec, bool, str], Result[LoadPlan, Error]]

_PLANNERS: Mapping[Matching, _Planner] = MappingProxyType(
    {
        "exact": lambda state, spec, strict, name: plan_exact(state, spec, strict=strict, strategy=name),
        "by_shape": lambda state, spec, _strict, name: plan_transfer(state, spec, strategy=name),
    }
)


def _counters(row: StrategyRow, training: TrainingState) -> TrainingState:
    """The training state the plan carries: only what the row restores, counters kept or reset."""
    keep = row.counters == "keep"
    return TrainingState(
        epoch=training.epoch if keep else 0,
        global_step=training.global_step if keep else 0,
        optimizer_states=training.optimizer_states if row.optimizer else (),
        scheduler_states=training.scheduler_states if row.scheduler else (),
        extra=training.extra if keep else {},
    )


def _restores(row: StrategyRow, name: str, training: TrainingState) -> Result[tuple[bool, bool], Error]:
    """Whether the optimizer and schedulers come back; a resume without optimizer state cannot be exact."""
    if row.optimizer and not training.optimizer_states:
        return Failure(
            IncompatibleState(
                detail=(
                    f"strategy {name!r} restores the optimizer but the checkpoint holds no optimizer state; "
                    "use 'weights_only' or 'cold_start' for a weights-only checkpoint"
                )
            )
        )
    return Success((row.optimizer, row.scheduler and bool(training.scheduler_states)))


def plan_for(
    name: str,
    state: StateDict,
    spec: ModelSpec,
    training: TrainingState,
    *,
    strict: bool | None = None,
    table: Mapping[str, StrategyRow] = STRATEGIES,
) -> Result[LoadPlan, Error]:
    """The plan that strategy ``name`` of ``table`` makes for ``state`` (``strict=None``: the row's)."""
    row = table.get(name)
    if row is None:
        known = ", ".join(sorted(table))
        return Failure(InvalidConfig(problems=(f"strategy: unknown strategy {name!r}; known: {known}",)))
    strictness = row.strict if strict is None else strict
    planned = _PLANNERS[row.weights](state, spec, strictness, name)
    return planned.bind(
        lambda p: _restores(row, name, training).map(
            lambda restores: attrs.evolve(
                p,
                training=_counters(row, training),
                restore_optimizer=restores[0],
                restore_scheduler=restores[1],
            )
        )
    )


def _planned_context(ctx: Context, p: LoadPlan, row: StrategyRow, training: TrainingState) -> Context:
    out = attrs.evolve(ctx, plan=p).with_event(
        "plan.made",
        "plan",
        strategy=p.strategy,
        load=len(p.assign),
        skipped=len(p.skipped),
        missing=len(p.missing),
        cast=len(p.cast),
        restore_optimizer=p.restore_optimizer,
        restore_scheduler=p.restore_scheduler,
    )
    if row.scheduler and not training.scheduler_states:
        return out.with_event("plan.no_scheduler_state", "plan", strategy=p.strategy)
    return out


def planner(table: Mapping[str, StrategyRow] = STRATEGIES) -> NamedStage:
    """The ``plan`` stage for a strategy table; extend the built-in one without changing it, e.g.
    ``pipeline.replace("plan", planner({**STRATEGIES, "mine": StrategyRow(...)}))``.
    """

    def plan_(ctx: Context) -> Result[Context, Error]:
        if ctx.state is None or ctx.spec is None:
            missing = " and ".join(n for n, v in (("state", ctx.state), ("spec", ctx.spec)) if v is None)
            return Failure(StageFailed(detail=f"the context has no {missing}; run the extract stages first"))
        options = ctx.options
        training = ctx.training or TrainingState()
        planned = plan_for(
            options.strategy, ctx.state, ctx.spec, training, strict=options.strict, table=table
        )
        return planned.map(
            lambda p: _planned_context(
                ctx,
                attrs.evolve(p, assign_tensors=options.assign, source=ctx.source, digest=ctx.digest),
                table[p.strategy],
                training,
            )
        )

    return NamedStage("plan", plan_)


plan = planner()
"""Decide what goes where for ``ctx.options.strategy`` with the built-in table; the result is ``ctx.plan``."""
