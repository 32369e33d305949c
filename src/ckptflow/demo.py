"""``ckptflow demo``: the whole product on local files and a temp cache, nothing to configure.

It trains a tiny classifier for a few steps, saves a Lightning-style checkpoint, serves it from a
loopback HTTP server, fetches it twice (the second time from the cache), and loads it four ways:
``warm_start`` (exact resume), ``cold_start``, ``transfer_learning`` into a model with a new head and
a frozen encoder, and a refused pickle that tries to run a shell command.
"""

from __future__ import annotations

import functools
import http.server
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from returns.result import Failure, Result, Success

from ckptflow.api import load
from ckptflow.context import LoadReport
from ckptflow.errors import Error
from ckptflow.fetch import fetch
from ckptflow.report import format_report, report_as_dict

__all__ = ["Classifier", "run_demo", "save_lightning_checkpoint"]


class Classifier(torch.nn.Module):
    """An encoder and a head: the shape of most fine-tuning jobs, small enough for a demo."""

    def __init__(self, classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(
            torch.nn.Linear(16, width), torch.nn.ReLU(), torch.nn.Linear(width, width)
        )
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.norm(self.encoder(x)))
        return out


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 16, generator=gen)
        y = torch.randint(0, 10, (8,), generator=gen)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()


def _training_objects(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


def save_lightning_checkpoint(path: Path, *, epoch: int = 42, step: int = 10000) -> Classifier:
    """Train a classifier briefly and save it the way Lightning does (``model.`` prefix, loops, states)."""
    torch.manual_seed(0)
    model = Classifier()
    opt, sched = _training_objects(model)
    _train(model, opt, sched, steps=5, seed=1)
    torch.save(
        {
            "pytorch-lightning_version": "2.4.0",
            "epoch": epoch,
            "global_step": step,
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "optimizer_states": [opt.state_dict()],
            "lr_schedulers": [sched.state_dict()],
            "loops": {},
            "callbacks": {},
            "hyper_parameters": {"classes": 10, "width": 32},
        },
        path,
    )
    return model


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, ("echo pwned > /dev/null",))


@contextmanager
def _serve(directory: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def _section(title: str, body: str) -> str:
    return f"\n== {title} ==\n{body}"


def run_demo(workdir: str | Path | None = None) -> Result[dict[str, Any], Error]:
    """Run every step; the text is for people, ``reports`` for ``--json``."""
    with tempfile.TemporaryDirectory(prefix="ckptflow-demo-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        return _run(root)


def _run(root: Path) -> Result[dict[str, Any], Error]:
    ckpt = root / "files" / "classifier.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    cache = root / "cache"
    trained = save_lightning_checkpoint(ckpt)
    text: list[str] = [f"checkpoint saved: {ckpt} ({ckpt.stat().st_size:,d} bytes), cache: {cache}"]
    reports: dict[str, Any] = {}

    with _serve(ckpt.parent) as base:
        url = f"{base}/{ckpt.name}"
        first = fetch(url, cache_dir=cache, progress=False)
        second = fetch(url, cache_dir=cache, progress=False)
        model = Classifier()
        opt, sched = _training_objects(model)
        warm = load(
            model, url, strategy="warm_start", optimizer=opt, scheduler=sched, cache_dir=cache, progress=False
        )
    match first, second:
        case Success(p1), Success(p2):
            text.append(
                _section("fetch over HTTP twice", f"first: {p1}\nsecond: {p2} (cache hit: same blob)")
            )
        case Failure(err), _:
            return Failure(err)
        case _, Failure(err):
            return Failure(err)

    steps: list[tuple[str, Result[LoadReport, Error]]] = [
        ("warm_start: exact resume from the cached HTTP copy", warm),
        ("cold_start: pretrained weights, counters reset", load(Classifier(), ckpt, strategy="cold_start")),
        (
            "transfer_learning: new 3-class head, encoder frozen",
            load(Classifier(classes=3), ckpt, strategy="transfer_learning", freeze=["encoder"]),
        ),
    ]
    for title, result in steps:
        match result:
            case Success(report):
                text.append(_section(title, format_report(report)))
                reports[title.split(":")[0]] = report_as_dict(report)
            case Failure(err):
                return Failure(err)
    same = all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), trained.state_dict().values(), strict=True)
    )
    text.append(f"\nresumed weights identical to the trained model: {same}")

    evil = root / "files" / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Evil()}, evil)
    refused = load(Classifier(), evil)
    match refused:
        case Failure(err):
            text.append(
                _section("a pickle that runs a shell command", f"refused ({err.kind}): {err.message}")
            )
            reports["unsafe"] = {"error": err.kind, "message": err.message}
        case Success(_):
            text.append(_section("a pickle that runs a shell command", "UNEXPECTEDLY LOADED"))
    return Success({"text": "\n".join(text), "reports": reports})
