"""Matching a state dict against a ModelSpec: exact (strict / non-strict) and transfer by name and shape."""

from __future__ import annotations

import torch
from hypothesis import given
from returns.result import Failure, Success

from ckptflow.context import LoadPlan, ModelSpec, SkippedKey, TensorSpec
from ckptflow.errors import IncompatibleState, NothingMatched
from ckptflow.stages.match import castable, plan_exact, plan_transfer, prefix_hint
from tests.fixtures.models import (
    Classifier,
    make_classifier,
    model_specs,
    model_state,
    same_state,
    state_dicts,
)


def _spec(**tensors: tuple[tuple[int, ...], torch.dtype]) -> ModelSpec:
    return ModelSpec({k.replace("__", "."): TensorSpec(s, d) for k, (s, d) in tensors.items()})


def _plan(result: object) -> LoadPlan:
    assert isinstance(result, Success), result
    plan = result.unwrap()
    assert isinstance(plan, LoadPlan)
    return plan


def _fits(tensor: torch.Tensor, target: TensorSpec | None) -> bool:
    return target is not None and tuple(tensor.shape) == target.shape and castable(tensor.dtype, target.dtype)


def _error(result: object) -> object:
    assert isinstance(result, Failure), result
    return result.failure()


# --- exact -------------------------------------------------------------------------------------------


def test_exact_strict_plans_every_tensor_when_names_and_shapes_match(classifier: Classifier) -> None:
    state = model_state(classifier)
    plan = _plan(plan_exact(state, ModelSpec.from_model(classifier), strict=True))
    assert list(plan.assign) == list(state)
    assert (plan.skipped, plan.missing, plan.unexpected, plan.cast) == ((), (), (), ())


def test_exact_strict_lists_missing_unexpected_and_mismatched_keys() -> None:
    spec = _spec(
        a__weight=((3, 2), torch.float32), b__weight=((2,), torch.float32), c__weight=((1,), torch.float32)
    )
    state = {"a.weight": torch.zeros(3, 2), "b.weight": torch.zeros(5), "z.weight": torch.zeros(1)}
    err = _error(plan_exact(state, spec, strict=True))
    assert isinstance(err, IncompatibleState)
    assert err.missing == ("c.weight",)  # b.weight is present, listed once as mismatched
    assert err.unexpected == ("z.weight",)
    assert err.mismatched == ("b.weight (ckpt (5,) vs model (2,))",)


def test_exact_non_strict_loads_the_intersection_and_reports_the_rest() -> None:
    spec = _spec(
        a__weight=((3, 2), torch.float32), b__weight=((2,), torch.float32), c__weight=((1,), torch.float32)
    )
    state = {"a.weight": torch.ones(3, 2), "b.weight": torch.zeros(5), "z.weight": torch.zeros(1)}
    plan = _plan(plan_exact(state, spec, strict=False))
    assert list(plan.assign) == ["a.weight"]
    assert plan.skipped == (
        SkippedKey("b.weight", "shape mismatch: ckpt (5,) vs model (2,)"),
        SkippedKey("z.weight", "not in model"),
    )
    assert plan.missing == ("b.weight", "c.weight")
    assert plan.unexpected == ("z.weight",)


def test_exact_strict_failure_with_no_common_name_hints_at_the_prefix(classifier: Classifier) -> None:
    state = {f"model.{k}": v for k, v in model_state(classifier).items()}
    err = _error(plan_exact(state, ModelSpec.from_model(classifier), strict=True))
    assert isinstance(err, IncompatibleState)
    assert "strip_prefix('model.')" in err.message


def test_dtype_difference_is_planned_and_listed_as_cast() -> None:
    spec = _spec(w=((2,), torch.float32), n=((), torch.int64))
    state = {"w": torch.ones(2, dtype=torch.float16), "n": torch.tensor(3, dtype=torch.int32)}
    plan = _plan(plan_exact(state, spec, strict=True))
    assert set(plan.assign) == {"w", "n"}
    assert plan.cast == ("w", "n")


def test_float_into_integer_tensor_is_skipped_as_not_castable() -> None:
    spec = _spec(n=((), torch.int64))
    plan = _plan(plan_exact({"n": torch.tensor(1.5)}, spec, strict=False))
    assert plan.assign == {}
    assert plan.skipped == (SkippedKey("n", "dtype not castable: ckpt torch.float32 vs model torch.int64"),)


def test_castable_allows_float_narrowing_and_refuses_float_to_int() -> None:
    assert castable(torch.float32, torch.bfloat16)
    assert castable(torch.int32, torch.float32)
    assert not castable(torch.float32, torch.int64)
    assert not castable(torch.complex64, torch.float32)


# --- transfer -----------------------------------------------------------------------------------------


def test_transfer_skips_a_shape_mismatch_with_the_exact_reason() -> None:
    spec = _spec(head__weight=((3, 64), torch.float32), body__weight=((4,), torch.float32))
    state = {"head.weight": torch.zeros(10, 64), "body.weight": torch.zeros(4)}
    plan = _plan(plan_transfer(state, spec))
    assert list(plan.assign) == ["body.weight"]
    assert plan.skipped == (SkippedKey("head.weight", "shape mismatch: ckpt (10, 64) vs model (3, 64)"),)


def test_transfer_skips_a_key_the_model_lacks_as_not_in_model() -> None:
    spec = _spec(body__weight=((4,), torch.float32))
    plan = _plan(plan_transfer({"body.weight": torch.zeros(4), "aux.weight": torch.zeros(4)}, spec))
    assert plan.skipped == (SkippedKey("aux.weight", "not in model"),)
    assert plan.unexpected == ("aux.weight",)


def test_transfer_lists_model_tensors_without_a_source_as_missing() -> None:
    spec = _spec(body__weight=((4,), torch.float32), new__weight=((2,), torch.float32))
    plan = _plan(plan_transfer({"body.weight": torch.zeros(4)}, spec))
    assert plan.missing == ("new.weight",)


def test_transfer_plan_is_labelled_transfer_learning() -> None:
    spec = _spec(w=((1,), torch.float32))
    assert _plan(plan_transfer({"w": torch.zeros(1)}, spec)).strategy == "transfer_learning"


def test_nothing_matched_suggests_stripping_the_checkpoint_prefix(classifier: Classifier) -> None:
    state = {f"model.{k}": v for k, v in model_state(classifier).items()}
    err = _error(plan_transfer(state, ModelSpec.from_model(classifier)))
    assert isinstance(err, NothingMatched)
    assert "strip_prefix('model.')" in err.hint


def test_nothing_matched_suggests_adding_the_model_prefix() -> None:
    spec = ModelSpec({"backbone.layer.weight": TensorSpec((2, 2), torch.float32)})
    err = _error(plan_transfer({"layer.weight": torch.zeros(2, 2)}, spec))
    assert isinstance(err, NothingMatched)
    assert "add_prefix('backbone.')" in err.hint


def test_nothing_matched_suggests_replacing_one_prefix_with_another() -> None:
    spec = ModelSpec({"backbone.layer.weight": TensorSpec((2, 2), torch.float32)})
    err = _error(plan_transfer({"module.layer.weight": torch.zeros(2, 2)}, spec))
    assert isinstance(err, NothingMatched)
    assert "strip_prefix('module.') then add_prefix('backbone.')" in err.hint


def test_nothing_matched_with_same_names_but_other_shapes_says_the_architecture_differs() -> None:
    spec = _spec(w=((3,), torch.float32))
    err = _error(plan_transfer({"w": torch.zeros(4)}, spec))
    assert isinstance(err, NothingMatched)
    assert "every shape differs" in err.hint


def test_prefix_hint_is_none_when_no_prefix_change_helps() -> None:
    spec = _spec(a=((1,), torch.float32))
    assert prefix_hint({"zzz.b": torch.zeros(1)}, spec) is None


def test_transfer_of_a_real_classifier_into_a_new_head_skips_exactly_the_head() -> None:
    source, target = make_classifier(10, seed=1), make_classifier(3, seed=2)
    plan = _plan(plan_transfer(model_state(source), ModelSpec.from_model(target)))
    assert {s.key for s in plan.skipped} == {"head.weight", "head.bias"}
    assert plan.missing == ("head.weight", "head.bias")
    assert set(plan.assign) == set(source.state_dict()) - {"head.weight", "head.bias"}


def test_plan_assign_is_a_new_dict_holding_the_checkpoint_tensors_themselves(classifier: Classifier) -> None:
    state = model_state(classifier)
    plan = _plan(plan_transfer(state, ModelSpec.from_model(classifier)))
    assert plan.assign is not state
    assert all(plan.assign[k] is state[k] for k in state)


def test_ten_thousand_keys_are_planned() -> None:
    names = [f"blocks.{i}.weight" for i in range(10_000)]
    spec = ModelSpec({n: TensorSpec((2,) if i % 10 else (3,), torch.float32) for i, n in enumerate(names)})
    state = {n: torch.zeros(2) for n in names}
    plan = _plan(plan_transfer(state, spec))
    assert len(plan.assign) == 9_000
    assert len(plan.skipped) == len(plan.missing) == 1_000


# --- laws ---------------------------------------------------------------------------------------------


@given(state=state_dicts(), spec=model_specs())
def test_transfer_never_assigns_a_tensor_whose_shape_differs_from_the_model(
    state: dict, spec: ModelSpec
) -> None:
    match plan_transfer(state, spec):
        case Success(plan):
            assert all(tuple(t.shape) == spec.tensors[k].shape for k, t in plan.assign.items())
        case Failure(err):
            assert isinstance(err, NothingMatched)
            assert not any(_fits(t, spec.tensors.get(k)) for k, t in state.items())


@given(state=state_dicts(), spec=model_specs())
def test_every_checkpoint_key_is_either_planned_or_skipped_exactly_once(state: dict, spec: ModelSpec) -> None:
    plan = _plan(plan_exact(state, spec, strict=False))
    skipped = [s.key for s in plan.skipped]
    assert sorted([*plan.assign, *skipped]) == sorted(state)
    assert set(plan.missing) == set(spec.tensors) - set(plan.assign)


@given(state=state_dicts(), spec=model_specs())
def test_strict_exact_succeeds_exactly_when_names_and_shapes_coincide(state: dict, spec: ModelSpec) -> None:
    fits = state.keys() == spec.tensors.keys() and all(_fits(t, spec.tensors[k]) for k, t in state.items())
    assert isinstance(plan_exact(state, spec, strict=True), Success) == fits


@given(state=state_dicts(), spec=model_specs())
def test_planning_never_changes_its_inputs(state: dict, spec: ModelSpec) -> None:
    before = {k: v.clone() for k, v in state.items()}
    objects = [id(v) for v in state.values()]
    spec_before = ModelSpec(dict(spec.tensors), spec.modules)
    plan_transfer(state, spec)
    plan_exact(state, spec, strict=True)
    plan_exact(state, spec, strict=False)
    assert same_state(state, before)
    assert [id(v) for v in state.values()] == objects
    assert spec == spec_before


@given(state=state_dicts(), spec=model_specs())
def test_planning_is_deterministic(state: dict, spec: ModelSpec) -> None:
    assert plan_exact(state, spec, strict=False) == plan_exact(state, spec, strict=False)
