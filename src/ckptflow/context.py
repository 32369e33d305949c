"""The values that flow through a load: Context, ModelSpec, LoadPlan, TrainingState, LoadReport, Event.

All are frozen attrs classes; a change is ``attrs.evolve``. Tensor-holding fields compare with
``torch.equal`` (``state_equal``) so two contexts are equal exactly when their contents are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from attrs import cmp_using, evolve, field, frozen

from ckptflow._tuples import ints, mappings, str_set, strs

__all__ = [
    "Context",
    "Event",
    "FrozenModule",
    "LoadOptions",
    "LoadPlan",
    "LoadReport",
    "ModelSpec",
    "SkippedKey",
    "StateDict",
    "TensorSpec",
    "TrainingState",
    "state_equal",
    "tree_equal",
]

StateDict = Mapping[str, torch.Tensor]


def tree_equal(a: object, b: object) -> bool:
    """Deep equality over dicts/lists/tuples where tensors compare by dtype, shape and values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(torch.equal(a, b))
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(tree_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(tree_equal, a, b))
    return bool(a == b)


def state_equal(a: StateDict | None, b: StateDict | None) -> bool:
    """Two state dicts are equal when they have the same keys in the same order and equal tensors."""
    if a is None or b is None:
        return a is b
    return list(a.keys()) == list(b.keys()) and tree_equal(dict(a), dict(b))


_tensor_tree = cmp_using(eq=tree_equal)


@frozen
class Event:
    """Something that happened during a load: ``name`` like ``cache.hit``, with structured ``data``."""

    name: str
    data: Mapping[str, Any] = field(factory=dict, eq=cmp_using(eq=tree_equal))
    stage: str | None = None


@frozen
class TensorSpec:
    """Shape and dtype of one model tensor; ``parameter`` is False for buffers."""

    shape: tuple[int, ...] = field(converter=ints)
    dtype: torch.dtype
    parameter: bool = True

    @classmethod
    def of(cls, tensor: torch.Tensor, *, parameter: bool = True) -> TensorSpec:
        return cls(tuple(tensor.shape), tensor.dtype, parameter)


@frozen
class ModelSpec:
    """What a model expects, taken from it once: state-dict names → TensorSpec, and its module paths."""

    tensors: Mapping[str, TensorSpec]
    modules: tuple[str, ...] = field(default=(), converter=strs)

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> ModelSpec:
        """Read names, shapes and dtypes (no tensor data), so it also works on ``meta`` models."""
        params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
        tensors = {
            name: TensorSpec.of(t, parameter=name in params)
            for name, t in model.state_dict(keep_vars=True).items()
        }
        modules = tuple(name for name, _ in model.named_modules() if name)
        return cls(tensors, modules)

    @classmethod
    def from_state(cls, state: StateDict) -> ModelSpec:
        """A spec describing a state dict, for diffs between two checkpoints."""
        tensors = {k: TensorSpec.of(v) for k, v in state.items() if isinstance(v, torch.Tensor)}
        modules = sorted({k.rsplit(".", 1)[0] for k in tensors if "." in k})
        return cls(tensors, tuple(modules))


@frozen
class TrainingState:
    """Everything beyond weights a resume needs: optimizer/scheduler states and counters."""

    epoch: int | None = None
    global_step: int | None = None
    optimizer_states: tuple[Mapping[str, Any], ...] = field(default=(), converter=mappings, eq=_tensor_tree)
    scheduler_states: tuple[Mapping[str, Any], ...] = field(default=(), converter=mappings, eq=_tensor_tree)
    extra: Mapping[str, Any] = field(factory=dict, eq=_tensor_tree)


@frozen
class SkippedKey:
    """A checkpoint key that was not loaded, with the reason (``not in model``, ``shape mismatch: …``)."""

    key: str
    reason: str


@frozen
class FrozenModule:
    """A module whose parameters will have ``requires_grad=False``, with how many parameters that is."""

    module: str
    parameters: int


def _skipped(items: Iterable[SkippedKey]) -> tuple[SkippedKey, ...]:
    return tuple(items)


def _frozen(items: Iterable[FrozenModule]) -> tuple[FrozenModule, ...]:
    return tuple(items)


def _events(items: Iterable[Event]) -> tuple[Event, ...]:
    return tuple(items)


def _timings(items: Iterable[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    return tuple(items)


@frozen(kw_only=True)
class LoadOptions:
    """What the caller asked for; pure stages read it from the context."""

    strategy: str = "weights_only"
    strict: bool | None = None
    freeze: tuple[str, ...] = field(default=(), converter=strs)
    unfreeze: tuple[str, ...] = field(default=(), converter=strs)
    assign: bool = False
    trusted: bool = False
    allow_globals: tuple[str, ...] = field(default=(), converter=strs)


@frozen(kw_only=True)
class LoadPlan:
    """The decision of what goes where, made without touching the model.

    ``assign`` maps model names to the tensors to copy in; ``missing`` are model tensors with no source
    (they keep their initialisation); ``freeze``/``unfreeze`` are parameter names.
    """

    strategy: str
    assign: StateDict = field(factory=dict, eq=cmp_using(eq=state_equal))
    skipped: tuple[SkippedKey, ...] = field(default=(), converter=_skipped)
    missing: tuple[str, ...] = field(default=(), converter=strs)
    unexpected: tuple[str, ...] = field(default=(), converter=strs)
    cast: tuple[str, ...] = field(default=(), converter=strs)
    freeze: frozenset[str] = field(default=frozenset(), converter=str_set)
    unfreeze: frozenset[str] = field(default=frozenset(), converter=str_set)
    frozen_modules: tuple[FrozenModule, ...] = field(default=(), converter=_frozen)
    training: TrainingState = field(factory=TrainingState)
    restore_optimizer: bool = False
    restore_scheduler: bool = False
    assign_tensors: bool = False
    source: str | None = None
    digest: str | None = None


@frozen(kw_only=True)
class Context:
    """The immutable value each stage receives and returns."""

    source: str | None = None
    path: Path | None = None
    raw: Any = field(default=None, eq=_tensor_tree, repr=False)
    format: str | None = None
    state: StateDict | None = field(default=None, eq=cmp_using(eq=state_equal), repr=False)
    training: TrainingState | None = None
    spec: ModelSpec | None = None
    plan: LoadPlan | None = None
    options: LoadOptions = field(factory=LoadOptions)
    metadata: Mapping[str, Any] = field(factory=dict)
    digest: str | None = None
    events: tuple[Event, ...] = field(default=(), converter=_events)
    timings: tuple[tuple[str, float], ...] = field(default=(), converter=_timings, eq=False)

    def with_event(self, name: str, stage: str | None = None, **data: Any) -> Context:
        """A copy with one more event appended."""
        return evolve(self, events=(*self.events, Event(name, data, stage)))


@frozen(kw_only=True)
class LoadReport:
    """What a load did: loaded/skipped/missing/frozen with counts, counters, digest, source, timings."""

    strategy: str
    source: str | None = None
    digest: str | None = None
    format: str | None = None
    loaded: tuple[str, ...] = field(default=(), converter=strs)
    skipped: tuple[SkippedKey, ...] = field(default=(), converter=_skipped)
    missing: tuple[str, ...] = field(default=(), converter=strs)
    unexpected: tuple[str, ...] = field(default=(), converter=strs)
    cast: tuple[str, ...] = field(default=(), converter=strs)
    frozen: tuple[FrozenModule, ...] = field(default=(), converter=_frozen)
    frozen_parameters: int = 0
    epoch: int = 0
    global_step: int = 0
    optimizer_restored: bool = False
    scheduler_restored: bool = False
    parameters_loaded: int = 0
    events: tuple[Event, ...] = field(default=(), converter=_events)
    timings: Mapping[str, float] = field(factory=dict, eq=False)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "loaded": len(self.loaded),
            "skipped": len(self.skipped),
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "frozen_modules": len(self.frozen),
            "frozen_parameters": self.frozen_parameters,
        }
