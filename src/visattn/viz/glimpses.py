"""Pictures of hard attention: the glimpse path of the Recurrent Attention Model over the image.

Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual Attention", NIPS 2014, Fig. 3 (glimpse
paths on translated and cluttered MNIST). For each image, one row: the image with the path of the
glimpse centres (numbered in order) and every scale's patch outline at each step, then the ``T``
glimpses as the model saw them (the ``k`` scales of a step stacked top to bottom). An animated GIF
(one frame per glimpse) is available through :func:`save_glimpse_gif`.

Locations follow ``visattn.functional.glimpse``: ``(x, y)`` in ``[-1, 1]``, ``align_corners=False``,
so a location maps to the pixel point ``(x + 1) W / 2`` and ``imshow``'s pixel ``i`` spans
``[i - 1/2, i + 1/2]``: we draw at ``p - 1/2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from visattn._validate import check_positive, check_tensor, check_type
from visattn.functional.glimpse import extract_glimpses, glimpse_boxes, location_to_pixels
from visattn.models.ram import RecurrentAttention
from visattn.viz.views import View, ViewContext, file_png, register_view

__all__ = ["glimpse_episode", "plot_glimpses", "save_glimpse_gif"]


def _sensor(model: nn.Module) -> Any:
    sensor = getattr(model, "sensor", None)
    if sensor is None or not hasattr(sensor, "num_scales"):
        raise ValueError(f"model must have a glimpse sensor at .sensor (a RAM), got {type(model).__name__}")
    return sensor


@torch.no_grad()
def glimpse_episode(model: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """Run a RAM on ``images (B, C, H, W)`` in eval mode; returns locations, patches and predictions.

    Returns ``{"locations": (B, T, 2), "patches": (B, T, k, C, g, g), "predictions": (B,),
    "size", "num_scales", "scale_factor"}`` (the patches recomputed from the locations with the
    model's own sensor settings, exactly what the sensor read). The model's mode is restored.

    >>> from visattn.models.ram import RecurrentAttention
    >>> ep = glimpse_episode(RecurrentAttention(num_glimpses=2), torch.rand(3, 1, 28, 28))
    >>> ep["patches"].shape
    torch.Size([3, 2, 1, 1, 8, 8])
    """
    check_type(model, "model", nn.Module)
    sensor = _sensor(model)
    check_tensor(images, "images", ndim=4)
    was_training = model.training
    model.eval()
    try:
        out = model(images)
    finally:
        model.train(was_training)
    locs = out["locations"]
    if locs.ndim == 4:  # Monte-Carlo evaluation: draw the first sampled trajectory
        locs = locs[0]
    b, t, _ = locs.shape
    patches = extract_glimpses(
        images.repeat_interleave(t, 0),
        locs.reshape(b * t, 2).to(images.dtype),
        size=sensor.size,
        num_scales=sensor.num_scales,
        scale_factor=sensor.scale_factor,
        padding_mode=sensor.padding_mode,
    ).reshape(b, t, sensor.num_scales, images.shape[1], sensor.size, sensor.size)
    return {
        "locations": locs,
        "patches": patches,
        "predictions": out["logits"].argmax(1),
        "size": sensor.size,
        "num_scales": sensor.num_scales,
        "scale_factor": sensor.scale_factor,
    }


def _gray(img: torch.Tensor) -> Any:
    t = img.detach().float().cpu().mean(0)
    lo, hi = t.min(), t.max()
    return ((t - lo) / (hi - lo).clamp_min(1e-8)).numpy()


def _draw_path(ax: Any, image: torch.Tensor, locs: torch.Tensor, ep: dict[str, Any], upto: int) -> None:
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    h, w = image.shape[-2:]
    ax.imshow(_gray(image), cmap="gray", vmin=0, vmax=1)
    centres = location_to_pixels(locs[:upto], (h, w)) - 0.5
    boxes = glimpse_boxes(
        locs[:upto], (h, w), size=ep["size"], num_scales=ep["num_scales"], scale_factor=ep["scale_factor"]
    )
    cmap = colormaps["autumn"]
    t_total = locs.shape[0]
    for t in range(upto):
        colour = cmap(t / max(t_total - 1, 1))
        for x0, y0, x1, y1 in boxes[t].tolist():
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1))
        ax.text(float(centres[t, 0]), float(centres[t, 1]), str(t + 1), color=colour, fontsize=7, ha="center")
    ax.plot(centres[:, 0].numpy(), centres[:, 1].numpy(), "-", color="cyan", lw=1)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_glimpses(
    model: nn.Module,
    images: torch.Tensor,
    path: str | Path,
    *,
    labels: torch.Tensor | None = None,
    max_images: int = 4,
    dpi: int = 100,
) -> Path:
    """Draw the glimpse paths and patches of ``model`` on up to ``max_images`` of ``images (B, C, H, W)``; PNG.

    Each row: the image with the numbered path and patch outlines (yellow to red in time order), and
    the title ``pred`` (and ``true`` when ``labels (B,)`` are given); then one column per glimpse.
    Returns the written path.
    """
    from matplotlib.figure import Figure

    check_positive(max_images, "max_images", integer=True)
    ep = glimpse_episode(model, images[:max_images])
    n, t = ep["locations"].shape[:2]
    fig = Figure(figsize=(2.0 * (t + 1), 2.0 * n))
    axes = fig.subplots(n, t + 1, squeeze=False)
    for i in range(n):
        _draw_path(axes[i, 0], images[i], ep["locations"][i], ep, t)
        title = f"pred {int(ep['predictions'][i])}"
        if labels is not None:
            title += f" / true {int(labels[i])}"
        axes[i, 0].set_title(title, fontsize=8)
        for s in range(t):
            ax = axes[i, s + 1]
            stack = ep["patches"][i, s].transpose(0, 1).flatten(1, 2)  # (C, k * g, g)
            ax.imshow(_gray(stack), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"glimpse {s + 1}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def save_glimpse_gif(
    model: nn.Module, image: torch.Tensor, path: str | Path, *, frame_ms: int = 600, dpi: int = 80
) -> Path:
    """An animated GIF of one image ``(C, H, W)``: frame ``t`` shows the path up to glimpse ``t``.

    Written with Pillow (a torchvision dependency). Returns the written path.
    """
    import io

    from matplotlib.figure import Figure
    from PIL import Image

    check_tensor(image, "image", ndim=3, layout="(C, H, W)")
    check_positive(frame_ms, "frame_ms", integer=True)
    ep = glimpse_episode(model, image[None])
    locs = ep["locations"][0]
    frames = []
    for upto in range(1, locs.shape[0] + 1):
        fig = Figure(figsize=(3, 3))
        ax = fig.subplots()
        _draw_path(ax, image, locs, ep, upto)
        ax.set_title(f"glimpse {upto}, pred {int(ep['predictions'][0])}", fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        frames.append(Image.open(io.BytesIO(buf.getvalue())).convert("P"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return path


@register_view("glimpses", kinds=("location",), model=RecurrentAttention, exclusive=True, order=20)
def _glimpses_view(ctx: ViewContext, records: dict[str, Any]) -> list[View]:
    """RAM: the glimpse path and the patches as the model saw them (replaces the generic glimpse path)."""
    labels = ctx.labels[: ctx.show]
    png = file_png(lambda p: plot_glimpses(ctx.model, ctx.xs, p, labels=labels, max_images=ctx.show))
    return [View("glimpses", "Glimpse path and patches, as the model saw them.", png)]
