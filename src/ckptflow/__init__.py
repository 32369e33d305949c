"""ckptflow: get a checkpoint from wherever it lives into a PyTorch model, as pure composable stages.

The contract: ``fetch``, ``load``, ``load_from_config``, ``parse_config``, ``pipeline``, ``apply``,
``unwrap``; every one returns a ``returns`` ``Result`` (except ``unwrap``, the bridge to exceptions).
"""

from ckptflow import stages
from ckptflow.api import fetch_many, fetch_stage, load, load_from_config, load_pipeline, plan_load
from ckptflow.apply import apply
from ckptflow.catalog import catalog
from ckptflow.config import CheckpointConfig
from ckptflow.config.converter import parse_config
from ckptflow.config.legacy import migrate_legacy
from ckptflow.context import (
    Context,
    Event,
    FrozenModule,
    LoadOptions,
    LoadPlan,
    LoadReport,
    ModelSpec,
    SkippedKey,
    TensorSpec,
    TrainingState,
)
from ckptflow.errors import CheckpointError, Error, unwrap
from ckptflow.fetch import fetch
from ckptflow.pipeline import NamedStage, Pipeline, Stage, optional, pipeline, stage

__version__ = "0.1.0"

__all__ = [
    "CheckpointConfig",
    "CheckpointError",
    "Context",
    "Error",
    "Event",
    "FrozenModule",
    "LoadOptions",
    "LoadPlan",
    "LoadReport",
    "ModelSpec",
    "NamedStage",
    "Pipeline",
    "SkippedKey",
    "Stage",
    "TensorSpec",
    "TrainingState",
    "__version__",
    "apply",
    "catalog",
    "fetch",
    "fetch_many",
    "fetch_stage",
    "load",
    "load_from_config",
    "load_pipeline",
    "migrate_legacy",
    "optional",
    "parse_config",
    "pipeline",
    "plan_load",
    "stage",
    "stages",
    "unwrap",
]
