"""What is available: sources (built-in and ``ckptflow.sources`` entry points), strategies, transforms.

Third parties extend strategies and transforms through the ``ckptflow.strategies`` and
``ckptflow.transforms`` entry-point groups; they are listed here next to the built-ins.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from ckptflow.sources.registry import known_sources
from ckptflow.stages.keys import TRANSFORMS
from ckptflow.stages.strategies import STRATEGIES

__all__ = ["catalog", "render_catalog"]


def _plugins(group: str) -> list[str]:
    return sorted(f"{ep.name} ({ep.value})" for ep in entry_points(group=group))


def catalog() -> dict[str, Any]:
    """Names of every source, strategy and transform, with plug-ins from entry points."""
    return {
        "sources": known_sources(),
        "strategies": sorted(STRATEGIES) + _plugins("ckptflow.strategies"),
        "transforms": sorted(TRANSFORMS) + _plugins("ckptflow.transforms"),
    }


def render_catalog(c: dict[str, Any]) -> str:
    return "\n".join(
        f"{section}:\n" + "\n".join(f"  {name}" for name in names) for section, names in c.items()
    )
