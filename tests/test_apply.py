"""apply: the one mutator. Validates everything first, then writes; all or nothing."""

from __future__ import annotations

import copy
from typing import Any

import attrs
import pytest
import torch
from returns.result import Failure, Success
from torch import nn

from ckptflow.apply import apply
from ckptflow.context import FrozenModule, LoadPlan, LoadReport, SkippedKey, TrainingState
from ckptflow.errors import FreezeTargetNotFound, IncompatibleState, InvalidConfig
from tests.fixtures.models import (
    Classifier,
    make_classifier,
    make_training,
    model_state,
    same_state,
    train_steps,
    training_snapshot,
)


def _everything(model: nn.Module, optimizer: Any = None, scheduler: Any = None) -> dict[str, Any]:
    """A deep record of all a failed apply must leave alone."""
    return {
        "weights": model_state(model),
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "objects": [id(t) for t in model.state_dict(keep_vars=True).values()],
        "optimizer": copy.deepcopy(optimizer.state_dict()) if optimizer else None,
        "scheduler": copy.deepcopy(scheduler.state_dict()) if scheduler else None,
    }


def _unchanged(
    before: dict[str, Any], model: nn.Module, optimizer: Any = None, scheduler: Any = None
) -> bool:
    return same_state(before, _everything(model, optimizer, scheduler))


def _report(result: object) -> LoadReport:
    assert isinstance(result, Success), result
    report = result.unwrap()
    assert isinstance(report, LoadReport)
    return report


def _failure(result: object) -> object:
    assert isinstance(result, Failure), result
    return result.failure()


def _trained(
    seed: int = 1, optimizer: str = "sgd"
) -> tuple[Classifier, dict[str, torch.Tensor], TrainingState]:
    model = make_classifier(10, seed=seed)
    opt, sched = make_training(model, optimizer=optimizer)
    train_steps(model, opt, sched, start=0, steps=3)
    state, training = training_snapshot(model, opt, sched, epoch=2, global_step=3)
    return model, state, training


def _resume_plan(state: dict[str, torch.Tensor], training: TrainingState) -> LoadPlan:
    return LoadPlan(
        strategy="warm_start", assign=state, training=training, restore_optimizer=True, restore_scheduler=True
    )


# --- weights ------------------------------------------------------------------------------------------


def test_copy_writes_the_values_into_the_existing_parameters(classifier: Classifier) -> None:
    _, state, _ = _trained()
    objects = [id(t) for t in classifier.state_dict(keep_vars=True).values()]
    _report(apply(classifier, LoadPlan(strategy="weights_only", assign=state)))
    assert same_state(classifier.state_dict(), state)
    assert [id(t) for t in classifier.state_dict(keep_vars=True).values()] == objects


def test_copy_does_not_share_memory_with_the_checkpoint(classifier: Classifier) -> None:
    _, state, _ = _trained()
    _report(apply(classifier, LoadPlan(strategy="weights_only", assign=state)))
    assert all(t.data_ptr() != state[n].data_ptr() for n, t in classifier.state_dict().items())


def test_copy_casts_to_the_model_dtype(classifier: Classifier) -> None:
    half = {"head.weight": classifier.head.weight.detach().to(torch.float16) + 1}
    report = _report(apply(classifier, LoadPlan(strategy="weights_only", assign=half, cast=("head.weight",))))
    assert classifier.head.weight.dtype == torch.float32
    assert torch.equal(classifier.head.weight.detach(), half["head.weight"].float())
    assert report.cast == ("head.weight",)


def test_the_report_counts_what_was_loaded(classifier: Classifier) -> None:
    _, state, training = _trained()
    plan = LoadPlan(
        strategy="weights_only",
        assign={k: v for k, v in state.items() if not k.startswith("head.")},
        skipped=(SkippedKey("head.weight", "shape mismatch: ckpt (10, 16) vs model (3, 16)"),),
        missing=("head.weight", "head.bias"),
        training=training,
        source="memory://x",
        digest="ab" * 32,
    )
    report = _report(apply(classifier, plan))
    assert report.loaded == tuple(plan.assign)
    assert report.parameters_loaded == sum(t.numel() for t in plan.assign.values())
    assert (report.skipped, report.missing) == (plan.skipped, plan.missing)
    assert (report.epoch, report.global_step) == (2, 3)
    assert (report.source, report.digest) == ("memory://x", "ab" * 32)


def test_a_name_the_model_lacks_fails_and_changes_nothing(classifier: Classifier) -> None:
    _, state, _ = _trained()
    before = _everything(classifier)
    err = _failure(
        apply(classifier, LoadPlan(strategy="weights_only", assign={**state, "extra.weight": torch.ones(1)}))
    )
    assert isinstance(err, IncompatibleState) and err.unexpected == ("extra.weight",)
    assert err.stage == "apply"
    assert _unchanged(before, classifier)


def test_a_shape_mismatch_in_a_hand_built_plan_fails_and_changes_nothing(classifier: Classifier) -> None:
    _, state, training = _trained()
    opt, sched = make_training(classifier)
    train_steps(classifier, opt, sched, start=0, steps=1)
    before = _everything(classifier, opt, sched)
    bad = {**state, "head.weight": torch.zeros(3, 16)}
    err = _failure(apply(classifier, _resume_plan(bad, training), optimizer=opt, scheduler=sched))
    assert isinstance(err, IncompatibleState)
    assert err.mismatched == ("head.weight (ckpt (3, 16) vs model (10, 16))",)
    assert _unchanged(before, classifier, opt, sched)


def test_an_uncastable_dtype_fails_and_changes_nothing(classifier: Classifier) -> None:
    before = _everything(classifier)
    plan = LoadPlan(strategy="weights_only", assign={"encoder.bn.num_batches_tracked": torch.tensor(1.5)})
    err = _failure(apply(classifier, plan))
    assert isinstance(err, IncompatibleState) and "not castable" in err.message
    assert _unchanged(before, classifier)


# --- optimizer and scheduler --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_a_resume_plan_restores_the_optimizer_and_scheduler(kind: str) -> None:
    _, state, training = _trained(optimizer=kind)
    model = make_classifier(10, seed=5)
    opt, sched = make_training(model, optimizer=kind)
    report = _report(apply(model, _resume_plan(state, training), optimizer=opt, scheduler=sched))
    assert report.optimizer_restored and report.scheduler_restored
    assert same_state(opt.state_dict(), training.optimizer_states[0])
    assert same_state(sched.state_dict(), training.scheduler_states[0])


def test_training_after_a_restore_never_writes_into_the_plan() -> None:
    _, state, training = _trained()
    kept = copy.deepcopy(training)
    model = make_classifier(10, seed=5)
    opt, sched = make_training(model)
    _report(apply(model, _resume_plan(state, training), optimizer=opt, scheduler=sched))
    train_steps(model, opt, sched, start=3, steps=1)
    assert training == kept


def test_optimizer_state_for_another_param_group_layout_fails_and_changes_nothing() -> None:
    _, state, training = _trained()
    model = make_classifier(10, seed=5)
    opt = torch.optim.SGD(
        [{"params": model.encoder.parameters()}, {"params": model.head.parameters(), "lr": 0.01}],
        lr=0.1,
        momentum=0.9,
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    train_steps(model, opt, sched, start=0, steps=1)
    before = _everything(model, opt, sched)
    err = _failure(apply(model, _resume_plan(state, training), optimizer=opt, scheduler=sched))
    assert isinstance(err, IncompatibleState)
    assert "param group" in err.message
    assert _unchanged(before, model, opt, sched)


def test_a_scheduler_torch_refuses_puts_the_optimizer_back_too() -> None:
    _, state, training = _trained()
    model = make_classifier(10, seed=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.9**step)
    train_steps(model, opt, sched, start=0, steps=1)
    before = _everything(model, opt, sched)
    err = _failure(apply(model, _resume_plan(state, training), optimizer=opt, scheduler=sched))
    assert isinstance(err, IncompatibleState) and "could not be restored" in err.message
    assert _unchanged(before, model, opt, sched)


def test_more_saved_optimizer_states_than_optimizers_fails(classifier: Classifier) -> None:
    _, state, training = _trained()
    doubled = attrs.evolve(training, optimizer_states=training.optimizer_states * 2)
    opt, sched = make_training(classifier)
    err = _failure(apply(classifier, _resume_plan(state, doubled), optimizer=opt, scheduler=sched))
    assert isinstance(err, IncompatibleState) and "2 optimizer state(s) but 1" in err.message


def test_a_plan_restoring_a_scheduler_without_scheduler_state_fails(classifier: Classifier) -> None:
    _, state, training = _trained()
    plan = _resume_plan(state, attrs.evolve(training, scheduler_states=()))
    opt, sched = make_training(classifier)
    assert isinstance(_failure(apply(classifier, plan, optimizer=opt, scheduler=sched)), IncompatibleState)


def test_a_resume_without_an_optimizer_passed_loads_weights_and_says_the_optimizer_was_not_restored(
    classifier: Classifier,
) -> None:
    _, state, training = _trained()
    report = _report(apply(classifier, _resume_plan(state, training)))
    assert not report.optimizer_restored and not report.scheduler_restored
    assert {"optimizer.not_restored", "scheduler.not_restored"} <= {e.name for e in report.events}
    assert same_state(classifier.state_dict(), state)


def test_an_optimizer_passed_to_a_weights_only_plan_is_left_alone(classifier: Classifier) -> None:
    _, state, training = _trained()
    opt, _ = make_training(classifier)
    before = copy.deepcopy(opt.state_dict())
    report = _report(
        apply(classifier, LoadPlan(strategy="weights_only", assign=state, training=training), optimizer=opt)
    )
    assert not report.optimizer_restored
    assert same_state(opt.state_dict(), before)


# --- freezing -----------------------------------------------------------------------------------------


def test_freeze_and_unfreeze_set_requires_grad(classifier: Classifier) -> None:
    classifier.head.bias.requires_grad_(False)
    plan = LoadPlan(
        strategy="weights_only",
        freeze=frozenset(n for n, _ in classifier.encoder.named_parameters(prefix="encoder")),
        unfreeze=frozenset({"head.bias"}),
        frozen_modules=(FrozenModule("encoder", 480),),
    )
    report = _report(apply(classifier, plan))
    assert all(not p.requires_grad for p in classifier.encoder.parameters())
    assert all(p.requires_grad for p in classifier.head.parameters())
    assert report.frozen == (FrozenModule("encoder", 480),)
    assert report.frozen_parameters == sum(p.numel() for p in classifier.encoder.parameters())


def test_unfreeze_wins_when_a_hand_built_plan_names_a_parameter_in_both(classifier: Classifier) -> None:
    plan = LoadPlan(strategy="weights_only", freeze={"head.weight"}, unfreeze={"head.weight"})
    report = _report(apply(classifier, plan))
    assert classifier.head.weight.requires_grad
    assert report.frozen_parameters == 0


def test_freezing_a_name_the_model_lacks_fails_with_close_matches_and_changes_nothing(
    classifier: Classifier,
) -> None:
    _, state, _ = _trained()
    before = _everything(classifier)
    err = _failure(apply(classifier, LoadPlan(strategy="weights_only", assign=state, freeze={"head.wieght"})))
    assert isinstance(err, FreezeTargetNotFound) and "head.weight" in err.close_matches
    assert _unchanged(before, classifier)


# --- assign (meta-device models) ----------------------------------------------------------------------


def _meta_classifier() -> Classifier:
    with torch.device("meta"):
        return Classifier(10)


def test_assign_onto_a_meta_model_gives_real_tensors_equal_to_the_checkpoint() -> None:
    _, state, _ = _trained()
    model = _meta_classifier()
    report = _report(apply(model, LoadPlan(strategy="weights_only", assign=state, assign_tensors=True)))
    assert all(not t.is_meta for t in model.state_dict().values())
    assert same_state(model.state_dict(), state)
    assert report.events == ()


def test_assign_keeps_parameters_as_parameters_with_their_requires_grad() -> None:
    _, state, _ = _trained()
    model = _meta_classifier()
    model.head.bias.requires_grad_(False)
    _report(apply(model, LoadPlan(strategy="weights_only", assign=state, assign_tensors=True)))
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    assert not model.head.bias.requires_grad and model.head.weight.requires_grad
    assert {n for n, _ in model.named_buffers()} == {n for n, _ in make_classifier(10).named_buffers()}


def test_assign_uses_the_checkpoint_tensors_without_copying() -> None:
    _, state, _ = _trained()
    model = _meta_classifier()
    _report(apply(model, LoadPlan(strategy="weights_only", assign=state, assign_tensors=True)))
    assert model.head.weight.data_ptr() == state["head.weight"].data_ptr()


def test_assign_keeps_tied_parameters_tied() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight
    weight = torch.randn(5, 4)
    plan = LoadPlan(
        strategy="weights_only", assign={"0.weight": weight, "1.weight": weight}, assign_tensors=True
    )
    _report(apply(model, plan))
    assert model[0].weight is model[1].weight
    assert torch.equal(model[0].weight.detach(), weight)


def test_assign_onto_a_partly_covered_meta_model_notes_what_stays_on_meta() -> None:
    _, state, _ = _trained()
    model = _meta_classifier()
    partial = {k: v for k, v in state.items() if not k.startswith("head.")}
    report = _report(apply(model, LoadPlan(strategy="weights_only", assign=partial, assign_tensors=True)))
    notes = [e for e in report.events if e.name == "apply.meta_tensors_remain"]
    assert notes and notes[0].data["names"] == ["head.weight", "head.bias"]


def test_copying_into_a_meta_model_is_invalid_and_points_at_assign() -> None:
    _, state, _ = _trained()
    err = _failure(apply(_meta_classifier(), LoadPlan(strategy="weights_only", assign=state)))
    assert isinstance(err, InvalidConfig) and "assign=True" in err.message


def test_assign_with_an_optimizer_is_invalid_because_it_would_update_the_old_parameters(
    classifier: Classifier,
) -> None:
    _, state, _ = _trained()
    opt, _ = make_training(classifier)
    before = _everything(classifier, opt)
    err = _failure(
        apply(classifier, LoadPlan(strategy="weights_only", assign=state, assign_tensors=True), optimizer=opt)
    )
    assert isinstance(err, InvalidConfig)
    assert _unchanged(before, classifier, opt)
