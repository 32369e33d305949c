"""The strategies generate valid values, with the overlaps and bounds they promise."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import attrs
import pytest
import torch
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from returns.result import Success

from ckptflow.config.converter import parse_config, unstructure_config
from ckptflow.config.schema import (
    AzureSource,
    CheckpointConfig,
    GcsSource,
    HttpSource,
    LocalSource,
    MlflowSource,
    S3Source,
    SourceConfig,
)
from ckptflow.context import Context, ModelSpec, TrainingState, state_equal, tree_equal
from ckptflow.errors import ERROR_TYPES, Error
from ckptflow.testing import strategies as cs
from ckptflow.testing.strategies import StateAndSpec

T = TypeVar("T")
DOTTED = re.compile(r"([a-z_][a-z0-9_]*|[0-9]+)(\.([a-z_][a-z0-9_]*|[0-9]+))*")


def first(strategy: st.SearchStrategy[T], condition: Callable[[T], bool]) -> T:
    """The first drawn value meeting ``condition`` (no shrinking: the witness only has to exist)."""
    return find(
        strategy, condition, settings=settings(phases=[Phase.generate], database=None, max_examples=500)
    )


# -- tensors -----------------------------------------------------------------------------------------


@given(cs.tensors(shape=(2, 3), dtype=torch.float16))
def test_tensors_have_the_requested_shape_and_dtype(t: torch.Tensor) -> None:
    assert (t.shape, t.dtype) == ((2, 3), torch.float16)


@given(cs.tensors(max_dims=3, max_side=2))
def test_tensors_stay_within_the_size_bounds(t: torch.Tensor) -> None:
    assert t.dim() <= 3
    assert all(1 <= side <= 2 for side in t.shape)


@given(cs.tensors())
def test_tensors_are_finite_so_they_equal_themselves(t: torch.Tensor) -> None:
    assert not (t.is_floating_point() and not torch.isfinite(t).all())
    assert tree_equal(t, t.clone())


@given(cs.tensors(dtype=cs.dtypes([torch.uint8, torch.int64])))
def test_integer_tensor_values_are_small_and_in_range(t: torch.Tensor) -> None:
    low = 0 if t.dtype == torch.uint8 else -8
    assert bool(((t >= low) & (t <= 8)).all())


# -- names and state dicts ---------------------------------------------------------------------------


@given(cs.tensor_names())
def test_tensor_names_are_dotted_paths_ending_in_a_leaf(name: str) -> None:
    assert DOTTED.fullmatch(name)
    assert name.rsplit(".", 1)[-1] in cs.LEAF_NAMES


@given(cs.state_dicts(min_keys=2, max_keys=4, dtypes=[torch.float32, torch.int64]))
def test_state_dicts_respect_key_count_and_dtypes(state: dict[str, torch.Tensor]) -> None:
    assert 2 <= len(state) <= 4
    assert {t.dtype for t in state.values()} <= {torch.float32, torch.int64}


@given(cs.state_dicts(min_keys=2))
def test_state_dict_tensors_share_no_storage(state: dict[str, torch.Tensor]) -> None:
    pointers = [t.data_ptr() for t in state.values()]
    assert len(set(pointers)) == len(pointers)


# -- model specs -------------------------------------------------------------------------------------


@given(cs.model_specs(min_keys=1))
def test_model_specs_list_every_owning_module_parents_first(spec: ModelSpec) -> None:
    for name in spec.tensors:
        parts = name.split(".")[:-1]
        owners = [".".join(parts[: i + 1]) for i in range(len(parts))]
        positions = [spec.modules.index(m) for m in owners]
        assert positions == sorted(positions)


@given(cs.model_specs(min_keys=1))
def test_model_specs_mark_buffers_by_name(spec: ModelSpec) -> None:
    for name, entry in spec.tensors.items():
        assert entry.parameter is (name.rsplit(".", 1)[-1] not in cs.BUFFER_NAMES)


# -- state dict and spec pairs -----------------------------------------------------------------------


@given(cs.state_dict_and_spec())
def test_state_and_spec_categories_partition_the_names(pair: StateAndSpec) -> None:
    in_state = set(pair.matched) | set(pair.mismatched) | set(pair.checkpoint_only)
    in_spec = set(pair.matched) | set(pair.mismatched) | set(pair.model_only)
    assert set(pair.state) == in_state
    assert set(pair.spec.tensors) == in_spec
    categories = (pair.matched, pair.mismatched, pair.checkpoint_only, pair.model_only)
    assert sum(map(len, categories)) == len(in_state | in_spec)


@given(cs.state_dict_and_spec())
def test_matched_names_have_the_same_shape_and_dtype(pair: StateAndSpec) -> None:
    for name in pair.matched:
        spec, tensor = pair.spec.tensors[name], pair.state[name]
        assert (spec.shape, spec.dtype) == (tuple(tensor.shape), tensor.dtype)


@given(cs.state_dict_and_spec(mismatched=(1, 3)))
def test_mismatched_names_differ_in_shape(pair: StateAndSpec) -> None:
    assert pair.mismatched
    for name in pair.mismatched:
        assert pair.spec.tensors[name].shape != tuple(pair.state[name].shape)


@given(cs.state_dict_and_spec(matched=(2, 2), mismatched=(1, 1), checkpoint_only=(0, 0), model_only=(3, 3)))
def test_state_and_spec_category_sizes_follow_the_bounds(pair: StateAndSpec) -> None:
    assert [len(pair.matched), len(pair.mismatched), len(pair.checkpoint_only), len(pair.model_only)] == [
        2,
        1,
        0,
        3,
    ]


def test_state_and_spec_can_differ_in_dtype_for_matched_names() -> None:
    found = first(
        cs.state_dict_and_spec(matched=(1, 1), same_dtype=False),
        lambda p: p.spec.tensors[p.matched[0]].dtype != p.state[p.matched[0]].dtype,
    )
    assert found.spec.tensors[found.matched[0]].shape == tuple(found.state[found.matched[0]].shape)


def test_state_and_spec_draw_key_orders_that_differ() -> None:
    only_matched = cs.state_dict_and_spec(
        matched=(3, 3), mismatched=(0, 0), checkpoint_only=(0, 0), model_only=(0, 0)
    )
    found = first(only_matched, lambda p: list(p.state) != list(p.spec.tensors))
    assert set(found.state) == set(found.spec.tensors)


# -- training states and contexts --------------------------------------------------------------------


@given(cs.training_states())
def test_training_states_equal_themselves(training: TrainingState) -> None:
    assert training == attrs.evolve(training)


def test_training_states_can_carry_optimizer_tensors() -> None:
    found = first(cs.training_states(), lambda t: any(s["state"] for s in t.optimizer_states))
    carrying = next(s for s in found.optimizer_states if s["state"])
    slot = next(iter(carrying["state"].values()))
    assert isinstance(slot["exp_avg"], torch.Tensor)


@given(cs.contexts())
def test_contexts_equal_themselves(ctx: Context) -> None:
    assert ctx == attrs.evolve(ctx)
    assert ctx.state is not None


def test_default_contexts_pair_the_state_with_a_spec_over_shared_names() -> None:
    found = first(
        cs.contexts(), lambda c: c.spec is not None and bool(set(c.spec.tensors) & set(c.state or {}))
    )
    assert found.state is not None and found.spec is not None


@given(cs.contexts(state=cs.state_dicts(min_keys=1, max_keys=1), metadata=False, events=False))
def test_contexts_use_the_state_given_and_no_spec_unless_asked(ctx: Context) -> None:
    assert ctx.state is not None and len(ctx.state) == 1
    assert ctx.spec is None
    assert (dict(ctx.metadata), ctx.events) == ({}, ())


@given(cs.contexts(state=st.none(), spec=cs.model_specs(min_keys=1), training=st.none()))
def test_contexts_take_each_part_from_its_strategy(ctx: Context) -> None:
    assert ctx.state is None
    assert ctx.spec is not None and ctx.spec.tensors
    assert ctx.training is None


def test_contexts_can_carry_a_spec_training_state_metadata_and_events() -> None:
    found = first(
        cs.contexts(),
        lambda c: c.spec is not None and c.training is not None and bool(c.metadata) and bool(c.events),
    )
    assert state_equal(found.state, found.state)


# -- source configs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [LocalSource, HttpSource, S3Source, GcsSource, AzureSource, MlflowSource])
def test_source_configs_cover_every_source_class(cls: type) -> None:
    assert isinstance(first(cs.source_configs(), lambda c: isinstance(c, cls)), cls)


@given(cs.source_configs())
def test_source_configs_parse_back_from_their_plain_data(source: SourceConfig) -> None:
    config = CheckpointConfig(source=source)
    assert parse_config(unstructure_config(config)) == Success(config)


@given(cs.source_configs())
def test_source_config_reprs_never_show_the_generated_secrets(source: SourceConfig) -> None:
    assert cs.SECRET_MARKER not in repr(source)


def test_source_configs_can_carry_secrets() -> None:
    found = first(cs.source_configs(), lambda c: isinstance(c, AzureSource) and c.sas_token is not None)
    assert found.sas_token is not None and found.sas_token.startswith(cs.SECRET_MARKER)


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda c: c.kind)
def test_errors_cover_every_error_type(cls: type[Error]) -> None:
    assert isinstance(first(cs.errors(), lambda e: isinstance(e, cls)), cls)


@given(cs.errors([ERROR_TYPES[0], ERROR_TYPES[-1]]))
def test_errors_can_be_restricted_to_some_types(error: Error) -> None:
    assert type(error) in (ERROR_TYPES[0], ERROR_TYPES[-1])


@given(cs.errors())
def test_generated_errors_are_valid_values(error: Error) -> None:
    attrs.validate(error)
    assert error.kind and error.message
