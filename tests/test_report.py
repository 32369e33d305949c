"""Rendering a LoadReport for people (format_report) and for machines (report_as_dict)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st

from ckptflow.context import Event, FrozenModule, LoadReport, SkippedKey
from ckptflow.report import format_report, json_safe, report_as_dict

REPORT = LoadReport(
    strategy="transfer_learning",
    source="s3://bucket/run/model.ckpt",
    digest="ab" * 32,
    format="lightning",
    loaded=("encoder.weight", "encoder.bias"),
    skipped=(
        SkippedKey("head.weight", "shape mismatch: ckpt (10, 64) vs model (3, 64)"),
        SkippedKey("aux.loss_scale", "not in model"),
    ),
    missing=("head.weight", "head.bias"),
    unexpected=("aux.loss_scale",),
    cast=("encoder.weight",),
    frozen=(FrozenModule("encoder", 4160),),
    frozen_parameters=4160,
    epoch=0,
    global_step=0,
    parameters_loaded=4160,
    events=(
        Event("cache.hit", {"path": Path("/tmp/x")}, "fetch"),
        Event("optimizer.not_restored", {"reason": "no optimizer was passed to apply"}, "apply"),
    ),
    timings={"fetch": 0.25, "apply": 0.01},
)


def test_every_skipped_key_is_listed_with_its_reason() -> None:
    text = format_report(REPORT)
    assert "head.weight: shape mismatch: ckpt (10, 64) vs model (3, 64)" in text
    assert "aux.loss_scale: not in model" in text


def test_model_tensors_without_a_source_are_called_kept_initialisation() -> None:
    lines = format_report(REPORT).splitlines()
    start = next(i for i, line in enumerate(lines) if "kept initialisation" in line)
    assert lines[start].split()[-1] == "2"
    assert [line.strip() for line in lines[start + 1 : start + 3]] == ["- head.weight", "- head.bias"]


def test_frozen_modules_are_listed_with_their_parameter_counts() -> None:
    text = format_report(REPORT)
    assert "encoder: 4,160 parameters" in text
    assert "1 module(s), 4,160 parameters" in text


def test_counters_and_restored_states_are_shown() -> None:
    text = format_report(REPORT)
    assert "epoch 0, global step 0" in text
    assert "optimizer            not restored" in text


def test_apply_events_are_shown_as_notes_and_others_are_not() -> None:
    text = format_report(REPORT)
    assert "optimizer.not_restored: reason=no optimizer was passed to apply" in text
    assert "cache.hit" not in text


def test_the_strategy_source_digest_and_counts_are_shown() -> None:
    text = format_report(REPORT)
    assert all(
        part in text for part in ("transfer_learning", "s3://bucket/run/model.ckpt", "ab" * 32, "lightning")
    )
    assert "2 tensors (4,160 elements)" in text


def test_report_as_dict_survives_a_json_round_trip() -> None:
    d = report_as_dict(REPORT)
    assert json.loads(json.dumps(d)) == d


def test_report_as_dict_keeps_every_fact() -> None:
    d = report_as_dict(REPORT)
    assert d["skipped"] == [
        {"key": "head.weight", "reason": "shape mismatch: ckpt (10, 64) vs model (3, 64)"},
        {"key": "aux.loss_scale", "reason": "not in model"},
    ]
    assert d["frozen"] == [{"module": "encoder", "parameters": 4160}]
    assert (d["epoch"], d["global_step"], d["optimizer_restored"]) == (0, 0, False)
    assert d["counts"] == REPORT.counts
    assert d["events"][0] == {"name": "cache.hit", "stage": "fetch", "data": {"path": "/tmp/x"}}


def test_json_safe_describes_tensors_by_shape_and_dtype() -> None:
    assert json_safe({"t": torch.zeros(2, 3, dtype=torch.float16)}) == {
        "t": {"shape": [2, 3], "dtype": "float16"}
    }


def test_json_safe_turns_non_finite_floats_and_sets_into_json_values() -> None:
    assert json_safe([float("nan"), {2, 1}]) == ["nan", [1, 2]]


_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.builds(torch.zeros, st.integers(0, 3))
)
_trees = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        | st.frozensets(st.integers(), max_size=3)
    ),
    max_leaves=10,
)


@given(data=_trees)
def test_json_safe_output_always_round_trips_through_json(data: object) -> None:
    safe = json_safe(data)
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe


@given(data=_trees)
def test_json_safe_is_idempotent(data: object) -> None:
    assert json_safe(json_safe(data)) == json_safe(data)
