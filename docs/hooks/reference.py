"""MkDocs hook: reference tables generated from the code at build time, so the docs cannot drift.

A page asks for a table with a marker comment on a line of its own, e.g. ``<!-- ckptflow:config -->``;
``on_page_markdown`` replaces it with the Markdown that ``SECTIONS[name]()`` renders. Nothing here is
copied by hand: fields come from the attrs classes of ``ckptflow.config.schema``, strategies from the
strategy table, transforms from their signatures, exit codes from ``ckptflow.cli.EXIT_CODES`` and the
command help from the CLI's own parser.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
from returns.result import Success

from ckptflow import cli
from ckptflow.config.converter import SOURCE_TYPES, URI_SCHEMES, source_from_uri
from ckptflow.config.schema import CheckpointConfig, TransformConfig
from ckptflow.errors import ERROR_TYPES
from ckptflow.stages import keys
from ckptflow.stages.strategies import STRATEGIES

__all__ = [
    "SECTIONS",
    "cli_help",
    "config_reference",
    "exit_codes_table",
    "expand",
    "on_page_markdown",
    "strategy_table",
    "transforms_table",
]

MARKER = re.compile(r"^<!-- ckptflow:([a-z-]+) -->$", re.MULTILINE)
HELP_COLUMNS = "100"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _default(field: attrs.Attribute[Any]) -> str:
    default: Any = field.default
    if default is attrs.NOTHING:
        return "**required**"
    factory = getattr(default, "factory", None) if isinstance(default, attrs.Factory) else None  # type: ignore[arg-type]
    return f"`{factory() if factory else default!r}`"


def _field_rows(cls: type) -> list[tuple[str, ...]]:
    return [
        (
            f"`{f.name}`",
            f"`{f.type}`",
            _default(f),
            "secret: never shown in reprs or messages" if f.repr is False else "",
        )
        for f in attrs.fields(cls)
        if f.name != "type"
    ]


_SAMPLE_URIS = {"runs": "runs:/run0/model.pt", "models": "models:/name/1", "file": "file:///model.pt"}


def _schemes_of(tag: str) -> str:
    """The URI schemes that resolve to source ``tag``, found by resolving a sample URI of each."""
    found = []
    for scheme in URI_SCHEMES:
        sample = _SAMPLE_URIS.get(scheme, f"{scheme}://bucket/model.pt")
        resolved = source_from_uri(sample)
        if isinstance(resolved, Success) and resolved.unwrap().type == tag:
            found.append(
                f"`{sample.split('/', 1)[0]}/`" if scheme in ("runs", "models") else f"`{scheme}://`"
            )
    return ", ".join(found)


FIELD_HEADER = ("field", "type", "default", "notes")


def config_reference() -> str:
    """Every field of ``CheckpointConfig``, each source config (by its ``type`` tag) and transforms."""
    parts = [
        "### `checkpoint`",
        "",
        _first_line(CheckpointConfig.__doc__),
        "",
        _table(FIELD_HEADER, _field_rows(CheckpointConfig)),
        "",
        "`source` is a mapping with a `type` (one of "
        + ", ".join(f"`{t}`" for t in SOURCE_TYPES)
        + ") or a URI string. `strategy` is one of "
        + ", ".join(f"`{s}`" for s in STRATEGIES)
        + ", or the name of a strategy a plug-in registers under the `ckptflow.strategies` entry-point"
        " group (a misspelled name is reported with the closest known one).",
    ]
    for tag, cls in SOURCE_TYPES.items():
        schemes = _schemes_of(tag)
        parts += [
            "",
            f"### `source` with `type: {tag}`",
            "",
            _first_line(cls.__doc__) + (f" URI form: {schemes}." if schemes else ""),
            "",
            _table(FIELD_HEADER, _field_rows(cls)),
        ]
    parts += [
        "",
        "### `transforms[]`",
        "",
        _first_line(TransformConfig.__doc__),
        "",
        _table(FIELD_HEADER, _field_rows(TransformConfig)),
    ]
    return "\n".join(parts)


def _transform_doc(factory: Callable[..., Any]) -> str:
    """The docstring of the state function a transform stage wraps (its docstring names it)."""
    named = re.search(r"``(\w+)``", factory.__doc__ or "")
    target = getattr(keys, named.group(1), None) if named else None
    return _first_line(target.__doc__ if target is not None else factory.__doc__)


def _parameters(factory: Callable[..., Any]) -> str:
    params = inspect.signature(factory).parameters.values()
    return ", ".join(
        f"`{p.name}` (list of strings)" if p.kind is p.VAR_POSITIONAL else f"`{p.name}`" for p in params
    )


def transforms_table() -> str:
    """The built-in key/dtype transforms: config name, arguments, what they do."""
    rows = [(f"`{name}`", _parameters(f), _transform_doc(f)) for name, f in keys.TRANSFORMS.items()]
    return _table(("name", "args", "what it does"), rows)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def strategy_table() -> str:
    """The strategy table, row by row, as the ``plan`` stage reads it."""
    rows = [
        (
            f"`{name}`",
            "exact names" if row.weights == "exact" else "by name and shape",
            _yes(row.optimizer),
            _yes(row.scheduler),
            row.counters,
            _yes(row.strict) if row.weights == "exact" else "n/a",
            row.description,
        )
        for name, row in STRATEGIES.items()
    ]
    header = ("strategy", "weights", "optimizer", "schedulers", "epoch/step", "strict by default", "meaning")
    return _table(header, rows)


def exit_codes_table() -> str:
    """Exit code of the CLI per failure kind, with what the failure means."""
    docs = {cls.kind: _first_line(cls.__doc__) for cls in ERROR_TYPES}
    rows = [("`0`", "-", "success"), ("`2`", "-", "usage error (bad arguments)")]
    rows += [(f"`{code}`", f"`{kind}`", docs[kind]) for kind, code in cli.EXIT_CODES.items()]
    return _table(("exit code", "failure kind", "meaning"), rows)


@contextlib.contextmanager
def _columns(width: str) -> Iterator[None]:
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = width
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with _columns(HELP_COLUMNS), contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        cli.main(argv)
    return out.getvalue().rstrip()


def _commands() -> list[str]:
    usage = _help(["--help"])
    choices = re.search(r"\{([a-z,]+)\}", usage)
    return choices.group(1).split(",") if choices else []


def cli_help() -> str:
    """``ckptflow --help`` and each command's ``--help``, as the installed CLI prints them."""
    parts = ["### `ckptflow`", "", "```text", _help(["--help"]), "```"]
    for command in _commands():
        parts += ["", f"### `ckptflow {command}`", "", "```text", _help([command, "--help"]), "```"]
    return "\n".join(parts)


SECTIONS: Mapping[str, Callable[[], str]] = {
    "config": config_reference,
    "strategies": strategy_table,
    "transforms": transforms_table,
    "exit-codes": exit_codes_table,
    "cli-help": cli_help,
}


def expand(markdown: str) -> str:
    """``markdown`` with every marker replaced by its generated section; an unknown marker is an error."""

    def section(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in SECTIONS:
            raise KeyError(f"unknown ckptflow docs marker {name!r}; known: {', '.join(SECTIONS)}")
        return SECTIONS[name]()

    return MARKER.sub(section, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: expand the markers of every page."""
    return expand(markdown)
