"""Configuration: the schema, its cattrs converter, and legacy migration."""

from ckptflow.config.schema import (
    AzureSource,
    CheckpointConfig,
    GcsSource,
    HttpSource,
    LocalSource,
    MlflowSource,
    S3Source,
    SourceConfig,
    TransformConfig,
)

__all__ = [
    "AzureSource",
    "CheckpointConfig",
    "GcsSource",
    "HttpSource",
    "LocalSource",
    "MlflowSource",
    "S3Source",
    "SourceConfig",
    "TransformConfig",
]
