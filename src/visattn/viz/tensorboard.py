"""Attention images in TensorBoard: render a model's attention views into a ``SummaryWriter``.

A library piece (writer, model and tensors in; no engine): during training the engine calls it
through a callback (``visattn.callbacks.AttentionImages``, which the ``visattn`` command adds when
``tb_images_every`` is set). Formerly ``visattn.train.tb_images`` (still importable).

``AttentionImageLogger(images, labels, every=N)`` holds a fixed batch (e.g. the first validation
images); ``logger.maybe_log(writer, model, step)`` renders every attention view of the model
(``visattn.viz.render.attention_views``: spatial masks and warp densities over the input, Grad-CAM,
warp grids, glimpse paths, per-class channel weights and gains) when ``step % every == 0`` and writes
each as an image under ``attention/<view title>``.

Rendering must not change training: it runs the model in ``eval()`` mode (restoring the mode
afterwards, so batch-norm statistics are untouched), inside ``torch.random.fork_rng`` (the
training random stream is the same with or without logging, so resumed runs stay exact), and only
between optimiser steps (Grad-CAM's backward zeroes ``.grad``, which the next step does anyway).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from visattn._validate import check_positive, check_tensor, check_type
from visattn.viz.render import attention_views

__all__ = ["AttentionImageLogger", "write_attention_images"]


def _png_to_hwc(png: bytes) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def write_attention_images(
    writer: Any,
    model: nn.Module,
    images: torch.Tensor,
    step: int,
    *,
    labels: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    tag: str = "attention",
    show: int = 4,
) -> list[str]:
    """Render ``model``'s attention on ``images`` ``(B, C, H, W)`` and add each view to ``writer``.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (anything with ``add_image``).
        model: the (unwrapped) model being trained.
        images: normalised inputs on the model's device; per-class plots use them all.
        step: the global step the images are logged at.
        labels: ``(B,)`` classes for titles and per-class plots (default: the predictions).
        class_names: names for titles and legends.
        tag: prefix of the image tags.
        show: images drawn in the overlays, warps and glimpse paths.

    Returns:
        The tags written.
    """
    check_type(model, "model", nn.Module)
    check_tensor(images, "images", ndim=4)
    check_positive(step, "step", integer=True, allow_zero=True)
    devices = [images.device.index or 0] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        views = attention_views(model, images, labels=labels, class_names=class_names, show=show)
    tags = []
    for v in views:
        name = f"{tag}/{v.title}"
        writer.add_image(name, _png_to_hwc(v.png), step, dataformats="HWC")
        tags.append(name)
    return tags


class AttentionImageLogger:
    """Writes attention images of a fixed batch every ``every`` steps.

    Args:
        images: ``(B, C, H, W)`` normalised inputs (kept; moved to the model's device when logged).
        labels: ``(B,)`` their classes (optional).
        every: log at steps ``every, 2 every, ...`` (``step % every == 0``, step 0 excluded).
        class_names: names for titles and legends.
        show: images drawn per overlay.

    >>> logger = AttentionImageLogger(torch.rand(4, 1, 28, 28), every=100)
    >>> logger.due(200), logger.due(150), logger.due(0)
    (True, False, False)
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        every: int = 500,
        class_names: Sequence[str] | None = None,
        show: int = 4,
    ) -> None:
        check_tensor(images, "images", ndim=4)
        if labels is not None:
            check_tensor(labels, "labels", ndim=1, floating=False, layout="(B,)")
            if labels.shape[0] != images.shape[0]:
                raise ValueError(f"labels must be ({images.shape[0]},), got shape {tuple(labels.shape)}")
        self.images = images.detach()
        self.labels = None if labels is None else labels.detach()
        self.every = check_positive(every, "every", integer=True)
        self.class_names = None if class_names is None else list(class_names)
        self.show = check_positive(show, "show", integer=True)

    def due(self, step: int) -> bool:
        """Whether ``step`` is a logging step."""
        return step > 0 and step % self.every == 0

    def maybe_log(self, writer: Any, model: nn.Module, step: int) -> list[str]:
        """Log at ``step`` if it is due (returns the tags written, else ``[]``)."""
        if writer is None or not self.due(step):
            return []
        param = next(model.parameters(), None)
        device = param.device if param is not None else self.images.device
        return write_attention_images(
            writer,
            model,
            self.images.to(device),
            step,
            labels=None if self.labels is None else self.labels.to(device),
            class_names=self.class_names,
            show=self.show,
        )
