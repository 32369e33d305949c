"""Failure values: stable kinds, actionable messages, frozen and hashable, located by ``at_stage``."""

from __future__ import annotations

import re
import typing

import attrs
import pytest
from hypothesis import given
from returns.result import Failure, Success

from ckptflow import errors
from ckptflow.errors import (
    ERROR_TYPES,
    AccessDenied,
    CacheUnavailable,
    CheckpointError,
    ChecksumMismatch,
    CorruptCheckpoint,
    FreezeTargetNotFound,
    IncompatibleState,
    InvalidConfig,
    NetworkError,
    NotFound,
    NothingMatched,
    StageFailed,
    UnknownFormat,
    UnsafeCheckpoint,
    at_stage,
    unwrap,
)
from ckptflow.testing.strategies import errors as any_error

KINDS = {
    InvalidConfig: "invalid_config",
    NotFound: "not_found",
    AccessDenied: "access_denied",
    NetworkError: "network_error",
    ChecksumMismatch: "checksum_mismatch",
    CorruptCheckpoint: "corrupt_checkpoint",
    UnsafeCheckpoint: "unsafe_checkpoint",
    UnknownFormat: "unknown_format",
    IncompatibleState: "incompatible_state",
    NothingMatched: "nothing_matched",
    FreezeTargetNotFound: "freeze_target_not_found",
    CacheUnavailable: "cache_unavailable",
    StageFailed: "stage_failed",
}

# One failure of each kind as a stage would report it, with only the facts it must carry.
TYPICAL = [
    InvalidConfig(problems=["checkpoint.source.bucket: missing"]),
    NotFound(what="s3://bucket/model.pt"),
    AccessDenied(what="gs://bucket/model.pt"),
    NetworkError(what="https://example.com/model.pt", attempts=5, cause="connection reset"),
    ChecksumMismatch(what="model.pt", expected="ab" * 32, actual="cd" * 32),
    CorruptCheckpoint(path="/tmp/model.pt", detail="truncated zip archive"),
    UnsafeCheckpoint(path="/tmp/model.pt", globals=["builtins.exec"]),
    UnknownFormat(keys=["foo", "bar"]),
    IncompatibleState(missing=["head.weight"]),
    NothingMatched(hint="the checkpoint keys carry a 'model.' prefix; add strip_prefix('model.')"),
    FreezeTargetNotFound(target="encoder.layer9", close_matches=["encoder.layers"]),
    CacheUnavailable(directory="/ro/cache", detail="read-only file system"),
    StageFailed(detail="the context has no state dict: put cast after extract", stage="cast"),
]

# A message is actionable when it tells the reader what to do next.
GUIDANCE = re.compile(
    r"\b(check|use|fix|pass|add|make|point|put|re-download|re-save|run again|did you mean)\b", re.IGNORECASE
)


def test_error_union_and_error_types_list_the_same_classes() -> None:
    assert set(typing.get_args(errors.Error)) == set(ERROR_TYPES)


def test_every_error_type_has_its_stable_kind() -> None:
    assert {cls: cls.kind for cls in ERROR_TYPES} == KINDS


def test_kinds_are_unique() -> None:
    kinds = [cls.kind for cls in ERROR_TYPES]
    assert len(kinds) == len(set(kinds))


def test_every_error_type_is_exported() -> None:
    assert {cls.__name__ for cls in ERROR_TYPES} <= set(errors.__all__)


def test_typical_failures_cover_every_error_type() -> None:
    assert {type(e) for e in TYPICAL} == set(ERROR_TYPES)


@pytest.mark.parametrize("error", TYPICAL, ids=lambda e: e.kind)
def test_message_tells_the_user_what_to_do(error: errors.Error) -> None:
    assert GUIDANCE.search(error.message), error.message


def test_freeze_target_message_without_close_matches_tells_the_user_what_to_do() -> None:
    error = FreezeTargetNotFound(target="encoder.layer9")
    assert GUIDANCE.search(error.message), error.message


@pytest.mark.parametrize(
    ("error", "fact"),
    [
        (InvalidConfig(problems=["checkpoint.source.bucket: missing"]), "checkpoint.source.bucket: missing"),
        (
            NotFound(what="s3://b/k", hint="list the bucket with `aws s3 ls`"),
            "list the bucket with `aws s3 ls`",
        ),
        (NetworkError(what="u", attempts=5, cause="connection reset"), "5 attempt"),
        (ChecksumMismatch(what="m", expected="aa", actual="bb"), "expected aa, got bb"),
        (UnsafeCheckpoint(path="p", globals=["builtins.exec"]), "builtins.exec"),
        (IncompatibleState(mismatched=["fc.weight"]), "fc.weight"),
        (NothingMatched(hint="add strip_prefix('model.')"), "add strip_prefix('model.')"),
        (StageFailed(detail="no state dict", stage="cast"), "no state dict"),
    ],
    ids=lambda x: getattr(x, "kind", ""),
)
def test_message_carries_the_facts_of_the_failure(error: errors.Error, fact: str) -> None:
    assert fact in error.message


def test_long_key_lists_are_elided_in_messages() -> None:
    error = IncompatibleState(missing=[f"layer{i}.weight" for i in range(100)])
    assert "layer0.weight" in error.message
    assert "layer99.weight" not in error.message
    assert "and 88 more" in error.message


@given(any_error())
def test_every_error_has_a_non_empty_message(error: errors.Error) -> None:
    assert error.message.strip()


@given(any_error())
def test_errors_are_frozen(error: errors.Error) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        error.source = "elsewhere"  # type: ignore[misc]


@given(any_error())
def test_errors_are_hashable_values(error: errors.Error) -> None:
    twin = attrs.evolve(error)
    assert twin == error
    assert hash(twin) == hash(error)
    assert len({error, twin}) == 1


@given(any_error())
def test_sequence_fields_are_stored_as_tuples(error: errors.Error) -> None:
    for field in attrs.fields(type(error)):
        assert not isinstance(getattr(error, field.name), list)


def test_at_stage_sets_the_stage_when_unset() -> None:
    assert at_stage(NotFound(what="x"), "fetch").stage == "fetch"


def test_at_stage_keeps_a_stage_already_set() -> None:
    assert at_stage(NotFound(what="x", stage="read"), "fetch").stage == "read"


@given(any_error())
def test_at_stage_changes_nothing_but_the_stage(error: errors.Error) -> None:
    located = at_stage(error, "somewhere")
    assert attrs.evolve(located, stage=error.stage) == error


def test_unwrap_returns_the_success_value() -> None:
    assert unwrap(Success(42)) == 42


@given(any_error())
def test_unwrap_raises_checkpoint_error_carrying_the_failure(error: errors.Error) -> None:
    with pytest.raises(CheckpointError) as raised:
        unwrap(Failure(error))
    assert raised.value.error is error


def test_checkpoint_error_text_names_the_kind_and_message() -> None:
    error = NotFound(what="s3://bucket/model.pt")
    assert str(CheckpointError(error)) == f"not_found: {error.message}"


def test_unwrap_rejects_what_is_not_a_result() -> None:
    with pytest.raises(TypeError, match="expects a Result"):
        unwrap(42)  # type: ignore[arg-type]
