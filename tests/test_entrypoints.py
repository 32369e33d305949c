"""Plug-in discovery is scanned once per import path, and can be refreshed."""

from __future__ import annotations

import math
from importlib.metadata import EntryPoint

import pytest

from ckptflow import entrypoints
from ckptflow.entrypoints import loaded_plugins, plugin_entry_points, refresh_plugins


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    point = EntryPoint(name="p", value="m:v", group="g")

    def entry_points(*, group: str) -> list[EntryPoint]:
        seen.append(group)
        return [point] if group == "g" else []

    refresh_plugins()
    monkeypatch.setattr(entrypoints, "entry_points", entry_points)
    yield seen
    refresh_plugins()


def test_a_group_is_scanned_once_while_the_import_path_stays_the_same(scans):
    assert (
        plugin_entry_points("g")
        == plugin_entry_points("g")
        == (EntryPoint(name="p", value="m:v", group="g"),)
    )
    assert plugin_entry_points("other") == ()
    assert scans == ["g", "other"]


def test_a_new_import_path_or_a_refresh_scans_again(scans, monkeypatch, tmp_path):
    plugin_entry_points("g")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin_entry_points("g")
    refresh_plugins()
    plugin_entry_points("g")
    assert scans == ["g", "g", "g"]


def test_loaded_plugins_keep_acceptable_values_and_never_replace_a_builtin(monkeypatch):
    points = [
        EntryPoint(name="good", value="math:pi", group="g"),
        EntryPoint(name="wrong_kind", value="math:sqrt", group="g"),
        EntryPoint(name="builtin", value="math:e", group="g"),
        EntryPoint(name="missing_module", value="no_such_module_here:x", group="g"),
        EntryPoint(name="missing_attribute", value="math:no_such_name", group="g"),
    ]
    monkeypatch.setattr(entrypoints, "plugin_entry_points", lambda group: tuple(points))
    found = loaded_plugins("g", {"builtin"}, lambda value: isinstance(value, float))
    assert found == {"good": math.pi}
