"""ckptflow: get a checkpoint from wherever it lives into a PyTorch model, as pure composable stages."""

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
from ckptflow.pipeline import NamedStage, Pipeline, Stage, optional, pipeline, stage

__all__ = [
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
    "optional",
    "pipeline",
    "stage",
    "unwrap",
]
