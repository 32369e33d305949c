"""The code in the docs runs as written, and the generated reference sections cover the code.

Convention: an HTML comment on the line before a fenced block says what the block is, and every fenced
block of a page in ``TESTED_PAGES`` must have one:

* ``<!-- example: run -->`` python, executed; a page's blocks share one namespace, in order, in an empty
  working directory;
* ``<!-- example: output -->`` text, exactly what the previous ``run`` block printed;
* ``<!-- example: file NAME -->`` written to ``NAME`` in the working directory (YAML is also parsed
  with ``parse_config``);
* ``<!-- example: readme -->`` a shell command that appears verbatim in ``README.md``;
* ``<!-- example: legacy-before NAME -->`` a legacy config, with ``legacy-after NAME`` (the config it
  migrates to, or ``checkpoint: null`` when it loads nothing), ``legacy-notes NAME`` (the notes,
  one a line) or ``legacy-problems NAME`` (why it is refused, one a line).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
import yaml
from attrs import frozen
from returns.result import Failure, Success

from ckptflow import migrate_legacy, parse_config
from ckptflow.cli import EXIT_CODES
from ckptflow.config.converter import SOURCE_TYPES
from ckptflow.config.schema import CheckpointConfig, TransformConfig
from ckptflow.stages.keys import TRANSFORMS
from ckptflow.stages.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TESTED_PAGES = ("getting-started.md", "migration.md")

_BLOCK = re.compile(
    r"^(?:<!-- example: (?P<kind>[a-z-]+)(?: (?P<arg>[^ ]+))? -->\n)?"
    r"```(?P<lang>[a-z]*)[^\n]*\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


@frozen
class Block:
    page: str
    line: int
    kind: str | None
    arg: str | None
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return [
        Block(page, text.count("\n", 0, m.start()) + 1, m["kind"], m["arg"], m["lang"], m["code"])
        for m in _BLOCK.finditer(text)
    ]


def legacy_cases() -> dict[str, dict[str, Block]]:
    cases: dict[str, dict[str, Block]] = {}
    for b in blocks("migration.md"):
        if b.kind and b.kind.startswith("legacy-") and b.arg:
            cases.setdefault(b.arg, {})[b.kind.removeprefix("legacy-")] = b
    return cases


# --- the convention is followed ---------------------------------------------------------------------


@pytest.mark.parametrize("page", TESTED_PAGES)
def test_every_code_block_of_a_tested_page_is_marked(page: str) -> None:
    unmarked = [b.where for b in blocks(page) if b.kind is None]
    assert not unmarked, f"code blocks without an <!-- example: ... --> marker: {unmarked}"


@pytest.mark.parametrize("page", TESTED_PAGES)
def test_markers_name_known_kinds(page: str) -> None:
    known = {"run", "output", "file", "readme", "legacy-before", "legacy-after", "legacy-notes"}
    known.add("legacy-problems")
    unknown = [f"{b.where} {b.kind}" for b in blocks(page) if b.kind not in known]
    assert not unknown


# --- getting started --------------------------------------------------------------------------------


def test_readme_commands_in_the_docs_are_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [b for b in blocks("getting-started.md") if b.kind == "readme"]
    assert len(commands) == 2
    assert all(b.code.strip() in readme for b in commands)


def test_the_demo_the_docs_point_to_runs(tmp_path: Path) -> None:
    ckptflow = Path(sys.executable).parent / "ckptflow"
    done = subprocess.run(
        [str(ckptflow), "demo", "--dir", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "refused" in done.stdout.lower()


def _run_page(page: str, workdir: Path) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs_{page.replace('-', '_').removesuffix('.md')}"}
    printed: str | None = None
    for b in blocks(page):
        if b.kind == "run":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(b.code, b.where, "exec"), namespace)
            printed = out.getvalue()
        elif b.kind == "output":
            assert printed is not None, f"{b.where}: an output block must follow a run block"
            assert printed == b.code, f"{b.where}: the example printed\n{printed}"
            printed = None
        elif b.kind == "file" and b.arg:
            (workdir / b.arg).write_text(b.code, encoding="utf-8")
            if b.lang == "yaml":
                assert isinstance(parse_config(yaml.safe_load(b.code)), Success), b.where


def test_getting_started_examples_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CKPTFLOW_OFFLINE", raising=False)
    _run_page("getting-started.md", tmp_path)


def test_migration_guide_examples_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _run_page("migration.md", tmp_path)


def test_every_python_block_in_the_docs_compiles() -> None:
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    python = [b for page in pages for b in blocks(page) if b.lang == "python"]
    assert len(python) >= 20
    for b in python:
        compile(b.code, b.where, "exec")


def test_every_checkpoint_block_in_the_docs_parses() -> None:
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    configs = [
        (b.where, data)
        for page in pages
        for b in blocks(page)
        if b.lang == "yaml" and not (b.kind or "").startswith("legacy-")
        if isinstance(data := yaml.safe_load(b.code), dict) and "checkpoint" in data
    ]
    assert len(configs) >= 10
    refused = [
        (where, parse_config(data)) for where, data in configs if not isinstance(parse_config(data), Success)
    ]
    assert not refused


# --- the migration guide ----------------------------------------------------------------------------


def test_migration_guide_covers_every_legacy_key() -> None:
    before = " ".join(case["before"].code for case in legacy_cases().values())
    legacy = ("run_id", "fork_run_id", "warm_start", "load_weights_only", "transfer_learning")
    assert all(f"{key}:" in before for key in (*legacy, "submodules_to_freeze"))


def _migrated(case: Mapping[str, Block]) -> Any:
    return migrate_legacy(yaml.safe_load(case["before"].code))


@pytest.mark.parametrize("name", [n for n, c in legacy_cases().items() if "after" in c])
def test_legacy_before_migrates_to_its_after(name: str) -> None:
    case = legacy_cases()[name]
    after = yaml.safe_load(case["after"].code)
    migration = _migrated(case).unwrap()
    if after == {"checkpoint": None}:
        assert migration.config is None
    else:
        assert migration.config == parse_config(after).unwrap()


@pytest.mark.parametrize("name", [n for n, c in legacy_cases().items() if "notes" in c])
def test_legacy_migration_notes_are_the_documented_ones(name: str) -> None:
    case = legacy_cases()[name]
    assert list(_migrated(case).unwrap().notes) == case["notes"].code.splitlines()


@pytest.mark.parametrize("name", [n for n, c in legacy_cases().items() if "problems" in c])
def test_legacy_config_is_refused_with_the_documented_problems(name: str) -> None:
    case = legacy_cases()[name]
    match _migrated(case):
        case Failure(error):
            assert list(error.problems) == case["problems"].code.splitlines()
        case other:
            pytest.fail(f"{case['before'].where} migrated: {other}")


def test_every_legacy_case_has_an_expected_outcome() -> None:
    incomplete = [n for n, c in legacy_cases().items() if "before" not in c or len(c) < 2]
    assert not incomplete


# --- generated reference sections --------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


def test_config_reference_lists_every_field_of_every_schema_class(reference: ModuleType) -> None:
    text = reference.config_reference()
    for cls in (CheckpointConfig, TransformConfig, *SOURCE_TYPES.values()):
        assert all(f"`{f.name}`" in text for f in attrs.fields(cls) if f.name != "type"), cls
    assert all(f"type: {tag}" in text for tag in SOURCE_TYPES)


def test_config_reference_marks_secret_fields(reference: ModuleType) -> None:
    rows = [line for line in reference.config_reference().splitlines() if "secret" in line]
    secret = {f.name for cls in SOURCE_TYPES.values() for f in attrs.fields(cls) if f.repr is False}
    assert secret
    assert {row.split("`")[1] for row in rows} == secret


def test_strategy_table_has_a_row_per_strategy(reference: ModuleType) -> None:
    text = reference.strategy_table()
    assert all(f"| `{name}` |" in text for name in STRATEGIES)


def test_transforms_table_has_a_row_per_transform(reference: ModuleType) -> None:
    text = reference.transforms_table()
    assert all(f"| `{name}` |" in text for name in TRANSFORMS)


def test_exit_code_table_has_every_failure_kind_with_its_code(reference: ModuleType) -> None:
    text = reference.exit_codes_table()
    assert all(f"| `{code}` | `{kind}` |" in text for kind, code in EXIT_CODES.items())


def test_cli_help_shows_every_command(reference: ModuleType) -> None:
    text = reference.cli_help()
    for command in ("fetch", "inspect", "diff", "cache", "demo", "catalog"):
        assert f"usage: ckptflow {command}" in text


def test_an_unknown_marker_is_an_error(reference: ModuleType) -> None:
    with pytest.raises(KeyError, match="config"):
        reference.expand("<!-- ckptflow:confg -->")


def test_every_marker_in_the_docs_is_known(reference: ModuleType) -> None:
    used = {m.group(1) for page in DOCS.rglob("*.md") for m in reference.MARKER.finditer(page.read_text())}
    assert used <= set(reference.SECTIONS)
    assert used == set(reference.SECTIONS)
