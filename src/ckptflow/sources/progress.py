"""Progress reporting for downloads: a user callback, a tqdm bar, or nothing.

``FetchSettings.progress`` is a callback ``(done, total)``, True for a bar, False for silence, or None
for a bar only when stderr is a terminal. Reports never go backwards: after a restart from zero the
sink stays quiet until the transfer passes the furthest point already reported.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

from ckptflow.sources.base import Progress

__all__ = ["ProgressSink", "progress_sink"]


class ProgressSink(Protocol):
    """Where the engine reports bytes done of a total (None when unknown)."""

    def update(self, done: int, total: int | None) -> None: ...

    def close(self) -> None: ...


class _Silent:
    def update(self, done: int, total: int | None) -> None:
        return None

    def close(self) -> None:
        return None


class _Callback:
    def __init__(self, callback: Progress) -> None:
        self._callback = callback
        self._reported = -1

    def update(self, done: int, total: int | None) -> None:
        if done > self._reported:
            self._reported = done
            self._callback(done, total)

    def close(self) -> None:
        return None


class _Bar:
    def __init__(self, description: str) -> None:
        from tqdm.auto import tqdm

        self._bar: Any = tqdm(
            desc=description, unit="B", unit_scale=True, unit_divisor=1024, leave=False, file=sys.stderr
        )
        self._reported = 0

    def update(self, done: int, total: int | None) -> None:
        if total is not None and self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()
        if done > self._reported:
            self._bar.update(done - self._reported)
            self._reported = done

    def close(self) -> None:
        self._bar.close()


def _interactive() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_sink(setting: Progress | bool | None, description: str) -> ProgressSink:
    """The sink for a ``FetchSettings.progress`` value; ``description`` labels a bar (no secrets)."""
    if callable(setting):
        return _Callback(setting)
    show = _interactive() if setting is None else bool(setting)
    return _Bar(description) if show else _Silent()
