"""Hypothesis strategies for ckptflow values: tensors, state dicts, model specs, contexts, configs, errors.

Sizes are small by default so property tests stay fast. Float tensors never hold NaN, so generated
values are equal to themselves under ``state_equal``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import attrs
import torch
from attrs import cmp_using, field, frozen
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, SearchStrategy

from ckptflow.config.schema import (
    AzureSource,
    GcsSource,
    HttpSource,
    LocalSource,
    MlflowSource,
    S3Source,
    SourceConfig,
)
from ckptflow.context import Context, Event, LoadOptions, ModelSpec, TensorSpec, TrainingState, state_equal
from ckptflow.errors import ERROR_TYPES, Error
from ckptflow.stages.strategies import STRATEGIES

__all__ = [
    "BUFFER_NAMES",
    "DEFAULT_DTYPES",
    "LEAF_NAMES",
    "MODULE_NAMES",
    "SECRET_MARKER",
    "STRATEGY_NAMES",
    "StateAndSpec",
    "contexts",
    "dtypes",
    "errors",
    "events",
    "model_specs",
    "secrets",
    "shapes",
    "source_configs",
    "state_dict_and_spec",
    "state_dicts",
    "tensor_names",
    "tensor_specs",
    "tensors",
    "training_states",
]

DEFAULT_DTYPES: tuple[torch.dtype, ...] = (
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.uint8,
    torch.bool,
)
MODULE_NAMES: tuple[str, ...] = (
    "model",
    "module",
    "encoder",
    "decoder",
    "layers",
    "blocks",
    "attn",
    "mlp",
    "norm",
    "head",
    "embed",
    "backbone",
)
BUFFER_NAMES: tuple[str, ...] = ("running_mean", "running_var", "num_batches_tracked")
LEAF_NAMES: tuple[str, ...] = ("weight", "bias", "scale", *BUFFER_NAMES)
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)
SECRET_MARKER = "SECRET"
"""Every generated secret contains this, so a test can assert that no message or repr leaks one."""

_FORMATS = ("state_dict", "model_state_dict", "lightning", "safetensors")
_EVENT_NAMES = ("cache.hit", "cache.miss", "fetch.retry", "keys.renamed", "stage.skipped")
_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=10)
T = TypeVar("T")
_ShapeArg = tuple[int, ...] | SearchStrategy[tuple[int, ...]] | None
_DtypeArg = torch.dtype | SearchStrategy[torch.dtype] | None


def shapes(*, max_dims: int = 2, max_side: int = 4, min_side: int = 1) -> SearchStrategy[tuple[int, ...]]:
    """Tensor shapes of up to ``max_dims`` dimensions (``()`` is a scalar), sides in [min_side, max_side]."""
    return st.lists(st.integers(min_side, max_side), max_size=max_dims).map(tuple)


def dtypes(choices: Iterable[torch.dtype] = DEFAULT_DTYPES) -> SearchStrategy[torch.dtype]:
    """One of ``choices``."""
    return st.sampled_from(tuple(choices))


def _elements(dtype: torch.dtype) -> SearchStrategy[Any]:
    """Small, exactly representable-ish element values for ``dtype`` (no NaN, no infinities)."""
    if dtype == torch.bool:
        return st.booleans()
    if dtype.is_floating_point:
        return st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False, width=32)
    if dtype.is_complex:
        return st.complex_numbers(max_magnitude=4.0, allow_nan=False, allow_infinity=False)
    info = torch.iinfo(dtype)
    return st.integers(max(info.min, -8), min(info.max, 8))


def _given(chosen: SearchStrategy[T] | None, default: SearchStrategy[T]) -> SearchStrategy[T]:
    return default if chosen is None else chosen


@st.composite
def _tensor(draw: DrawFn, shape: _ShapeArg, dtype: _DtypeArg, max_dims: int, max_side: int) -> torch.Tensor:
    size = (
        shape
        if isinstance(shape, tuple)
        else draw(_given(shape, shapes(max_dims=max_dims, max_side=max_side)))
    )
    kind = dtype if isinstance(dtype, torch.dtype) else draw(_given(dtype, dtypes()))
    count = math.prod(size)
    values = draw(st.lists(_elements(kind), min_size=count, max_size=count))
    return torch.tensor(values, dtype=kind).reshape(size)


def tensors(
    shape: _ShapeArg = None, dtype: _DtypeArg = None, *, max_dims: int = 2, max_side: int = 4
) -> SearchStrategy[torch.Tensor]:
    """CPU tensors of a fixed or drawn ``shape`` and ``dtype`` with small values."""
    return _tensor(shape, dtype, max_dims, max_side)


def tensor_names(max_depth: int = 3) -> SearchStrategy[str]:
    """Dotted state-dict names like ``encoder.layers.0.weight`` (module path, then a leaf name)."""
    segment = st.sampled_from(MODULE_NAMES) | st.integers(0, 3).map(str)
    return st.builds(
        lambda parts, leaf: ".".join((*parts, leaf)),
        st.lists(segment, max_size=max_depth),
        st.sampled_from(LEAF_NAMES),
    )


def state_dicts(
    min_keys: int = 0,
    max_keys: int = 5,
    *,
    dtypes: Iterable[torch.dtype] = DEFAULT_DTYPES,
    max_dims: int = 2,
    max_side: int = 4,
) -> SearchStrategy[dict[str, torch.Tensor]]:
    """State dicts of ``min_keys..max_keys`` dotted names mapped to small tensors."""
    values = tensors(dtype=st.sampled_from(tuple(dtypes)), max_dims=max_dims, max_side=max_side)
    return st.dictionaries(tensor_names(), values, min_size=min_keys, max_size=max_keys)


def _is_parameter(name: str) -> bool:
    return name.rsplit(".", 1)[-1] not in BUFFER_NAMES


def _module_paths(names: Iterable[str]) -> tuple[str, ...]:
    """Every module path that owns one of ``names``, parents first, in order of first appearance."""
    seen: dict[str, None] = {}
    for name in names:
        parts = name.split(".")[:-1]
        for depth in range(1, len(parts) + 1):
            seen.setdefault(".".join(parts[:depth]), None)
    return tuple(seen)


def tensor_specs(
    *, dtypes: Iterable[torch.dtype] = DEFAULT_DTYPES, max_dims: int = 2, max_side: int = 4
) -> SearchStrategy[TensorSpec]:
    """Shape and dtype of one model tensor (a parameter; ``model_specs`` marks buffers by name)."""
    return st.builds(TensorSpec, shapes(max_dims=max_dims, max_side=max_side), st.sampled_from(tuple(dtypes)))


def _spec(entries: Mapping[str, TensorSpec]) -> ModelSpec:
    tensors = {k: attrs.evolve(v, parameter=_is_parameter(k)) for k, v in entries.items()}
    return ModelSpec(tensors, _module_paths(tensors))


def model_specs(
    min_keys: int = 0,
    max_keys: int = 5,
    *,
    dtypes: Iterable[torch.dtype] = DEFAULT_DTYPES,
    max_dims: int = 2,
    max_side: int = 4,
) -> SearchStrategy[ModelSpec]:
    """Model specs: names → TensorSpec (buffers named like ``running_mean`` have ``parameter=False``)."""
    entries = tensor_specs(dtypes=dtypes, max_dims=max_dims, max_side=max_side)
    return st.dictionaries(tensor_names(), entries, min_size=min_keys, max_size=max_keys).map(_spec)


@frozen(kw_only=True)
class StateAndSpec:
    """A checkpoint state dict and a model spec whose overlap is known by construction.

    ``matched`` names are in both with the same shape, ``mismatched`` in both with different shapes,
    ``checkpoint_only`` only in the state, ``model_only`` only in the spec.
    """

    state: dict[str, torch.Tensor] = field(eq=cmp_using(eq=state_equal), repr=False)
    spec: ModelSpec
    matched: tuple[str, ...]
    mismatched: tuple[str, ...]
    checkpoint_only: tuple[str, ...]
    model_only: tuple[str, ...]


def _described(shape: tuple[int, ...], dtype: torch.dtype) -> TensorSpec:
    """The spec of a tensor of ``shape`` and ``dtype`` (a meta tensor: nothing is allocated)."""
    return TensorSpec.of(torch.empty(shape, dtype=dtype, device="meta"))


def _other_shape(shape: tuple[int, ...], grow_last: bool) -> tuple[int, ...]:
    """A shape that differs from ``shape``: one more element along the last side, or one more dimension."""
    if grow_last and shape:
        return (*shape[:-1], shape[-1] + 1)
    return (*shape, 2)


@st.composite
def _state_and_spec(
    draw: DrawFn,
    matched: tuple[int, int],
    mismatched: tuple[int, int],
    checkpoint_only: tuple[int, int],
    model_only: tuple[int, int],
    kinds: tuple[torch.dtype, ...],
    same_dtype: bool,
    max_dims: int,
    max_side: int,
) -> StateAndSpec:
    counts = [draw(st.integers(*b)) for b in (matched, mismatched, checkpoint_only, model_only)]
    names = draw(st.lists(tensor_names(), unique=True, min_size=sum(counts), max_size=sum(counts)))
    cuts = [sum(counts[:i]) for i in range(5)]
    same, differ, ckpt, model = (tuple(names[cuts[i] : cuts[i + 1]]) for i in range(4))
    value = tensors(dtype=st.sampled_from(kinds), max_dims=max_dims, max_side=max_side)
    state = {name: draw(value) for name in (*same, *differ, *ckpt)}
    order = draw(st.permutations(list(state)))
    kind = st.sampled_from(kinds)
    entries = {
        **{
            n: TensorSpec.of(state[n]) if same_dtype else _described(state[n].shape, draw(kind)) for n in same
        },
        **{n: _described(_other_shape(state[n].shape, draw(st.booleans())), draw(kind)) for n in differ},
        **{n: draw(tensor_specs(dtypes=kinds, max_dims=max_dims, max_side=max_side)) for n in model},
    }
    spec_order = draw(st.permutations(list(entries)))
    return StateAndSpec(
        state={n: state[n] for n in order},
        spec=_spec({n: entries[n] for n in spec_order}),
        matched=same,
        mismatched=differ,
        checkpoint_only=ckpt,
        model_only=model,
    )


def state_dict_and_spec(
    *,
    matched: tuple[int, int] = (1, 3),
    mismatched: tuple[int, int] = (0, 2),
    checkpoint_only: tuple[int, int] = (0, 2),
    model_only: tuple[int, int] = (0, 2),
    dtypes: Iterable[torch.dtype] = DEFAULT_DTYPES,
    same_dtype: bool = True,
    max_dims: int = 2,
    max_side: int = 4,
) -> SearchStrategy[StateAndSpec]:
    """A state dict and a model spec with ``(min, max)`` names in each overlap category.

    Matched names have the same shape (and dtype unless ``same_dtype=False``); mismatched names differ
    in shape. Both sides come in a drawn key order.
    """
    return _state_and_spec(
        matched, mismatched, checkpoint_only, model_only, tuple(dtypes), same_dtype, max_dims, max_side
    )


def _optimizer_state(tensor: SearchStrategy[torch.Tensor]) -> SearchStrategy[dict[str, Any]]:
    slot = st.fixed_dictionaries({"step": tensors((), torch.float32), "exp_avg": tensor})
    return st.builds(
        lambda slots, lr: {
            "state": dict(enumerate(slots)),
            "param_groups": [{"lr": lr, "params": list(range(len(slots)))}],
        },
        st.lists(slot, max_size=2),
        st.sampled_from((0.1, 0.01, 0.001)),
    )


def training_states(max_side: int = 3) -> SearchStrategy[TrainingState]:
    """Training state with counters, small optimizer states (tensors inside) and scheduler states."""
    counter = st.none() | st.integers(0, 1000)
    scheduler = st.fixed_dictionaries({"last_epoch": st.integers(-1, 50), "_step_count": st.integers(0, 50)})
    return st.builds(
        TrainingState,
        epoch=counter,
        global_step=counter,
        optimizer_states=st.lists(
            _optimizer_state(tensors(dtype=torch.float32, max_side=max_side)), max_size=2
        ),
        scheduler_states=st.lists(scheduler, max_size=2),
        extra=st.dictionaries(_words, st.integers(0, 9) | _words, max_size=2),
    )


def events() -> SearchStrategy[Event]:
    """Structured events with small JSON-like data."""
    data = st.dictionaries(_words, st.integers(0, 99) | _words | st.booleans(), max_size=3)
    return st.builds(Event, st.sampled_from(_EVENT_NAMES), data, st.none() | _words)


@st.composite
def _contexts(
    draw: DrawFn,
    state: SearchStrategy[dict[str, torch.Tensor] | None] | None,
    spec: SearchStrategy[ModelSpec | None] | None,
    training: SearchStrategy[TrainingState | None] | None,
    with_metadata: bool,
    with_events: bool,
) -> Context:
    if state is None and spec is None:
        pair = draw(state_dict_and_spec(matched=(0, 3)))
        drawn_state: dict[str, torch.Tensor] | None = pair.state
        drawn_spec = pair.spec if draw(st.booleans()) else None
    else:
        drawn_state = draw(_given(state, state_dicts()))
        drawn_spec = draw(_given(spec, st.none()))
    metadata = (
        st.dictionaries(_words, st.integers(0, 99) | _words, max_size=3) if with_metadata else st.just({})
    )
    return Context(
        source=draw(st.none() | st.sampled_from(("/tmp/model.pt", "s3://bucket/ckpt.pt", "runs:/abc/model"))),
        format=draw(st.none() | st.sampled_from(_FORMATS)),
        state=drawn_state,
        spec=drawn_spec,
        training=draw(_given(training, st.none() | training_states())),
        options=LoadOptions(strategy=draw(st.sampled_from(STRATEGY_NAMES))),
        metadata=draw(metadata),
        events=draw(st.lists(events(), max_size=2) if with_events else st.just([])),
    )


def contexts(
    *,
    state: SearchStrategy[dict[str, torch.Tensor] | None] | None = None,
    spec: SearchStrategy[ModelSpec | None] | None = None,
    training: SearchStrategy[TrainingState | None] | None = None,
    metadata: bool = True,
    events: bool = True,
) -> SearchStrategy[Context]:
    """Contexts holding a state dict, maybe a model spec and training state, metadata and events.

    With neither ``state`` nor ``spec`` given, both come from ``state_dict_and_spec`` (the spec present
    half the time); with only ``state`` given there is no spec unless ``spec`` is given too.
    """
    return _contexts(state, spec, training, metadata, events)


def secrets() -> SearchStrategy[str]:
    """Credential-like strings, each containing ``SECRET_MARKER``."""
    return st.text(alphabet="0123456789abcdef", min_size=8, max_size=16).map(lambda s: f"{SECRET_MARKER}{s}")


_buckets = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)
_object_keys = st.lists(_words, min_size=1, max_size=3).map(lambda parts: "/".join(parts) + ".pt")
_endpoints = st.none() | st.integers(1024, 65535).map(lambda port: f"http://127.0.0.1:{port}")


def _http_sources() -> SearchStrategy[HttpSource]:
    headers = st.none() | secrets().map(lambda token: {"Authorization": f"Bearer {token}"})
    return st.builds(
        HttpSource,
        url=st.builds(lambda host, key: f"https://{host}.example.com/{key}", _words, _object_keys),
        headers=headers.map(lambda h: h or {}),
        timeout=st.floats(1.0, 120.0),
    )


def _azure_sources() -> SearchStrategy[AzureSource]:
    container = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)
    credential = st.sampled_from(("sas_token", "account_key", "connection_string", None))
    return st.builds(
        lambda container, blob, account, endpoint, which, secret: AzureSource(
            container=container,
            blob=blob,
            account=account,
            endpoint_url=endpoint,
            **({which: secret} if which else {}),
        ),
        container,
        _object_keys,
        st.none() | st.from_regex(r"[a-z0-9]{3,12}", fullmatch=True),
        _endpoints,
        credential,
        secrets(),
    )


def _mlflow_sources() -> SearchStrategy[MlflowSource]:
    tracking = st.none() | _endpoints
    run = st.builds(
        MlflowSource,
        tracking_uri=tracking,
        run_id=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
        artifact_path=_object_keys,
    )
    version = st.integers(1, 20).map(str).map(lambda v: f"/{v}") | _words.map(lambda alias: f"@{alias}")
    model = st.builds(
        MlflowSource,
        tracking_uri=tracking,
        model_uri=st.builds(lambda name, ref: f"models:/{name}{ref}", _words, version),
    )
    return run | model


def source_configs() -> SearchStrategy[SourceConfig]:
    """Valid instances of every source config class; credentials, where present, come from ``secrets()``."""
    local = st.builds(LocalSource, path=_object_keys.map(lambda key: f"/tmp/checkpoints/{key}"))
    s3 = st.builds(
        S3Source,
        bucket=_buckets,
        key=_object_keys,
        version_id=st.none() | _words,
        endpoint_url=_endpoints,
        region=st.none() | st.sampled_from(("us-east-1", "eu-west-1")),
        profile=st.none() | _words,
        anonymous=st.booleans(),
    )
    gcs = st.builds(
        GcsSource,
        bucket=_buckets,
        blob=_object_keys,
        generation=st.none() | st.integers(1, 10**12).map(str),
        endpoint_url=_endpoints,
        token=st.none() | secrets(),
        anonymous=st.booleans(),
    )
    return st.one_of(local, _http_sources(), s3, gcs, _azure_sources(), _mlflow_sources())


def _field_values(annotation: Any) -> SearchStrategy[Any]:
    if annotation is str:
        return _words
    if annotation == (str | None):
        return st.none() | _words
    if annotation is int:
        return st.integers(1, 10)
    if annotation == tuple[str, ...]:
        return st.lists(_words, max_size=4).map(tuple)
    return st.from_type(annotation)


def _error_of(cls: type[Error]) -> SearchStrategy[Error]:
    fields = attrs.fields(attrs.resolve_types(cls))
    return st.builds(cls, **{f.alias: _field_values(f.type) for f in fields})


def errors(types: Iterable[type[Error]] = ERROR_TYPES) -> SearchStrategy[Error]:
    """Instances of every failure class in ``types`` (all of ``ckptflow.errors.ERROR_TYPES`` by default)."""
    return st.one_of([_error_of(cls) for cls in types])
