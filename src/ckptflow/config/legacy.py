"""Migrate legacy training-config keys (``run_id``, ``fork_run_id``, ``warm_start``, …) to the new config.

``migrate_legacy`` is pure: it reads the old keys, decides the checkpoint path and strategy, and returns
the new config with one note per migrated key. Paths it derives from ``paths.checkpoints`` are listed in
``Migration.derived``; ``check_migrated_paths`` is the one effect here and checks that they exist.

The old semantics, as a table of precedence:

* checkpoint path: ``warm_start`` or ``checkpoint.path`` (explicit) > ``<paths.checkpoints>/<run>/last.ckpt``
  where ``<run>`` is ``fork_run_id`` when forking, else ``run_id``;
* strategy: ``transfer_learning: true`` > ``load_weights_only: true`` > forking (``cold_start``: weights
  only, counters reset) > resuming or an explicit checkpoint (``warm_start``: exact resume).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from attrs import frozen
from returns.result import Failure, Result, Success

from ckptflow.config.schema import CheckpointConfig, LocalSource
from ckptflow.errors import Error, InvalidConfig, NotFound

__all__ = ["LEGACY_KEYS", "Migration", "check_migrated_paths", "migrate_legacy"]

LEGACY_KEYS: tuple[str, ...] = (
    "run_id",
    "fork_run_id",
    "warm_start",
    "load_weights_only",
    "transfer_learning",
    "submodules_to_freeze",
    "checkpoint.path",
    "paths.checkpoints",
)
"""The keys ``migrate_legacy`` reads (dotted names are nested mappings); every other key is left alone."""

LAST_CHECKPOINT = "last.ckpt"


@frozen(kw_only=True)
class Migration:
    """The migrated config (``None`` when the old config loaded nothing), a note per migrated key, and
    the paths that were derived rather than given, which ``check_migrated_paths`` checks."""

    config: CheckpointConfig | None
    notes: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()


_MISSING = object()


def _get(mapping: Mapping[str, Any], dotted: str) -> Any:
    value: Any = mapping
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _type_problems(old: Mapping[str, Any]) -> tuple[str, ...]:
    """Every legacy key whose value has the wrong type (``None`` always means "not set")."""
    expected = {
        "run_id": (str, "a run id string"),
        "fork_run_id": (str, "a run id string"),
        "warm_start": (str, "a checkpoint path string"),
        "load_weights_only": (bool, "true or false"),
        "transfer_learning": (bool, "true or false"),
        "checkpoint.path": (str, "a checkpoint path string"),
        "paths.checkpoints": (str, "a directory path string"),
    }
    problems = [
        f"{key}: expected {what}, got {type(value).__name__}"
        for key, (kind, what) in expected.items()
        if (value := _get(old, key)) is not _MISSING and value is not None and not isinstance(value, kind)
    ]
    freeze = _get(old, "submodules_to_freeze")
    if freeze not in (_MISSING, None) and not (
        isinstance(freeze, str)
        or (isinstance(freeze, (list, tuple)) and all(isinstance(x, str) for x in freeze))
    ):
        problems.append("submodules_to_freeze: expected a list of module names")
    return tuple(problems)


def _value(old: Mapping[str, Any], key: str) -> Any:
    value = _get(old, key)
    return None if value is _MISSING else value


def _run_problems(key: str, run: str | None) -> tuple[str, ...]:
    if run is None:
        return ()
    bad = run in ("", ".", "..") or "/" in run or "\\" in run or "\x00" in run
    return (f"{key}: {run!r} is not a run id (one path segment, no '/' or '..')",) if bad else ()


def _conflicts(old: Mapping[str, Any]) -> tuple[str, ...]:
    run, fork = _value(old, "run_id"), _value(old, "fork_run_id")
    warm, given = _value(old, "warm_start"), _value(old, "checkpoint.path")
    both_runs = run is not None and fork is not None
    both_paths = warm is not None and given is not None and warm != given
    needs_root = warm is None and given is None and (run or fork) and _value(old, "paths.checkpoints") is None
    key = "fork_run_id" if fork is not None else "run_id"
    empty = tuple(
        f"{k}: must not be empty (leave it out or null when unused)"
        for k in ("warm_start", "checkpoint.path", "paths.checkpoints")
        if _value(old, k) == ""
    )
    return (
        *empty,
        *_run_problems("run_id", run),
        *_run_problems("fork_run_id", fork),
        *(("give run_id to resume or fork_run_id to fork, not both",) if both_runs else ()),
        *(("warm_start and checkpoint.path name different checkpoints; keep one",) if both_paths else ()),
        *(
            (f"{key}: needs paths.checkpoints to find <paths.checkpoints>/<run>/{LAST_CHECKPOINT}",)
            if needs_root
            else ()
        ),
    )


def _strategy(old: Mapping[str, Any]) -> tuple[str, str]:
    """The strategy and the legacy key that decided it."""
    if _value(old, "transfer_learning") is True:
        return "transfer_learning", "transfer_learning"
    if _value(old, "load_weights_only") is True:
        return "weights_only", "load_weights_only"
    if _value(old, "fork_run_id") is not None:
        return "cold_start", "fork_run_id"
    first = next(k for k in ("run_id", "warm_start", "checkpoint.path") if _value(old, k) is not None)
    return "warm_start", first


def _freeze(old: Mapping[str, Any]) -> tuple[str, ...]:
    value = _value(old, "submodules_to_freeze")
    return () if value is None else (value,) if isinstance(value, str) else tuple(value)


def _derived_path(old: Mapping[str, Any]) -> str | None:
    root, run = _value(old, "paths.checkpoints"), _value(old, "fork_run_id") or _value(old, "run_id")
    return str(PurePosixPath(root, run, LAST_CHECKPOINT)) if root is not None and run else None


def _notes(
    old: Mapping[str, Any], path: str, derived: bool, strategy: str, decided_by: str
) -> tuple[str, ...]:
    """One note per legacy key present, saying what it became."""
    would_be = _derived_path(old)
    overrides = f" (wins over {would_be})" if would_be and not derived else ""
    described = {
        "run_id": f"run_id: resume run {_value(old, 'run_id')!r}" + (f" from {path}" if derived else ""),
        "fork_run_id": f"fork_run_id: start a new run from run {_value(old, 'fork_run_id')!r}"
        + (f" at {path}" if derived else ""),
        "warm_start": f"warm_start: explicit checkpoint path {path}{overrides}",
        "checkpoint.path": f"checkpoint.path: explicit checkpoint path {path}{overrides}",
        "load_weights_only": f"load_weights_only: {str(_value(old, 'load_weights_only')).lower()}",
        "transfer_learning": f"transfer_learning: {str(_value(old, 'transfer_learning')).lower()}",
        "submodules_to_freeze": f"submodules_to_freeze: freeze {', '.join(_freeze(old)) or 'nothing'}",
        "paths.checkpoints": f"paths.checkpoints: {_value(old, 'paths.checkpoints')}"
        + (" (used to derive the checkpoint path)" if derived else " (not needed: the path is explicit)"),
    }
    present = (k for k in LEGACY_KEYS if _value(old, k) is not None)
    return tuple(
        f"{described[k]} → strategy {strategy}" if k == decided_by else described[k] for k in present
    )


def _nothing_to_load(old: Mapping[str, Any]) -> Migration:
    flags = [k for k in ("load_weights_only", "transfer_learning", "submodules_to_freeze") if _value(old, k)]
    ignored = f"; {', '.join(flags)} had nothing to apply to" if flags else ""
    note = f"no run_id, fork_run_id, warm_start or checkpoint.path: training starts from scratch{ignored}"
    return Migration(config=None, notes=(note,))


def migrate_legacy(old: Mapping[str, Any]) -> Result[Migration, Error]:
    """The ``CheckpointConfig`` a legacy training config means, with a note per migrated key (pure)."""
    if not isinstance(old, Mapping):
        return Failure(_invalid((f"config: expected a mapping, got {type(old).__name__}",)))
    problems = _type_problems(old) or _conflicts(old)
    if problems:
        return Failure(_invalid(problems))
    explicit = _value(old, "warm_start") or _value(old, "checkpoint.path")
    path = explicit or _derived_path(old)
    if path is None:
        return Success(_nothing_to_load(old))
    strategy, decided_by = _strategy(old)
    strategy_name: Any = strategy  # one of the schema's Literal strategy names, chosen by _strategy
    config = CheckpointConfig(source=LocalSource(path=path), strategy=strategy_name, freeze=_freeze(old))
    derived = explicit is None
    notes = _notes(old, path, derived, strategy, decided_by)
    return Success(Migration(config=config, notes=notes, derived=(path,) if derived else ()))


def _invalid(problems: tuple[str, ...]) -> InvalidConfig:
    return InvalidConfig(problems=problems, stage="migrate_legacy")


def check_migrated_paths(migration: Migration) -> Result[Migration, NotFound]:
    """THE EFFECT of this module: every derived checkpoint path must exist as a file.

    Explicit paths (``warm_start``, ``checkpoint.path``) are left to the fetch that reads them.
    """
    for derived in migration.derived:
        if not Path(derived).is_file():
            return Failure(
                NotFound(
                    what=f"checkpoint {derived}",
                    hint="it was derived from run_id/fork_run_id and paths.checkpoints; check both, "
                    "or set warm_start to the checkpoint's path",
                    stage="check_migrated_paths",
                )
            )
    return Success(migration)
