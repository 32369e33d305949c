"""Context values: tensor-aware equality, model specs taken from real and meta models."""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import given
from torch import nn

from ckptflow.context import (
    Context,
    Event,
    LoadPlan,
    ModelSpec,
    TensorSpec,
    TrainingState,
    state_equal,
    tree_equal,
)
from ckptflow.testing.strategies import contexts, state_dicts
from tests.fixtures.models import Classifier, make_classifier

# -- tree_equal --------------------------------------------------------------------------------------


def test_tree_equal_compares_tensors_by_value() -> None:
    assert tree_equal(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]))
    assert not tree_equal(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0]))


def test_tree_equal_distinguishes_dtypes_with_equal_values() -> None:
    assert not tree_equal(torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64))


def test_tree_equal_distinguishes_shapes_with_equal_values() -> None:
    assert not tree_equal(torch.zeros(2, 3), torch.zeros(3, 2))
    assert not tree_equal(torch.zeros(1), torch.zeros(()))


def test_tree_equal_tensor_never_equals_a_non_tensor() -> None:
    assert not tree_equal(torch.tensor(1), 1)
    assert not tree_equal(1, torch.tensor(1))


def test_tree_equal_descends_into_nested_containers() -> None:
    a = {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    b = {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    assert tree_equal(a, b)
    b["state"][0]["exp_avg"] = torch.zeros(2)
    assert not tree_equal(a, b)


def test_tree_equal_distinguishes_lists_from_tuples() -> None:
    assert not tree_equal([1, 2], (1, 2))


def test_tree_equal_ignores_mapping_key_order() -> None:
    assert tree_equal({"a": torch.ones(1), "b": torch.zeros(1)}, {"b": torch.zeros(1), "a": torch.ones(1)})


def test_tree_equal_treats_nan_as_unequal_like_torch_equal() -> None:
    nan = torch.tensor([float("nan")])
    assert not tree_equal(nan, nan.clone())


# -- state_equal -------------------------------------------------------------------------------------


@given(state_dicts())
def test_state_equal_is_reflexive_on_copies(state: dict[str, torch.Tensor]) -> None:
    assert state_equal(state, {k: v.clone() for k, v in state.items()})


def test_state_equal_requires_the_same_key_order() -> None:
    a = {"a": torch.ones(1), "b": torch.zeros(1)}
    assert not state_equal(a, dict(reversed(a.items())))


def test_state_equal_requires_the_same_keys() -> None:
    assert not state_equal({"a": torch.ones(1)}, {"a": torch.ones(1), "b": torch.ones(1)})


def test_state_equal_compares_dtypes() -> None:
    assert not state_equal({"a": torch.ones(1)}, {"a": torch.ones(1, dtype=torch.float16)})


def test_state_equal_on_none_only_equals_none() -> None:
    assert state_equal(None, None)
    assert not state_equal(None, {})
    assert not state_equal({}, None)


# -- ModelSpec ---------------------------------------------------------------------------------------


def test_model_spec_lists_every_state_dict_entry_with_shape_and_dtype() -> None:
    model = make_classifier(3)
    spec = ModelSpec.from_model(model)
    assert list(spec.tensors) == list(model.state_dict())
    assert spec.tensors["head.weight"] == TensorSpec((3, 16), torch.float32, True)


def test_model_spec_marks_buffers_as_not_parameters() -> None:
    spec = ModelSpec.from_model(make_classifier(3))
    assert spec.tensors["encoder.bn.running_mean"].parameter is False
    assert spec.tensors["encoder.bn.num_batches_tracked"] == TensorSpec((), torch.int64, False)
    assert spec.tensors["encoder.bn.weight"].parameter is True


def test_model_spec_lists_module_paths_without_the_root() -> None:
    spec = ModelSpec.from_model(make_classifier(3, depth=1))
    assert spec.modules == (
        "encoder",
        "encoder.layers",
        "encoder.layers.0",
        "encoder.bn",
        "encoder.norm",
        "head",
    )


def test_model_spec_from_a_meta_model_equals_the_spec_of_the_real_model() -> None:
    with torch.device("meta"):
        meta = Classifier(3)
    assert next(meta.parameters()).is_meta
    assert ModelSpec.from_model(meta) == ModelSpec.from_model(make_classifier(3))


def test_model_spec_counts_a_tied_parameter_under_each_name() -> None:
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight
    spec = ModelSpec.from_model(model)
    assert spec.tensors["0.weight"].parameter
    assert spec.tensors["1.weight"].parameter


def test_model_spec_leaves_out_non_persistent_buffers() -> None:
    model = nn.Module()
    model.register_buffer("kept", torch.zeros(2))
    model.register_buffer("scratch", torch.zeros(2), persistent=False)
    assert list(ModelSpec.from_model(model).tensors) == ["kept"]


def test_model_spec_from_state_describes_a_state_dict() -> None:
    spec = ModelSpec.from_state({"encoder.layers.0.weight": torch.zeros(2, 3), "head.bias": torch.zeros(2)})
    assert spec.tensors["encoder.layers.0.weight"] == TensorSpec((2, 3), torch.float32)
    assert spec.modules == ("encoder.layers.0", "head")


# -- Context -----------------------------------------------------------------------------------------


@given(contexts())
def test_contexts_equal_their_copies_with_cloned_tensors(ctx: Context) -> None:
    state = None if ctx.state is None else {k: v.clone() for k, v in ctx.state.items()}
    assert attrs.evolve(ctx, state=state) == ctx


def test_contexts_with_different_tensor_values_differ() -> None:
    assert Context(state={"w": torch.ones(2)}) != Context(state={"w": torch.zeros(2)})


def test_contexts_with_the_same_keys_in_another_order_differ() -> None:
    state = {"a": torch.ones(1), "b": torch.zeros(1)}
    assert Context(state=state) != Context(state=dict(reversed(state.items())))


def test_contexts_compare_raw_payloads_with_tensors_inside() -> None:
    assert Context(raw={"state_dict": {"w": torch.ones(2)}}) == Context(
        raw={"state_dict": {"w": torch.ones(2)}}
    )
    assert Context(raw={"state_dict": {"w": torch.ones(2)}}) != Context(
        raw={"state_dict": {"w": torch.zeros(2)}}
    )


def test_contexts_compare_optimizer_states_by_tensor_value() -> None:
    def training(value: float) -> TrainingState:
        return TrainingState(optimizer_states=[{"state": {0: {"exp_avg": torch.full((2,), value)}}}])

    assert Context(training=training(1.0)) == Context(training=training(1.0))
    assert Context(training=training(1.0)) != Context(training=training(2.0))


def test_contexts_compare_plans_by_tensor_value() -> None:
    def plan(value: float) -> LoadPlan:
        return LoadPlan(strategy="weights_only", assign={"w": torch.full((2,), value)})

    assert Context(plan=plan(1.0)) == Context(plan=plan(1.0))
    assert Context(plan=plan(1.0)) != Context(plan=plan(2.0))


def test_context_equality_ignores_timings() -> None:
    assert Context(timings=[("read", 0.5)]) == Context(timings=[("read", 2.0)])


def test_with_event_appends_a_structured_event_and_leaves_the_original() -> None:
    ctx = Context()
    after = ctx.with_event("cache.hit", "fetch", digest="ab")
    assert after.events == (Event("cache.hit", {"digest": "ab"}, "fetch"),)
    assert ctx.events == ()


def test_events_compare_data_with_tensors_by_value() -> None:
    assert Event("x", {"t": torch.ones(2)}) == Event("x", {"t": torch.ones(2)})
    assert Event("x", {"t": torch.ones(2)}) != Event("x", {"t": torch.zeros(2)})


def test_contexts_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Context().source = "elsewhere"  # type: ignore[misc]


def test_context_repr_leaves_out_tensors() -> None:
    text = repr(Context(state={"w": torch.arange(1000.0)}, raw={"w": torch.arange(1000.0)}))
    assert "999" not in text
