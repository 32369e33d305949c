"""The composition root: the public ``load`` / ``load_from_config`` built from the stages and edges.

``load`` is ``fetch → read → detect → extract → auto_strip_prefix → transforms → plan → freeze``
(one pipeline value, see ``load_pipeline``) followed by the one mutation, ``apply``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import torch
from attrs import frozen
from returns.result import Failure, Result, Success

from ckptflow.apply import apply
from ckptflow.catalog import strategy_table, transform_table
from ckptflow.config.converter import parse_config
from ckptflow.config.schema import CheckpointConfig, HttpSource, SourceConfig, TransformConfig
from ckptflow.context import Context, LoadOptions, LoadReport, ModelSpec
from ckptflow.errors import Error, InvalidConfig
from ckptflow.events import announce, collect
from ckptflow.fetch import fetch
from ckptflow.io import read
from ckptflow.pipeline import NamedStage, Pipeline, StageLike, pipeline
from ckptflow.sources.http import redact_url
from ckptflow.stages.formats import FORMAT_STAGES
from ckptflow.stages.freeze import freeze as freeze_stage
from ckptflow.stages.keys import transform_from_config
from ckptflow.stages.strategies import planner

__all__ = [
    "Acquire",
    "describe_ref",
    "Ref",
    "fetch_many",
    "fetch_stage",
    "load",
    "load_from_config",
    "load_pipeline",
    "plan_load",
]

Ref = str | Path | SourceConfig | CheckpointConfig
TransformLike = StageLike | TransformConfig | Mapping[str, Any]


def describe_ref(ref: Ref) -> str:
    """A secret-free label for a reference: URL passwords and signed query values are masked,
    config secrets are already kept out of their reprs."""
    if isinstance(ref, CheckpointConfig):
        return describe_ref(ref.source)
    if isinstance(ref, Path):
        return str(ref)
    if isinstance(ref, str):
        return redact_url(ref) if "://" in ref else ref
    if isinstance(ref, HttpSource):
        return repr(attrs.evolve(ref, url=redact_url(ref.url)))
    return repr(ref)


def _blob_digest(path: Path) -> str | None:
    """The sha256 a cache blob is named by (``blobs/sha256/<hex>``), if ``path`` is one."""
    return path.name if path.parent.name == "sha256" and path.parent.parent.name == "blobs" else None


@frozen(kw_only=True)
class Acquire:
    """How ``load`` fetches its checkpoint: the ``fetch`` arguments, gathered once."""

    cache_dir: str | Path | None = None
    sha256: str | None = None
    progress: Any = None
    offline: bool = False
    options: Mapping[str, Any] | None = None
    distributed: bool | None = None


def fetch_stage(ref: Ref, acquire: Acquire = Acquire()) -> NamedStage:
    """A stage that fetches ``ref`` into the cache and puts the verified path into the context."""
    source = ref.source if isinstance(ref, CheckpointConfig) else ref

    def fetch_(ctx: Context) -> Result[Context, Error]:
        with collect() as seen:
            fetched = fetch(
                source,
                cache_dir=acquire.cache_dir,
                sha256=acquire.sha256,
                progress=acquire.progress,
                offline=acquire.offline,
                options=acquire.options,
                distributed=acquire.distributed,
            )
        return fetched.map(
            lambda path: attrs.evolve(
                ctx,
                path=path,
                digest=acquire.sha256 or _blob_digest(path) or ctx.digest,
                events=(*ctx.events, *seen.events),
            ).with_event("checkpoint.fetched", "fetch", path=str(path))
        )

    return NamedStage("fetch", fetch_, edge=True)


def fetch_many(
    refs: Sequence[Ref], *, max_concurrency: int = 4, **fetch_kwargs: Any
) -> list[Result[Path, Error]]:
    """Fetch several checkpoints concurrently (bounded threads); results in the order of ``refs``."""
    with ThreadPoolExecutor(max_workers=max(1, min(max_concurrency, len(refs) or 1))) as pool:
        return list(pool.map(lambda ref: fetch(ref, **fetch_kwargs), refs))


def _transform_stage(t: TransformLike) -> Result[NamedStage, Error]:
    if isinstance(t, TransformConfig):
        return transform_from_config(t.name, t.args, transforms=transform_table())
    if isinstance(t, Mapping):
        args = {k: v for k, v in t.items() if k != "name"}
        name = t.get("name")
        if not isinstance(name, str):
            return Failure(InvalidConfig(problems=(f"transforms: {dict(t)!r} has no 'name'",)))
        return transform_from_config(name, args.get("args", args), transforms=transform_table())
    if isinstance(t, Pipeline):
        return Success(NamedStage("transforms", t))
    if isinstance(t, NamedStage):
        return Success(t)
    if callable(t):
        return Success(NamedStage(getattr(t, "__name__", "transform"), t))
    return Failure(InvalidConfig(problems=(f"transforms: {t!r} is not a stage or a transform config",)))


def load_pipeline(fetch: NamedStage, transforms: Sequence[TransformLike] = ()) -> Result[Pipeline, Error]:
    """The default load pipeline as a value; callers may edit it by stage name before running it."""
    stages: list[NamedStage] = []
    problems: list[str] = []
    for t in transforms:
        match _transform_stage(t):
            case Success(s):
                stages.append(s)
            case Failure(err):
                problems.extend(err.problems if isinstance(err, InvalidConfig) else (err.message,))
    if problems:
        return Failure(InvalidConfig(problems=tuple(problems)))
    return Success(pipeline(fetch, read, *FORMAT_STAGES, *stages, planner(strategy_table()), freeze_stage))


def plan_load(
    spec: ModelSpec,
    ref: Ref,
    *,
    options: LoadOptions,
    transforms: Sequence[TransformLike] = (),
    acquire: Acquire = Acquire(),
) -> Result[Context, Error]:
    """Everything up to the plan, without touching a model: what ``ckptflow diff`` shows."""
    start = Context(source=describe_ref(ref), spec=spec, options=options)
    return load_pipeline(fetch_stage(ref, acquire), transforms).bind(lambda p: p(start))


def load(
    model: torch.nn.Module,
    ref: Ref,
    *,
    strategy: str = "weights_only",
    freeze: Sequence[str] = (),
    unfreeze: Sequence[str] = (),
    strict: bool | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    transforms: Sequence[TransformLike] = (),
    cache_dir: str | Path | None = None,
    sha256: str | None = None,
    progress: Any = None,
    offline: bool = False,
    trusted: bool = False,
    allow_globals: Sequence[str] = (),
    assign: bool = False,
    source_options: Mapping[str, Any] | None = None,
    distributed: bool | None = None,
) -> Result[LoadReport, Error]:
    """Fetch ``ref``, plan how it meets ``model`` with ``strategy``, and apply the plan (all or nothing)."""
    if isinstance(ref, CheckpointConfig):
        # A config says what to load and how: its fields take the place of those arguments.
        strategy, freeze, unfreeze, strict = ref.strategy, ref.freeze, ref.unfreeze, ref.strict
        transforms = ref.transforms
        cache_dir, sha256 = ref.cache_dir or cache_dir, ref.sha256 or sha256
        ref = ref.source
    options = LoadOptions(
        strategy=strategy,
        strict=strict,
        freeze=tuple(freeze),
        unfreeze=tuple(unfreeze),
        assign=assign,
        trusted=trusted,
        allow_globals=tuple(allow_globals),
    )
    acquire = Acquire(
        cache_dir=cache_dir,
        sha256=sha256,
        progress=progress,
        offline=offline,
        options=source_options,
        distributed=distributed,
    )
    with collect() as live:
        planned = plan_load(
            ModelSpec.from_model(model), ref, options=options, transforms=transforms, acquire=acquire
        )
        loaded = planned.bind(lambda ctx: _apply_context(model, ctx, optimizer, scheduler))
    return loaded.map(lambda report: announce(report, logged=live.events))


def _apply_context(
    model: torch.nn.Module, ctx: Context, optimizer: torch.optim.Optimizer | None, scheduler: Any
) -> Result[LoadReport, Error]:
    if ctx.plan is None:
        return Failure(
            InvalidConfig(problems=("the pipeline produced no plan (is the 'plan' stage present?)",))
        )
    applied = apply(model, ctx.plan, optimizer=optimizer, scheduler=scheduler)
    return applied.map(
        lambda report: attrs.evolve(
            report,
            format=ctx.format,
            source=report.source or ctx.source,
            digest=report.digest or ctx.digest,
            events=(*ctx.events, *report.events),
            timings={**dict(ctx.timings), **report.timings},
        )
    )


def load_from_config(model: torch.nn.Module, config_mapping: Any, **kwargs: Any) -> Result[LoadReport, Error]:
    """Parse a config block (mapping, YAML path or DictConfig) and load it; kwargs override the config."""

    def run(config: CheckpointConfig) -> Result[LoadReport, Error]:
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
        return load(model, attrs.evolve(config, **overrides), **kwargs)

    parsed: Result[CheckpointConfig, Error] = parse_config(config_mapping)
    return parsed.bind(run)


_CONFIG_FIELDS = frozenset({"strategy", "freeze", "unfreeze", "strict", "transforms", "cache_dir", "sha256"})
