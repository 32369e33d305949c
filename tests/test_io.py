"""Reading checkpoint files safely: what loads, what is refused (and never runs), what is corrupt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from returns.result import Failure, Result, Success
from safetensors.torch import save_file

from ckptflow.context import Context, LoadOptions, state_equal, tree_equal
from ckptflow.errors import CorruptCheckpoint, Error, InvalidConfig, NotFound, StageFailed, UnsafeCheckpoint
from ckptflow.io import read, read_checkpoint, release_mapped_pages, sniff
from ckptflow.pipeline import pipeline
from ckptflow.stages.formats import FORMAT_STAGES, SafetensorsPayload


class RunsShell:
    """Unpickling this runs ``touch <marker>`` through os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


class RunsSubprocess(RunsShell):
    def __reduce__(self) -> Any:
        return (subprocess.call, (["touch", str(self.marker)],))


class RunsEval(RunsShell):
    def __reduce__(self) -> Any:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class Box:
    """A harmless custom class: loading it needs its global allowed."""

    def __init__(self, value: int) -> None:
        self.value = value


BOX = f"{Box.__module__}.{Box.__qualname__}"
EVIL = [
    (RunsShell, "posix.system" if os.name == "posix" else "nt.system"),
    (RunsSubprocess, "subprocess.call"),
    (RunsEval, "builtins.eval"),
]


def weights() -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.randn(4, 3), "layer.bias": torch.zeros(4), "steps": torch.tensor([7])}


def save(obj: object, path: Path, *, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def failure(result: Result[Any, Error]) -> Error:
    assert isinstance(result, Failure), result
    return result.failure()


# -- reading -------------------------------------------------------------------------------------------


def test_zip_checkpoint_reads_back_equal(tmp_path: Path) -> None:
    sd = weights()
    loaded = read_checkpoint(save(sd, tmp_path / "ckpt.pt")).unwrap()
    assert state_equal(loaded, sd)


def test_zip_checkpoint_is_memory_mapped(tmp_path: Path) -> None:
    path = save(weights(), tmp_path / "mapped.pt").resolve()
    loaded = read_checkpoint(path).unwrap()
    with open("/proc/self/maps") as maps:
        assert str(path) in maps.read()
    assert loaded["layer.weight"].shape == (4, 3)


def test_mmap_false_reads_into_memory(tmp_path: Path) -> None:
    path = save(weights(), tmp_path / "in_memory.pt").resolve()
    loaded = read_checkpoint(path, mmap=False).unwrap()
    with open("/proc/self/maps") as maps:
        assert str(path) not in maps.read()
    assert loaded["steps"].item() == 7


def test_legacy_checkpoint_reads_without_mmap(tmp_path: Path) -> None:
    sd = weights()
    path = save(sd, tmp_path / "legacy.pt", legacy=True)
    assert sniff(path).unwrap().container == "legacy"
    assert state_equal(read_checkpoint(path).unwrap(), sd)


def test_safetensors_file_reads_tensors_and_metadata(tmp_path: Path) -> None:
    sd = weights()
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt", "note": "hi"})
    payload = read_checkpoint(tmp_path / "model.safetensors").unwrap()
    assert isinstance(payload, SafetensorsPayload)
    assert tree_equal(dict(payload.tensors), sd)  # safetensors stores keys sorted, not in save order
    assert payload.metadata == {"format": "pt", "note": "hi"}


def test_safetensors_is_recognised_by_its_header_whatever_the_name(tmp_path: Path) -> None:
    save_file(weights(), tmp_path / "weights.bin")
    assert sniff(tmp_path / "weights.bin").unwrap().container == "safetensors"
    assert isinstance(read_checkpoint(tmp_path / "weights.bin").unwrap(), SafetensorsPayload)


def test_missing_safetensors_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_file(weights(), tmp_path / "model.safetensors")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    err = failure(read_checkpoint(tmp_path / "model.safetensors"))
    assert isinstance(err, StageFailed)
    assert "pip install safetensors" in err.message


# -- refusing unsafe pickles -----------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize(("evil", "global_name"), EVIL, ids=[name for _, name in EVIL])
def test_payload_that_would_run_code_is_refused_naming_the_global_and_never_runs(
    tmp_path: Path, evil: type[RunsShell], global_name: str, legacy: bool
) -> None:
    marker = tmp_path / "pwned"
    path = save({"weights": weights(), "payload": evil(marker)}, tmp_path / "evil.pt", legacy=legacy)
    err = failure(read_checkpoint(path))
    assert isinstance(err, UnsafeCheckpoint)
    assert global_name in err.globals
    assert global_name in err.message and "allow_globals" in err.message
    assert not marker.exists()


@pytest.mark.parametrize(("evil", "global_name"), EVIL, ids=[name for _, name in EVIL])
def test_the_refused_payloads_really_run_code_when_trusted(
    tmp_path: Path, evil: type[RunsShell], global_name: str
) -> None:
    marker = tmp_path / "ran"
    assert isinstance(read_checkpoint(save(evil(marker), tmp_path / "evil.pt"), trusted=True), Success)
    assert marker.exists()


def test_every_unsafe_global_is_named_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = save([RunsShell(marker), RunsEval(marker), Box(1)], tmp_path / "evil.pt")
    err = failure(read_checkpoint(path))
    assert isinstance(err, UnsafeCheckpoint)
    assert set(err.globals) >= {"builtins.eval", BOX}
    assert not marker.exists()


def test_allowing_a_dangerous_global_by_name_still_refuses_blocked_modules(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = save(RunsShell(marker), tmp_path / "evil.pt", legacy=True)
    assert isinstance(failure(read_checkpoint(path, allow_globals=["os.system"])), UnsafeCheckpoint)
    assert not marker.exists()


def test_custom_class_is_refused_by_default(tmp_path: Path) -> None:
    err = failure(read_checkpoint(save({"box": Box(3)}, tmp_path / "box.pt")))
    assert isinstance(err, UnsafeCheckpoint) and err.globals == (BOX,)


@pytest.mark.parametrize("allowed", [BOX, Box], ids=["by name", "by object"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_allow_globals_admits_exactly_that_class_for_that_call_only(
    tmp_path: Path, allowed: object, legacy: bool
) -> None:
    path = save({"box": Box(3), "w": torch.ones(2)}, tmp_path / "box.pt", legacy=legacy)
    loaded = read_checkpoint(path, allow_globals=[allowed]).unwrap()
    assert isinstance(loaded["box"], Box) and loaded["box"].value == 3
    assert isinstance(failure(read_checkpoint(path)), UnsafeCheckpoint)
    assert Box not in torch.serialization.get_safe_globals()


def test_allow_globals_leaves_globals_the_caller_registered_in_place(tmp_path: Path) -> None:
    path = save({"box": Box(3)}, tmp_path / "box.pt")
    with torch.serialization.safe_globals([Box]):
        assert read_checkpoint(path, allow_globals=[Box]).unwrap()["box"].value == 3
        assert Box in torch.serialization.get_safe_globals()


def test_allow_global_that_cannot_be_imported_is_invalid_config(tmp_path: Path) -> None:
    path = save(weights(), tmp_path / "ckpt.pt")
    err = failure(read_checkpoint(path, allow_globals=[f"{__name__}.NoSuchClass"]))
    assert isinstance(err, InvalidConfig) and f"{__name__}.NoSuchClass" in err.message


def test_trusted_loads_custom_objects_for_that_call_only(tmp_path: Path) -> None:
    path = save({"box": Box(5)}, tmp_path / "box.pt")
    assert read_checkpoint(path, trusted=True).unwrap()["box"].value == 5
    assert isinstance(failure(read_checkpoint(path)), UnsafeCheckpoint)


# -- bad files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("keep", [0.5, 0.97], ids=["half", "tail cut"])
def test_truncated_checkpoint_is_corrupt(tmp_path: Path, legacy: bool, keep: float) -> None:
    data = save(weights(), tmp_path / "full.pt", legacy=legacy).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * keep)])
    err = failure(read_checkpoint(cut))
    assert isinstance(err, CorruptCheckpoint)
    assert err.path == str(cut) and err.detail


def test_truncated_safetensors_is_corrupt(tmp_path: Path) -> None:
    save_file(weights(), tmp_path / "full.safetensors")
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    assert isinstance(failure(read_checkpoint(tmp_path / "cut.safetensors")), CorruptCheckpoint)


@pytest.mark.parametrize(
    "content",
    [os.urandom(2048), b"just some text\n" * 20, b"", b"PK\x03\x04" + os.urandom(200)],
    ids=["random bytes", "text", "empty", "zip magic then garbage"],
)
def test_garbage_file_is_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    err = failure(read_checkpoint(path))
    assert isinstance(err, CorruptCheckpoint)
    assert "re-download" in err.message


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    err = failure(read_checkpoint(tmp_path / "absent.pt"))
    assert isinstance(err, NotFound) and "absent.pt" in err.message


def test_a_directory_is_invalid_config_saying_to_pass_the_file(tmp_path: Path) -> None:
    err = failure(read_checkpoint(tmp_path))
    assert isinstance(err, InvalidConfig) and "directory" in err.message


# -- the read stage ---------------------------------------------------------------------------------------


def test_read_stage_sets_raw_and_records_the_size(tmp_path: Path) -> None:
    sd = weights()
    path = save(sd, tmp_path / "ckpt.pt")
    out = read(Context(path=path)).unwrap()
    assert state_equal(out.raw, sd)
    event = out.events[-1]
    assert (event.name, event.stage) == ("checkpoint.read", "read")
    assert event.data["bytes"] == path.stat().st_size
    assert event.data["container"] == "zip" and event.data["mmap"] is True


def test_read_stage_is_an_edge() -> None:
    assert read.edge and read.name == "read"


def test_read_stage_honours_allow_globals_from_options(tmp_path: Path) -> None:
    path = save({"box": Box(2)}, tmp_path / "box.pt")
    refused = failure(read(Context(path=path)))
    assert isinstance(refused, UnsafeCheckpoint) and refused.stage == "read"
    allowed = read(Context(path=path, options=LoadOptions(allow_globals=(BOX,))))
    assert allowed.unwrap().raw["box"].value == 2


def test_read_stage_honours_trusted_from_options(tmp_path: Path) -> None:
    path = save({"box": Box(2)}, tmp_path / "box.pt")
    assert read(Context(path=path, options=LoadOptions(trusted=True))).unwrap().raw["box"].value == 2


def test_read_stage_without_a_path_says_to_fetch_first() -> None:
    err = failure(read(Context()))
    assert isinstance(err, StageFailed) and "fetch" in err.message


def test_read_then_format_stages_give_a_lightning_state_dict(tmp_path: Path) -> None:
    ckpt = {
        "pytorch-lightning_version": "2.4.0",
        "epoch": 42,
        "global_step": 10000,
        "state_dict": {f"model.{k}": v for k, v in weights().items()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": []}]}],
        "lr_schedulers": [{"last_epoch": 42}],
    }
    out = read(Context(path=save(ckpt, tmp_path / "last.ckpt"))).bind(pipeline(*FORMAT_STAGES)).unwrap()
    assert out.format == "lightning"
    assert set(out.state or {}) == set(weights())
    assert out.training is not None and (out.training.epoch, out.training.global_step) == (42, 10000)


def test_read_then_format_stages_give_a_safetensors_state_dict(tmp_path: Path) -> None:
    sd = weights()
    save_file(sd, tmp_path / "model.safetensors")
    out = read(Context(path=tmp_path / "model.safetensors")).bind(pipeline(*FORMAT_STAGES)).unwrap()
    assert out.format == "safetensors"
    assert tree_equal(dict(out.state or {}), sd)


# --- releasing mapped pages after a copy -------------------------------------------------------------


def _mapped(tmp_path: Path, tensor: torch.Tensor) -> torch.Tensor:
    torch.save({"t": tensor}, tmp_path / "t.pt")
    return torch.load(tmp_path / "t.pt", mmap=True, weights_only=True)["t"]


def test_releasing_a_clean_mapped_tensor_keeps_its_values(tmp_path: Path) -> None:
    original = torch.arange(1 << 20, dtype=torch.float32)  # 4 MiB
    mapped = _mapped(tmp_path, original)
    assert torch.equal(mapped, original)  # every page touched, so resident
    released = release_mapped_pages(mapped)
    assert released > 0 if sys.platform == "linux" else released == 0  # Linux-only by design
    assert torch.equal(mapped, original)  # pages come back from the file


def test_a_mapped_tensor_written_to_is_never_released(tmp_path: Path) -> None:
    mapped = _mapped(tmp_path, torch.zeros(1 << 20))
    middle = 1 << 19  # on a whole page of the mapping (a partial first or last page is never released)
    mapped[middle] = 42.0  # a private copy-on-write page now: releasing it would lose the write
    assert release_mapped_pages(mapped) == 0
    assert mapped[middle].item() == 42.0


@pytest.mark.parametrize(
    "tensor",
    [torch.ones(1 << 20), torch.ones(16), torch.ones(1 << 20)[::2]],
    ids=["ordinary memory", "under a MiB", "not contiguous"],
)
def test_anything_but_a_large_clean_mapping_is_left_alone(tensor: torch.Tensor) -> None:
    before = tensor.clone()
    assert release_mapped_pages(tensor) == 0
    assert torch.equal(tensor, before)
