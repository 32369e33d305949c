"""Structured events: a name and data, kept in the load report and logged on the ``ckptflow`` logger.

Edges (the download engine, the distributed coordinator) ``emit`` events as they happen: each is
logged at once and handed to every ``collect()`` block active in the calling context, which is how the
fetch stage puts the engine's events into the Context and so into the ``LoadReport``. Events recorded
by pure stages (``Context.with_event``) cannot log; ``announce`` logs them once, when a load ends,
skipping those already logged live. Each log record carries ``ckptflow_event`` (the name),
``ckptflow_data`` (the data) and ``ckptflow_stage``, so handlers can use them structured.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

from ckptflow.context import Event, LoadReport, SkippedKey

__all__ = ["Collector", "announce", "collect", "emit", "log", "publish", "skipped_key_events"]

log = logging.getLogger("ckptflow")

SKIPPED_KEY = "load.skipped_key"


class Collector:
    """The events emitted while its ``collect()`` block was active, in order."""

    def __init__(self) -> None:
        self._events: list[Event] = []

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._events)

    def _add(self, event: Event) -> None:
        self._events.append(event)


_ACTIVE: contextvars.ContextVar[tuple[Collector, ...]] = contextvars.ContextVar(
    "ckptflow_event_collectors", default=()
)


def publish(event: Event) -> None:
    """Log one event at INFO on the ``ckptflow`` logger, with its name and data on the record."""
    details = " ".join(f"{k}={v}" for k, v in event.data.items())
    log.info(
        "%s %s",
        event.name,
        details,
        extra={
            "ckptflow_event": event.name,
            "ckptflow_data": dict(event.data),
            "ckptflow_stage": event.stage,
        },
    )


def emit(name: str, *, stage: str | None = None, **data: Any) -> Event:
    """Record that something happened now: log it and give it to every active ``collect()`` block."""
    event = Event(name, data, stage)
    publish(event)
    for collector in _ACTIVE.get():
        collector._add(event)
    return event


@contextlib.contextmanager
def collect() -> Iterator[Collector]:
    """Collect the events emitted inside the block (this thread or task only; blocks may nest)."""
    collector = Collector()
    token = _ACTIVE.set((*_ACTIVE.get(), collector))
    try:
        yield collector
    finally:
        _ACTIVE.reset(token)


def skipped_key_events(skipped: Iterable[SkippedKey], *, stage: str = "apply") -> tuple[Event, ...]:
    """One ``load.skipped_key`` event per checkpoint key that was not loaded, with its reason."""
    return tuple(Event(SKIPPED_KEY, {"key": s.key, "reason": s.reason}, stage) for s in skipped)


def announce(report: LoadReport, *, logged: Iterable[Event] = ()) -> LoadReport:
    """The report with a ``load.skipped_key`` event per skipped key, after logging every event of it
    not in ``logged`` (the events already logged live, compared by identity)."""
    noted = {e.data.get("key") for e in report.events if e.name == SKIPPED_KEY}
    extra = skipped_key_events(s for s in report.skipped if s.key not in noted)
    done = {id(e) for e in logged}
    events = (*report.events, *extra)
    for event in events:
        if id(event) not in done:
            publish(event)
    return attrs.evolve(report, events=events)
