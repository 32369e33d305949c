"""Each law check passes a stage that obeys the law and catches one that breaks it, saying how."""

from __future__ import annotations

import itertools

import attrs
import pytest
import torch
from hypothesis import strategies as st
from returns.result import Failure, Result, Success

from ckptflow.context import Context, Event, TrainingState
from ckptflow.errors import Error, StageFailed
from ckptflow.pipeline import NamedStage, optional, stage
from ckptflow.testing import strategies as cs
from ckptflow.testing.laws import check_composes, check_idempotent, check_preserves_shapes, check_pure

FLOATS = cs.contexts(
    state=cs.state_dicts(min_keys=1, max_keys=3, dtypes=[torch.float32]),
    training=st.none(),
    metadata=False,
    events=False,
)
"""Small contexts with at least one float32 tensor and nothing else to vary, so failures shrink fast."""

WITH_METADATA = cs.contexts(state=cs.state_dicts(max_keys=1), training=st.none(), events=False)
WITH_EVENTS = st.builds(
    lambda data: Context(events=[Event("cache.hit", data)]),
    st.dictionaries(st.sampled_from(["digest", "size"]), st.integers(0, 9), min_size=1),
)
WITH_OPTIMIZER = st.builds(
    lambda t: Context(training=TrainingState(optimizer_states=[{"state": {0: {"exp_avg": t}}}])),
    cs.tensors(dtype=torch.float32),
)

EXAMPLES = 15


def with_state(ctx: Context, state: dict[str, torch.Tensor]) -> Result[Context, Error]:
    return Success(attrs.evolve(ctx, state=state))


# -- well-behaved stages -----------------------------------------------------------------------------


@stage()
def reverse_keys(ctx: Context) -> Result[Context, Error]:
    """Pure: a new dict, the same tensors."""
    return with_state(ctx, dict(reversed(list((ctx.state or {}).items()))))


@stage()
def keep_weights(ctx: Context) -> Result[Context, Error]:
    """Pure, idempotent and shape-preserving: a filter."""
    return with_state(ctx, {k: v for k, v in (ctx.state or {}).items() if k.endswith("weight")})


@stage()
def to_double(ctx: Context) -> Result[Context, Error]:
    """Pure, idempotent and shape-preserving: new tensors of another dtype."""
    return with_state(ctx, {k: v.double() for k, v in (ctx.state or {}).items()})


@stage()
def prefix_net(ctx: Context) -> Result[Context, Error]:
    """Pure and shape-preserving, not idempotent: renames every key."""
    return with_state(ctx, {f"net.{k}": v for k, v in (ctx.state or {}).items()})


@stage()
def refuse(ctx: Context) -> Result[Context, Error]:
    """Pure: always fails, the same way."""
    return Failure(StageFailed(detail="refused"))


# -- purity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("good", [reverse_keys, keep_weights, to_double, prefix_net, refuse])
def test_check_pure_passes_pure_stages(good: NamedStage) -> None:
    assert check_pure(good, max_examples=EXAMPLES) is None


def test_check_pure_passes_an_optional_stage_that_fails() -> None:
    assert check_pure(optional(refuse), max_examples=EXAMPLES) is None


def test_check_pure_catches_tensor_values_changed_in_place() -> None:
    def scale(ctx: Context) -> Result[Context, Error]:
        for t in (ctx.state or {}).values():
            t.add_(1.0)
        return Success(ctx)

    with pytest.raises(
        AssertionError, match=r"(?s)'scale' is not pure.*input\.state\['.*'\]: values changed"
    ):
        check_pure(scale, FLOATS, max_examples=EXAMPLES)


def test_check_pure_catches_in_place_ops_that_leave_values_equal() -> None:
    def times_one(ctx: Context) -> Result[Context, Error]:
        for t in (ctx.state or {}).values():
            t.mul_(1.0)
        return Success(ctx)

    with pytest.raises(AssertionError, match=r"modified in place \(version counter 0 → 1\)"):
        check_pure(times_one, FLOATS, max_examples=EXAMPLES)


def test_check_pure_catches_keys_removed_from_the_input_dict() -> None:
    def pop_one(ctx: Context) -> Result[Context, Error]:
        state = ctx.state
        assert isinstance(state, dict)
        state.pop(next(iter(state)))
        return with_state(ctx, state)

    with pytest.raises(AssertionError, match=r"input\.state: key\(s\) removed: '"):
        check_pure(pop_one, FLOATS, max_examples=EXAMPLES)


def test_check_pure_catches_a_tensor_replaced_by_an_equal_copy() -> None:
    def recopy(ctx: Context) -> Result[Context, Error]:
        state = ctx.state
        assert isinstance(state, dict)
        for k in state:
            state[k] = state[k].clone()
        return Success(ctx)

    with pytest.raises(AssertionError, match="tensor replaced by another object"):
        check_pure(recopy, FLOATS, max_examples=EXAMPLES)


def test_check_pure_catches_a_swapped_storage() -> None:
    def swap(ctx: Context) -> Result[Context, Error]:
        for t in (ctx.state or {}).values():
            t.data = t.data.clone()
        return Success(ctx)

    with pytest.raises(AssertionError, match="storage swapped"):
        check_pure(swap, FLOATS, max_examples=EXAMPLES)


def test_check_pure_catches_requires_grad_switched_on() -> None:
    def train(ctx: Context) -> Result[Context, Error]:
        for t in (ctx.state or {}).values():
            t.requires_grad_(True)
        return Success(ctx)

    with pytest.raises(AssertionError, match="requires_grad False → True"):
        check_pure(train, FLOATS, max_examples=EXAMPLES)


def test_check_pure_catches_metadata_written_in_place() -> None:
    def note(ctx: Context) -> Result[Context, Error]:
        ctx.metadata["seen"] = True  # type: ignore[index]
        return Success(ctx)

    with pytest.raises(AssertionError, match=r"input\.metadata: key\(s\) added: 'seen'"):
        check_pure(note, WITH_METADATA, max_examples=EXAMPLES)


def test_check_pure_catches_event_data_written_in_place() -> None:
    def touch(ctx: Context) -> Result[Context, Error]:
        data = ctx.events[0].data
        assert isinstance(data, dict)
        data["digest"] = "touched"
        return Success(ctx)

    with pytest.raises(AssertionError, match=r"input\.events\[0\]\.data\['.*'\]: .* → 'touched'"):
        check_pure(touch, WITH_EVENTS, max_examples=EXAMPLES)


def test_check_pure_catches_optimizer_state_changed_in_place() -> None:
    def decay(ctx: Context) -> Result[Context, Error]:
        assert ctx.training is not None
        for opt in ctx.training.optimizer_states:
            for slot in opt["state"].values():
                slot["exp_avg"].zero_()
        return Success(ctx)

    with pytest.raises(AssertionError, match=r"input\.training\.optimizer_states\[\d\]\['state'\]"):
        check_pure(decay, WITH_OPTIMIZER, max_examples=EXAMPLES)


def test_check_pure_catches_a_stage_whose_result_depends_on_hidden_state() -> None:
    calls = itertools.count()

    def counted(ctx: Context) -> Result[Context, Error]:
        return Success(ctx.with_event("call", number=next(calls)))

    with pytest.raises(AssertionError, match=r"(?s)is not deterministic.*\.events\[\d+\]\.data\['number'\]"):
        check_pure(counted, FLOATS, max_examples=EXAMPLES)


def test_check_pure_reports_the_input_state_it_failed_on() -> None:
    def scale(ctx: Context) -> Result[Context, Error]:
        for t in (ctx.state or {}).values():
            t.add_(1.0)
        return Success(ctx)

    with pytest.raises(AssertionError, match=r"input state: \{\S+: float32\("):
        check_pure(scale, FLOATS, max_examples=EXAMPLES)


# -- idempotence -------------------------------------------------------------------------------------


@pytest.mark.parametrize("good", [keep_weights, to_double, refuse])
def test_check_idempotent_passes_idempotent_stages(good: NamedStage) -> None:
    assert check_idempotent(good, max_examples=EXAMPLES) is None


def test_check_idempotent_catches_a_rename_that_applies_again() -> None:
    with pytest.raises(
        AssertionError, match=r"(?s)'prefix_net' is not idempotent.*key\(s\) added: 'net\.net\."
    ):
        check_idempotent(prefix_net, FLOATS, max_examples=EXAMPLES)


def test_check_idempotent_counts_events_unless_told_to_ignore_them() -> None:
    @stage()
    def logged_filter(ctx: Context) -> Result[Context, Error]:
        return keep_weights(ctx).map(lambda out: out.with_event("filtered"))

    with pytest.raises(AssertionError, match=r"context\.events"):
        check_idempotent(logged_filter, FLOATS, max_examples=EXAMPLES)
    assert check_idempotent(logged_filter, FLOATS, ignore=("events",), max_examples=EXAMPLES) is None


def test_check_idempotent_catches_a_stage_that_fails_the_second_time() -> None:
    @stage()
    def once_only(ctx: Context) -> Result[Context, Error]:
        if ctx.metadata.get("done"):
            return Failure(StageFailed(detail="already done"))
        return Success(attrs.evolve(ctx, metadata={**ctx.metadata, "done": True}))

    with pytest.raises(AssertionError, match="succeeded → failed with stage_failed"):
        check_idempotent(once_only, FLOATS, max_examples=EXAMPLES)


# -- composition -------------------------------------------------------------------------------------


def test_check_composes_passes_pure_stages() -> None:
    assert check_composes(keep_weights, to_double, prefix_net, max_examples=EXAMPLES) is None


def test_check_composes_passes_when_a_stage_fails() -> None:
    assert check_composes(keep_weights, refuse, to_double, max_examples=EXAMPLES) is None


def test_check_composes_catches_a_stage_with_hidden_state() -> None:
    calls = itertools.count()

    @stage()
    def counted(ctx: Context) -> Result[Context, Error]:
        return Success(ctx.with_event("call", number=next(calls)))

    with pytest.raises(
        AssertionError, match=r"pipeline\(keep_weights, counted\) differs from keep_weights\(ctx\)"
    ):
        check_composes(keep_weights, counted, contexts=FLOATS, max_examples=EXAMPLES)


# -- shapes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("good", [reverse_keys, keep_weights, to_double, prefix_net, refuse])
def test_check_preserves_shapes_passes_renames_filters_and_casts(good: NamedStage) -> None:
    assert check_preserves_shapes(good, max_examples=EXAMPLES) is None


def test_check_preserves_shapes_catches_a_reshape() -> None:
    @stage()
    def flatten(ctx: Context) -> Result[Context, Error]:
        return with_state(ctx, {k: v.reshape(-1, 1) for k, v in (ctx.state or {}).items()})

    with pytest.raises(
        AssertionError, match=r"(?s)'flatten' does not preserve shapes.*\]: shape \(.*\) → \("
    ):
        check_preserves_shapes(flatten, FLOATS, max_examples=EXAMPLES)


def test_check_preserves_shapes_catches_a_rename_that_also_reshapes() -> None:
    @stage()
    def rename_and_pad(ctx: Context) -> Result[Context, Error]:
        return with_state(
            ctx, {f"new.{k}": torch.cat([v.reshape(-1), v.reshape(-1)]) for k, v in (ctx.state or {}).items()}
        )

    with pytest.raises(AssertionError, match=r"state\['new\..*'\]: new key with shape"):
        check_preserves_shapes(rename_and_pad, FLOATS, max_examples=EXAMPLES)
