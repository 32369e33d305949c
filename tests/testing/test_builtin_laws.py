"""The built-in key and dtype transforms obey the laws their docs promise, checked by ckptflow.testing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import strategies as st

from ckptflow.pipeline import NamedStage
from ckptflow.stages.keys import add_prefix, cast, exclude, include, rename, strip_prefix
from ckptflow.testing import strategies as cs
from ckptflow.testing.laws import check_composes, check_idempotent, check_preserves_shapes, check_pure

EXAMPLES = 20
SMALL = cs.contexts(state=cs.state_dicts(max_keys=2), training=st.none(), metadata=False, events=False)
"""Contexts with little besides the state, for checks expected to fail (they shrink fast)."""

ALL_TRANSFORMS = [
    rename(r"\.layers\.", ".blocks."),
    rename(r"^(\w+)\.(\d+)\.", r"\2.\1."),
    strip_prefix("model."),
    add_prefix("net."),
    include("encoder.*", "*.bias"),
    exclude("*running_*", "*num_batches_tracked"),
    cast("bfloat16"),
    cast(torch.float16),
]
IDEMPOTENT = [
    rename(r"\.layers\.", ".blocks."),
    include("encoder.*", "*.bias"),
    exclude("*running_*", "*num_batches_tracked"),
    cast("bfloat16"),
    cast(torch.float64),
]


def ids(s: NamedStage) -> str:
    return s.name


@pytest.mark.parametrize("transform", ALL_TRANSFORMS, ids=ids)
def test_builtin_transforms_are_pure(transform: NamedStage) -> None:
    check_pure(transform, max_examples=EXAMPLES)


@pytest.mark.parametrize("transform", ALL_TRANSFORMS, ids=ids)
def test_builtin_transforms_preserve_shapes(transform: NamedStage) -> None:
    check_preserves_shapes(transform, max_examples=EXAMPLES)


@pytest.mark.parametrize("transform", IDEMPOTENT, ids=ids)
def test_filters_casts_and_settled_renames_are_idempotent_up_to_their_events(transform: NamedStage) -> None:
    check_idempotent(transform, ignore=("events",), max_examples=EXAMPLES)


def test_builtin_transforms_record_an_event_each_time_they_run() -> None:
    with pytest.raises(AssertionError, match=r"context\.events"):
        check_idempotent(include("*"), SMALL, max_examples=EXAMPLES)


def test_strip_prefix_is_idempotent_when_no_key_repeats_the_prefix() -> None:
    once = cs.contexts(
        state=cs.state_dicts().filter(lambda s: not any(k.startswith("model.model.") for k in s))
    )
    check_idempotent(strip_prefix("model."), once, ignore=("events",), max_examples=EXAMPLES)


def test_strip_prefix_removes_a_repeated_prefix_one_at_a_time() -> None:
    doubled = cs.contexts(
        state=st.builds(lambda t: {"model.model.weight": t}, cs.tensors()), metadata=False, events=False
    )
    with pytest.raises(AssertionError, match=r"'model\.weight'.*\n.*'weight'"):
        check_idempotent(strip_prefix("model."), doubled, ignore=("events",), max_examples=5)


def test_add_prefix_is_not_idempotent() -> None:
    with pytest.raises(AssertionError, match=r"key\(s\) added: 'net\.net\."):
        check_idempotent(add_prefix("net."), SMALL, ignore=("events",), max_examples=EXAMPLES)


def test_key_transforms_and_casts_compose() -> None:
    check_composes(strip_prefix("model."), cast("float16"), include("*weight"), max_examples=EXAMPLES)


def test_renames_and_filters_compose() -> None:
    check_composes(
        rename(r"\.layers\.", ".blocks."), exclude("*running_*"), add_prefix("net."), max_examples=EXAMPLES
    )
