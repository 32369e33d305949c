"""Installed plug-ins: the entry points of a group, scanned once per import path.

Scanning every installed distribution's metadata costs about 10 ms, more than the rest of a small
load, so the scan is kept per ``(group, sys.path)``: a plug-in on a newly added path is seen at once;
one installed into an already-scanned directory while the process runs is seen after
``refresh_plugins()``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Container
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = [
    "SOURCE_GROUP",
    "STRATEGY_GROUP",
    "TRANSFORM_GROUP",
    "loaded_plugins",
    "plugin_entry_points",
    "refresh_plugins",
]

SOURCE_GROUP = "ckptflow.sources"
"""Entry points naming a ``SourceSpec``; the entry point's name is the source's config ``type``."""
STRATEGY_GROUP = "ckptflow.strategies"
"""Entry points naming a ``StrategyRow``; the entry point's name is the strategy's name."""
TRANSFORM_GROUP = "ckptflow.transforms"
"""Entry points naming a factory that returns a stage; the entry point's name is the transform's."""


@functools.lru_cache(maxsize=32)
def _scan(group: str, path: tuple[str, ...]) -> tuple[EntryPoint, ...]:
    return tuple(entry_points(group=group))


def plugin_entry_points(group: str) -> tuple[EntryPoint, ...]:
    """The entry points registered under ``group`` by the distributions on ``sys.path``."""
    return _scan(group, tuple(sys.path))


def loaded_plugins(group: str, builtin: Container[str], accept: Callable[[object], bool]) -> dict[str, Any]:
    """Entry points of ``group`` that load to an acceptable value, by name; built-in names are never
    replaced, and a plug-in that fails to import is left out (it must not break the built-ins)."""
    found: dict[str, Any] = {}
    for ep in plugin_entry_points(group):
        if ep.name in builtin:
            continue
        try:
            value = ep.load()
        except (ImportError, AttributeError):
            continue
        if accept(value):
            found[ep.name] = value
    return found


def refresh_plugins() -> None:
    """Forget the scans, so distributions installed since are found."""
    _scan.cache_clear()
