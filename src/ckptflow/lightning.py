"""Lightning integration: load into a ``LightningModule`` from any source, and resume from any source.

Lightning owns the loop state (epochs, steps, callbacks, loops), so the two jobs are split:

* ``CkptflowLoad`` is a ``Callback`` that applies a ckptflow load (weights, freeze, transforms) to the
  module in ``setup``, before ``configure_optimizers`` runs, so the optimizer sees what is frozen.
* ``resolve`` turns any reference into a local path through the ckptflow cache, for
  ``trainer.fit(model, ckpt_path=resolve("s3://…"))``: Lightning then restores everything itself.

Both are exception edges, because Lightning's API expects exceptions: a failure is raised as
``ckptflow.CheckpointError`` carrying the failure value (``exc.error.kind``, ``exc.error.message``).
Needs the ``lightning`` package (or the older ``pytorch_lightning``): ``pip install 'ckptflow[lightning]'``.
``import ckptflow`` never imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ckptflow.api import Ref, TransformLike, load
from ckptflow.config.converter import parse_config
from ckptflow.config.schema import CheckpointConfig
from ckptflow.context import LoadReport
from ckptflow.errors import CheckpointError, InvalidConfig, unwrap
from ckptflow.fetch import fetch
from ckptflow.report import format_report
from ckptflow.stages.strategies import STRATEGIES

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
    from lightning.pytorch.utilities import rank_zero_info
except ModuleNotFoundError:
    try:
        from pytorch_lightning import Callback, LightningModule, Trainer  # type: ignore[assignment]
        from pytorch_lightning.utilities import rank_zero_info
    except ModuleNotFoundError as missing:
        raise ModuleNotFoundError(
            "ckptflow.lightning needs Lightning; install it with: pip install 'ckptflow[lightning]'"
        ) from missing

__all__ = ["CALLBACK_STRATEGIES", "CkptflowLoad", "resolve"]

CALLBACK_STRATEGIES: tuple[str, ...] = tuple(name for name, row in STRATEGIES.items() if not row.optimizer)
"""Strategies the callback applies: those that restore no optimizer state. An exact resume
(``warm_start``) is Lightning's own ``ckpt_path=resolve(ref)``, which also restores loops and callbacks."""

_LIGHTNING_OWNED = ("optimizer", "scheduler")
_STAGE = "lightning"


def resolve(ref: Ref, **fetch_kwargs: Any) -> str:
    """The local path of ``ref`` (path, URI or source config), fetched and verified through the cache.

    For ``trainer.fit(model, ckpt_path=resolve(ref))``. Keyword arguments go to ``ckptflow.fetch``
    (``cache_dir``, ``sha256``, ``offline``, ``progress``, …). Raises ``CheckpointError`` on failure.
    """
    return str(unwrap(fetch(ref, **fetch_kwargs)))


def _problems(strategy: str, load_kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """Why the callback cannot apply this request (pure)."""
    strategy_problem = (
        ()
        if strategy in CALLBACK_STRATEGIES
        else (
            f"strategy: {strategy!r} restores training state that Lightning owns; "
            "resume with trainer.fit(model, ckpt_path=ckptflow.lightning.resolve(ref)) instead"
            if strategy in STRATEGIES
            else f"strategy: unknown strategy {strategy!r}; the callback takes one of "
            f"{', '.join(CALLBACK_STRATEGIES)}",
        )
    )
    owned = tuple(
        f"{name}: Lightning creates it in configure_optimizers; the callback loads weights only"
        for name in _LIGHTNING_OWNED
        if name in load_kwargs
    )
    return (*strategy_problem, *owned)


class CkptflowLoad(Callback):
    """Apply a ckptflow load to the module (or its submodule ``target``) once, at the first ``setup``.

    ``CkptflowLoad("s3://bucket/backbone.ckpt", strategy="transfer_learning", freeze=["encoder"])``.
    Other keyword arguments go to ``ckptflow.load`` (``cache_dir``, ``sha256``, ``strict``, ``unfreeze``,
    ``allow_globals``, ``source_options``, …). A ``CheckpointConfig`` ref brings its own strategy,
    freeze and transforms. The ``LoadReport`` is kept in ``report``. Raises ``CheckpointError``:
    at construction for a request it cannot apply, in ``setup`` when the load fails.
    """

    def __init__(
        self,
        ref: Ref,
        *,
        strategy: str = "weights_only",
        freeze: Sequence[str] = (),
        transforms: Sequence[TransformLike] = (),
        target: str | None = None,
        **load_kwargs: Any,
    ) -> None:
        super().__init__()
        effective = ref.strategy if isinstance(ref, CheckpointConfig) else strategy
        problems = _problems(effective, load_kwargs)
        if problems:
            raise CheckpointError(InvalidConfig(problems=problems, stage=_STAGE))
        self.ref = ref
        self.strategy = effective
        self.freeze = tuple(freeze)
        self.transforms = tuple(transforms)
        self.target = target
        self.load_kwargs = dict(load_kwargs)
        self.report: LoadReport | None = None

    @classmethod
    def from_config(cls, config: object, **kwargs: Any) -> CkptflowLoad:
        """The callback for a config block (mapping, YAML path or DictConfig); raises ``CheckpointError``."""
        return cls(unwrap(parse_config(config)), **kwargs)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Load once, whatever the stage, so ``trainer.test`` after ``trainer.fit`` keeps trained weights."""
        if self.report is not None:
            return
        report = unwrap(
            load(
                self._module(pl_module),
                self.ref,
                strategy=self.strategy,
                freeze=self.freeze,
                transforms=self.transforms,
                **self.load_kwargs,
            )
        )
        self.report = report
        rank_zero_info(f"ckptflow load into {type(pl_module).__name__}:\n{format_report(report)}")

    def _module(self, pl_module: LightningModule) -> torch.nn.Module:
        if self.target is None:
            return pl_module
        try:
            return pl_module.get_submodule(self.target)
        except AttributeError:
            modules = ", ".join(name for name, _ in pl_module.named_children()) or "(none)"
            problem = f"target: the module has no submodule {self.target!r}; its children: {modules}"
            raise CheckpointError(InvalidConfig(problems=(problem,), stage=_STAGE)) from None
