"""Third-party plug-ins through real entry points: a distribution on sys.path registers a source,
a strategy and a transform, and ``ckptflow.load`` uses all three."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ckptflow as cf
from ckptflow.demo import Classifier
from ckptflow.errors import InvalidConfig

PLUGIN = """
from pathlib import Path

import attrs
import torch
from returns.result import Success

from ckptflow.pipeline import NamedStage
from ckptflow.sources.base import SourceSpec
from ckptflow.stages.strategies import StrategyRow

STORE = Path(__file__).parent / "store"


@attrs.frozen
class MemoSource:
    name: str


def _from_uri(uri):
    return Success(MemoSource(uri.removeprefix("memo://")))


def _fetch(config, settings):
    return Success(STORE / config.name)


SOURCE = SourceSpec(name="memo", schemes=("memo",), config_type=MemoSource, from_uri=_from_uri, fetch=_fetch)

LOOSE = StrategyRow(
    weights="by_shape", optimizer=False, scheduler=False, counters="keep", strict=False,
    description="load what fits and keep the checkpoint's counters",
)


def zero_bias():
    def run(ctx):
        state = {k: (torch.zeros_like(v) if k.endswith(".bias") else v) for k, v in ctx.state.items()}
        return Success(attrs.evolve(ctx, state=state))

    return NamedStage("zero_bias", run)
"""

ENTRY_POINTS = """
[ckptflow.sources]
memo = ckptflow_plugin_demo:SOURCE

[ckptflow.strategies]
loose = ckptflow_plugin_demo:LOOSE

[ckptflow.transforms]
zero_bias = ckptflow_plugin_demo:zero_bias
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "ckptflow_plugin_demo.py").write_text(PLUGIN)
    info = tmp_path / "ckptflow_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ckptflow-plugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    (tmp_path / "store").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ckptflow_plugin_demo", raising=False)
    importlib.invalidate_caches()
    return tmp_path / "store"


def test_catalog_lists_the_plugins_beside_the_builtins(plugin: Path) -> None:
    listed = cf.catalog()
    assert "memo" in listed["sources"]
    assert {"loose", "transfer_learning"} <= set(listed["strategies"])
    assert {"zero_bias", "strip_prefix"} <= set(listed["transforms"])


def test_load_uses_a_plugin_source_strategy_and_transform(plugin: Path) -> None:
    saved = Classifier(classes=10)
    torch.save(saved.state_dict(), plugin / "weights.pt")
    model = Classifier(classes=3)
    report = cf.unwrap(
        cf.load(model, "memo://weights.pt", strategy="loose", transforms=[{"name": "zero_bias"}])
    )
    assert report.strategy == "loose"
    assert {s.key for s in report.skipped} == {"head.weight", "head.bias"}
    assert torch.equal(model.encoder[0].weight, saved.encoder[0].weight)
    assert torch.count_nonzero(model.encoder[0].bias) == 0


def test_a_config_file_can_name_a_plugin_strategy(plugin: Path) -> None:
    saved = Classifier(classes=10)
    torch.save(saved.state_dict(), plugin / "weights.pt")
    config = {"source": "memo://weights.pt", "strategy": "loose", "freeze": ["encoder"]}
    assert cf.parse_config(config).unwrap().strategy == "loose"
    model = Classifier(classes=3)
    report = cf.unwrap(cf.load_from_config(model, config))
    assert report.strategy == "loose"
    assert {s.key for s in report.skipped} == {"head.weight", "head.bias"}
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_a_config_file_can_name_a_plugin_source_by_type(plugin: Path) -> None:
    saved = Classifier(classes=10)
    torch.save(saved.state_dict(), plugin / "weights.pt")
    config = {"source": {"type": "memo", "name": "weights.pt"}, "strategy": "transfer_learning"}
    model = Classifier(classes=3)
    report = cf.unwrap(cf.load_from_config(model, config))
    assert torch.equal(model.encoder[0].weight, saved.encoder[0].weight)
    assert {s.key for s in report.skipped} == {"head.weight", "head.bias"}


def test_a_plugin_source_config_is_checked_like_a_builtin_one(plugin: Path) -> None:
    error = cf.parse_config({"source": {"type": "memo", "nmae": "weights.pt"}}).failure()
    assert isinstance(error, InvalidConfig)
    assert any(p.startswith("source.nmae") for p in error.problems)
    unknown = cf.parse_config({"source": {"type": "mem", "name": "x"}}).failure()
    assert isinstance(unknown, InvalidConfig)
    assert "memo" in unknown.message and "did you mean 'memo'" in unknown.message


def test_without_the_plugin_its_strategy_is_unknown_in_a_config() -> None:
    error = cf.parse_config({"source": "/ckpt/weights.pt", "strategy": "loose"}).failure()
    assert isinstance(error, InvalidConfig)
    assert "strategy: unknown 'loose' (known: weights_only, warm_start, cold_start, transfer_learning)" in (
        error.message
    )


def test_without_the_plugin_its_scheme_is_unknown_and_the_known_ones_are_listed() -> None:
    error = cf.fetch("memo://weights.pt").failure()
    assert isinstance(error, InvalidConfig)
    assert "s3" in error.message and "memo" not in cf.catalog()["sources"]
