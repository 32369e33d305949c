"""Fuzzing the entry points that take untrusted input: whatever comes in, a Result comes out.

Random and truncated files into ``read_checkpoint`` and ``ckptflow.load``; random nested mappings into
``parse_config`` and ``migrate_legacy``; random state dicts against random model specs into the
planners. Never an uncaught exception; a failure is always one of the typed ``ckptflow.errors`` values.
"""

from __future__ import annotations

import io
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result, Success
from safetensors.torch import save as safetensors_bytes

import ckptflow
from ckptflow.context import LoadPlan, ModelSpec, TrainingState
from ckptflow.errors import ERROR_TYPES, CorruptCheckpoint
from ckptflow.io import read_checkpoint
from ckptflow.stages import plan_for, plan_transfer
from ckptflow.testing import model_specs, state_dict_and_spec, state_dicts, training_states

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def typed(result: Result[Any, Any]) -> Any:
    """The result's value or failure, asserting a failure is a typed ckptflow error."""
    match result:
        case Success(value):
            return value
        case Failure(error):
            assert isinstance(error, ERROR_TYPES), f"untyped failure: {error!r}"
            assert error.message
            return error
    raise AssertionError(f"not a Result: {result!r}")


def _written(data: bytes, suffix: str = ".pt") -> Path:
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as handle:
        handle.write(data)
    return Path(handle.name)


def _saved(obj: object, *, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)


_STATE = Tiny().state_dict()
REAL = {
    "zip": _saved(_STATE),
    "legacy": _saved(_STATE, legacy=True),
    "lightning": _saved({"state_dict": {f"model.{k}": v for k, v in _STATE.items()}, "epoch": 3}),
    "safetensors": safetensors_bytes(dict(_STATE)),
}

PREFIXES = [b"", b"PK\x03\x04", REAL["zip"][:64], REAL["legacy"][:32], struct.pack("<Q", 40) + b'{"a":']


# --- files -----------------------------------------------------------------------------------------


@FUZZ
@given(
    prefix=st.sampled_from(PREFIXES),
    body=st.binary(max_size=2048),
    suffix=st.sampled_from([".pt", ".safetensors"]),
)
def test_random_bytes_read_as_a_checkpoint_are_a_result(prefix, body, suffix):
    path = _written(prefix + body, suffix)
    try:
        typed(read_checkpoint(path))
    finally:
        path.unlink()


@FUZZ
@given(kind=st.sampled_from(sorted(REAL)), cut=st.floats(0.0, 0.999))
def test_truncated_real_checkpoints_are_a_result_and_never_a_success_with_garbage(kind, cut):
    data = REAL[kind]
    path = _written(data[: int(len(data) * cut)], ".safetensors" if kind == "safetensors" else ".pt")
    try:
        out = typed(read_checkpoint(path))
        assert not isinstance(out, torch.Tensor)
    finally:
        path.unlink()


@FUZZ
@given(kind=st.sampled_from(sorted(REAL)), at=st.integers(0, 10**6), flip=st.integers(1, 255))
def test_real_checkpoints_with_a_flipped_byte_are_a_result(kind, at, flip):
    data = bytearray(REAL[kind])
    data[at % len(data)] ^= flip
    path = _written(bytes(data), ".safetensors" if kind == "safetensors" else ".pt")
    try:
        typed(read_checkpoint(path))
    finally:
        path.unlink()


@pytest.mark.parametrize(("at", "raised"), [(148, "TypeError"), (208, "AssertionError")])
def test_a_damaged_pickle_that_trips_torchs_own_checks_is_a_corrupt_checkpoint(at, raised):
    data = bytearray(REAL["zip"])
    data[at] ^= 1
    path = _written(bytes(data))
    try:
        assert isinstance(typed(read_checkpoint(path)), CorruptCheckpoint), raised
    finally:
        path.unlink()


@FUZZ
@given(
    kind=st.sampled_from(sorted(REAL)),
    cut=st.floats(0.0, 1.0),
    strategy=st.sampled_from(["weights_only", "warm_start", "cold_start", "transfer_learning"]),
)
def test_load_of_a_truncated_or_intact_checkpoint_is_a_result_and_all_or_nothing(kind, cut, strategy):
    data = REAL[kind]
    path = _written(data[: int(len(data) * cut)], ".safetensors" if kind == "safetensors" else ".pt")
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        out = typed(ckptflow.load(model, str(path), strategy=strategy))
    finally:
        path.unlink()
    if not isinstance(out, ckptflow.LoadReport):
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@FUZZ
@given(body=st.binary(max_size=512))
def test_load_of_random_bytes_is_a_typed_failure(body):
    path = _written(body)
    try:
        assert isinstance(typed(ckptflow.load(Tiny(), str(path))), ERROR_TYPES)
    finally:
        path.unlink()


# --- configs ---------------------------------------------------------------------------------------

WORDS = [
    "checkpoint", "source", "type", "path", "url", "bucket", "key", "blob", "container", "run_id",
    "artifact_path", "model_uri", "strategy", "strict", "freeze", "unfreeze", "transforms", "name", "args",
    "cache_dir", "sha256", "headers", "endpoint_url", "version_id", "generation", "timeout", "local", "http",
    "s3", "gcs", "azure", "mlflow", "weights_only", "warm_start", "cold_start", "transfer_learning",
    "strip_prefix", "rename", "prefix", "fork_run_id", "load_weights_only", "submodules_to_freeze",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.sampled_from(WORDS)
    | st.text(max_size=12)
    | st.sampled_from(["s3://b/k", "runs:/abc/model.pt", "https://h/x.pt", "models:/m/1", "/tmp/x", "../.."])
)
keys = st.sampled_from(WORDS) | st.text(max_size=8) | st.integers(-3, 3)
nested = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)
mappings = st.dictionaries(keys, nested, max_size=6)


def _frozen_copy(value: Any) -> str:
    return repr(value)


@FUZZ
@given(config=mappings)
def test_random_nested_mappings_parse_to_a_result_and_stay_unchanged(config):
    before = _frozen_copy(config)
    out = typed(ckptflow.parse_config(config))
    assert isinstance(out, (ckptflow.CheckpointConfig, *ERROR_TYPES))
    assert _frozen_copy(config) == before


@FUZZ
@given(source=st.dictionaries(st.sampled_from(WORDS), scalars, max_size=6), extra=mappings)
def test_configs_shaped_like_real_ones_parse_to_a_result(source, extra):
    typed(ckptflow.parse_config({"checkpoint": {"source": source, **extra}}))


@FUZZ
@given(old=mappings)
def test_random_legacy_configs_migrate_to_a_result_and_stay_unchanged(old):
    before = _frozen_copy(old)
    typed(ckptflow.migrate_legacy(old))
    assert _frozen_copy(old) == before


@FUZZ
@given(
    old=st.fixed_dictionaries(
        {},
        optional={
            k: scalars | st.lists(scalars, max_size=3)
            for k in ("run_id", "fork_run_id", "warm_start", "load_weights_only", "transfer_learning")
        }
        | {"submodules_to_freeze": st.lists(st.text(max_size=6), max_size=3) | scalars},
    )
)
def test_legacy_configs_with_the_real_keys_migrate_to_a_result(old):
    typed(ckptflow.migrate_legacy(old))


# --- planning --------------------------------------------------------------------------------------

STRATEGIES = st.sampled_from(["weights_only", "warm_start", "cold_start", "transfer_learning", "bogus"])


@FUZZ
@given(state=state_dicts(max_keys=6), spec=model_specs(max_keys=6), training=training_states(),
       name=STRATEGIES, strict=st.none() | st.booleans())  # fmt: skip
def test_plan_for_random_state_against_a_random_spec_is_a_result(state, spec, training, name, strict):
    before = {k: v.clone() for k, v in state.items()}
    out = typed(plan_for(name, state, spec, training, strict=strict))
    if isinstance(out, LoadPlan):
        assert set(out.assign) <= set(spec.tensors)
    assert list(state) == list(before) and all(torch.equal(state[k], before[k]) for k in state)


@FUZZ
@given(state=state_dicts(max_keys=6), spec=model_specs(max_keys=6))
def test_plan_transfer_of_random_state_against_a_random_spec_is_a_result(state, spec):
    out = typed(plan_transfer(state, spec))
    if isinstance(out, LoadPlan):
        assert all(tuple(out.assign[k].shape) == spec.tensors[k].shape for k in out.assign)
        assert {s.key for s in out.skipped} | set(out.assign) <= set(state) | set(spec.tensors)


@FUZZ
@given(case=state_dict_and_spec(matched=(0, 3), mismatched=(0, 3), checkpoint_only=(0, 3), model_only=(0, 3)))
def test_transfer_planning_of_overlapping_state_and_spec_skips_every_unmatched_key_with_a_reason(case):
    out = typed(plan_transfer(case.state, case.spec))
    if isinstance(out, LoadPlan):
        assert {s.key for s in out.skipped} == set(case.mismatched) | set(case.checkpoint_only)
        assert all(s.reason for s in out.skipped)


@pytest.mark.parametrize("spec", [ModelSpec({}), ModelSpec.from_model(Tiny())])
def test_planning_an_empty_state_is_a_typed_result(spec):
    for name in ("weights_only", "transfer_learning"):
        typed(plan_for(name, {}, spec, TrainingState()))
