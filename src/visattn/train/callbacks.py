"""Callbacks: how code above the engine (the CLI, apps, benchmarks) hooks into a training run.

A callback is any object with the methods of :class:`Callback` (subclass it and override what you
need); the engine calls them on every process, in list order, and a callback that writes files
checks ``trainer.info.is_main`` itself. The engine knows nothing of what callbacks do (TensorBoard
pictures of attention come from ``visattn.callbacks.AttentionImages``, which the CLI adds when
``tb_images_every`` is set).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Callback"]


class Callback:
    """Base class with no-op hooks; override the ones you need.

    >>> class Count(Callback):
    ...     steps = 0
    ...     def on_step_end(self, trainer):
    ...         self.steps += 1
    >>> c = Count(); c.on_step_end(None); c.steps
    1
    """

    #: set by callbacks that render ``tb_images_every`` (the engine warns when none does)
    writes_attention_images: bool = False

    def on_train_start(self, trainer: Any) -> None:
        """After set-up (model, data, TensorBoard writer ``trainer.tb``), before the first epoch."""

    def on_step_end(self, trainer: Any) -> None:
        """After each optimiser step (``trainer.global_step`` counts them)."""

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> None:
        """After each epoch's checkpoint, with its metrics ``row``."""

    def on_train_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        """After the test evaluation, with the run's summary."""
