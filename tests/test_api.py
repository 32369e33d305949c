"""The public entry points end to end on local files: load, load_from_config, fetch, apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from returns.result import Failure, Success

import ckptflow as cf
from ckptflow.demo import Classifier, save_lightning_checkpoint
from ckptflow.errors import (
    ChecksumMismatch,
    CorruptCheckpoint,
    FreezeTargetNotFound,
    IncompatibleState,
    InvalidConfig,
    NotFound,
    NothingMatched,
    UnsafeCheckpoint,
)


@pytest.fixture
def lightning_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "model.ckpt"
    save_lightning_checkpoint(path, epoch=42, step=10000)
    return path


def _params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def _failure(result: object) -> object:
    assert isinstance(result, Failure), result
    return result.failure()


def test_public_all_lists_exactly_the_contract_names() -> None:
    contract = {"fetch", "load", "load_from_config", "parse_config", "pipeline", "apply", "unwrap"}
    assert contract <= set(cf.__all__)
    assert all(hasattr(cf, name) for name in cf.__all__)


def test_weights_only_load_of_lightning_checkpoint_strips_model_prefix(lightning_ckpt: Path) -> None:
    model = Classifier()
    report = cf.unwrap(cf.load(model, lightning_ckpt))
    saved = torch.load(lightning_ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k.removeprefix("model.")], v) for k, v in saved.items())
    assert report.strategy == "weights_only"
    assert len(report.loaded) == len(saved)
    assert report.format == "lightning"


def test_cold_start_reports_zero_counters_whatever_the_checkpoint_said(lightning_ckpt: Path) -> None:
    report = cf.unwrap(cf.load(Classifier(), lightning_ckpt, strategy="cold_start"))
    assert (report.epoch, report.global_step) == (0, 0)
    assert report.source is not None and "model.ckpt" in report.source
    assert not report.optimizer_restored


def test_warm_start_restores_counters_optimizer_and_scheduler(lightning_ckpt: Path) -> None:
    model = Classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    report = cf.unwrap(cf.load(model, lightning_ckpt, strategy="warm_start", optimizer=opt, scheduler=sched))
    assert (report.epoch, report.global_step) == (42, 10000)
    assert report.optimizer_restored and report.scheduler_restored
    saved = torch.load(lightning_ckpt, weights_only=True)
    assert sched.state_dict()["last_epoch"] == saved["lr_schedulers"][0]["last_epoch"]
    assert len(opt.state) == len(list(model.parameters()))


def test_transfer_learning_into_new_head_skips_exactly_the_head_and_freezes_encoder(
    lightning_ckpt: Path,
) -> None:
    model = Classifier(classes=3)
    before_head = model.head.weight.detach().clone()
    report = cf.unwrap(cf.load(model, lightning_ckpt, strategy="transfer_learning", freeze=["encoder"]))
    assert {s.key for s in report.skipped} == {"head.weight", "head.bias"}
    assert any(s.reason == "shape mismatch: ckpt (10, 32) vs model (3, 32)" for s in report.skipped)
    assert torch.equal(model.head.weight, before_head)
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert [f.module for f in report.frozen] == ["encoder"]


def test_strict_weights_only_into_changed_head_is_incompatible_and_leaves_model_unchanged(
    lightning_ckpt: Path,
) -> None:
    model = Classifier(classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    err = _failure(cf.load(model, lightning_ckpt))
    assert isinstance(err, IncompatibleState)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_nothing_matched_hints_at_the_prefix(tmp_path: Path) -> None:
    path = tmp_path / "prefixed.pt"
    torch.save({f"backbone.{k}": v for k, v in Classifier().state_dict().items()}, path)
    err = _failure(cf.load(Classifier(), path, strategy="transfer_learning"))
    assert isinstance(err, NothingMatched)
    assert "backbone." in err.message


def test_transforms_given_as_config_mappings_are_applied(tmp_path: Path) -> None:
    path = tmp_path / "prefixed.pt"
    torch.save({f"backbone.{k}": v for k, v in Classifier().state_dict().items()}, path)
    transforms = [{"name": "strip_prefix", "args": {"prefix": "backbone."}}]
    report = cf.unwrap(cf.load(Classifier(), path, transforms=transforms))
    assert len(report.loaded) == len(Classifier().state_dict())


def test_unknown_freeze_target_offers_close_matches(lightning_ckpt: Path) -> None:
    err = _failure(cf.load(Classifier(), lightning_ckpt, freeze=["encodr"]))
    assert isinstance(err, FreezeTargetNotFound)
    assert "encoder" in err.close_matches


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    assert isinstance(_failure(cf.load(Classifier(), tmp_path / "nope.ckpt")), NotFound)


def test_corrupt_file_is_corrupt_checkpoint(lightning_ckpt: Path) -> None:
    lightning_ckpt.write_bytes(lightning_ckpt.read_bytes()[:200])
    assert isinstance(_failure(cf.load(Classifier(), lightning_ckpt)), CorruptCheckpoint)


def test_pickle_that_calls_os_system_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": Evil()}, path)
    err = _failure(cf.load(Classifier(), path))
    assert isinstance(err, UnsafeCheckpoint)
    assert any("system" in g for g in err.globals)
    assert not marker.exists()


def test_wrong_sha256_for_local_file_is_checksum_mismatch(lightning_ckpt: Path) -> None:
    assert isinstance(_failure(cf.load(Classifier(), lightning_ckpt, sha256="0" * 64)), ChecksumMismatch)


def test_load_from_config_reads_strategy_and_freeze(lightning_ckpt: Path) -> None:
    config = {
        "source": {"type": "local", "path": str(lightning_ckpt)},
        "strategy": "transfer_learning",
        "freeze": ["encoder"],
    }
    model = Classifier(classes=3)
    report = cf.unwrap(cf.load_from_config(model, config))
    assert report.strategy == "transfer_learning"
    assert [f.module for f in report.frozen] == ["encoder"]


def test_load_from_config_reports_bad_config_with_paths(lightning_ckpt: Path) -> None:
    err = _failure(cf.load_from_config(Classifier(), {"source": {"type": "s3"}, "stratgy": "x"}))
    assert isinstance(err, InvalidConfig)
    assert any("bucket" in p for p in err.problems)


def test_fetch_of_local_file_returns_the_file_itself(lightning_ckpt: Path) -> None:
    assert cf.fetch(lightning_ckpt) == Success(lightning_ckpt)


def test_apply_is_public_and_mutates_only_through_a_plan(lightning_ckpt: Path) -> None:
    src = Classifier()
    plan = cf.LoadPlan(strategy="weights_only", assign=dict(src.state_dict()))
    target = Classifier()
    report = cf.unwrap(cf.apply(target, plan))
    assert _params_equal(src, target)
    assert len(report.loaded) == len(plan.assign)


def test_warm_start_resume_is_bit_identical_to_uninterrupted_training(lightning_ckpt: Path) -> None:
    from ckptflow.demo import _train, _training_objects

    torch.manual_seed(0)
    uninterrupted = Classifier()
    opt, sched = _training_objects(uninterrupted)
    _train(uninterrupted, opt, sched, steps=5, seed=1)
    _train(uninterrupted, opt, sched, steps=3, seed=2)

    resumed = Classifier()
    opt2, sched2 = _training_objects(resumed)
    cf.unwrap(cf.load(resumed, lightning_ckpt, strategy="warm_start", optimizer=opt2, scheduler=sched2))
    _train(resumed, opt2, sched2, steps=3, seed=2)
    assert _params_equal(uninterrupted, resumed)


def test_fetch_many_returns_results_in_order_including_failures(lightning_ckpt: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.ckpt"
    results = cf.fetch_many([lightning_ckpt, missing, lightning_ckpt], max_concurrency=2)
    assert results[0] == Success(lightning_ckpt) and results[2] == Success(lightning_ckpt)
    assert isinstance(_failure(results[1]), NotFound)


def test_load_pipeline_is_a_value_that_can_be_edited_by_stage_name(lightning_ckpt: Path) -> None:
    from ckptflow.api import Acquire, fetch_stage, load_pipeline

    base = cf.unwrap(load_pipeline(fetch_stage(lightning_ckpt, Acquire())))
    assert base.names[:2] == ("fetch", "read") and base.names[-2:] == ("plan", "freeze")
    without_strip = base.without("auto_strip_prefix")
    ctx = cf.Context(spec=cf.ModelSpec.from_model(Classifier()), options=cf.LoadOptions(strict=False))
    plan = cf.unwrap(without_strip(ctx)).plan
    assert plan is not None and plan.assign == {}
    assert {s.reason for s in plan.skipped} == {"not in model"}


def test_a_checkpoint_config_as_ref_brings_its_strategy_and_freeze(lightning_ckpt: Path) -> None:
    config = cf.unwrap(
        cf.parse_config({"source": str(lightning_ckpt), "strategy": "cold_start", "freeze": ["encoder"]})
    )
    report = cf.unwrap(cf.load(Classifier(), config))
    assert (report.strategy, report.epoch) == ("cold_start", 0)
    assert [f.module for f in report.frozen] == ["encoder"]


def test_assign_loads_into_a_model_built_on_meta_without_allocating_it(tmp_path: Path) -> None:
    saved = Classifier(classes=10)
    torch.save(saved.state_dict(), tmp_path / "w.pt")
    with torch.device("meta"):
        model = Classifier(classes=10)
    report = cf.unwrap(cf.load(model, tmp_path / "w.pt", assign=True))
    assert report.loaded and not report.skipped
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert _params_equal(model, saved)


def test_a_meta_model_without_assign_is_refused_and_left_on_meta(tmp_path: Path) -> None:
    torch.save(Classifier(classes=10).state_dict(), tmp_path / "w.pt")
    with torch.device("meta"):
        model = Classifier(classes=10)
    assert isinstance(_failure(cf.load(model, tmp_path / "w.pt")), InvalidConfig)
    assert all(p.device.type == "meta" for p in model.parameters())
