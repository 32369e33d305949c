"""What is available: sources, strategies and transforms, built-in and from entry points.

Third parties add their own through the entry-point groups ``ckptflow.sources`` (a ``SourceSpec``),
``ckptflow.strategies`` (a ``StrategyRow``) and ``ckptflow.transforms`` (a factory returning a stage).
``load`` plans and transforms with the tables built here, so a plug-in is used, not only listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ckptflow.entrypoints import STRATEGY_GROUP, TRANSFORM_GROUP, loaded_plugins
from ckptflow.sources.registry import known_sources
from ckptflow.stages.keys import TRANSFORMS, TransformFactory
from ckptflow.stages.strategies import STRATEGIES, StrategyRow

__all__ = ["catalog", "render_catalog", "strategy_table", "transform_table"]


def strategy_table() -> Mapping[str, StrategyRow]:
    """The built-in strategies plus every ``StrategyRow`` registered under ``ckptflow.strategies``."""
    return {**STRATEGIES, **loaded_plugins(STRATEGY_GROUP, STRATEGIES, lambda v: isinstance(v, StrategyRow))}


def transform_table() -> Mapping[str, TransformFactory]:
    """The built-in transforms plus every factory registered under ``ckptflow.transforms``."""
    return {**TRANSFORMS, **loaded_plugins(TRANSFORM_GROUP, TRANSFORMS, callable)}


def catalog() -> dict[str, Any]:
    """Names of every source, strategy and transform, plug-ins included."""
    return {
        "sources": list(known_sources()),
        "strategies": sorted(strategy_table()),
        "transforms": sorted(transform_table()),
    }


def render_catalog(c: dict[str, Any]) -> str:
    return "\n".join(
        f"{section}:\n" + "\n".join(f"  {name}" for name in names) for section, names in c.items()
    )
