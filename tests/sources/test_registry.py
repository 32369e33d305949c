"""Specification of the source registry: routing by scheme and type, lazy built-ins, entry-point plugins."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from attrs import frozen
from returns.result import Failure, Result, Success

from ckptflow.config.schema import (
    AzureSource,
    GcsSource,
    HttpSource,
    LocalSource,
    MlflowSource,
    S3Source,
)
from ckptflow.errors import Error, InvalidConfig
from ckptflow.sources import registry
from ckptflow.sources.base import FetchSettings, SourceSpec
from ckptflow.sources.registry import get_source, known_schemes, known_sources, resolve, scheme_of


@pytest.mark.parametrize(
    ("ref", "name", "config_type"),
    [
        ("/data/ckpt.pt", "local", LocalSource),
        ("relative/ckpt.pt", "local", LocalSource),
        ("file:///data/ckpt.pt", "local", LocalSource),
        ("C:\\models\\ckpt.pt", "local", LocalSource),
        ("http://host/ckpt.pt", "http", HttpSource),
        ("https://host/ckpt.pt", "http", HttpSource),
        ("s3://bucket/key/ckpt.pt", "s3", S3Source),
        ("gs://my-bucket/ckpt.pt", "gcs", GcsSource),
        ("az://container/ckpt.pt", "azure", AzureSource),
        ("runs:/0123abcd/model/ckpt.pt", "mlflow", MlflowSource),
        ("models:/classifier/3", "mlflow", MlflowSource),
    ],
)
def test_a_reference_resolves_to_its_source_and_config(ref, name, config_type):
    spec, config = resolve(ref).unwrap()
    assert spec.name == name
    assert isinstance(config, config_type)


def test_a_path_object_is_always_local():
    spec, config = resolve(Path("file:odd-name.pt")).unwrap()
    assert (spec.name, config) == ("local", LocalSource(path="file:odd-name.pt"))


def test_a_source_config_resolves_to_its_type():
    config = S3Source(bucket="b", key="k")
    assert resolve(config).map(lambda found: (found[0].name, found[1])) == Success(("s3", config))


def test_an_unknown_scheme_is_invalid_and_lists_the_known_ones():
    failure = resolve("ftp://host/ckpt.pt").failure()
    assert isinstance(failure, InvalidConfig)
    for scheme in ("s3://", "gs://", "az://", "https://", "runs://", "file://"):
        assert scheme in failure.message


def test_an_empty_reference_is_invalid():
    assert isinstance(resolve("  ").failure(), InvalidConfig)


def test_an_unknown_source_type_is_invalid_naming_the_known_ones():
    failure = get_source("dropbox").failure()
    assert isinstance(failure, InvalidConfig)
    assert "local" in failure.message and "mlflow" in failure.message


def test_scheme_of_ignores_windows_drive_letters():
    assert scheme_of("S3://b/k") == "s3"
    assert scheme_of("d:/ckpt.pt") is None
    assert scheme_of("ckpt.pt") is None


def test_known_sources_lists_every_builtin():
    assert known_sources()[:6] == ("local", "http", "s3", "gcs", "azure", "mlflow")


# --- third-party sources through the entry-point group --------------------------------------------


@frozen
class DemoSource:
    type: str = "demo"
    name: str = ""


def _demo_from_uri(uri: str) -> Result[DemoSource, Error]:
    return Success(DemoSource(name=uri.split("://", 1)[1]))


def _demo_fetch(config: DemoSource, settings: FetchSettings) -> Result[Path, Error]:
    return Failure(InvalidConfig(problems=(f"demo cannot fetch {config.name}",)))


PLUGIN = SourceSpec(
    name="demo", schemes=("demo",), config_type=DemoSource, from_uri=_demo_from_uri, fetch=_demo_fetch
)


@pytest.fixture
def plugin_installed(monkeypatch):
    point = EntryPoint(name="demo", value=f"{__name__}:PLUGIN", group=registry.ENTRY_POINT_GROUP)

    def entry_points(group: str) -> tuple[EntryPoint, ...]:
        return (point,) if group == registry.ENTRY_POINT_GROUP else ()

    monkeypatch.setattr(registry, "plugin_entry_points", entry_points)


def test_an_entry_point_source_is_known_and_routes_its_scheme(plugin_installed):
    assert "demo" in known_sources()
    assert known_schemes()["demo"] == "demo"
    assert resolve("demo://thing") == Success((PLUGIN, DemoSource(name="thing")))


def test_an_entry_point_source_is_found_by_config_type(plugin_installed):
    assert resolve(DemoSource(name="x")) == Success((PLUGIN, DemoSource(name="x")))


def test_an_entry_point_that_is_not_a_source_spec_is_invalid(monkeypatch):
    point = EntryPoint(name="broken", value=f"{__name__}:DemoSource", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "plugin_entry_points", lambda group: (point,))
    assert isinstance(get_source("broken").failure(), InvalidConfig)
