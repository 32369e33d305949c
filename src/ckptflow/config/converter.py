"""Structure configuration mappings into ``CheckpointConfig`` values, reporting every problem at once.

One cattrs converter, built by ``make_converter``: explicit hooks for every type in the schema, strict
scalars (no ``str(3)`` or ``bool("no")`` coercion), ``forbid_extra_keys``, and the ``type`` tag choosing
the source class. ``parse_config`` turns all of its failures into one ``InvalidConfig`` whose problems
carry their path (``checkpoint.source.bucket: missing``) and a suggestion for misspelled names.
A ``source`` may also be a URI string, resolved by ``ckptflow.config.uris.source_from_uri``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn
from returns.result import Failure, Result, Success

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
from ckptflow.config.uris import (
    URI_SCHEMES,
    did_you_mean,
    mlflow_problems,
    scheme_of,
    shown_uri,
    source_from_uri,
    split_model_uri,
    unknown_choice,
)
from ckptflow.config.uris import mlflow_from_uri as parse_mlflow_uri
from ckptflow.entrypoints import SOURCE_GROUP, STRATEGY_GROUP, loaded_plugins, plugin_entry_points
from ckptflow.errors import InvalidConfig
from ckptflow.stages.strategies import STRATEGIES

__all__ = [
    "SOURCE_TYPES",
    "URI_SCHEMES",
    "known_strategies",
    "make_converter",
    "mlflow_problems",
    "parse_config",
    "parse_mlflow_uri",
    "source_from_uri",
    "split_model_uri",
    "unstructure_config",
    "validate_mlflow",
]

T = TypeVar("T")
Problem = tuple[str, str]
"""``(subpath, message)``: ``subpath`` is relative to where the problem was found (``""`` for there)."""

SOURCE_TYPES: Mapping[str, type[Any]] = {
    "local": LocalSource,
    "http": HttpSource,
    "s3": S3Source,
    "gcs": GcsSource,
    "azure": AzureSource,
    "mlflow": MlflowSource,
}
"""The ``type`` tag of each source config class."""


class _Invalid(Exception):
    """Raised by this module's hooks: one or more problems found at the value being structured."""

    def __init__(self, *problems: Problem) -> None:
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))
        self.problems = problems


def _kind(value: object) -> str:
    """The type of a rejected value; never the value, which may be a secret in the wrong place."""
    return type(value).__name__ if value is not None else "null"


def _invalid(problems: Iterable[Problem]) -> InvalidConfig:
    lines = tuple(f"{p}: {m}" if p else m for p, m in problems)
    return InvalidConfig(problems=lines)


def validate_mlflow(source: MlflowSource) -> Result[MlflowSource, InvalidConfig]:
    """``source`` itself when it names one artifact safely, else every problem with its field."""
    problems = mlflow_problems(source)
    return Failure(_invalid((f"source.{f}", m) for f, m in problems)) if problems else Success(source)


# --- hooks ------------------------------------------------------------------------------------------


def _scalar(kind: type[T], name: str, accept: Callable[[object], bool]) -> Callable[[object, type], T]:
    def structure(value: object, _: type) -> T:
        if not accept(value):
            raise _Invalid(("", f"expected {name}, got {_kind(value)}"))
        return kind(value)  # type: ignore[call-arg]

    return structure


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_literal(tp: object) -> bool:
    return get_origin(tp) is Literal


def _structure_literal(cl: Any) -> Callable[[object, type], object]:
    allowed = get_args(cl)

    def structure(value: object, _: type) -> object:
        if isinstance(value, str) and value in allowed:
            return value
        if not isinstance(value, str):
            raise _Invalid(("", f"expected one of {', '.join(map(str, allowed))}, got {_kind(value)}"))
        raise _Invalid(("", unknown_choice(value, map(str, allowed))))

    return structure


def _structure_patterns(value: object, _: type) -> tuple[str, ...]:
    """A list of strings, or one string meaning a list of one."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)):
        raise _Invalid(("", f"expected a list of strings, got {_kind(value)}"))
    bad = tuple(
        (f"[{i}]", f"expected a string, got {_kind(v)}")
        for i, v in enumerate(value)
        if not isinstance(v, str)
    )
    if bad:
        raise _Invalid(*bad)
    return tuple(value)


def _string_mapping(values: Callable[[object], bool], what: str) -> Callable[[object, type], dict[str, Any]]:
    def structure(value: object, _: type) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _Invalid(("", f"expected a mapping, got {_kind(value)}"))
        bad_keys = tuple((f"[{k!r}]", "keys must be strings") for k in value if not isinstance(k, str))
        bad_values = tuple(
            (f"[{k!r}]", f"expected {what}, got {_kind(v)}") for k, v in value.items() if not values(v)
        )
        if bad_keys or bad_values:
            raise _Invalid(*bad_keys, *bad_values)
        return dict(value)

    return structure


def _sequence_of(conv: cattrs.Converter, cl: type[T]) -> Callable[[object, type], tuple[T, ...]]:
    def structure(value: object, tp: type) -> tuple[T, ...]:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(("", f"expected a list, got {_kind(value)}"))
        items: list[T] = []
        errors: list[Exception] = []
        for i, v in enumerate(value):
            try:
                items.append(conv.structure(v, cl))
            except (ClassValidationError, _Invalid) as exc:
                exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"item {i}", i, cl)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)
        return tuple(items)

    return structure


def _required_text(cls: type) -> tuple[str, ...]:
    return tuple(a.name for a in attrs.fields(cls) if a.default is attrs.NOTHING and a.type in ("str", str))


def _nonempty(cls: type) -> Callable[[Mapping[str, Any]], tuple[Problem, ...]]:
    names = _required_text(cls)
    return lambda raw: tuple((n, "must not be empty") for n in names if raw.get(n) == "")


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def known_strategies() -> tuple[str, ...]:
    """The built-in strategy names, then those plug-ins register (by entry-point name, not loaded)."""
    plugins = {ep.name for ep in plugin_entry_points(STRATEGY_GROUP)} - set(STRATEGIES)
    return (*STRATEGIES, *sorted(plugins))


def _checkpoint_rules(raw: Mapping[str, Any]) -> tuple[Problem, ...]:
    problems: list[Problem] = []
    sha, strategy = raw.get("sha256"), raw.get("strategy")
    if isinstance(sha, str) and not _SHA256.fullmatch(sha):
        problems.append(("sha256", f"expected 64 hex digits, got {sha!r}"))
    if isinstance(strategy, str) and strategy not in (known := known_strategies()):
        problems.append(("strategy", unknown_choice(strategy, known)))
    return tuple(problems)


def _http_rules(raw: Mapping[str, Any]) -> tuple[Problem, ...]:
    url, timeout = raw.get("url"), raw.get("timeout")
    url_problem = (
        (("url", f"expected an http:// or https:// URL, got {shown_uri(url)!r}"),)
        if isinstance(url, str) and url and not url.lower().startswith(("http://", "https://"))
        else ()
    )
    bad_timeout = isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and not timeout > 0
    return (*url_problem, *((("timeout", "must be a positive number of seconds"),) if bad_timeout else ()))


def _mlflow_rules(raw: Mapping[str, Any]) -> tuple[Problem, ...]:
    fields = ("run_id", "artifact_path", "model_uri")
    if not all(raw.get(f) is None or isinstance(raw.get(f), str) for f in fields):
        return ()
    run_id, path, uri = (raw.get(f) for f in fields)
    return mlflow_problems(MlflowSource(run_id=run_id, artifact_path=path, model_uri=uri))


_RULES: Mapping[type, tuple[Callable[[Mapping[str, Any]], tuple[Problem, ...]], ...]] = {
    CheckpointConfig: (_checkpoint_rules,),
    LocalSource: (_nonempty(LocalSource),),
    HttpSource: (_nonempty(HttpSource), _http_rules),
    S3Source: (_nonempty(S3Source),),
    GcsSource: (_nonempty(GcsSource),),
    AzureSource: (_nonempty(AzureSource),),
    MlflowSource: (_mlflow_rules,),
    TransformConfig: (_nonempty(TransformConfig),),
}
"""Value rules beyond types, checked on the raw mapping so they are reported with the type errors."""


def _structure_class(conv: cattrs.Converter, cls: type[T]) -> Callable[[object, type], T]:
    generated = make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)
    rules = _RULES.get(cls, ())

    def structure(value: object, tp: type) -> T:
        if not isinstance(value, Mapping):
            raise _Invalid(("", f"expected a mapping, got {_kind(value)}"))
        problems = tuple(p for rule in rules for p in rule(value))
        try:
            result: T = generated(value, cls)
        except ClassValidationError as exc:
            extra = [_Invalid(*problems)] if problems else []
            raise ClassValidationError(exc.message, [*exc.exceptions, *extra], cls) from None
        if problems:
            raise ClassValidationError(f"While structuring {cls.__name__}", [_Invalid(*problems)], cls)
        return result

    return structure


def _is_source_spec(value: object) -> bool:
    """Duck-typed, so the config layer needs nothing from ``ckptflow.sources``: an attrs config class,
    a URI parser and the schemes it routes."""
    config_type = getattr(value, "config_type", None)
    usable = isinstance(config_type, type) and attrs.has(config_type)
    return usable and callable(getattr(value, "from_uri", None)) and hasattr(value, "schemes")


def _plugin_sources() -> dict[str, Any]:
    """Sources plug-ins register (entry-point name → their loaded ``SourceSpec``)."""
    return loaded_plugins(SOURCE_GROUP, SOURCE_TYPES, _is_source_spec)


def _problems_of(error: object) -> tuple[Problem, ...]:
    return tuple(("", p) for p in getattr(error, "problems", (str(getattr(error, "message", error)),)))


def _source_from_uri(value: str) -> SourceConfig:
    resolved = source_from_uri(value)
    if isinstance(resolved, Success):
        known: SourceConfig = resolved.unwrap()
        return known
    scheme = scheme_of(value)
    for spec in _plugin_sources().values() if scheme is not None else ():
        if scheme in (s.lower() for s in spec.schemes):
            parsed = spec.from_uri(value)
            if isinstance(parsed, Failure):
                raise _Invalid(*_problems_of(parsed.failure()))
            config: SourceConfig = parsed.unwrap()
            return config
    raise _Invalid(*_problems_of(resolved.failure()))


def _structure_source(conv: cattrs.Converter) -> Callable[[object, type], SourceConfig]:
    def structure(value: object, _: type) -> SourceConfig:
        if isinstance(value, str):
            return _source_from_uri(value)
        if not isinstance(value, Mapping):
            raise _Invalid(("", f"expected a mapping with a 'type' or a URI string, got {_kind(value)}"))
        tag = value.get("type")
        if tag is None:
            raise _Invalid(("type", f"missing (one of: {', '.join(SOURCE_TYPES)})"))
        if not isinstance(tag, str):
            raise _Invalid(("type", f"expected one of {', '.join(SOURCE_TYPES)}, got {_kind(tag)}"))
        if tag in SOURCE_TYPES:
            result: SourceConfig = conv.structure(value, SOURCE_TYPES[tag])
            return result
        plugins = _plugin_sources()
        if tag not in plugins:
            raise _Invalid(("type", unknown_choice(tag, (*SOURCE_TYPES, *sorted(plugins)))))
        config_type = plugins[tag].config_type
        fields = {a.name for a in attrs.fields(config_type)}
        plugin: SourceConfig = conv.structure(
            {k: v for k, v in value.items() if k != "type" or "type" in fields}, config_type
        )
        return plugin

    return structure


def _register(conv: cattrs.Converter, tp: object, hook: Callable[[Any, Any], Any]) -> None:
    """A hook for exactly the generic type ``tp`` (``tuple[str, ...]``, ``Mapping[str, str]``)."""
    conv.register_structure_hook_func(lambda t: t == tp, hook)


def make_converter() -> cattrs.Converter:
    """The one converter for configs: strict scalars, tagged sources, no unknown keys, detailed errors."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _scalar(str, "a string", lambda v: isinstance(v, str)))
    conv.register_structure_hook(bool, _scalar(bool, "true or false", lambda v: isinstance(v, bool)))
    conv.register_structure_hook(float, _scalar(float, "a number", _is_number))
    conv.register_structure_hook_factory(_is_literal, _structure_literal)
    _register(conv, tuple[str, ...], _structure_patterns)
    _register(conv, Mapping[str, str], _string_mapping(lambda v: isinstance(v, str), "a string"))
    _register(conv, Mapping[str, object], _string_mapping(lambda v: True, "a value"))
    for cls in (*SOURCE_TYPES.values(), TransformConfig):
        conv.register_structure_hook(cls, _structure_class(conv, cls))
    _register(conv, tuple[TransformConfig, ...], _sequence_of(conv, TransformConfig))
    conv.register_structure_hook(SourceConfig, _structure_source(conv))
    conv.register_structure_hook(CheckpointConfig, _structure_class(conv, CheckpointConfig))
    return conv


@cache
def _converter() -> cattrs.Converter:
    return make_converter()


# --- errors -----------------------------------------------------------------------------------------


def _join(path: str, part: str) -> str:
    if not part:
        return path
    if part.startswith("["):
        return f"{path}{part}"
    return f"{path}.{part}" if path else part


def _render(exc: BaseException, path: str) -> list[str]:
    """Every problem inside a cattrs error tree, as ``path: message``."""
    here = path or "config"
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        named = [p for sub, note in with_notes for p in _render(sub, _join(path, note.name))]
        return named + [p for sub in without for p in _render(sub, path)]
    if isinstance(exc, IterableValidationError):
        with_notes_i, without_i = exc.group_exceptions()
        indexed = [p for sub, inote in with_notes_i for p in _render(sub, f"{path}[{inote.index}]")]
        return indexed + [p for sub in without_i for p in _render(sub, path)]
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(exc.cl)] + (["checkpoint"] if not path else [])
        extra = sorted(map(str, exc.extra_fields))
        return [f"{_join(path, k)}: unknown key{did_you_mean(k, known)}" for k in extra]
    if isinstance(exc, _Invalid):
        return [f"{_join(path, sub) or 'config'}: {msg}" for sub, msg in exc.problems]
    if isinstance(exc, KeyError):
        return [f"{here}: missing"]
    return [f"{here}: invalid value ({exc})"]


# --- entry points -----------------------------------------------------------------------------------


def _read_yaml(path: Path) -> Result[object, InvalidConfig]:
    """The one effect here: read a YAML config file."""
    import yaml

    try:
        return Success(yaml.safe_load(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return Failure(_invalid([(str(path), "config file not found")]))
    except (OSError, UnicodeDecodeError) as exc:
        return Failure(_invalid([(str(path), f"cannot read config file ({exc})")]))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        return Failure(_invalid([(str(path), f"{problem}{where}")]))


def _from_omegaconf(obj: object) -> Result[object, InvalidConfig] | None:
    """A plain container from an OmegaConf config, or None when ``obj`` is not one (OmegaConf optional)."""
    if not type(obj).__module__.startswith("omegaconf"):
        return None
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return Success(OmegaConf.to_container(obj, resolve=True))
    except OmegaConfBaseException as exc:
        return Failure(_invalid([("", f"cannot resolve the OmegaConf config ({exc})")]))


def _as_data(config: object) -> Result[object, InvalidConfig]:
    if isinstance(config, (str, Path)):
        return _read_yaml(Path(config))
    return _from_omegaconf(config) or Success(config)


def _structure(data: object) -> Result[CheckpointConfig, InvalidConfig]:
    nested = isinstance(data, Mapping) and "checkpoint" in data
    root, value = ("checkpoint", data["checkpoint"]) if isinstance(data, Mapping) and nested else ("", data)
    if not isinstance(value, Mapping):
        return Failure(_invalid([(root or "config", f"expected a mapping, got {_kind(value)}")]))
    try:
        config: CheckpointConfig = _converter().structure(value, CheckpointConfig)
    except (ClassValidationError, _Invalid) as exc:
        return Failure(_invalid(("", p) for p in _render(exc, root)))
    return Success(config)


def parse_config(config: object) -> Result[CheckpointConfig, InvalidConfig]:
    """A ``CheckpointConfig`` from a mapping, a YAML file path, or an OmegaConf ``DictConfig``.

    Accepts the bare config mapping or one with a top-level ``checkpoint`` block (other top-level keys
    are then left alone). A failure lists every problem with its path.
    """
    return _as_data(config).bind(_structure)


def unstructure_config(config: CheckpointConfig) -> dict[str, Any]:
    """Plain data (dicts, lists, scalars) that ``parse_config`` turns back into an equal config."""
    data: dict[str, Any] = _converter().unstructure(config)
    return data
