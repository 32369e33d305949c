"""Key and dtype transforms: laws (purity, idempotence, round trips) and their failures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from ckptflow.context import Context, StateDict, state_equal
from ckptflow.errors import Error, InvalidConfig, StageFailed
from ckptflow.pipeline import NamedStage
from ckptflow.stages.keys import (
    TRANSFORMS,
    add_prefix,
    add_prefix_keys,
    cast,
    cast_state,
    exclude,
    exclude_keys,
    include,
    include_keys,
    rename,
    rename_keys,
    resolve_dtype,
    strip_prefix,
    strip_prefix_keys,
    transform_from_config,
)
from ckptflow.testing import check_idempotent, check_pure, contexts, state_dicts

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
no_double_model_prefix = state_dicts().filter(lambda s: not any(k.startswith("model.model.") for k in s))

ALL_STAGES = [
    rename(r"^encoder\.", "enc."),
    strip_prefix("model."),
    add_prefix("net."),
    include("encoder.*", "*.bias"),
    exclude("*.num_batches_tracked"),
    cast("bfloat16"),
    cast(torch.float16),
]
IDEMPOTENT_STAGES = [
    strip_prefix("model."),
    include("encoder.*", "*.bias"),
    exclude("*.num_batches_tracked"),
    cast("bfloat16"),
    cast("float32"),
]


def success(result: Result[dict[str, torch.Tensor], Error]) -> dict[str, torch.Tensor]:
    assert isinstance(result, Success), result
    return result.unwrap()


def failure(result: Result[object, Error]) -> Error:
    assert isinstance(result, Failure), result
    return result.failure()


def state(*keys: str) -> dict[str, torch.Tensor]:
    return {k: torch.full((2,), float(i)) for i, k in enumerate(keys)}


# -- laws ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ALL_STAGES, ids=lambda s: s.name)
def test_every_transform_stage_is_pure(stage: NamedStage) -> None:
    check_pure(stage, contexts(state=state_dicts(max_keys=6)))


@pytest.mark.parametrize("stage", IDEMPOTENT_STAGES, ids=lambda s: s.name)
def test_transform_stage_applied_twice_equals_applied_once(stage: NamedStage) -> None:
    check_idempotent(stage, contexts(state=no_double_model_prefix), ignore=("events",))


TRANSFORM_FUNCTIONS: list[Callable[[StateDict], Result[dict[str, torch.Tensor], Error]]] = [
    lambda s: rename_keys(s, r"\.weight$", ".w"),
    lambda s: strip_prefix_keys(s, "model."),
    lambda s: add_prefix_keys(s, "net."),
    lambda s: include_keys(s, "encoder.*"),
    lambda s: exclude_keys(s, "encoder.*"),
    lambda s: cast_state(s, torch.bfloat16),
]


@pytest.mark.parametrize("transform", TRANSFORM_FUNCTIONS)
@given(sd=state_dicts(max_keys=6))
@settings(max_examples=25, deadline=None)
def test_transform_functions_leave_input_dict_and_tensors_unchanged(
    transform: Callable[[StateDict], Result[dict[str, torch.Tensor], Error]], sd: dict[str, torch.Tensor]
) -> None:
    keys = list(sd)
    tensors = dict(sd)
    snapshot = {k: (v.clone(), v.data_ptr(), v._version) for k, v in sd.items()}
    result = transform(sd)
    assert list(sd) == keys
    for k, (copy, ptr, version) in snapshot.items():
        assert sd[k] is tensors[k]
        assert sd[k].data_ptr() == ptr and sd[k]._version == version
        assert sd[k].dtype == copy.dtype and torch.equal(sd[k], copy)
    match result:
        case Success(out):
            assert out is not sd


@given(sd=state_dicts(max_keys=6))
@settings(max_examples=50, deadline=None)
def test_rename_then_inverse_rename_is_identity(sd: dict[str, torch.Tensor]) -> None:
    there = success(rename_keys(sd, r"^encoder\.", "ENC."))
    back = success(rename_keys(there, r"^ENC\.", "encoder."))
    assert state_equal(back, sd)


@given(sd=state_dicts(max_keys=6))
@settings(max_examples=50, deadline=None)
def test_strip_prefix_undoes_add_prefix(sd: dict[str, torch.Tensor]) -> None:
    assert state_equal(success(add_prefix_keys(sd, "net.").bind(lambda s: strip_prefix_keys(s, "net."))), sd)


@given(sd=state_dicts(max_keys=6))
@settings(max_examples=50, deadline=None)
def test_add_prefix_undoes_strip_prefix_when_every_key_has_it(sd: dict[str, torch.Tensor]) -> None:
    prefixed = success(add_prefix_keys(sd, "module."))
    assert state_equal(
        success(strip_prefix_keys(prefixed, "module.").bind(lambda s: add_prefix_keys(s, "module."))),
        prefixed,
    )


@given(sd=state_dicts(max_keys=8), glob=st.sampled_from(["encoder.*", "*.weight", "*.0.*", "nothing"]))
@settings(max_examples=50, deadline=None)
def test_include_and_exclude_partition_the_keys(sd: dict[str, torch.Tensor], glob: str) -> None:
    kept = success(include_keys(sd, glob))
    dropped = success(exclude_keys(sd, glob))
    assert set(kept).isdisjoint(dropped)
    assert set(kept) | set(dropped) == set(sd)
    assert all(kept[k] is sd[k] for k in kept)


@given(sd=state_dicts(max_keys=6, dtypes=(torch.float32,)))
@settings(max_examples=50, deadline=None)
def test_cast_to_bfloat16_and_back_stays_within_bfloat16_precision(sd: dict[str, torch.Tensor]) -> None:
    there = success(cast_state(sd, "bfloat16"))
    back = success(cast_state(there, "float32"))
    assert all(t.dtype == torch.bfloat16 for t in there.values())
    for key, original in sd.items():
        assert back[key].dtype == torch.float32
        torch.testing.assert_close(back[key], original, rtol=2**-8, atol=1e-37)


# -- behaviour -----------------------------------------------------------------------------------------


def test_cast_leaves_integer_and_bool_tensors_as_the_same_objects() -> None:
    sd = {
        "w": torch.ones(2),
        "steps": torch.tensor([3]),
        "mask": torch.tensor([True]),
        "z": torch.ones(1, dtype=torch.complex64),
    }
    out = success(cast_state(sd, torch.float16))
    assert out["w"].dtype == torch.float16
    assert out["steps"] is sd["steps"] and out["mask"] is sd["mask"] and out["z"] is sd["z"]


def test_cast_keeps_tensors_already_of_the_target_dtype_without_copying() -> None:
    sd = {"w": torch.ones(2, dtype=torch.bfloat16)}
    assert success(cast_state(sd, "bf16"))["w"] is sd["w"]


@pytest.mark.parametrize("name", ["int8", "complex64", "float8", "bfloat"])
def test_cast_to_a_non_floating_or_unknown_dtype_is_invalid_config(name: str) -> None:
    err = failure(cast_state(state("a"), name))
    assert isinstance(err, InvalidConfig)
    assert "bfloat16" in err.message and name in err.message


def test_resolve_dtype_accepts_names_aliases_and_dtypes() -> None:
    assert resolve_dtype("bfloat16") == Success(torch.bfloat16)
    assert resolve_dtype("fp16") == Success(torch.float16)
    assert resolve_dtype(torch.float64) == Success(torch.float64)
    assert isinstance(failure(resolve_dtype(torch.int32)), InvalidConfig)


def test_rename_keeps_key_order() -> None:
    sd = state("encoder.b", "head.w", "encoder.a")
    assert list(success(rename_keys(sd, r"^encoder\.", "enc."))) == ["enc.b", "head.w", "enc.a"]


def test_rename_supports_group_references() -> None:
    sd = state("layers.0.weight", "layers.1.weight")
    assert list(success(rename_keys(sd, r"^layers\.(\d+)\.", r"blocks.\1."))) == [
        "blocks.0.weight",
        "blocks.1.weight",
    ]


def test_rename_producing_duplicate_keys_names_the_colliding_keys() -> None:
    err = failure(rename_keys(state("a.weight", "b.weight", "c.bias"), r"^[ab]\.", "x."))
    assert isinstance(err, InvalidConfig)
    assert "'a.weight'" in err.message and "'b.weight'" in err.message and "'x.weight'" in err.message


def test_strip_prefix_that_would_merge_two_keys_is_invalid_config() -> None:
    err = failure(strip_prefix_keys(state("model.w", "w"), "model."))
    assert isinstance(err, InvalidConfig)
    assert "'model.w'" in err.message and "'w'" in err.message


def test_strip_prefix_leaves_keys_without_the_prefix_alone() -> None:
    assert list(success(strip_prefix_keys(state("model.a", "head.b"), "model."))) == ["a", "head.b"]


def test_strip_prefix_removes_the_prefix_only_once() -> None:
    assert list(success(strip_prefix_keys(state("model.model.a"), "model."))) == ["model.a"]


@pytest.mark.parametrize("fn", [strip_prefix_keys, add_prefix_keys])
def test_an_empty_prefix_is_invalid_config(fn: Callable[[StateDict, str], Result[object, Error]]) -> None:
    err = failure(fn(state("a"), ""))
    assert isinstance(err, InvalidConfig) and "prefix" in err.message


def test_invalid_regular_expression_is_invalid_config_naming_it() -> None:
    err = failure(rename_keys(state("a"), "(unclosed", "x"))
    assert isinstance(err, InvalidConfig) and "(unclosed" in err.message


def test_replacement_referring_to_a_missing_group_is_invalid_config() -> None:
    for repl in (r"\2", r"\g<nope>"):
        err = failure(rename_keys(state("a"), r"(a)", repl))
        assert isinstance(err, InvalidConfig) and "repl" in err.message


def test_include_star_matches_across_dots() -> None:
    sd = state("encoder.layers.0.weight", "decoder.weight")
    assert list(success(include_keys(sd, "encoder.*"))) == ["encoder.layers.0.weight"]


def test_include_or_exclude_without_globs_is_invalid_config() -> None:
    assert isinstance(failure(include_keys(state("a"))), InvalidConfig)
    assert isinstance(failure(exclude_keys(state("a"))), InvalidConfig)


# -- stages ----------------------------------------------------------------------------------------------


def test_stages_name_themselves_after_their_arguments() -> None:
    assert strip_prefix("model.").name == "strip_prefix('model.')"
    assert rename("a", "b").name == "rename('a', 'b')"
    assert include("x.*", "y.*").name == "include('x.*', 'y.*')"
    assert cast(torch.bfloat16).name == "cast('bfloat16')"
    assert cast("bfloat16").name == "cast('bfloat16')"


def test_strip_prefix_stage_records_counts() -> None:
    out = strip_prefix("model.")(Context(state=state("model.a", "model.b", "head.c"))).unwrap()
    assert list(out.state or {}) == ["a", "b", "head.c"]
    event = out.events[-1]
    assert (event.name, event.stage) == ("transform.strip_prefix", "strip_prefix('model.')")
    assert dict(event.data) == {"renamed": 2, "unchanged": 1}


def test_filter_stage_records_kept_and_dropped() -> None:
    out = exclude("*.b")(Context(state=state("x.a", "x.b", "y.b"))).unwrap()
    assert dict(out.events[-1].data) == {"kept": 1, "dropped": 2}


def test_cast_stage_records_how_many_tensors_changed_dtype() -> None:
    sd = {"w": torch.ones(2), "n": torch.tensor([1]), "h": torch.ones(1, dtype=torch.bfloat16)}
    out = cast("bfloat16")(Context(state=sd)).unwrap()
    assert dict(out.events[-1].data) == {"dtype": "bfloat16", "cast": 1, "unchanged": 2}


@pytest.mark.parametrize("stage", ALL_STAGES, ids=lambda s: s.name)
def test_transform_stage_without_a_state_dict_fails_naming_itself(stage: NamedStage) -> None:
    err = failure(stage(Context()))
    assert isinstance(err, StageFailed)
    assert err.stage == stage.name and "extract" in err.message


def test_stage_failure_carries_the_stage_name() -> None:
    err = failure(rename(r"^[ab]\.", "x.")(Context(state=state("a.w", "b.w"))))
    assert isinstance(err, InvalidConfig) and err.stage == r"rename('^[ab]\\.', 'x.')"


# -- from config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("rename", {"pattern": "^a", "repl": "b"}, "rename('^a', 'b')"),
        ("strip_prefix", {"prefix": "model."}, "strip_prefix('model.')"),
        ("add_prefix", {"prefix": "net."}, "add_prefix('net.')"),
        ("include", {"globs": ["encoder.*", "head.*"]}, "include('encoder.*', 'head.*')"),
        ("exclude", {"globs": "*.bias"}, "exclude('*.bias')"),
        ("cast", {"dtype": "float16"}, "cast('float16')"),
    ],
)
def test_every_builtin_transform_builds_from_config(
    name: str, args: dict[str, object], expected: str
) -> None:
    built = transform_from_config(name, args)
    assert isinstance(built, Success)
    assert built.unwrap().name == expected


def test_transform_from_config_builds_a_working_stage() -> None:
    stage = transform_from_config("strip_prefix", {"prefix": "model."}).unwrap()
    assert list(stage(Context(state=state("model.a"))).unwrap().state or {}) == ["a"]


def test_unknown_transform_lists_the_known_ones() -> None:
    err = failure(transform_from_config("shuffle", {}))
    assert isinstance(err, InvalidConfig)
    assert "'shuffle'" in err.message and all(name in err.message for name in TRANSFORMS)


@pytest.mark.parametrize(
    ("name", "args", "mentions"),
    [
        ("strip_prefix", {}, "prefix: missing"),
        ("strip_prefix", {"prefix": "a.", "suffix": "b"}, "suffix: unexpected"),
        ("strip_prefix", {"prefix": 3}, "prefix: expected a string"),
        ("include", {"globs": [1, 2]}, "globs: expected a string or a list of strings"),
        ("include", {}, "globs: missing"),
        ("include", {"globs": []}, "at least one glob"),
        ("rename", {"pattern": "("}, "repl: missing"),
        ("rename", {"pattern": "(", "repl": "x"}, "invalid regular expression"),
        ("cast", {"dtype": "int64"}, "dtype: cannot cast to 'int64'"),
        ("add_prefix", {"prefix": ""}, "prefix: must not be empty"),
    ],
)
def test_bad_config_arguments_are_invalid_config_naming_the_argument(
    name: str, args: dict[str, object], mentions: str
) -> None:
    err = failure(transform_from_config(name, args))
    assert isinstance(err, InvalidConfig)
    assert any(mentions in problem for problem in err.problems), err.problems


def test_config_problems_are_all_reported_at_once() -> None:
    err = failure(transform_from_config("rename", {"patern": "a", "repl": 1}))
    assert isinstance(err, InvalidConfig)
    assert len(err.problems) == 3  # unexpected 'patern', missing 'pattern', 'repl' not a string
