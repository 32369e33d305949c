"""One measured load in a fresh process: ``python -m bench.load_worker MODE CKPT LAYERS DIM``.

Prints one JSON line: the load's wall seconds and the peak RSS it added (VmHWM after the load minus
VmRSS before it, with the peak reset just before the load). ``MODE make`` writes the checkpoint instead.
The model is built before the measurement: materialised and zero-filled (resident) for copying loads,
on the ``meta`` device for ``assign`` loads, which allocate nothing until the checkpoint's tensors
become the model's.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import torch

from bench.common import peak_rss_reset, proc_status


class Stack(torch.nn.Module):
    """``layers`` square linear layers: a checkpoint of ``layers * (dim * dim + dim)`` floats."""

    def __init__(self, layers: int, dim: int) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(dim, dim) for _ in range(layers))


def _meta(layers: int, dim: int) -> Stack:
    with torch.device("meta"):
        return Stack(layers, dim)


def _resident(layers: int, dim: int) -> Stack:
    model = _meta(layers, dim).to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def make(path: str, layers: int, dim: int) -> dict[str, float]:
    model = _meta(layers, dim).to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-1, 1)
    torch.save(model.state_dict(), path)
    return {"check": float(model.layers[-1].bias.sum())}


def _torch(path: str, *, mmap: bool, assign: bool) -> Callable[[torch.nn.Module], None]:
    def load(model: torch.nn.Module) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        model.load_state_dict(state, assign=assign)

    return load


def _ckptflow(path: str, *, assign: bool) -> Callable[[torch.nn.Module], None]:
    def load(model: torch.nn.Module) -> None:
        import ckptflow as cf

        cf.load(model, path, assign=assign).unwrap()

    return load


MODES: dict[str, tuple[bool, Callable[[str], Callable[[torch.nn.Module], None]]]] = {
    "torch": (False, lambda p: _torch(p, mmap=False, assign=False)),
    "torch-mmap": (False, lambda p: _torch(p, mmap=True, assign=False)),
    "ckptflow": (False, lambda p: _ckptflow(p, assign=False)),
    "torch-assign": (True, lambda p: _torch(p, mmap=False, assign=True)),
    "torch-mmap-assign": (True, lambda p: _torch(p, mmap=True, assign=True)),
    "ckptflow-assign": (True, lambda p: _ckptflow(p, assign=True)),
}


def measure(mode: str, path: str, layers: int, dim: int) -> dict[str, float | bool]:
    assign, loader = MODES[mode]
    load = loader(path)
    if mode.startswith("ckptflow"):
        import ckptflow  # noqa: F401 - imported before the measurement, like torch
    model = _meta(layers, dim) if assign else _resident(layers, dim)
    reset = peak_rss_reset()
    before = proc_status()
    started = time.perf_counter()
    load(model)
    seconds = time.perf_counter() - started
    after = proc_status()
    baseline = before["VmRSS"] if reset else before["VmHWM"]
    return {
        "seconds": seconds,
        "peak_added": max(0, after["VmHWM"] - baseline),
        "peak_reset": reset,
        "check": float(model.layers[-1].bias.sum()),
    }


def main(argv: list[str]) -> None:
    mode, path, layers, dim = argv[0], argv[1], int(argv[2]), int(argv[3])
    result = make(path, layers, dim) if mode == "make" else measure(mode, path, layers, dim)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
