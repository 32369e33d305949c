"""The ``ckptflow`` command: human and --json output, and one exit code per failure kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckptflow.cli import EXIT_CODES, main
from ckptflow.demo import save_lightning_checkpoint


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "model.ckpt"
    save_lightning_checkpoint(path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_exit_codes_are_distinct_per_failure_kind() -> None:
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert all(code >= 10 for code in EXIT_CODES.values())


def test_demo_runs_end_to_end_and_prints_each_strategy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "demo", "--dir", str(tmp_path))
    assert code == 0
    for section in ("warm_start", "cold_start", "transfer_learning", "cache hit", "refused"):
        assert section in out
    assert "resumed weights identical to the trained model: True" in out


def test_demo_json_has_a_report_per_strategy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "demo", "--json", "--dir", str(tmp_path))
    data = json.loads(out)
    assert code == 0
    assert {"warm_start", "cold_start", "transfer_learning", "unsafe"} <= set(data)
    assert data["unsafe"]["error"] == "unsafe_checkpoint"


def test_inspect_json_describes_format_counts_and_training_state(
    capsys: pytest.CaptureFixture[str], ckpt: Path, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "inspect", str(ckpt), "--json", "--cache-dir", str(tmp_path / "c"))
    d = json.loads(out)
    assert code == 0
    assert d["format"] == "lightning"
    assert d["training"] == {"epoch": 42, "global_step": 10000, "optimizer_states": 1, "scheduler_states": 1}
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert d["parameters"] == sum(v.numel() for v in state.values())
    assert len(d["sha256"]) == 64 and d["size"] == ckpt.stat().st_size


def test_inspect_human_output_shows_module_tree(capsys: pytest.CaptureFixture[str], ckpt: Path) -> None:
    code, out, _ = run(capsys, "inspect", str(ckpt))
    assert code == 0
    assert "modules" in out and "encoder" in out and "lightning" in out


def test_diff_against_a_model_factory_shows_skipped_head(
    capsys: pytest.CaptureFixture[str], ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mymodels.py").write_text(
        "from ckptflow.demo import Classifier\n\ndef three():\n    return Classifier(classes=3)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run(capsys, "diff", str(ckpt), "--model", "mymodels:three", "--json")
    d = json.loads(out)
    assert code == 0
    assert {s["key"] for s in d["skipped"]} == {"head.weight", "head.bias"}


def test_diff_of_two_checkpoints_loads_only_the_shared_tensor(
    capsys: pytest.CaptureFixture[str], ckpt: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.pt"
    torch.save({"encoder.0.weight": torch.zeros(32, 16), "extra.weight": torch.zeros(2)}, other)
    code, out, _ = run(capsys, "diff", str(ckpt), str(other), "--json")
    d = json.loads(out)
    assert code == 0
    assert d["load"] == ["encoder.0.weight"]
    assert d["kept_initialisation"] == ["extra.weight"]
    assert {s["reason"] for s in d["skipped"]} == {"not in model"}


def test_fetch_missing_file_exits_with_not_found_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "fetch", str(tmp_path / "missing.ckpt"))
    assert code == EXIT_CODES["not_found"]
    assert "not found" in err


def test_fetch_json_prints_path(capsys: pytest.CaptureFixture[str], ckpt: Path) -> None:
    code, out, _ = run(capsys, "fetch", str(ckpt), "--json")
    assert code == 0
    assert json.loads(out)["path"] == str(ckpt)


def test_cache_ls_on_empty_cache(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "cache", "ls", "--json", "--cache-dir", str(tmp_path / "c"))
    assert code == 0
    assert json.loads(out)["entries"] == []


def test_catalog_lists_sources_strategies_transforms(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "catalog", "--json")
    d = json.loads(out)
    assert code == 0
    assert {"weights_only", "warm_start", "cold_start", "transfer_learning"} <= set(d["strategies"])
    assert "strip_prefix" in d["transforms"]
