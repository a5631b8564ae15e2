"""Pictures of spatial transformers (Jaderberg et al., "Spatial Transformer Networks", NIPS 2015, Fig. 1/3).

For a batch, one row per image and transformer: the transformer's input, its output, and the
sampling grid drawn on the input (the region the output reads, its outline in red). The grid
comes from the transformer's ``AttentionTap("warp")``; inputs and outputs from forward hooks,
all removed afterwards. Works on a ``SpatialTransformer`` or on any model containing some.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from visattn._validate import check_positive, check_tensor, check_type
from visattn.attention.spatial_transformer import SpatialTransformer
from visattn.viz.views import View, ViewContext, file_png, register_view

__all__ = ["capture_warps", "grid_to_pixels", "plot_warps"]


def grid_to_pixels(grid: torch.Tensor, size: tuple[int, int], *, align_corners: bool = True) -> torch.Tensor:
    """Convert a sampling grid ``(..., 2)`` in ``[-1, 1]`` ``(x, y)`` to pixel coordinates ``(col, row)``.

    ``align_corners=True``: ``-1`` and ``1`` are the centres of the first and last pixels.

    >>> grid_to_pixels(torch.tensor([[-1.0, 1.0]]), (5, 9)).tolist()
    [[0.0, 4.0]]
    """
    h, w = size
    scale = grid.new_tensor([w, h])
    if align_corners:
        return (grid + 1) / 2 * (scale - 1)
    return ((grid + 1) * scale - 1) / 2


def capture_warps(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Run ``model(x)`` without gradients; return, per spatial transformer, its input, output and grid.

    Each entry: ``{"module", "input" (B, C, H, W), "output" (B, C, Ho, Wo), "grid" (B, Ho, Wo, 2)}``.

    >>> st = SpatialTransformer(1)
    >>> [tuple(e["grid"].shape) for e in capture_warps(st, torch.rand(2, 1, 8, 8))]
    [(2, 8, 8, 2)]
    """
    check_type(model, "model", nn.Module)
    sts = [m for m in model.modules() if isinstance(m, SpatialTransformer)]
    if not sts:
        raise ValueError(f"model has no SpatialTransformer to draw; got {type(model).__name__}")
    records: list[dict[str, Any]] = [{"module": st} for st in sts]
    handles = []
    for rec, st in zip(records, sts):

        def on_st(m: nn.Module, inp: tuple, out: torch.Tensor, rec: dict = rec) -> None:
            rec["input"], rec["output"] = inp[0].detach(), out.detach()

        def on_tap(m: nn.Module, inp: tuple, out: torch.Tensor, rec: dict = rec) -> None:
            rec["grid"] = out.detach()

        handles += [st.register_forward_hook(on_st), st.tap.register_forward_hook(on_tap)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [r for r in records if "grid" in r]


def _as_image(t: torch.Tensor):
    """``(C, H, W)`` -> an array matplotlib shows: RGB for 3 channels, else the channel mean."""
    t = t.float()
    img = t.permute(1, 2, 0) if t.shape[0] == 3 else t.mean(0)
    lo, hi = img.min(), img.max()
    return ((img - lo) / (hi - lo).clamp_min(1e-8)).cpu().numpy()


def plot_warps(
    model: nn.Module,
    x: torch.Tensor,
    path: str | Path,
    *,
    max_images: int = 8,
    grid_step: int = 4,
) -> Path:
    """Save a PNG: per image and transformer, the input, the output and the sampling grid on the input.

    Args:
        model: a ``SpatialTransformer`` or a model containing some.
        x: ``(B, C, H, W)`` model input; the first ``max_images`` are drawn.
        path: where the PNG goes (folders are created).
        max_images: rows per transformer.
        grid_step: draw every ``grid_step``-th grid line (the outline is always drawn).

    Returns:
        The path written.
    """
    check_tensor(x, "x", ndim=4)
    check_positive(max_images, "max_images", integer=True)
    check_positive(grid_step, "grid_step", integer=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x[:max_images]
    records = capture_warps(model, x)
    rows = [(rec, b) for rec in records for b in range(rec["input"].shape[0])]
    fig, axes = plt.subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
    for r, (rec, b) in enumerate(rows):
        st = rec["module"]
        inp, out, grid = rec["input"][b], rec["output"][b], rec["grid"][b]
        px = grid_to_pixels(grid, (inp.shape[-2], inp.shape[-1]), align_corners=st.align_corners).cpu()
        ax_in, ax_out, ax_grid = axes[r]
        ax_in.imshow(_as_image(inp), cmap="gray")
        ax_out.imshow(_as_image(out), cmap="gray")
        ax_grid.imshow(_as_image(inp), cmap="gray")
        ho, wo = px.shape[:2]
        for i in sorted({*range(0, ho, grid_step), ho - 1}):
            edge = i in (0, ho - 1)
            ax_grid.plot(px[i, :, 0], px[i, :, 1], color="r" if edge else "y", lw=1.2 if edge else 0.5)
        for j in sorted({*range(0, wo, grid_step), wo - 1}):
            edge = j in (0, wo - 1)
            ax_grid.plot(px[:, j, 0], px[:, j, 1], color="r" if edge else "y", lw=1.2 if edge else 0.5)
        ax_grid.set_xlim(-0.5, inp.shape[-1] - 0.5)
        ax_grid.set_ylim(inp.shape[-2] - 0.5, -0.5)
        if r == 0:
            for ax, title in zip(axes[r], ("input", "transformed", "sampling grid")):
                ax.set_title(title, fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


@register_view("warps", kinds=("warp",), owner=SpatialTransformer, order=60)
def _warps_view(ctx: ViewContext, records: dict[str, Any]) -> list[View]:
    """Spatial transformers: input, transformed input and the sampling grid (STN paper, Fig. 3)."""
    png = file_png(lambda p: plot_warps(ctx.model, ctx.xs, p, max_images=ctx.show))
    return [View("warps", "Input, transformed input, and the sampling grid on the input.", png)]
