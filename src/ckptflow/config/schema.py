"""The configuration schema: a tagged union of source configs plus what to do with the checkpoint.

Values only; structuring from mappings (cattrs, with paths for every problem) lives in
``ckptflow.config.converter``. Secrets (tokens, SAS, keys) are excluded from ``repr``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from attrs import field, frozen

from ckptflow._tuples import strs

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


@frozen(kw_only=True)
class LocalSource:
    """A file on local disk; used in place, never copied."""

    type: Literal["local"] = "local"
    path: str


@frozen(kw_only=True)
class HttpSource:
    """An HTTP(S) URL; ``headers`` may carry auth tokens (kept out of repr and messages)."""

    type: Literal["http"] = "http"
    url: str
    headers: Mapping[str, str] = field(factory=dict, repr=False)
    timeout: float = 30.0


@frozen(kw_only=True)
class S3Source:
    """``s3://bucket/key``; credentials come from botocore's standard chain unless ``anonymous``."""

    type: Literal["s3"] = "s3"
    bucket: str
    key: str
    version_id: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    anonymous: bool = False


@frozen(kw_only=True)
class GcsSource:
    """``gs://bucket/object``; ``STORAGE_EMULATOR_HOST`` overrides the endpoint when set."""

    type: Literal["gcs"] = "gcs"
    bucket: str
    blob: str
    generation: str | None = None
    endpoint_url: str | None = None
    token: str | None = field(default=None, repr=False)
    anonymous: bool = False


@frozen(kw_only=True)
class AzureSource:
    """``az://container/blob`` or a blob URL; auth by SAS, account key, connection string or bearer token."""

    type: Literal["azure"] = "azure"
    container: str
    blob: str
    account: str | None = None
    endpoint_url: str | None = None
    sas_token: str | None = field(default=None, repr=False)
    account_key: str | None = field(default=None, repr=False)
    connection_string: str | None = field(default=None, repr=False)


@frozen(kw_only=True)
class MlflowSource:
    """An MLflow artifact: ``runs:/<run_id>/<path>`` or ``models:/<name>/<version|alias>``."""

    type: Literal["mlflow"] = "mlflow"
    tracking_uri: str | None = field(default=None, repr=False)
    run_id: str | None = None
    artifact_path: str | None = None
    model_uri: str | None = None


SourceConfig = LocalSource | HttpSource | S3Source | GcsSource | AzureSource | MlflowSource


@frozen(kw_only=True)
class TransformConfig:
    """One key/dtype transform by name with its arguments.

    For example ``{"name": "strip_prefix", "args": {"prefix": "model."}}``.
    """

    name: str
    args: Mapping[str, object] = field(factory=dict)


def _transforms(items: Iterable[TransformConfig]) -> tuple[TransformConfig, ...]:
    return tuple(items)


@frozen(kw_only=True)
class CheckpointConfig:
    """A complete load request: where the checkpoint is and how it meets the model."""

    source: SourceConfig
    strategy: str = "weights_only"  # a built-in (``stages.strategies.STRATEGIES``) or a plug-in's name
    strict: bool | None = None
    freeze: tuple[str, ...] = field(default=(), converter=strs)
    unfreeze: tuple[str, ...] = field(default=(), converter=strs)
    transforms: tuple[TransformConfig, ...] = field(default=(), converter=_transforms)
    cache_dir: str | None = None
    sha256: str | None = None
