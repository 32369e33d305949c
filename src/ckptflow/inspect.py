"""What the CLI shows: a checkpoint's description, a load diff, and cache listings, as plain data.

Each function returns a ``Result`` of JSON-safe dicts; ``render_*`` turn them into text.
"""

from __future__ import annotations

import hashlib
import importlib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from returns.result import Failure, Result, Success

from ckptflow import cache as cache_edge
from ckptflow.api import Acquire, _blob_digest, describe_ref, fetch_stage, plan_load
from ckptflow.context import Context, LoadOptions, ModelSpec
from ckptflow.errors import Error, InvalidConfig
from ckptflow.io import read
from ckptflow.pipeline import pipeline
from ckptflow.stages.formats import FORMAT_STAGES

__all__ = [
    "cache_command",
    "describe_checkpoint",
    "diff_checkpoint",
    "module_tree",
    "read_state",
    "render_description",
    "render_diff",
]

_HASH_CHUNK = 8 << 20


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_state(ref: str, *, cache_dir: str | None = None, trusted: bool = False) -> Result[Context, Error]:
    """Fetch, read and extract a checkpoint (no model involved)."""
    stages = pipeline(fetch_stage(ref, Acquire(cache_dir=cache_dir)), read, *FORMAT_STAGES)
    return stages(Context(source=describe_ref(ref), options=LoadOptions(trusted=trusted)))


def module_tree(shapes: Mapping[str, tuple[tuple[int, ...], str]], depth: int = 3) -> list[dict[str, Any]]:
    """Parameter counts and dtypes per module prefix, up to ``depth`` levels (pure)."""
    numel: Counter[str] = Counter()
    dtypes: dict[str, set[str]] = {}
    for key, (shape, dtype) in shapes.items():
        parts = key.split(".")[:-1]
        count = 1
        for side in shape:
            count *= side
        for level in range(0, min(len(parts), depth) + 1):
            prefix = ".".join(parts[:level])
            numel[prefix] += count
            dtypes.setdefault(prefix, set()).add(dtype)
    return [
        {
            "module": m or "(root)",
            "depth": 0 if not m else m.count(".") + 1,
            "numel": numel[m],
            "dtypes": sorted(dtypes[m]),
        }
        for m in sorted(numel)
    ]


def describe_checkpoint(
    ref: str, *, cache_dir: str | None = None, trusted: bool = False
) -> Result[dict[str, Any], Error]:
    """Format, keys, shapes, dtypes, parameter count, training state, metadata, size, sha256."""

    def describe(ctx: Context) -> dict[str, Any]:
        state = ctx.state or {}
        shapes = {
            k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in state.items()
            if isinstance(v, torch.Tensor)
        }
        path = ctx.path or Path(ref)
        training = ctx.training
        return {
            "ref": describe_ref(ref),
            "path": str(path),
            "format": ctx.format,
            "size": path.stat().st_size,
            "sha256": ctx.digest or _blob_digest(path) or _sha256_file(path),
            "tensors": len(shapes),
            "parameters": sum(int(torch.Size(s).numel()) for s, _ in shapes.values()),
            "dtypes": dict(Counter(d for _, d in shapes.values())),
            "keys": {k: {"shape": list(s), "dtype": d} for k, (s, d) in shapes.items()},
            "tree": module_tree(shapes),
            "training": {
                "epoch": training.epoch if training else None,
                "global_step": training.global_step if training else None,
                "optimizer_states": len(training.optimizer_states) if training else 0,
                "scheduler_states": len(training.scheduler_states) if training else 0,
            },
            "metadata": {k: v for k, v in ctx.metadata.items()},
        }

    return read_state(ref, cache_dir=cache_dir, trusted=trusted).map(describe)


def render_description(d: Mapping[str, Any], *, keys: bool = False) -> str:
    t = d["training"]
    lines = [
        f"{d['ref']}",
        f"  format      {d['format']}",
        f"  size        {d['size']:,d} bytes",
        f"  sha256      {d['sha256']}",
        f"  tensors     {d['tensors']:,d}   parameters {d['parameters']:,d}",
        f"  dtypes      {', '.join(f'{k}:{v}' for k, v in d['dtypes'].items())}",
        f"  training    epoch={t['epoch']} step={t['global_step']} "
        f"optimizers={t['optimizer_states']} schedulers={t['scheduler_states']}",
    ]
    if d["metadata"]:
        lines.append("  metadata    " + ", ".join(f"{k}={v}" for k, v in sorted(d["metadata"].items()))[:300])
    lines.append("  modules")
    lines += [
        f"    {'  ' * row['depth']}{row['module']:<{40 - 2 * row['depth']}} {row['numel']:>14,d}  "
        f"{'/'.join(row['dtypes'])}"
        for row in d["tree"]
    ]
    if keys:
        lines.append("  keys")
        lines += [f"    {k:<60} {tuple(v['shape'])!s:<20} {v['dtype']}" for k, v in d["keys"].items()]
    return "\n".join(lines)


def _model_spec(factory: str) -> Result[ModelSpec, Error]:
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr:
        return Failure(InvalidConfig(problems=(f"--model {factory!r}: expected 'module:factory'",)))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return Failure(InvalidConfig(problems=(f"--model {factory!r}: cannot import {module_name} ({exc})",)))
    make = getattr(module, attr, None)
    if not callable(make):
        return Failure(
            InvalidConfig(problems=(f"--model {factory!r}: {attr} is not a callable in {module_name}",))
        )
    model = make()
    if not isinstance(model, torch.nn.Module):
        return Failure(InvalidConfig(problems=(f"--model {factory!r}: returned {type(model).__name__}",)))
    return Success(ModelSpec.from_model(model))


def diff_checkpoint(
    ref: str,
    *,
    other: str | None = None,
    model: str | None = None,
    cache_dir: str | None = None,
    strategy: str = "transfer_learning",
) -> Result[dict[str, Any], Error]:
    """What loading ``ref`` into ``model`` (or into the layout of checkpoint ``other``) would do."""
    if (other is None) == (model is None):
        return Failure(InvalidConfig(problems=("diff: give either a second REF or --model module:factory",)))
    spec: Result[ModelSpec, Error] = (
        _model_spec(model)
        if model is not None
        else read_state(str(other), cache_dir=cache_dir).map(lambda c: ModelSpec.from_state(c.state or {}))
    )
    options = LoadOptions(strategy=strategy, strict=False)

    def summarise(ctx: Context) -> dict[str, Any]:
        plan = ctx.plan
        assert plan is not None  # the load pipeline always ends with a plan
        return {
            "ref": describe_ref(ref),
            "target": model or describe_ref(str(other)),
            "strategy": strategy,
            "load": sorted(plan.assign),
            "skipped": [{"key": s.key, "reason": s.reason} for s in plan.skipped],
            "kept_initialisation": list(plan.missing),
            "cast": list(plan.cast),
        }

    return spec.bind(lambda s: plan_load(s, ref, options=options, acquire=Acquire(cache_dir=cache_dir))).map(
        summarise
    )


def render_diff(d: Mapping[str, Any]) -> str:
    lines = [
        f"{d['ref']} → {d['target']} ({d['strategy']})",
        f"  load                {len(d['load'])} tensors",
        f"  skip                {len(d['skipped'])}",
    ]
    lines += [f"    - {s['key']}: {s['reason']}" for s in d["skipped"]]
    lines.append(f"  kept initialisation {len(d['kept_initialisation'])}")
    lines += [f"    - {k}" for k in d["kept_initialisation"]]
    if d["cast"]:
        lines.append(f"  cast                {len(d['cast'])}: " + ", ".join(d["cast"][:10]))
    return "\n".join(lines)


def cache_command(
    action: str, *, cache_dir: str | Path | None = None, older_than: float | None = None
) -> Result[dict[str, Any], Error]:
    """``ckptflow cache ls|verify|prune`` as data: entries, a verify report, or what prune removed."""
    root = Path(cache_dir) if cache_dir else cache_edge.default_cache_dir()

    def run(cache: cache_edge.Cache) -> Result[dict[str, Any], Error]:
        listed = [
            {
                "identity": e.identity,
                "version": e.version,
                "digest": e.sha256,
                "size": e.size,
                "present": e.present,
                "path": str(e.path),
            }
            for e in cache_edge.entries(cache)
        ]
        base: dict[str, Any] = {"root": str(cache.root), "entries": listed}
        if action == "verify":
            return cache_edge.verify(cache).map(
                lambda r: {
                    **base,
                    "checked": r.checked,
                    "ok": r.ok,
                    "corrupt": [str(p) for p in r.corrupt],
                    "dangling": list(r.dangling),
                }
            )
        if action == "prune":
            pruned = (
                cache_edge.prune(cache) if older_than is None else cache_edge.prune(cache, tmp_age=older_than)
            )
            return pruned.map(
                lambda r: {
                    "root": str(cache.root),
                    "entries": [],
                    "freed": r.freed,
                    "removed": [str(p) for p in (*r.parts, *r.blobs, *r.refs, *r.locks)],
                }
            )
        return Success(base)

    return cache_edge.open_cache(root).bind(run)
