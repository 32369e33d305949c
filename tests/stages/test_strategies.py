"""Strategies as a table, and the ``plan`` stage that reads it."""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from ckptflow.context import Context, LoadOptions, LoadPlan, ModelSpec, TrainingState
from ckptflow.errors import IncompatibleState, InvalidConfig, StageFailed
from ckptflow.stages.strategies import STRATEGIES, StrategyRow, plan, plan_for, planner
from tests.fixtures.models import (
    Classifier,
    context_for,
    make_classifier,
    make_training,
    model_specs,
    model_state,
    same_state,
    state_dicts,
    train_steps,
    training_snapshot,
)


def _resumable(model: Classifier) -> tuple[dict[str, torch.Tensor], TrainingState]:
    optimizer, scheduler = make_training(model)
    step = train_steps(model, optimizer, scheduler, start=0, steps=2)
    return training_snapshot(model, optimizer, scheduler, epoch=42, global_step=10_000 + step - 2)


def _planned(ctx: Context) -> LoadPlan:
    result = plan(ctx)
    assert isinstance(result, Success), result
    planned = result.unwrap().plan
    assert planned is not None
    return planned


def _failure(ctx: Context) -> object:
    result = plan(ctx)
    assert isinstance(result, Failure), result
    return result.failure()


def test_the_table_holds_exactly_the_four_strategies() -> None:
    assert set(STRATEGIES) == {"weights_only", "warm_start", "cold_start", "transfer_learning"}
    assert all(isinstance(row, StrategyRow) for row in STRATEGIES.values())


def test_the_table_cannot_be_changed_in_place() -> None:
    with pytest.raises(TypeError):
        STRATEGIES["mine"] = STRATEGIES["weights_only"]  # type: ignore[index]


def test_rows_say_what_each_strategy_restores() -> None:
    rows = {
        name: (r.weights, r.optimizer, r.scheduler, r.counters, r.strict) for name, r in STRATEGIES.items()
    }
    assert rows == {
        "weights_only": ("exact", False, False, "keep", True),
        "warm_start": ("exact", True, True, "keep", True),
        "cold_start": ("exact", False, False, "reset", True),
        "transfer_learning": ("by_shape", False, False, "reset", False),
    }


def test_warm_start_plans_weights_optimizer_scheduler_and_counters(classifier: Classifier) -> None:
    state, training = _resumable(classifier)
    planned = _planned(context_for(classifier, state, training, strategy="warm_start"))
    assert planned.strategy == "warm_start"
    assert planned.restore_optimizer and planned.restore_scheduler
    assert (planned.training.epoch, planned.training.global_step) == (42, 10_000)
    assert planned.training == training


def test_cold_start_plans_counters_of_zero_whatever_the_checkpoint_said(classifier: Classifier) -> None:
    state, training = _resumable(classifier)
    planned = _planned(context_for(classifier, state, training, strategy="cold_start"))
    assert (planned.training.epoch, planned.training.global_step) == (0, 0)
    assert not planned.restore_optimizer and not planned.restore_scheduler
    assert planned.training.optimizer_states == () and planned.training.scheduler_states == ()


def test_weights_only_keeps_the_counters_but_restores_no_optimizer(classifier: Classifier) -> None:
    state, training = _resumable(classifier)
    planned = _planned(context_for(classifier, state, training, strategy="weights_only"))
    assert (planned.training.epoch, planned.training.global_step) == (42, 10_000)
    assert not planned.restore_optimizer and planned.training.optimizer_states == ()


def test_weights_only_is_strict_by_default() -> None:
    source, target = make_classifier(10), make_classifier(3)
    err = _failure(context_for(target, model_state(source), strategy="weights_only"))
    assert isinstance(err, IncompatibleState)
    assert err.stage == "plan"


def test_strict_false_overrides_the_row_and_loads_the_intersection() -> None:
    source, target = make_classifier(10), make_classifier(3)
    planned = _planned(context_for(target, model_state(source), strategy="weights_only", strict=False))
    assert {s.key for s in planned.skipped} == {"head.weight", "head.bias"}


def test_transfer_learning_matches_by_shape_even_when_strict_is_asked() -> None:
    source, target = make_classifier(10), make_classifier(3)
    planned = _planned(context_for(target, model_state(source), strategy="transfer_learning", strict=True))
    assert planned.strategy == "transfer_learning"
    assert {s.key for s in planned.skipped} == {"head.weight", "head.bias"}


def test_unknown_strategy_is_invalid_config_listing_the_known_names(classifier: Classifier) -> None:
    err = _failure(context_for(classifier, model_state(classifier), strategy="hot_start"))
    assert isinstance(err, InvalidConfig)
    assert "hot_start" in err.message
    assert all(name in err.message for name in STRATEGIES)


def test_warm_start_of_a_weights_only_checkpoint_is_incompatible(classifier: Classifier) -> None:
    err = _failure(context_for(classifier, model_state(classifier), strategy="warm_start"))
    assert isinstance(err, IncompatibleState)
    assert "no optimizer state" in err.message


def test_warm_start_without_scheduler_state_plans_no_scheduler_restore_and_says_so(
    classifier: Classifier,
) -> None:
    state, training = _resumable(classifier)
    ctx = context_for(classifier, state, attrs.evolve(training, scheduler_states=()), strategy="warm_start")
    out = plan(ctx).unwrap()
    assert out.plan is not None and not out.plan.restore_scheduler
    assert "plan.no_scheduler_state" in [e.name for e in out.events]


def test_the_plan_carries_assign_source_and_digest_from_the_context(classifier: Classifier) -> None:
    ctx = context_for(classifier, model_state(classifier), assign=True)
    planned = _planned(ctx)
    assert (planned.assign_tensors, planned.source, planned.digest) == (True, ctx.source, ctx.digest)


def test_the_plan_stage_records_an_event(classifier: Classifier) -> None:
    out = plan(context_for(classifier, model_state(classifier))).unwrap()
    assert [e.name for e in out.events] == ["plan.made"]


def test_planning_without_a_state_dict_is_stage_failed(classifier: Classifier) -> None:
    err = _failure(Context(spec=ModelSpec.from_model(classifier)))
    assert isinstance(err, StageFailed)
    assert err.stage == "plan"


def test_plan_for_is_the_pure_core_of_the_stage(classifier: Classifier) -> None:
    state, training = _resumable(classifier)
    planned = plan_for("cold_start", state, ModelSpec.from_model(classifier), training)
    assert planned.map(lambda p: p.training.global_step) == Success(0)


@given(
    name=st.sampled_from(sorted(STRATEGIES)),
    strict=st.sampled_from([None, True, False]),
    state=state_dicts(),
    spec=model_specs(),
)
def test_the_plan_stage_never_changes_its_input_context(
    name: str, strict: bool | None, state: dict, spec: ModelSpec
) -> None:
    training = TrainingState(epoch=3, global_step=7, optimizer_states=({"state": {}, "param_groups": []},))
    ctx = Context(
        state=state, spec=spec, training=training, options=LoadOptions(strategy=name, strict=strict)
    )
    before = {k: v.clone() for k, v in state.items()}
    objects = [id(v) for v in state.values()]
    plan(ctx)
    assert same_state(state, before)
    assert [id(v) for v in state.values()] == objects
    assert (ctx.plan, ctx.events) == (None, ())


def test_a_new_strategy_is_a_new_row_in_a_table_given_to_planner() -> None:
    row = attrs.evolve(
        STRATEGIES["transfer_learning"], counters="keep", description="fine-tune, keep counters"
    )
    stage = planner({**STRATEGIES, "finetune": row})
    source, target = make_classifier(10), make_classifier(3)
    training = TrainingState(epoch=4, global_step=40)
    out = stage(context_for(target, model_state(source), training, strategy="finetune")).unwrap()
    assert out.plan is not None
    assert (out.plan.strategy, out.plan.training.global_step) == ("finetune", 40)
    assert {s.key for s in out.plan.skipped} == {"head.weight", "head.bias"}
    assert stage.name == "plan"
