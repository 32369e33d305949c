"""The one mutator: carry out a ``LoadPlan`` on a model, its optimizer(s) and scheduler(s).

All or nothing. Everything that can be checked is checked before the first write (names, shapes,
castable dtypes, meta-device targets, freeze names, optimizer param-group layout, scheduler state).
Then the optimizer and scheduler states are restored first, against snapshots that are put back if
torch still refuses them, and only then are the weights written: copied in place parameter by
parameter under ``torch.no_grad()`` (no second copy of the weights; the pages of a memory-mapped source
are released as soon as they are copied, so the file is never resident in full on top of the model), or,
with ``plan.assign_tensors``, the checkpoint's tensors become the module's parameters and buffers (for
models built on ``meta``).
"""

from __future__ import annotations

import copy
import difflib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import torch
from returns.result import Failure, Result, Success

from ckptflow.context import Event, LoadPlan, LoadReport
from ckptflow.errors import Error, FreezeTargetNotFound, IncompatibleState, InvalidConfig, at_stage
from ckptflow.io import release_mapped_pages
from ckptflow.stages.match import castable, dtype_reason, shape_reason

__all__ = ["Stateful", "apply"]

_STAGE = "apply"
T = TypeVar("T")


class Stateful(Protocol):
    """Anything with torch's ``state_dict``/``load_state_dict`` pair (optimizers, LR schedulers)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], /) -> None: ...


def _as_tuple(value: T | Sequence[T] | None) -> tuple[T, ...]:
    if value is None:
        return ()
    if isinstance(value, Sequence):
        return tuple(value)
    return (value,)


def _check_tensors(targets: Mapping[str, torch.Tensor], plan: LoadPlan) -> Error | None:
    unknown = [name for name in plan.assign if name not in targets]
    known = [(name, src, targets[name]) for name, src in plan.assign.items() if name in targets]
    mismatched = [
        f"{name} ({shape_reason(src.shape, dst.shape).removeprefix('shape mismatch: ')})"
        for name, src, dst in known
        if src.shape != dst.shape
    ]
    uncastable = [
        f"{name}: {dtype_reason(src.dtype, dst.dtype)}"
        for name, src, dst in known
        if not castable(src.dtype, dst.dtype)
    ]
    if unknown or mismatched or uncastable:
        return IncompatibleState(unexpected=unknown, mismatched=mismatched, detail="; ".join(uncastable))
    return None


def _check_meta(targets: Mapping[str, torch.Tensor], plan: LoadPlan) -> Error | None:
    on_meta = [name for name in plan.assign if targets[name].is_meta]
    if on_meta and not plan.assign_tensors:
        shown = ", ".join(on_meta[:5])
        return InvalidConfig(
            problems=(
                f"assign: {len(on_meta)} model tensor(s) are on the meta device ({shown}) and cannot be "
                "copied into; load with assign=True to use the checkpoint's tensors as the model's",
            )
        )
    return None


def _check_assignable(
    model: torch.nn.Module, targets: Mapping[str, torch.Tensor], plan: LoadPlan
) -> Error | None:
    """With ``assign_tensors`` each name must be an attribute of its module holding exactly that tensor."""
    if not plan.assign_tensors:
        return None
    unreachable = [name for name in plan.assign if _owner(model, name)[1] is not targets[name]]
    if unreachable:
        return IncompatibleState(
            detail=f"cannot assign {', '.join(unreachable[:5])}: not a parameter or buffer of its module"
        )
    return None


def _owner(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module | None, object]:
    path, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None, None
    return module, getattr(module, attr, None)


def _check_freeze(params: Mapping[str, torch.nn.Parameter], plan: LoadPlan) -> Error | None:
    unknown = sorted((plan.freeze | plan.unfreeze) - params.keys())
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(params), n=5)
        return FreezeTargetNotFound(target=unknown[0], close_matches=close)
    not_float = sorted(
        n for n in plan.unfreeze if not params[n].is_floating_point() and not params[n].is_complex()
    )
    if not_float:
        return IncompatibleState(
            detail=f"cannot unfreeze non-floating-point parameters: {', '.join(not_float)}"
        )
    return None


def _group_sizes(groups: object) -> tuple[int, ...] | None:
    """The sizes of an optimizer state's param groups, or None if it is not shaped like one."""
    if not isinstance(groups, Sequence) or not all(isinstance(g, Mapping) for g in groups):
        return None
    sizes = [g.get("params") for g in groups]
    return tuple(len(s) for s in sizes) if all(isinstance(s, Sequence) for s in sizes) else None


def _count_mismatch(what: str, saved: int, given: int) -> Error:
    return IncompatibleState(
        detail=f"the checkpoint holds {saved} {what} state(s) but {given} {what}(s) were given; "
        f"pass one {what} per saved state, in the same order"
    )


def _check_optimizers(optimizers: tuple[torch.optim.Optimizer, ...], plan: LoadPlan) -> Error | None:
    if not optimizers:
        return None
    if plan.assign_tensors:
        return InvalidConfig(
            problems=(
                "optimizer: assign=True replaces the model's parameters, so an optimizer built before "
                "the load would keep updating the old ones; create the optimizer after loading, "
                "or use assign=False",
            )
        )
    if not plan.restore_optimizer:
        return None
    states = plan.training.optimizer_states
    if len(states) != len(optimizers):
        return _count_mismatch("optimizer", len(states), len(optimizers))
    for index, (optimizer, state) in enumerate(zip(optimizers, states, strict=True)):
        saved = _group_sizes(state.get("param_groups"))
        current = tuple(len(g["params"]) for g in optimizer.param_groups)
        if saved is None or not isinstance(state.get("state"), Mapping):
            return IncompatibleState(detail=f"optimizer state {index} is not an optimizer state_dict")
        if saved != current:
            return IncompatibleState(
                detail=(
                    f"optimizer state {index} has {len(saved)} param group(s) of sizes {saved} but the "
                    f"optimizer has {len(current)} of sizes {current}; build the optimizer with the same "
                    "parameter groups as the run that saved it"
                )
            )
    return None


def _check_schedulers(schedulers: tuple[Stateful, ...], plan: LoadPlan) -> Error | None:
    if not plan.restore_scheduler:
        return None
    states = plan.training.scheduler_states
    if not states:
        return IncompatibleState(detail="the plan restores a scheduler but holds no scheduler state")
    if schedulers and len(states) != len(schedulers):
        return _count_mismatch("scheduler", len(states), len(schedulers))
    return None


def _first_problem(checks: Iterable[Callable[[], Error | None]]) -> Error | None:
    return next((p for p in (check() for check in checks) if p is not None), None)


def _restore_states(
    pairs: Sequence[tuple[Stateful, Mapping[str, Any]]],
) -> Error | None:
    """Load each saved state into its object; if torch refuses one, put every object back as it was."""
    snapshots = [copy.deepcopy(obj.state_dict()) for obj, _ in pairs]
    try:
        for obj, state in pairs:
            obj.load_state_dict(copy.deepcopy(dict(state)))  # deep: training must not write into the plan
    except (ValueError, KeyError) as exc:
        for (obj, _), snapshot in zip(pairs, snapshots, strict=True):
            obj.load_state_dict(snapshot)
        return IncompatibleState(detail=f"optimizer/scheduler state could not be restored: {exc}")
    return None


def _assign(
    model: torch.nn.Module, targets: Mapping[str, torch.Tensor], assign: Mapping[str, torch.Tensor]
) -> None:
    """Make the checkpoint's tensors the model's (cast to the model's dtype); tied tensors stay tied."""
    replaced: dict[int, torch.Tensor] = {}
    for name, src in assign.items():
        current = targets[name]
        new = replaced.get(id(current))
        if new is None:
            device = src.device if current.is_meta else current.device
            value = src.to(device=device, dtype=current.dtype)
            is_param = isinstance(current, torch.nn.Parameter)
            new = torch.nn.Parameter(value, requires_grad=current.requires_grad) if is_param else value
            replaced[id(current)] = new
        module, _ = _owner(model, name)
        assert module is not None  # checked by _check_assignable
        setattr(module, name.rpartition(".")[2], new)


def _copy(targets: Mapping[str, torch.Tensor], assign: Mapping[str, torch.Tensor]) -> None:
    for name, src in assign.items():
        targets[name].copy_(src)
        release_mapped_pages(src)


def _set_requires_grad(model: torch.nn.Module, plan: LoadPlan) -> int:
    """Apply freeze/unfreeze; returns the number of parameter elements frozen."""
    params = dict(model.named_parameters(remove_duplicate=False))
    frozen = {id(params[n]): params[n] for n in plan.freeze - plan.unfreeze}
    for p in frozen.values():
        p.requires_grad_(False)
    for n in plan.unfreeze:
        params[n].requires_grad_(True)
    return sum(p.numel() for p in frozen.values())


def _notes(
    model: torch.nn.Module,
    plan: LoadPlan,
    optimizers: tuple[torch.optim.Optimizer, ...],
    schedulers: tuple[Stateful, ...],
) -> tuple[Event, ...]:
    notes: list[Event] = []
    if plan.restore_optimizer and not optimizers:
        notes.append(Event("optimizer.not_restored", {"reason": "no optimizer was passed to apply"}, _STAGE))
    if plan.restore_scheduler and not schedulers:
        notes.append(Event("scheduler.not_restored", {"reason": "no scheduler was passed to apply"}, _STAGE))
    on_meta = [name for name, t in model.state_dict(keep_vars=True).items() if t.is_meta]
    if on_meta:
        notes.append(Event("apply.meta_tensors_remain", {"names": on_meta}, _STAGE))
    return tuple(notes)


def apply(
    model: torch.nn.Module,
    plan: LoadPlan,
    *,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
    scheduler: Stateful | Sequence[Stateful] | None = None,
) -> Result[LoadReport, Error]:
    """Carry out ``plan`` on ``model`` (and the optimizer/scheduler when it restores them), all or nothing.

    An optimizer or scheduler the plan would restore but that was not passed is not an error: the
    report says ``optimizer_restored=False`` and carries an event saying why.
    """
    started = time.perf_counter()
    optimizers = _as_tuple(optimizer)
    schedulers: tuple[Stateful, ...] = _as_tuple(scheduler)
    targets = model.state_dict(keep_vars=True)
    params = dict(model.named_parameters(remove_duplicate=False))
    problem = _first_problem(
        (
            lambda: _check_tensors(targets, plan),
            lambda: _check_meta(targets, plan),
            lambda: _check_assignable(model, targets, plan),
            lambda: _check_freeze(params, plan),
            lambda: _check_optimizers(optimizers, plan),
            lambda: _check_schedulers(schedulers, plan),
        )
    )
    if problem is not None:
        return Failure(at_stage(problem, _STAGE))

    restore_optimizer = plan.restore_optimizer and bool(optimizers)
    restore_scheduler = plan.restore_scheduler and bool(schedulers)
    pairs: list[tuple[Stateful, Mapping[str, Any]]] = [
        *(zip(optimizers, plan.training.optimizer_states, strict=True) if restore_optimizer else ()),
        *(zip(schedulers, plan.training.scheduler_states, strict=True) if restore_scheduler else ()),
    ]
    refused = _restore_states(pairs)
    if refused is not None:
        return Failure(at_stage(refused, _STAGE))

    with torch.no_grad():
        if plan.assign_tensors:
            _assign(model, targets, plan.assign)
        else:
            _copy(targets, plan.assign)
    frozen_parameters = _set_requires_grad(model, plan)

    return Success(
        LoadReport(
            strategy=plan.strategy,
            source=plan.source,
            digest=plan.digest,
            loaded=tuple(plan.assign),
            skipped=plan.skipped,
            missing=plan.missing,
            unexpected=plan.unexpected,
            cast=plan.cast,
            frozen=plan.frozen_modules,
            frozen_parameters=frozen_parameters,
            epoch=plan.training.epoch or 0,
            global_step=plan.training.global_step or 0,
            optimizer_restored=restore_optimizer,
            scheduler_restored=restore_scheduler,
            parameters_loaded=sum(t.numel() for t in plan.assign.values()),
            events=_notes(model, plan, optimizers, schedulers),
            timings={_STAGE: time.perf_counter() - started},
        )
    )
