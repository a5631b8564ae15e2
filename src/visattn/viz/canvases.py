"""Draw DVAN's per-step attention maps on its canvases (Zhao et al., arXiv:1606.08572, Fig. 1 and 4 style).

Inputs are plain tensors, so the pictures need nothing but the model's output and its canvases::

    canv = model.canvases(x)                  # (B, T, 3, S, S)
    maps = model(x)["attention"]              # (B, T, h, w), or AttentionRecorder's stacked()[:, :, 0]
    fig = plot_canvases(canv, maps)           # rows: images, columns: steps

What a panel shows: canvas ``t`` of image ``b`` min-max scaled over its own pixels (RGB for 3 channels,
grey otherwise), under its attention map up-sampled bilinearly (``align_corners=False``) to the
canvas's ``(S, S)`` and divided by its own maximum, coloured with ``jet`` at ``alpha``. Colours compare
positions within one panel, not panels with each other (each map is a distribution over its own
canvas's positions).

The report (``visattn report`` / ``visattn.report.write_report``) draws a DVAN run's maps this way: the
view ``"dvan canvases"`` (registered here, for models of type ``DVAN``) takes the ``T`` calls of DVAN's
attention tap from ``AttentionRecorder`` and puts each step's map over its own canvas; it claims those
records (``exclusive``), so the generic overlay does not draw them over the whole input, whose frame
they are not in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from visattn._validate import check_range, check_tensor
from visattn.attention.state_spatial import StateSpatialAttention
from visattn.models.dvan import DVAN
from visattn.viz.views import View, ViewContext, figure_png, register_view

__all__ = ["canvas_overlays", "plot_canvases"]


def _check(canvases: torch.Tensor, maps: torch.Tensor) -> None:
    check_tensor(canvases, "canvases", ndim=5, layout="(B, T, C, H, W)")
    check_tensor(maps, "maps", ndim=4, layout="(B, T, h, w)")
    if canvases.shape[:2] != maps.shape[:2]:
        raise ValueError(
            f"canvases (B, T, C, H, W) and maps (B, T, h, w) must agree on (B, T), got "
            f"{tuple(canvases.shape)} and {tuple(maps.shape)}"
        )


def _display(canvases: torch.Tensor) -> torch.Tensor:
    """``(B, T, C, H, W)`` -> ``(B, T, 3, H, W)`` in ``[0, 1]``, min-max per canvas."""
    t = canvases.detach().float().cpu()
    if t.shape[2] != 3:
        t = t.mean(2, keepdim=True).expand(-1, -1, 3, -1, -1)
    lo = t.flatten(2).min(-1).values[..., None, None, None]
    hi = t.flatten(2).max(-1).values[..., None, None, None]
    return (t - lo) / (hi - lo).clamp_min(1e-8)


def _heat(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, T, h, w)`` -> ``(B, T, H, W)`` in ``[0, 1]`` (bilinear up-sampling, each over its maximum)."""
    m = maps.detach().float().cpu().clamp_min(0)
    b, t = m.shape[:2]
    up = F.interpolate(m.reshape(b * t, 1, *m.shape[2:]), size=size, mode="bilinear", align_corners=False)
    up = up.view(b, t, *size)
    return up / up.flatten(2).max(-1).values[..., None, None].clamp_min(1e-12)


def canvas_overlays(canvases: torch.Tensor, maps: torch.Tensor, *, alpha: float = 0.5) -> torch.Tensor:
    """Blend each map (``jet``) over its canvas: ``(B, T, C, H, W), (B, T, h, w) -> (B, T, 3, H, W)`` in ``[0, 1]``.

    >>> canvas_overlays(torch.rand(2, 3, 3, 16, 16), torch.rand(2, 3, 4, 4)).shape
    torch.Size([2, 3, 3, 16, 16])
    """
    from matplotlib import colormaps

    _check(canvases, maps)
    check_range(alpha, "alpha", 0.0, 1.0)
    base = _display(canvases)
    heat = _heat(maps, tuple(canvases.shape[-2:]))  # type: ignore[arg-type]
    rgb = torch.from_numpy(colormaps["jet"](heat.numpy())[..., :3]).float().permute(0, 1, 4, 2, 3)
    return (1 - alpha) * base + alpha * rgb


def plot_canvases(
    canvases: torch.Tensor,
    maps: torch.Tensor,
    *,
    titles: Sequence[str] | None = None,
    step_titles: Sequence[str] | None = None,
    alpha: float = 0.5,
) -> Any:
    """A ``matplotlib`` ``Figure``: one row per image, one column per step, each map over its canvas.

    Args:
        canvases: ``(B, T, C, H, W)`` (e.g. ``DVAN.canvases(x)``).
        maps: ``(B, T, h, w)`` attention distributions over each canvas's feature positions.
        titles: one label per image (row), e.g. the true and predicted classes.
        step_titles: one label per step (column), e.g. the canvas scale.
        alpha: opacity of the heat map.

    >>> fig = plot_canvases(torch.rand(2, 3, 3, 16, 16), torch.rand(2, 3, 4, 4))
    >>> len(fig.axes)
    6
    """
    from matplotlib.figure import Figure

    _check(canvases, maps)
    b, t = canvases.shape[:2]
    if titles is not None and len(titles) != b:
        raise ValueError(f"titles must have {b} entries (one per image), got {len(titles)}")
    if step_titles is not None and len(step_titles) != t:
        raise ValueError(f"step_titles must have {t} entries (one per step), got {len(step_titles)}")
    img = canvas_overlays(canvases, maps, alpha=alpha)
    fig = Figure(figsize=(1.4 * t + 0.6, 1.4 * b + 0.3), layout="constrained")
    axes = fig.subplots(b, t, squeeze=False)
    for i in range(b):
        for j in range(t):
            ax = axes[i, j]
            ax.imshow(img[i, j].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(step_titles[j] if step_titles is not None else f"step {j + 1}", fontsize=8)
            if j == 0 and titles is not None:
                ax.set_ylabel(str(titles[i]), fontsize=7)
    return fig


@register_view(
    "dvan canvases", kinds=("spatial",), owner=StateSpatialAttention, model=DVAN, exclusive=True, order=12
)
def _dvan_canvases_view(ctx: ViewContext, records: dict[str, Any]) -> list[View]:
    """Each DVAN step's recorded map ``(B, 1, h, w)`` (``T`` calls of one tap) over its canvas."""
    model = ctx.model
    assert isinstance(model, DVAN)  # the view is registered for DVAN models only
    canv = model.canvases(ctx.xs)
    scales = model.boxes[:, 2].tolist()
    views = []
    for name, rec in records.items():
        maps = rec.stacked()[: ctx.show, :, 0]  # (B, T, h, w)
        if maps.shape[:2] != canv.shape[:2]:  # not DVAN's own T-step tap: nothing to put on the canvases
            continue
        fig = plot_canvases(
            canv,
            maps,
            titles=ctx.titles,
            step_titles=[f"step {t + 1}, scale {s:.2f}" for t, s in enumerate(scales)],
        )
        views.append(
            View(
                f"DVAN attention on its canvases: {name}",
                "One row per image (true→predicted), one column per step: the step's canvas (the "
                "whole image, then smaller crops, each resized to the backbone's input) under its soft "
                "attention map over the canvas's feature positions (up-sampled, scaled to its own maximum).",
                figure_png(fig),
            )
        )
    return views
