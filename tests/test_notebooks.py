"""The notebooks run top to bottom on CPU, and the committed copies are executed and show their outputs.

Each notebook is executed afresh with ``nbclient`` on the ``python3`` kernel of this interpreter, from
the ``notebooks/`` directory, into an in-memory copy (the committed file is never rewritten).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = (
    "01_quickstart.ipynb",
    "02_transfer_learning_and_freezing.ipynb",
    "03_custom_stage_with_property_tests.ipynb",
    "04_remote_sources.ipynb",
)
CELL_TIMEOUT_S = 300


def read(name: str) -> NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def code_cells(nb: NotebookNode) -> list[NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def text_of(cell: NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.fixture(scope="module")
def execute() -> Callable[[str], NotebookNode]:
    """Execute a notebook now, once per module (a failing cell raises ``CellExecutionError``)."""
    done: dict[str, NotebookNode] = {}

    def run(name: str) -> NotebookNode:
        if name not in done:
            nb = read(name)
            resources = {"metadata": {"path": str(NOTEBOOKS)}}
            NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources=resources).execute()
            done[name] = nb
        return done[name]

    return run


def test_the_notebooks_directory_holds_exactly_these_notebooks() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_top_to_bottom_without_errors(
    name: str, execute: Callable[[str], NotebookNode]
) -> None:
    nb = execute(name)
    errors = [o for c in code_cells(nb) for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert [c.execution_count for c in code_cells(nb)] == list(range(1, len(code_cells(nb)) + 1))


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_executed_in_order(name: str) -> None:
    cells = code_cells(read(name))
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_shows_outputs_and_no_errors(name: str) -> None:
    cells = code_cells(read(name))
    assert sum(bool(c.outputs) for c in cells) >= len(cells) // 2
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]


def test_transfer_learning_notebook_commits_its_plot() -> None:
    images = [o for c in code_cells(read(NAMES[1])) for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1


def test_transfer_learning_notebook_keeps_the_frozen_encoder_and_trains_the_head() -> None:
    printed = "".join(text_of(c) for c in code_cells(read(NAMES[1])))
    assert printed.count("still the pretrained value: True") == 3
    assert "unfrozen, moved: True" in printed
    assert "new head, moved from its init: True" in printed


def test_property_test_notebook_catches_the_impure_stage_and_passes_the_fixed_one() -> None:
    printed = "".join(text_of(c) for c in code_cells(read(NAMES[2])))
    assert "is not pure: it changed its input" in printed
    assert printed.count("passed: test_use_ema_") == 4


def test_remote_sources_notebook_stops_its_servers(execute: Callable[[str], NotebookNode]) -> None:
    nb = execute(NAMES[3])
    assert text_of(code_cells(nb)[-1]).strip() == "servers stopped, files removed: True"
