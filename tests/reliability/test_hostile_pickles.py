"""Hostile pickles are refused with UnsafeCheckpoint, and their side effect never happens.

Each payload, unpickled, creates a marker file. Every refusal test checks the marker is absent; a
control test loads the same payload with ``trusted=True`` and sees the marker appear, so the payloads
are known to be real. Paths in: ``read_checkpoint``, ``ckptflow.load`` of a local file, and of a URL.
"""

from __future__ import annotations

import functools
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

import ckptflow
from ckptflow.errors import CorruptCheckpoint, UnsafeCheckpoint
from ckptflow.io import read_checkpoint

SYSTEM = "posix.system" if os.name == "posix" else "nt.system"


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


class Payload:
    """Unpickling an instance runs something that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        raise NotImplementedError


class ViaExec(Payload):
    def __reduce__(self) -> Any:
        return (exec, (_touch_code(self.marker),))


class ViaPopen(Payload):
    def __reduce__(self) -> Any:
        return (subprocess.Popen, (["touch", str(self.marker)],))


class ViaCheckOutput(Payload):
    def __reduce__(self) -> Any:
        return (subprocess.check_output, (["touch", str(self.marker)],))


class _Compiled(Payload):
    def __reduce__(self) -> Any:
        return (compile, (_touch_code(self.marker), "<payload>", "exec"))


class ViaNestedReduce(Payload):
    """``eval(compile(...))``: the argument of one reduce is itself a reduce."""

    def __reduce__(self) -> Any:
        return (eval, (_Compiled(self.marker),))


class ViaPartial(Payload):
    """The callable is a ``functools.partial`` of ``os.system``, rebuilt from its own state."""

    def __reduce__(self) -> Any:
        return (functools.partial(os.system, f"touch {self.marker}"), ())


class ViaInnerPickle(Payload):
    """A pickle inside the pickle: ``pickle.loads`` of a second payload."""

    def __reduce__(self) -> Any:
        inner = pickle.dumps(ViaExec(self.marker))
        return (pickle.loads, (inner,))


class ViaTorchSave(Payload):
    """torch's own writer, turned into a file-creating side effect."""

    def __reduce__(self) -> Any:
        return (torch.save, ({"written": True}, str(self.marker)))


class ViaTorchLoad(Payload):
    """torch's own reader with weights_only=False on a second, hostile file."""

    def __reduce__(self) -> Any:
        inner = self.marker.with_suffix(".inner.pt")
        torch.save(ViaExec(self.marker), inner)
        return (functools.partial(torch.load, str(inner), weights_only=False), ())


class ViaGetattrChain(Payload):
    """``getattr(__import__('os'), 'system')`` assembled from harmless-looking builtins."""

    def __reduce__(self) -> Any:
        return (_Call(), (f"touch {self.marker}",))


class _Call:
    """Stands for ``os.system`` at pickling time (a reduce needs a callable); unpickles as the real one."""

    def __call__(self, *args: object) -> None:
        raise AssertionError("only ever called after unpickling, as os.system")

    def __reduce__(self) -> Any:
        return (getattr, (_Import(), "system"))


class _Import:
    def __reduce__(self) -> Any:
        return (__import__, ("os",))


PAYLOADS: dict[str, tuple[type[Payload], str]] = {
    "exec": (ViaExec, "builtins.exec"),
    "subprocess.Popen": (ViaPopen, "subprocess.Popen"),
    "subprocess.check_output": (ViaCheckOutput, "subprocess.check_output"),
    "nested reduce": (ViaNestedReduce, "builtins.eval"),
    "functools.partial": (ViaPartial, "functools.partial"),
    "pickle in a pickle": (ViaInnerPickle, "pickle.loads"),
    "torch.save": (ViaTorchSave, "torch.serialization.save"),
    "torch.load": (ViaTorchLoad, "functools.partial"),
    "getattr chain": (ViaGetattrChain, "builtins.getattr"),
}
IDS = list(PAYLOADS)


def checkpoint(payload: Payload, path: Path, *, legacy: bool = False) -> Path:
    """A plausible checkpoint with the payload hidden a few levels down."""
    state = {"model_state_dict": {"w": torch.ones(2, 2)}, "meta": [{"note": "fine", "x": payload}]}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "side-effect"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("name", IDS)
def test_a_hostile_pickle_is_refused_and_never_runs(tmp_path, marker, name, legacy):
    payload, culprit = PAYLOADS[name]
    path = checkpoint(payload(marker), tmp_path / "evil.pt", legacy=legacy)
    error = read_checkpoint(path).failure()
    assert isinstance(error, UnsafeCheckpoint)
    assert error.globals
    if not legacy:
        assert culprit in error.globals
    assert not marker.exists()


@pytest.mark.parametrize("name", IDS)
def test_each_payload_really_runs_when_the_file_is_trusted(tmp_path, marker, name):
    payload, _ = PAYLOADS[name]
    loaded = read_checkpoint(checkpoint(payload(marker), tmp_path / "evil.pt"), trusted=True).unwrap()
    result = loaded["meta"][0]["x"]
    if isinstance(result, subprocess.Popen):
        result.wait()
    assert marker.exists()


@pytest.mark.parametrize("name", IDS)
def test_load_refuses_a_hostile_checkpoint_and_leaves_the_model_untouched(tmp_path, marker, name):
    payload, _ = PAYLOADS[name]
    path = checkpoint(payload(marker), tmp_path / "evil.pt")
    model = torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    error = ckptflow.load(model, str(path)).failure()
    assert isinstance(error, UnsafeCheckpoint) and error.stage == "read"
    assert not marker.exists()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_hostile_checkpoint_served_over_http_is_refused(http_server, tmp_path, marker):
    evil = checkpoint(ViaPartial(marker), tmp_path / "evil.pt")
    url = http_server.put("evil.pt", evil.read_bytes())
    error = ckptflow.load(torch.nn.Linear(2, 2), url, cache_dir=tmp_path / "cache").failure()
    assert isinstance(error, UnsafeCheckpoint)
    assert not marker.exists()


@pytest.mark.parametrize("trusted", [False, True])
def test_a_bare_pickle_without_torch_framing_is_never_unpickled(tmp_path, marker, trusted):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(ViaExec(marker)))
    assert isinstance(read_checkpoint(path, trusted=trusted).failure(), CorruptCheckpoint)
    assert not marker.exists()


# --- allowing globals is explicit and scoped to one call -------------------------------------------


class Harmless:
    """A custom class a user may choose to allow."""

    def __init__(self, value: int) -> None:
        self.value = value


HARMLESS = f"{Harmless.__module__}.{Harmless.__qualname__}"


def test_allowing_one_harmless_global_does_not_admit_a_payload_beside_it(tmp_path, marker):
    path = tmp_path / "mixed.pt"
    torch.save({"ok": Harmless(1), "bad": ViaExec(marker)}, path)
    error = read_checkpoint(path, allow_globals=[HARMLESS]).failure()
    assert isinstance(error, UnsafeCheckpoint)
    assert error.globals == ("builtins.exec",)
    assert not marker.exists()


def test_an_allowed_global_is_allowed_for_that_call_only(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"ok": Harmless(7)}, path)
    assert read_checkpoint(path, allow_globals=[HARMLESS]).unwrap()["ok"].value == 7
    later = read_checkpoint(path).failure()
    assert isinstance(later, UnsafeCheckpoint) and later.globals == (HARMLESS,)


def test_trust_is_for_that_call_only(tmp_path, marker):
    path = checkpoint(ViaExec(marker), tmp_path / "evil.pt")
    read_checkpoint(path, trusted=True)
    marker.unlink()
    assert isinstance(read_checkpoint(path).failure(), UnsafeCheckpoint)
    assert not marker.exists()


def test_load_with_allow_globals_admits_them_for_that_load_only(tmp_path):
    path = tmp_path / "custom.pt"
    weights = torch.nn.Linear(2, 2).state_dict()
    torch.save({"state_dict": weights, "extra": Harmless(1)}, path)
    model = torch.nn.Linear(2, 2)
    assert ckptflow.load(model, str(path), allow_globals=[HARMLESS]).unwrap().parameters_loaded == 6
    assert isinstance(ckptflow.load(model, str(path)).failure(), UnsafeCheckpoint)
