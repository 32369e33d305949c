"""Which source handles a reference: built-ins by scheme/type (imported lazily) plus entry points.

Third parties register a ``SourceSpec`` in the ``ckptflow.sources`` entry-point group; the entry
point's name is the source name, and the spec's ``schemes`` route URIs to it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, cast

from returns.result import Failure, Result, Success

from ckptflow.config.schema import LocalSource, SourceConfig
from ckptflow.config.uris import URI_SCHEMES, scheme_of, source_type_of
from ckptflow.entrypoints import SOURCE_GROUP, plugin_entry_points
from ckptflow.errors import Error, InvalidConfig
from ckptflow.sources.base import SourceSpec

__all__ = [
    "BUILTIN_SCHEMES",
    "BUILTIN_SOURCES",
    "get_source",
    "known_schemes",
    "known_sources",
    "resolve",
    "scheme_of",
]

ENTRY_POINT_GROUP = SOURCE_GROUP

BUILTIN_SOURCES: Mapping[str, str] = {
    "local": "ckptflow.sources.local:SOURCE",
    "http": "ckptflow.sources.http:SOURCE",
    "s3": "ckptflow.sources.s3:SOURCE",
    "gcs": "ckptflow.sources.gcs:SOURCE",
    "azure": "ckptflow.sources.azure:SOURCE",
    "mlflow": "ckptflow.sources.mlflow:SOURCE",
}
"""Source name (the config ``type``) → ``module:attribute`` of its ``SourceSpec``."""

BUILTIN_SCHEMES: Mapping[str, str] = URI_SCHEMES
"""URI scheme → source name, so routing a URI imports only the module it needs."""

_EXTRAS = {"s3": "s3", "gcs": "gcs", "azure": "azure", "mlflow": "mlflow"}


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in plugin_entry_points(ENTRY_POINT_GROUP) if ep.name not in BUILTIN_SOURCES}


def known_sources() -> tuple[str, ...]:
    """Names of every source: built-ins first, then those registered through entry points."""
    return (*BUILTIN_SOURCES, *sorted(_plugins()))


def _unavailable(name: str, exc: ImportError) -> Failure[Any]:
    extra = _EXTRAS.get(name)
    hint = f"; install it with `pip install ckptflow[{extra}]`" if extra else ""
    return Failure(InvalidConfig(problems=(f"source {name!r} is not available ({exc}){hint}",)))


def _load(name: str, target: Any) -> Result[SourceSpec, Error]:
    try:
        spec = target()
    except ImportError as exc:
        return _unavailable(name, exc)
    if not isinstance(spec, SourceSpec):
        return Failure(InvalidConfig(problems=(f"source {name!r} does not provide a SourceSpec",)))
    return Success(spec)


def _import_builtin(path: str) -> Any:
    module, attribute = path.split(":")
    return getattr(importlib.import_module(module), attribute)


def get_source(name: str) -> Result[SourceSpec, Error]:
    """The ``SourceSpec`` registered under ``name`` (a config ``type``), imported on first use."""
    if name in BUILTIN_SOURCES:
        return _load(name, lambda: _import_builtin(BUILTIN_SOURCES[name]))
    plugin = _plugins().get(name)
    if plugin is not None:
        return _load(name, plugin.load)
    known = ", ".join(known_sources())
    return Failure(InvalidConfig(problems=(f"unknown source type {name!r}; known: {known}",)))


def known_schemes() -> dict[str, str]:
    """URI scheme → source name, built-ins and plugins (plugins are imported to read their schemes)."""
    schemes = dict(BUILTIN_SCHEMES)
    for name in _plugins():
        loaded = get_source(name)
        if isinstance(loaded, Success):
            schemes.update({s.lower(): name for s in loaded.unwrap().schemes if s.lower() not in schemes})
    return schemes


def _from_uri(ref: str) -> Result[tuple[SourceSpec, SourceConfig], Error]:
    """Route by ``source_type_of`` (built-ins, Azure blob URLs included), else by a plugin's scheme."""
    name = source_type_of(ref)
    if name is None:
        scheme, schemes = scheme_of(ref), known_schemes()
        if scheme not in schemes:
            listed = ", ".join(f"{s}://" for s in sorted(schemes))
            return Failure(
                InvalidConfig(
                    problems=(f"unknown scheme {scheme!r} in the checkpoint reference; known: {listed}",)
                )
            )
        name = schemes[scheme]
    return get_source(name).bind(lambda spec: spec.from_uri(ref).map(lambda config: (spec, config)))


def resolve(ref: str | Path | SourceConfig) -> Result[tuple[SourceSpec, SourceConfig], Error]:
    """The source for a reference and its config: a path, a URI, or an already-built source config."""
    if isinstance(ref, Path):
        local: SourceConfig = LocalSource(path=str(ref))
        return get_source("local").map(lambda spec: (spec, local))
    if isinstance(ref, str):
        if not ref.strip():
            return Failure(InvalidConfig(problems=("the checkpoint reference is empty",)))
        return _from_uri(ref)
    name = getattr(ref, "type", None)
    if isinstance(name, str):
        return get_source(name).bind(lambda spec: _check_type(spec, ref))
    for plugin in _plugins():  # a plug-in's config class need not carry a ``type`` tag
        spec = get_source(plugin)
        if isinstance(spec, Success) and isinstance(ref, spec.unwrap().config_type):
            return Success((spec.unwrap(), cast(SourceConfig, ref)))
    return Failure(InvalidConfig(problems=(f"not a checkpoint reference: {type(ref).__name__}",)))


def _check_type(spec: SourceSpec, config: Any) -> Result[tuple[SourceSpec, SourceConfig], Error]:
    if not isinstance(config, spec.config_type):
        wanted = spec.config_type.__name__
        return Failure(
            InvalidConfig(problems=(f"source {spec.name!r} expects a {wanted}, got {type(config).__name__}",))
        )
    return Success((spec, cast(SourceConfig, config)))
