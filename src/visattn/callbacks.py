"""Training callbacks that join the engine (``visattn.train``) and the pictures (``visattn.viz``).

An app-level module, like the CLI: the engine knows only the :class:`~visattn.train.callbacks.Callback`
hooks, and ``viz`` only tensors and modules; this file wires one to the other.

* :class:`AttentionImages`: every ``every`` steps (default: the run's ``tb_images_every``), render
  the attention views of a fixed batch (the first validation images) into the run's TensorBoard.
  Rendering must not change training: it runs in ``eval()`` mode (mode restored), inside
  ``torch.random.fork_rng`` and between optimiser steps (see ``visattn.viz.tensorboard``).
"""

from __future__ import annotations

from typing import Any

from visattn.train.callbacks import Callback
from visattn.train.config import TrainConfig
from visattn.viz.tensorboard import AttentionImageLogger

__all__ = ["AttentionImages", "default_callbacks"]


class AttentionImages(Callback):
    """Attention views of the run's first ``images`` validation images in TensorBoard every ``every`` steps.

    ``every=None`` takes the run's ``tb_images_every``. Needs ``tensorboard=True``; rank 0 only.

    >>> AttentionImages(every=100).writes_attention_images
    True
    """

    writes_attention_images = True

    def __init__(self, every: int | None = None, *, images: int = 8, show: int = 4) -> None:
        self.every, self.images, self.show = every, images, show
        self.logger: AttentionImageLogger | None = None

    def on_train_start(self, trainer: Any) -> None:
        every = self.every or trainer.cfg.tb_images_every
        if not trainer.info.is_main or trainer.tb is None or not every:
            return
        x, y = trainer.fixed_batch(self.images)
        names = getattr(trainer.splits, "class_names", None)
        self.logger = AttentionImageLogger(x, y, every=every, class_names=names, show=self.show)

    def on_step_end(self, trainer: Any) -> None:
        if self.logger is not None:
            self.logger.maybe_log(trainer.tb, trainer.model, trainer.global_step)


def default_callbacks(cfg: TrainConfig) -> list[Callback]:
    """The callbacks the ``visattn`` command adds for ``cfg``: :class:`AttentionImages` when
    ``tb_images_every`` is set.

    >>> default_callbacks(TrainConfig(tensorboard=True, tb_images_every=50))[0].every is None
    True
    """
    return [AttentionImages()] if cfg.tb_images_every else []
