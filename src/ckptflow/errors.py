"""Failure values: one frozen attrs class per way a load can fail.

They are values carried in ``Failure(...)``, not exceptions. Each has a stable ``kind``,
a human ``message`` that says what to do, and the ``source``/``stage`` where known.
``unwrap`` turns a ``Result`` into a value or one ``CheckpointError`` for callers who
want exceptions at their own edge.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

import attrs
from attrs import field, frozen
from returns.result import Failure, Result, Success

from ckptflow._tuples import strs

__all__ = [
    "AccessDenied",
    "CacheUnavailable",
    "CheckpointError",
    "ChecksumMismatch",
    "CorruptCheckpoint",
    "Error",
    "FreezeTargetNotFound",
    "IncompatibleState",
    "InvalidConfig",
    "NetworkError",
    "NotFound",
    "NothingMatched",
    "StageFailed",
    "UnknownFormat",
    "UnsafeCheckpoint",
    "at_stage",
    "unwrap",
]

_MAX_LISTED = 12


def _listing(items: tuple[str, ...], limit: int = _MAX_LISTED) -> str:
    """Render names for a message, eliding the tail of a long list."""
    shown = ", ".join(items[:limit])
    rest = len(items) - limit
    return f"{shown}, … and {rest} more" if rest > 0 else shown


def _where(source: str | None, stage: str | None) -> str:
    parts = [f"source {source}" if source else "", f"stage {stage}" if stage else ""]
    text = ", ".join(p for p in parts if p)
    return f" [{text}]" if text else ""


@frozen(kw_only=True)
class Located:
    """Where a failure happened, shared by every failure value: the source and the stage."""

    source: str | None = None
    stage: str | None = None


@frozen(kw_only=True)
class InvalidConfig(Located):
    """A configuration or argument could not be accepted; ``problems`` lists each with its path."""

    kind: ClassVar[str] = "invalid_config"
    problems: tuple[str, ...] = field(converter=strs)

    @property
    def message(self) -> str:
        body = "; ".join(self.problems)
        return f"invalid configuration: {body}. Fix these entries and try again."


@frozen(kw_only=True)
class NotFound(Located):
    """The checkpoint (file, object, artifact, cached entry) does not exist."""

    kind: ClassVar[str] = "not_found"
    what: str
    hint: str = ""

    @property
    def message(self) -> str:
        hint = self.hint or "check the path or URI and that the object exists"
        return f"not found: {self.what}; {hint}."


@frozen(kw_only=True)
class AccessDenied(Located):
    """The store refused the credentials (401/403, AccessDenied, permission error)."""

    kind: ClassVar[str] = "access_denied"
    what: str
    detail: str = ""

    @property
    def message(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"access denied to {self.what}{detail}; check the credentials or token for this source."


@frozen(kw_only=True)
class NetworkError(Located):
    """A transfer failed after all retries; ``attempts`` counts them and ``cause`` is the last one."""

    kind: ClassVar[str] = "network_error"
    what: str
    attempts: int
    cause: str

    @property
    def message(self) -> str:
        return (
            f"network error fetching {self.what} after {self.attempts} attempt(s): {self.cause}; "
            "check connectivity and the endpoint, or run again to resume the partial download."
        )


@frozen(kw_only=True)
class ChecksumMismatch(Located):
    """The downloaded or local bytes do not have the expected digest."""

    kind: ClassVar[str] = "checksum_mismatch"
    what: str
    expected: str
    actual: str
    algorithm: str = "sha256"
    discarded: bool = True

    @property
    def message(self) -> str:
        kept = "the downloaded bytes were discarded" if self.discarded else "the file was left untouched"
        return (
            f"{self.algorithm} mismatch for {self.what}: expected {self.expected}, got {self.actual}; "
            f"{kept}. Check the expected digest or the object's integrity."
        )


@frozen(kw_only=True)
class CorruptCheckpoint(Located):
    """The file exists but cannot be read as a checkpoint (truncated, garbage, bad archive)."""

    kind: ClassVar[str] = "corrupt_checkpoint"
    path: str
    detail: str

    @property
    def message(self) -> str:
        return (
            f"corrupt checkpoint {self.path}: {self.detail}; "
            "re-download it (delete the cached copy with `ckptflow cache prune`) or re-save it."
        )


@frozen(kw_only=True)
class UnsafeCheckpoint(Located):
    """Reading would need pickled globals outside the safe set; the payload was not run."""

    kind: ClassVar[str] = "unsafe_checkpoint"
    path: str
    globals: tuple[str, ...] = field(converter=strs)

    @property
    def message(self) -> str:
        names = _listing(self.globals) or "unknown globals"
        return (
            f"refused to unpickle {self.path}: it needs globals outside the safe set ({names}). "
            "Nothing was executed. If you trust this file, pass allow_globals=[...] naming them, "
            "or trusted=True for this one call."
        )


@frozen(kw_only=True)
class UnknownFormat(Located):
    """The payload is not one of the known checkpoint layouts."""

    kind: ClassVar[str] = "unknown_format"
    keys: tuple[str, ...] = field(converter=strs)

    @property
    def message(self) -> str:
        return (
            f"unknown checkpoint format; top-level keys found: {_listing(self.keys) or '(none)'}. "
            "Expected a Lightning checkpoint, a dict with model_state_dict/state_dict, "
            "a bare state dict, or safetensors; add an extract stage for this layout."
        )


@frozen(kw_only=True)
class IncompatibleState(Located):
    """A strict load found missing/unexpected keys or mismatched shapes, or state that cannot be restored."""

    kind: ClassVar[str] = "incompatible_state"
    missing: tuple[str, ...] = field(default=(), converter=strs)
    unexpected: tuple[str, ...] = field(default=(), converter=strs)
    mismatched: tuple[str, ...] = field(default=(), converter=strs)
    detail: str = ""

    @property
    def message(self) -> str:
        parts = [
            f"missing from checkpoint: {_listing(self.missing)}" if self.missing else "",
            f"not in model: {_listing(self.unexpected)}" if self.unexpected else "",
            f"shape mismatch: {_listing(self.mismatched)}" if self.mismatched else "",
            self.detail,
        ]
        body = "; ".join(p for p in parts if p)
        return (
            f"checkpoint does not fit the model ({body}). Use strict=False to load the intersection, "
            "strategy='transfer_learning', or key transforms (rename/strip_prefix) to align names."
        )


@frozen(kw_only=True)
class NothingMatched(Located):
    """Transfer learning found no tensor whose name and shape match the model."""

    kind: ClassVar[str] = "nothing_matched"
    hint: str
    checkpoint_keys: tuple[str, ...] = field(default=(), converter=strs)
    model_keys: tuple[str, ...] = field(default=(), converter=strs)

    @property
    def message(self) -> str:
        return (
            f"no checkpoint tensor matches the model by name and shape; {self.hint}. "
            f"Checkpoint keys start: {_listing(self.checkpoint_keys, 3)}; "
            f"model keys start: {_listing(self.model_keys, 3)}."
        )


@frozen(kw_only=True)
class FreezeTargetNotFound(Located):
    """A freeze/unfreeze pattern names no module of the model."""

    kind: ClassVar[str] = "freeze_target_not_found"
    target: str
    close_matches: tuple[str, ...] = field(default=(), converter=strs)

    @property
    def message(self) -> str:
        close = (
            f" Did you mean: {_listing(self.close_matches)}?"
            if self.close_matches
            else " List the module paths with `ckptflow inspect` or model.named_modules(), then fix it."
        )
        return f"no module matches freeze target {self.target!r}.{close}"


@frozen(kw_only=True)
class CacheUnavailable(Located):
    """The cache directory cannot be created or written."""

    kind: ClassVar[str] = "cache_unavailable"
    directory: str
    detail: str

    @property
    def message(self) -> str:
        return (
            f"cache directory {self.directory} is not usable ({self.detail}); "
            "make it writable or point CKPTFLOW_CACHE / cache_dir= at a writable directory."
        )


@frozen(kw_only=True)
class StageFailed(Located):
    """A stage could not do its work for a reason no more specific failure describes."""

    kind: ClassVar[str] = "stage_failed"
    detail: str

    @property
    def message(self) -> str:
        return f"stage {self.stage or '?'} failed: {self.detail}"


Error = (
    InvalidConfig
    | NotFound
    | AccessDenied
    | NetworkError
    | ChecksumMismatch
    | CorruptCheckpoint
    | UnsafeCheckpoint
    | UnknownFormat
    | IncompatibleState
    | NothingMatched
    | FreezeTargetNotFound
    | CacheUnavailable
    | StageFailed
)

ERROR_TYPES: tuple[type[Error], ...] = (
    InvalidConfig,
    NotFound,
    AccessDenied,
    NetworkError,
    ChecksumMismatch,
    CorruptCheckpoint,
    UnsafeCheckpoint,
    UnknownFormat,
    IncompatibleState,
    NothingMatched,
    FreezeTargetNotFound,
    CacheUnavailable,
    StageFailed,
)

E = TypeVar("E", bound=Error)
T = TypeVar("T")


def at_stage(error: E, stage: str) -> E:
    """The same failure, located at ``stage`` unless it already names one."""
    return error if error.stage else attrs.evolve(error, stage=stage)


class CheckpointError(Exception):
    """The one exception ckptflow raises, and only from ``unwrap``: it carries the failure value."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.kind}: {error.message}")
        self.error = error


def unwrap(result: Result[T, Error]) -> T:
    """Return the success value, or raise ``CheckpointError`` carrying the failure value."""
    match result:
        case Success(value):
            return value  # type: ignore[no-any-return]
        case Failure(error):
            raise CheckpointError(error)
    raise TypeError(f"unwrap expects a Result, got {type(result).__name__}")
