"""``fetch``: resolve a checkpoint reference through the source registry and get a verified local file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from returns.result import Result

from ckptflow.cache import default_cache_dir
from ckptflow.config.schema import CheckpointConfig, SourceConfig
from ckptflow.errors import Error
from ckptflow.sources.base import FetchSettings, Progress
from ckptflow.sources.registry import resolve

__all__ = ["fetch"]


def _located(error: Error, where: str) -> Error:
    return error if error.source else attrs.evolve(error, source=where)


def fetch(
    ref: str | Path | SourceConfig | CheckpointConfig,
    *,
    cache_dir: str | Path | None = None,
    sha256: str | None = None,
    progress: Progress | bool | None = None,
    offline: bool = False,
    verify: bool = False,
    transport: Any = None,
    options: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> Result[Path, Error]:
    """The verified local path of a checkpoint: the file itself for local refs, else a blob in the cache.

    ``ref`` is a path, a URI (``https://``, ``s3://``, ``gs://``, ``az://``, ``runs:/``, ``models:/``),
    a source config, or a ``CheckpointConfig`` (whose ``cache_dir``/``sha256`` apply unless given here).
    ``offline`` (or ``CKPTFLOW_OFFLINE=1``) answers from the cache without any request; ``verify``
    re-hashes a cached blob before trusting it. ``transport`` and ``options`` reach the source's edge.
    """
    if isinstance(ref, CheckpointConfig):
        cache_dir = cache_dir if cache_dir is not None else ref.cache_dir
        sha256 = sha256 if sha256 is not None else ref.sha256
        ref = ref.source
    settings = FetchSettings(
        cache_dir=Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(),
        sha256=sha256,
        progress=progress,
        offline=offline,
        verify=verify,
        timeout=timeout,
        transport=transport,
        options=dict(options or {}),
    )
    return resolve(ref).bind(
        lambda found: found[0].fetch(found[1], settings).alt(lambda error: _located(error, found[0].name))
    )
