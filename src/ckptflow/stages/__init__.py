"""Pure stages and transforms: formats, keys, match, strategies, freeze.

Every name here is usable alone (on a state dict or a Context) or inside ``ckptflow.pipeline``.
"""

from ckptflow.stages.formats import FORMAT_STAGES, auto_strip_prefix, detect, detect_format, extract
from ckptflow.stages.freeze import freeze, resolve_freeze
from ckptflow.stages.keys import (
    TRANSFORMS,
    add_prefix,
    add_prefix_keys,
    cast,
    cast_state,
    exclude,
    exclude_keys,
    include,
    include_keys,
    rename,
    rename_keys,
    strip_prefix,
    strip_prefix_keys,
    transform_from_config,
)
from ckptflow.stages.match import plan_exact, plan_transfer
from ckptflow.stages.strategies import STRATEGIES, StrategyRow, plan, plan_for

__all__ = [
    "FORMAT_STAGES",
    "STRATEGIES",
    "TRANSFORMS",
    "StrategyRow",
    "add_prefix",
    "add_prefix_keys",
    "auto_strip_prefix",
    "cast",
    "cast_state",
    "detect",
    "detect_format",
    "exclude",
    "exclude_keys",
    "extract",
    "freeze",
    "include",
    "include_keys",
    "plan",
    "plan_exact",
    "plan_for",
    "plan_transfer",
    "rename",
    "rename_keys",
    "resolve_freeze",
    "strip_prefix",
    "strip_prefix_keys",
    "transform_from_config",
]
