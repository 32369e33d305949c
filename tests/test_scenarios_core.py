"""Whole decide-then-do scenarios with real small models: plan → freeze → apply, then keep training.

Checkpoints are in-memory (the read/extract stages are tested elsewhere); everything after them is real.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from returns.result import Failure, Result, Success
from torch import nn

from ckptflow.apply import apply
from ckptflow.context import Context, FrozenModule, LoadReport, SkippedKey, TrainingState
from ckptflow.errors import Error, FreezeTargetNotFound, IncompatibleState
from ckptflow.pipeline import pipeline
from ckptflow.report import format_report
from ckptflow.stages.freeze import freeze
from ckptflow.stages.strategies import plan
from tests.fixtures.models import (
    Classifier,
    context_for,
    make_classifier,
    make_training,
    model_state,
    same_state,
    train_steps,
    training_snapshot,
)

decide = pipeline(plan, freeze)


def _load(
    model: nn.Module, ctx: Context, optimizer: Any = None, scheduler: Any = None
) -> Result[LoadReport, Error]:
    """The library's load, minus reading: decide purely, then apply."""

    def carry_out(planned: Context) -> Result[LoadReport, Error]:
        assert planned.plan is not None
        return apply(model, planned.plan, optimizer=optimizer, scheduler=scheduler)

    return decide(ctx).bind(carry_out)


def _report(result: Result[LoadReport, Error]) -> LoadReport:
    assert isinstance(result, Success), result
    return result.unwrap()


def _checkpoint(
    epoch: int, global_step: int, steps: int = 3
) -> tuple[dict[str, torch.Tensor], TrainingState]:
    model = make_classifier(10, seed=0)
    opt, sched = make_training(model)
    train_steps(model, opt, sched, start=0, steps=steps)
    return training_snapshot(model, opt, sched, epoch=epoch, global_step=global_step)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_warm_start_resume_is_bit_identical_to_an_uninterrupted_run(kind: str) -> None:
    uninterrupted = make_classifier(10, seed=0)
    opt, sched = make_training(uninterrupted, optimizer=kind)
    step = train_steps(uninterrupted, opt, sched, start=0, steps=3)
    state, training = training_snapshot(uninterrupted, opt, sched, epoch=1, global_step=step)
    train_steps(uninterrupted, opt, sched, start=step, steps=2)

    resumed = make_classifier(10, seed=7)
    opt2, sched2 = make_training(resumed, optimizer=kind)
    report = _report(
        _load(resumed, context_for(resumed, state, training, strategy="warm_start"), opt2, sched2)
    )
    train_steps(resumed, opt2, sched2, start=report.global_step, steps=2)

    assert (report.epoch, report.global_step) == (1, 3)
    assert report.optimizer_restored and report.scheduler_restored
    assert same_state(model_state(resumed), model_state(uninterrupted))
    assert same_state(opt2.state_dict(), opt.state_dict())
    assert same_state(sched2.state_dict(), sched.state_dict())


def test_cold_start_reports_zero_counters_whatever_the_checkpoint_said() -> None:
    state, training = _checkpoint(epoch=42, global_step=10_000)
    model = make_classifier(10, seed=3)
    opt, sched = make_training(model)
    fresh_optimizer = copy.deepcopy(opt.state_dict())
    report = _report(_load(model, context_for(model, state, training, strategy="cold_start"), opt, sched))
    assert (report.epoch, report.global_step) == (0, 0)
    assert not report.optimizer_restored and not report.scheduler_restored
    assert same_state(model_state(model), state)
    assert same_state(opt.state_dict(), fresh_optimizer)


def test_a_classifier_whose_head_went_from_10_to_3_classes_loads_all_but_the_head() -> None:
    state, _ = _checkpoint(epoch=5, global_step=50)
    model = make_classifier(3, seed=3)
    head_before = model_state(model.head)
    report = _report(_load(model, context_for(model, state, strategy="transfer_learning")))

    assert report.skipped == (
        SkippedKey("head.weight", "shape mismatch: ckpt (10, 16) vs model (3, 16)"),
        SkippedKey("head.bias", "shape mismatch: ckpt (10,) vs model (3,)"),
    )
    assert report.missing == ("head.weight", "head.bias")
    body = {k: v for k, v in state.items() if not k.startswith("head.")}
    assert set(report.loaded) == set(body)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in body.items())
    assert same_state(model_state(model.head), head_before)
    text = format_report(report)
    assert "head.weight: shape mismatch: ckpt (10, 16) vs model (3, 16)" in text
    assert "kept initialisation  2" in text


def test_transfer_learning_then_training_updates_only_what_is_not_frozen() -> None:
    state, _ = _checkpoint(epoch=5, global_step=50)
    model = make_classifier(3, seed=3)
    ctx = context_for(model, state, strategy="transfer_learning", freeze=("encoder",))
    report = _report(_load(model, ctx))
    encoder_before, head_before = model_state(model.encoder), model_state(model.head)
    opt, sched = make_training(model)
    train_steps(model, opt, sched, start=0, steps=2, classes=3)

    assert report.frozen == (FrozenModule("encoder", sum(p.numel() for p in model.encoder.parameters())),)
    assert all(not p.requires_grad for p in model.encoder.parameters())
    encoder_after = model_state(model.encoder)
    weights = [k for k in encoder_after if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(encoder_after[k], encoder_before[k]) for k in weights)
    assert not same_state(model_state(model.head), head_before)


def test_freezing_encoder_in_a_module_dict_leaves_encoder_data_trainable(
    twin_encoders: nn.ModuleDict,
) -> None:
    state = model_state(twin_encoders)
    report = _report(_load(twin_encoders, context_for(twin_encoders, state, freeze=("encoder",))))
    assert all(not p.requires_grad for p in twin_encoders["encoder"].parameters())
    assert all(p.requires_grad for p in twin_encoders["encoder_data"].parameters())
    assert report.frozen == (FrozenModule("encoder", 4 * 4 + 4),)
    assert report.frozen_parameters == 20


def test_an_unknown_freeze_target_offers_close_matches_and_touches_nothing(classifier: Classifier) -> None:
    state, _ = _checkpoint(epoch=1, global_step=3)
    before = model_state(classifier)
    result = _load(classifier, context_for(classifier, state, freeze=("encoder.layer",)))
    assert isinstance(result, Failure)
    err = result.failure()
    assert isinstance(err, FreezeTargetNotFound) and err.stage == "freeze"
    assert "encoder.layers" in err.close_matches
    assert same_state(model_state(classifier), before)
    assert all(p.requires_grad for p in classifier.parameters())


def test_a_resume_into_another_param_group_layout_leaves_model_optimizer_and_scheduler_unchanged() -> None:
    state, training = _checkpoint(epoch=1, global_step=3)
    model = make_classifier(10, seed=3)
    opt = torch.optim.SGD(
        [{"params": model.encoder.parameters()}, {"params": model.head.parameters()}], lr=0.1, momentum=0.9
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    train_steps(model, opt, sched, start=0, steps=2)
    before = (model_state(model), copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict()))

    result = _load(model, context_for(model, state, training, strategy="warm_start"), opt, sched)

    assert isinstance(result, Failure)
    assert isinstance(result.failure(), IncompatibleState)
    after = (model_state(model), opt.state_dict(), sched.state_dict())
    assert all(same_state(b, a) for b, a in zip(before, after, strict=True))


def test_assign_onto_a_meta_model_yields_real_tensors_equal_to_the_checkpoint() -> None:
    state, _ = _checkpoint(epoch=1, global_step=3)
    with torch.device("meta"):
        model = Classifier(10)
    report = _report(_load(model, context_for(model, state, assign=True)))
    assert not any(t.is_meta for t in model.state_dict().values())
    assert same_state(model.state_dict(), state)
    assert report.parameters_loaded == sum(t.numel() for t in state.values())
    model.eval()
    assert model(torch.zeros(2, 8)).shape == (2, 10)
