"""Distributed acquisition: one process per node downloads, the other ranks wait and read the verified blob.

Every rank calls ``fetch`` with the same reference, as with any collective. The ranks agree on one
leader per node (the rank with ``LOCAL_RANK`` 0 when the launcher sets it, else the lowest rank on each
host); the leaders fetch; one ``all_gather_object`` on a private gloo group is both the barrier and the
message that carries each leader's outcome (its path, or its failure value) to the others, so every rank
returns the same typed failure instead of hanging. Followers then resolve the blob from the cache
offline. The private group's timeout (``options["distributed_timeout"]``, default 1800 s) bounds the wait.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist
from attrs import frozen
from returns.result import Failure, Result, Success

from ckptflow.errors import ERROR_TYPES, Error, InvalidConfig, NotFound, StageFailed
from ckptflow.events import emit

__all__ = [
    "DEFAULT_TIMEOUT",
    "Member",
    "coordinate",
    "is_active",
    "leaders",
    "local_rank_of",
    "wanted",
]

DEFAULT_TIMEOUT = 1800.0
"""Seconds a rank waits for its node's leader to finish fetching, unless ``distributed_timeout`` says."""

FetchOnce = Callable[[bool], Result[Path, Error]]
"""Fetch the reference once, offline when the argument is True."""


@frozen(kw_only=True)
class Member:
    """One rank as the others see it: its global rank, host, and launcher-given local rank if any."""

    rank: int
    host: str
    local_rank: int | None = None


def local_rank_of(environ: Mapping[str, str]) -> int | None:
    """``LOCAL_RANK`` as set by torchrun and most launchers, or None when absent or malformed."""
    value = environ.get("LOCAL_RANK", "").strip()
    return int(value) if value.isdigit() else None


def leaders(members: Sequence[Member]) -> dict[int, int]:
    """Each rank → the rank that downloads for its node (pure).

    A node is a host; its leader is the member with local rank 0 when there is one, else its lowest rank.
    """
    by_host: dict[str, list[Member]] = {}
    for member in sorted(members, key=lambda m: m.rank):
        by_host.setdefault(member.host, []).append(member)
    chosen: dict[int, int] = {}
    for node in by_host.values():
        first = next((m for m in node if m.local_rank == 0), node[0])
        chosen.update({m.rank: first.rank for m in node})
    return chosen


def is_active() -> bool:
    """Whether this process is one rank of an initialised ``torch.distributed`` job."""
    return dist.is_available() and dist.is_initialized()


def wanted(flag: bool | None) -> Result[bool, Error]:
    """Whether to coordinate: as asked, or automatically when ``torch.distributed`` is initialised."""
    if flag is None:
        return Success(is_active() and dist.get_world_size() > 1)
    if flag and not is_active():
        problem = (
            "distributed=True: torch.distributed is not initialised in this process; "
            "call torch.distributed.init_process_group(...) in every rank first, or pass distributed=False"
        )
        return Failure(InvalidConfig(problems=(problem,)))
    return Success(flag and dist.get_world_size() > 1)


def _timeout(options: Mapping[str, Any]) -> float:
    return float(options.get("distributed_timeout", DEFAULT_TIMEOUT))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _missed(leader: int, timeout: float, exc: RuntimeError) -> Result[Path, Error]:
    cause = _first_line(exc)
    detail = (
        f"the ranks did not meet to share the checkpoint (rank {leader} downloads it for this node) "
        f"within {timeout:g} s, or a rank died ({cause}); "
        "check that every rank fetches the same reference, and raise options['distributed_timeout'] "
        "for very large checkpoints"
    )
    return Failure(StageFailed(detail=detail, stage="fetch"))


def _gather(value: object, group: Any, world: int) -> list[Any]:
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value, group=group)
    return gathered


def _lead(fetch_once: FetchOnce, group: Any, world: int) -> Result[Path, Error]:
    """Fetch, then tell the others; a crash is still told (as a failure) before it propagates.

    The leader's own result stands even when telling fails (a follower died): it holds the file.
    """
    try:
        result = fetch_once(False)
    except BaseException:
        _gather(StageFailed(detail="the downloading rank crashed", stage="fetch"), group, world)
        raise
    shared: object = result.failure() if isinstance(result, Failure) else str(result.unwrap())
    try:
        _gather(shared, group, world)
    except RuntimeError as exc:
        emit("distributed.unshared", stage="fetch", cause=_first_line(exc))
    return result


def _follow(fetch_once: FetchOnce, outcome: object, leader: int) -> Result[Path, Error]:
    if isinstance(outcome, ERROR_TYPES):
        emit("distributed.failed", stage="fetch", leader=leader, kind=outcome.kind)
        return Failure(outcome)
    if not isinstance(outcome, str):
        return Failure(StageFailed(detail=f"rank {leader} shared no outcome", stage="fetch"))
    found = fetch_once(True)
    if isinstance(found, Failure) and isinstance(found.failure(), NotFound):
        emit("distributed.fallback", stage="fetch", leader=leader, reason="not in this rank's cache")
        return fetch_once(False)
    return found


def coordinate(fetch_once: FetchOnce, options: Mapping[str, Any] | None = None) -> Result[Path, Error]:
    """Run ``fetch_once`` on one rank per node and share its outcome with every rank (a collective)."""
    timeout = _timeout(options or {})
    world = dist.get_world_size()
    rank = dist.get_rank()
    me = Member(rank=rank, host=socket.gethostname(), local_rank=local_rank_of(os.environ))
    leader = rank
    group: Any = None
    try:
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout))
        leader = leaders(_gather(me, group, world))[rank]
        if rank == leader:
            emit("distributed.leader", stage="fetch", rank=rank, world_size=world)
            return _lead(fetch_once, group, world)
        emit("distributed.waiting", stage="fetch", rank=rank, leader=leader)
        outcomes = _gather(None, group, world)
        return _follow(fetch_once, outcomes[leader], leader)
    except RuntimeError as exc:  # the collective timed out or a peer went away
        return _missed(leader, timeout, exc)
    finally:
        if group is not None:
            dist.destroy_process_group(group)
