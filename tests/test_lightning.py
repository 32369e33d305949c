"""ckptflow.lightning with a real Trainer on CPU: resume from a remote copy, fine-tune by callback."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from attrs import frozen
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ckptflow
import ckptflow.lightning
from ckptflow import CheckpointError, SkippedKey
from ckptflow.config.schema import CheckpointConfig, LocalSource
from ckptflow.errors import FreezeTargetNotFound, InvalidConfig, NotFound
from ckptflow.lightning import CALLBACK_STRATEGIES, CkptflowLoad, resolve
from tests.fixtures.fault_server import FaultServer

pytestmark = pytest.mark.filterwarnings(
    "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning",
    "ignore:.*LeafSpec.*",
    "ignore:The dirpath has changed",
)

FEATURES, HIDDEN = 4, 8


class TinyClassifier(LightningModule):
    """An encoder and a head, trained with SGD+momentum and a StepLR (so a resume needs both states)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN))
        self.head = nn.Linear(HIDDEN, classes)
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.encoder(x)))
        return out

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> object:
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)]


def make_module(classes: int = 5, seed: int = 0) -> TinyClassifier:
    torch.manual_seed(seed)
    return TinyClassifier(classes)


def loader(classes: int = 5) -> DataLoader[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(7)
    data = TensorDataset(
        torch.randn(32, FEATURES, generator=gen), torch.randint(0, classes, (32,), generator=gen)
    )
    return DataLoader(data, batch_size=8, shuffle=False)


def make_trainer(root: Path, epochs: int, callbacks: list[object] | None = None) -> Trainer:
    return Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=True,
        deterministic=True,
        default_root_dir=root,
        callbacks=callbacks,  # type: ignore[arg-type]
    )


def saved_checkpoint(root: Path) -> Path:
    (path,) = sorted(root.glob("checkpoints/*.ckpt"))
    return path


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(autouse=True)
def restore_determinism_flag() -> Iterator[None]:
    """``deterministic=True`` switches a process-wide torch flag; put it back for the other tests."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-class classifier trained one epoch by Lightning; the checkpoint Lightning wrote."""
    root = tmp_path_factory.mktemp("pretrain")
    make_trainer(root, epochs=1).fit(make_module(classes=5), loader(5))
    return saved_checkpoint(root)


# --- resolve: resume from any source ----------------------------------------------------------------


@frozen
class ResumeRun:
    uninterrupted: TinyClassifier
    uninterrupted_trainer: Trainer
    resumed: TinyClassifier
    resumed_trainer: Trainer
    resolved: Path
    cache: Path
    checkpoint: Path
    gets: int


@pytest.fixture(scope="module")
def resume_run(tmp_path_factory: pytest.TempPathFactory, http_server_session: FaultServer) -> ResumeRun:
    """Train 4 epochs straight; train 2, serve the checkpoint over HTTP, resume to 4 from the URL."""
    root = tmp_path_factory.mktemp("resume")
    straight = make_module()
    straight_trainer = make_trainer(root / "straight", epochs=4)
    straight_trainer.fit(straight, loader())

    make_trainer(root / "first", epochs=2).fit(make_module(), loader())
    checkpoint = saved_checkpoint(root / "first")
    http_server_session.reset()
    url = http_server_session.put("runs/first/last.ckpt", checkpoint.read_bytes())

    cache = root / "cache"
    resolved = resolve(url, cache_dir=cache, progress=False)
    resumed = make_module(seed=123)  # a different init: everything must come from the checkpoint
    resumed_trainer = make_trainer(root / "resumed", epochs=4)
    resumed_trainer.fit(resumed, loader(), ckpt_path=resolved)
    gets = http_server_session.count("GET")
    http_server_session.reset()
    return ResumeRun(
        straight, straight_trainer, resumed, resumed_trainer, Path(resolved), cache, checkpoint, gets
    )


def test_resume_from_remote_copy_ends_with_the_uninterrupted_weights(resume_run: ResumeRun) -> None:
    expected, actual = weights(resume_run.uninterrupted), weights(resume_run.resumed)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_resume_from_remote_copy_continues_the_counters(resume_run: ResumeRun) -> None:
    assert resume_run.resumed_trainer.current_epoch == resume_run.uninterrupted_trainer.current_epoch == 4
    assert resume_run.resumed_trainer.global_step == resume_run.uninterrupted_trainer.global_step == 16


def test_resolve_downloads_into_the_cache(resume_run: ResumeRun) -> None:
    assert resume_run.resolved.is_relative_to(resume_run.cache)
    assert resume_run.resolved.read_bytes() == resume_run.checkpoint.read_bytes()
    assert resume_run.gets >= 1


def test_resolve_answers_a_second_time_from_the_cache(
    resume_run: ResumeRun, http_server: FaultServer
) -> None:
    url = http_server.put("runs/first/last.ckpt", resume_run.checkpoint.read_bytes())
    assert resolve(url, cache_dir=resume_run.cache, offline=True) == str(resume_run.resolved)
    assert http_server.count() == 0


def test_resolve_returns_a_local_path_as_is(pretrained: Path, tmp_path: Path) -> None:
    assert resolve(pretrained, cache_dir=tmp_path) == str(pretrained)


def test_resolve_raises_checkpoint_error_carrying_the_failure(
    http_server: FaultServer, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError) as raised:
        resolve(http_server.url("missing.ckpt"), cache_dir=tmp_path, progress=False)
    assert isinstance(raised.value.error, NotFound)


# --- the callback: fine-tune with a changed head ----------------------------------------------------


@frozen
class FineTuneRun:
    module: TinyClassifier
    callback: CkptflowLoad
    initial_head: dict[str, torch.Tensor]
    pretrained_encoder: dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def fine_tune(
    pretrained: Path, tmp_path_factory: pytest.TempPathFactory, http_server_session: FaultServer
) -> FineTuneRun:
    """A 3-class module fine-tuned two epochs from the 5-class checkpoint, served over HTTP."""
    root = tmp_path_factory.mktemp("finetune")
    http_server_session.reset()
    url = http_server_session.put("pretrained/classifier.ckpt", pretrained.read_bytes())
    callback = CkptflowLoad(
        url, strategy="transfer_learning", freeze=["encoder"], cache_dir=root / "cache", progress=False
    )
    module = make_module(classes=3, seed=1)
    initial_head = {k: v.detach().clone() for k, v in module.head.state_dict().items()}
    make_trainer(root, epochs=2, callbacks=[callback]).fit(module, loader(3))
    http_server_session.reset()
    saved = torch.load(pretrained, weights_only=True)["state_dict"]
    encoder = {k.removeprefix("encoder."): v for k, v in saved.items() if k.startswith("encoder.")}
    return FineTuneRun(module, callback, initial_head, encoder)


def test_fine_tune_freezes_the_encoder(fine_tune: FineTuneRun) -> None:
    assert all(not p.requires_grad for p in fine_tune.module.encoder.parameters())


def test_fine_tune_leaves_the_frozen_encoder_at_the_pretrained_weights(fine_tune: FineTuneRun) -> None:
    after = fine_tune.module.encoder.state_dict()
    assert after.keys() == fine_tune.pretrained_encoder.keys()
    assert all(torch.equal(after[k], fine_tune.pretrained_encoder[k]) for k in after)


def test_fine_tune_trains_the_new_head(fine_tune: FineTuneRun) -> None:
    assert all(p.requires_grad for p in fine_tune.module.head.parameters())
    after = fine_tune.module.head.state_dict()
    assert not any(torch.equal(after[k], fine_tune.initial_head[k]) for k in after)


def test_fine_tune_report_skips_the_old_head_with_the_reason(fine_tune: FineTuneRun) -> None:
    report = fine_tune.callback.report
    assert report is not None
    assert SkippedKey("head.weight", "shape mismatch: ckpt (5, 8) vs model (3, 8)") in report.skipped
    assert SkippedKey("head.bias", "shape mismatch: ckpt (5,) vs model (3,)") in report.skipped
    assert [f.module for f in report.frozen] == ["encoder"]


# --- the callback: what it accepts and how it fails -------------------------------------------------


def test_callback_loads_into_a_target_submodule(pretrained: Path, tmp_path: Path) -> None:
    callback = CkptflowLoad(
        pretrained,
        target="encoder",
        transforms=[
            {"name": "include", "args": {"globs": ["encoder.*"]}},
            {"name": "strip_prefix", "args": {"prefix": "encoder."}},
        ],
    )
    module = make_module(classes=3, seed=1)
    make_trainer(tmp_path, epochs=1, callbacks=[callback]).fit(module, loader(3))
    assert callback.report is not None
    assert sorted(callback.report.loaded) == sorted(module.encoder.state_dict())


def test_callback_loads_once_so_a_later_test_keeps_the_trained_weights(
    pretrained: Path, tmp_path: Path
) -> None:
    callback = CkptflowLoad(pretrained)
    module = make_module()
    trainer = make_trainer(tmp_path, epochs=1, callbacks=[callback])
    trainer.fit(module, loader())
    trained = weights(module)
    trainer.test(module, loader(), verbose=False)
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in trained.items())


def test_callback_takes_a_config_block(pretrained: Path) -> None:
    callback = CkptflowLoad.from_config(
        {"checkpoint": {"source": str(pretrained), "strategy": "cold_start", "freeze": ["encoder"]}}
    )
    assert callback.strategy == "cold_start"
    assert isinstance(callback.ref, CheckpointConfig)


def test_callback_refuses_warm_start_pointing_to_resolve() -> None:
    with pytest.raises(CheckpointError) as raised:
        CkptflowLoad("ckpt.pt", strategy="warm_start")
    error = raised.value.error
    assert isinstance(error, InvalidConfig)
    assert "ckpt_path=ckptflow.lightning.resolve(ref)" in error.message


def test_callback_refuses_a_warm_start_config() -> None:
    config = CheckpointConfig(source=LocalSource(path="ckpt.pt"), strategy="warm_start")
    with pytest.raises(CheckpointError, match="Lightning owns"):
        CkptflowLoad(config)


def test_callback_refuses_an_unknown_strategy_naming_the_ones_it_takes() -> None:
    with pytest.raises(CheckpointError) as raised:
        CkptflowLoad("ckpt.pt", strategy="fine_tune")
    assert all(name in raised.value.error.message for name in CALLBACK_STRATEGIES)


def test_callback_refuses_an_optimizer_lightning_creates_itself() -> None:
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match="optimizer: Lightning creates it"):
        CkptflowLoad("ckpt.pt", optimizer=optimizer)


def test_callback_failure_stops_fit_with_the_failure_value(pretrained: Path, tmp_path: Path) -> None:
    callback = CkptflowLoad(pretrained, strategy="transfer_learning", freeze=["encodr"])
    with pytest.raises(CheckpointError) as raised:
        make_trainer(tmp_path, epochs=1, callbacks=[callback]).fit(make_module(classes=3), loader(3))
    error = raised.value.error
    assert isinstance(error, FreezeTargetNotFound)
    assert "encoder" in error.close_matches


def test_callback_names_the_children_when_the_target_is_missing(pretrained: Path, tmp_path: Path) -> None:
    callback = CkptflowLoad(pretrained, target="backbone")
    with pytest.raises(CheckpointError, match="children: encoder, head"):
        make_trainer(tmp_path, epochs=1, callbacks=[callback]).fit(make_module(), loader())


# --- optional dependency ----------------------------------------------------------------------------


def test_import_ckptflow_does_not_import_lightning() -> None:
    code = "import sys, ckptflow\nprint(sorted({'lightning', 'pytorch_lightning'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture
def reimport(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ModuleType]:
    """Import ``ckptflow.lightning`` afresh with some packages made unimportable; undone after the test."""

    def run(*unimportable: str) -> ModuleType:
        for name in unimportable:
            monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.delitem(sys.modules, "ckptflow.lightning")
        monkeypatch.setattr(ckptflow, "lightning", ckptflow.lightning)
        return importlib.import_module("ckptflow.lightning")

    return run


def test_integration_falls_back_to_pytorch_lightning(reimport: Callable[..., ModuleType]) -> None:
    import pytorch_lightning

    module = reimport("lightning", "lightning.pytorch")
    assert issubclass(module.CkptflowLoad, pytorch_lightning.Callback)


def test_integration_without_lightning_says_how_to_install_it(reimport: Callable[..., ModuleType]) -> None:
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'ckptflow\[lightning\]'"):
        reimport("lightning", "lightning.pytorch", "pytorch_lightning")
