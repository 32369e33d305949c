"""Specification of ``ckptflow.config.legacy``: old training-config keys to ``CheckpointConfig``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success

from ckptflow.config.converter import parse_config, unstructure_config
from ckptflow.config.legacy import LEGACY_KEYS, Migration, check_migrated_paths, migrate_legacy
from ckptflow.config.schema import CheckpointConfig, LocalSource
from ckptflow.errors import InvalidConfig, NotFound

ROOT = {"paths": {"checkpoints": "/ckpts"}}


def migrated(old: dict[str, Any]) -> Migration:
    result = migrate_legacy(old)
    assert isinstance(result, Success), result
    migration = result.unwrap()
    assert isinstance(migration, Migration)
    return migration


def invalid(old: Any) -> tuple[str, ...]:
    result = migrate_legacy(old)
    assert isinstance(result, Failure), result
    error = result.failure()
    assert isinstance(error, InvalidConfig)
    return error.problems


# --- before / after ---------------------------------------------------------------------------------


def test_run_id_resumes_from_the_runs_last_checkpoint_with_warm_start() -> None:
    after = migrated({"run_id": "abc123", **ROOT})
    assert after.config == CheckpointConfig(
        source=LocalSource(path="/ckpts/abc123/last.ckpt"), strategy="warm_start"
    )
    assert after.notes == (
        "run_id: resume run 'abc123' from /ckpts/abc123/last.ckpt → strategy warm_start",
        "paths.checkpoints: /ckpts (used to derive the checkpoint path)",
    )
    assert after.derived == ("/ckpts/abc123/last.ckpt",)


def test_fork_run_id_starts_a_new_run_from_that_runs_last_checkpoint_with_cold_start() -> None:
    after = migrated({"fork_run_id": "parent", **ROOT})
    assert after.config == CheckpointConfig(
        source=LocalSource(path="/ckpts/parent/last.ckpt"), strategy="cold_start"
    )
    assert (
        after.notes[0]
        == "fork_run_id: start a new run from run 'parent' at /ckpts/parent/last.ckpt → strategy cold_start"
    )


def test_fork_with_load_weights_only_uses_weights_only() -> None:
    after = migrated({"fork_run_id": "parent", "load_weights_only": True, **ROOT})
    assert after.config is not None and after.config.strategy == "weights_only"
    assert "load_weights_only: true → strategy weights_only" in after.notes


def test_transfer_learning_wins_over_load_weights_only() -> None:
    after = migrated({"fork_run_id": "parent", "load_weights_only": True, "transfer_learning": True, **ROOT})
    assert after.config is not None and after.config.strategy == "transfer_learning"
    assert "transfer_learning: true → strategy transfer_learning" in after.notes
    assert "load_weights_only: true" in after.notes


def test_false_flags_change_nothing_but_are_noted() -> None:
    after = migrated({"run_id": "abc", "load_weights_only": False, "transfer_learning": False, **ROOT})
    assert after.config is not None and after.config.strategy == "warm_start"
    assert {"load_weights_only: false", "transfer_learning: false"} <= set(after.notes)


def test_submodules_to_freeze_become_freeze_patterns() -> None:
    after = migrated({"fork_run_id": "p", "submodules_to_freeze": ["encoder", "processor.0"], **ROOT})
    assert after.config is not None and after.config.freeze == ("encoder", "processor.0")
    assert "submodules_to_freeze: freeze encoder, processor.0" in after.notes


def test_explicit_warm_start_path_wins_over_the_derived_path() -> None:
    after = migrated({"run_id": "abc", "warm_start": "/elsewhere/epoch=3.ckpt", **ROOT})
    assert after.config == CheckpointConfig(
        source=LocalSource(path="/elsewhere/epoch=3.ckpt"), strategy="warm_start"
    )
    assert (
        "warm_start: explicit checkpoint path /elsewhere/epoch=3.ckpt (wins over /ckpts/abc/last.ckpt)"
        in after.notes
    )
    assert after.derived == ()


def test_warm_start_alone_needs_no_checkpoints_root() -> None:
    after = migrated({"warm_start": "/x/model.ckpt"})
    assert after.config == CheckpointConfig(source=LocalSource(path="/x/model.ckpt"), strategy="warm_start")
    assert after.notes == ("warm_start: explicit checkpoint path /x/model.ckpt → strategy warm_start",)


def test_checkpoint_path_is_an_explicit_path() -> None:
    after = migrated({"checkpoint": {"path": "/y/last.ckpt"}, "transfer_learning": True})
    assert after.config == CheckpointConfig(
        source=LocalSource(path="/y/last.ckpt"), strategy="transfer_learning"
    )
    assert "checkpoint.path: explicit checkpoint path /y/last.ckpt" in after.notes


def test_one_note_per_migrated_key_and_unrelated_keys_are_left_alone() -> None:
    old = {
        "model": {"hidden": 64},
        "run_id": "abc",
        "load_weights_only": True,
        "submodules_to_freeze": ["encoder"],
        **ROOT,
    }
    notes = migrated(old).notes
    assert [n.split(":")[0] for n in notes] == [
        "run_id",
        "load_weights_only",
        "submodules_to_freeze",
        "paths.checkpoints",
    ]


def test_nothing_to_restore_means_no_config_and_a_note_saying_so() -> None:
    after = migrated({"model": {}, "load_weights_only": True})
    assert after.config is None
    assert after.notes == (
        "no run_id, fork_run_id, warm_start or checkpoint.path: training starts from scratch; "
        "load_weights_only had nothing to apply to",
    )


def test_the_migrated_config_is_a_valid_new_config() -> None:
    after = migrated({"fork_run_id": "p", "transfer_learning": True, "submodules_to_freeze": ["enc"], **ROOT})
    assert after.config is not None
    assert parse_config(unstructure_config(after.config)) == Success(after.config)


# --- problems ---------------------------------------------------------------------------------------


def test_run_id_without_a_checkpoints_root_is_invalid() -> None:
    assert invalid({"run_id": "abc"}) == (
        "run_id: needs paths.checkpoints to find <paths.checkpoints>/<run>/last.ckpt",
    )


def test_run_ids_that_would_escape_the_checkpoints_root_are_invalid() -> None:
    assert invalid({"run_id": "../other", **ROOT}) == (
        "run_id: '../other' is not a run id (one path segment, no '/' or '..')",
    )
    assert invalid({"fork_run_id": "a/b", **ROOT}) == (
        "fork_run_id: 'a/b' is not a run id (one path segment, no '/' or '..')",
    )


def test_resume_and_fork_together_are_invalid() -> None:
    assert invalid({"run_id": "a", "fork_run_id": "b", **ROOT}) == (
        "give run_id to resume or fork_run_id to fork, not both",
    )


def test_two_different_explicit_paths_are_invalid() -> None:
    assert invalid({"warm_start": "/a.ckpt", "checkpoint": {"path": "/b.ckpt"}}) == (
        "warm_start and checkpoint.path name different checkpoints; keep one",
    )


def test_wrong_types_are_all_reported() -> None:
    assert invalid({"run_id": 5, "load_weights_only": "yes", "submodules_to_freeze": [1]}) == (
        "run_id: expected a run id string, got int",
        "load_weights_only: expected true or false, got str",
        "submodules_to_freeze: expected a list of module names",
    )


def test_empty_paths_are_invalid() -> None:
    assert invalid({"warm_start": ""}) == (
        "warm_start: must not be empty (leave it out or null when unused)",
    )


def test_non_mapping_is_invalid() -> None:
    assert invalid(["run_id"]) == ("config: expected a mapping, got list",)


# --- laws -------------------------------------------------------------------------------------------

run_ids = st.text("abcdef0123456789", min_size=1, max_size=8)
legacy = st.fixed_dictionaries(
    {},
    optional={
        "run_id": st.none() | run_ids,
        "fork_run_id": st.none() | run_ids,
        "warm_start": st.none() | st.just("/explicit/model.ckpt"),
        "load_weights_only": st.none() | st.booleans(),
        "transfer_learning": st.none() | st.booleans(),
        "submodules_to_freeze": st.none() | st.lists(st.sampled_from(["encoder", "decoder"]), max_size=2),
        "paths": st.fixed_dictionaries({"checkpoints": st.sampled_from(["/ckpts", "rel/ckpts"])}),
        "checkpoint": st.fixed_dictionaries({"path": st.just("/explicit/model.ckpt")}),
        "model": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    },
)


@settings(max_examples=200, deadline=None)
@given(legacy)
def test_migration_is_pure_and_deterministic(old: dict[str, Any]) -> None:
    before = copy.deepcopy(old)
    first = migrate_legacy(old)
    assert old == before
    assert migrate_legacy(old) == first


@settings(max_examples=200, deadline=None)
@given(legacy)
def test_every_successful_migration_notes_each_legacy_key_present(old: dict[str, Any]) -> None:
    result = migrate_legacy(old)
    if isinstance(result, Success) and result.unwrap().config is not None:
        present = {k for k in LEGACY_KEYS if _lookup(old, k) is not None}
        noted = {n.split(":")[0] for n in result.unwrap().notes}
        assert noted == present


def _lookup(mapping: dict[str, Any], dotted: str) -> Any:
    value: Any = mapping
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# --- the one effect ---------------------------------------------------------------------------------


def test_check_migrated_paths_passes_when_the_derived_checkpoint_exists(tmp_path: Path) -> None:
    (tmp_path / "abc").mkdir()
    (tmp_path / "abc" / "last.ckpt").write_bytes(b"x")
    migration = migrated({"run_id": "abc", "paths": {"checkpoints": str(tmp_path)}})
    assert check_migrated_paths(migration) == Success(migration)


def test_check_migrated_paths_names_the_missing_derived_path(tmp_path: Path) -> None:
    migration = migrated({"fork_run_id": "gone", "paths": {"checkpoints": str(tmp_path)}})
    result = check_migrated_paths(migration)
    assert isinstance(result, Failure)
    error = result.failure()
    assert isinstance(error, NotFound)
    assert error.what == f"checkpoint {tmp_path}/gone/last.ckpt"
    assert "run_id/fork_run_id and paths.checkpoints" in error.message


def test_check_migrated_paths_leaves_explicit_paths_to_the_fetch(tmp_path: Path) -> None:
    migration = migrated({"warm_start": str(tmp_path / "not-yet.ckpt")})
    assert check_migrated_paths(migration) == Success(migration)


@pytest.mark.parametrize("old", [{"model": {}}, {}])
def test_check_migrated_paths_accepts_a_migration_with_nothing_to_load(old: dict[str, Any]) -> None:
    migration = migrated(old)
    assert check_migrated_paths(migration) == Success(migration)
