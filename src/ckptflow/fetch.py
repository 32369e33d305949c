"""``fetch``: resolve a checkpoint reference through the source registry and get a verified local file.

In a ``torch.distributed`` job (``distributed=True``, or automatically once the process group is
initialised) one rank per node downloads and the others read its verified blob: see
``ckptflow.distributed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from returns.result import Result

from ckptflow.cache import default_cache_dir
from ckptflow.config.schema import CheckpointConfig, SourceConfig
from ckptflow.distributed import coordinate, wanted
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
    distributed: bool | None = None,
) -> Result[Path, Error]:
    """The verified local path of a checkpoint: the file itself for local refs, else a blob in the cache.

    ``ref`` is a path, a URI (``https://``, ``s3://``, ``gs://``, ``az://``, ``runs:/``, ``models:/``),
    a source config, or a ``CheckpointConfig`` (whose ``cache_dir``/``sha256`` apply unless given here).
    ``offline`` (or ``CKPTFLOW_OFFLINE=1``) answers from the cache without any request; ``verify``
    re-hashes a cached blob before trusting it. ``transport`` and ``options`` reach the source's edge.
    ``distributed`` (default: whether ``torch.distributed`` is initialised) makes this a collective: every
    rank must call it with the same ``ref``; one rank per node downloads, and all return the same result.
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
    source = ref

    def once(offline_now: bool) -> Result[Path, Error]:
        chosen = attrs.evolve(settings, offline=True) if offline_now else settings
        return resolve(source).bind(
            lambda found: found[0].fetch(found[1], chosen).alt(lambda error: _located(error, found[0].name))
        )

    return wanted(distributed).bind(
        lambda together: coordinate(once, settings.options) if together else once(False)
    )
