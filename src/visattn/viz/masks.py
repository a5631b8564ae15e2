"""See the soft masks of a Residual Attention Network (Wang et al., "Residual Attention Network for Image
Classification", CVPR 2017, arXiv:1704.06904): collect every module's mask in one forward pass and overlay
each on the input image.

The masks are read from the model's ``AttentionTap("spatial")`` submodules (``visattn.attention``), so
any model whose modules emit spatial maps works, not only ``visattn.models.attention_net``. Hooks are
removed before the functions return, also on error.

What a panel shows: for a mask ``M`` of shape ``(C, h, w)``, the channel mean ``mean_c M[c]`` up-sampled
bilinearly (``align_corners=False``) to the input's ``(H, W)`` and min-max scaled to ``[0, 1]`` within
that panel, so colours compare positions within one panel, not panels with each other. The image shown
under it is the model's input min-max scaled per image (grey for one channel, RGB for three, the channel
mean otherwise).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from visattn._validate import check_range, check_tensor, check_type
from visattn.attention._tap import AttentionTap

__all__ = ["record_spatial_masks", "mask_heatmaps", "save_mask_overlays"]


def record_spatial_masks(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` without gradients; return each spatial tap's output by module name.

    Args:
        model: any module holding ``AttentionTap("spatial")`` submodules (its mode is left as it is).
        x: the model's input ``(B, C, H, W)``.

    Returns:
        ``{tap name: mask (B, C or 1, h, w)}`` (detached), in forward order.

    >>> from visattn.attention import ResidualAttentionModule
    >>> net = nn.Sequential(ResidualAttentionModule(8), ResidualAttentionModule(8, skip_levels=0))
    >>> {k: tuple(v.shape) for k, v in record_spatial_masks(net, torch.randn(2, 8, 6, 6)).items()}
    {'0.tap': (2, 8, 6, 6), '1.tap': (2, 8, 6, 6)}
    """
    check_type(model, "model", nn.Module)
    check_tensor(x, "x", ndim=4)
    masks: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, AttentionTap) and mod.kind == "spatial":

            def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor, name: str = name) -> None:
                masks[name] = out.detach()

            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return masks


def mask_heatmaps(masks: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Channel-mean each mask, up-sample it to ``size`` and min-max scale it per image.

    Args:
        masks: ``{name: (B, C, h, w)}`` as from ``record_spatial_masks``.
        size: the input's ``(H, W)``.

    Returns:
        ``{name: (B, H, W)}`` in ``[0, 1]`` (a constant map gives 0).

    >>> hm = mask_heatmaps({"a": torch.rand(2, 4, 3, 5)}, (12, 20))
    >>> hm["a"].shape, float(hm["a"].amin()), float(hm["a"].amax())
    (torch.Size([2, 12, 20]), 0.0, 1.0)
    """
    out = {}
    for name, m in masks.items():
        check_tensor(m, f"masks[{name!r}]", ndim=4)
        h = F.interpolate(m.float().mean(1, keepdim=True), size=size, mode="bilinear", align_corners=False)
        h = h[:, 0]
        lo = h.amin(dim=(1, 2), keepdim=True)
        span = (h.amax(dim=(1, 2), keepdim=True) - lo).clamp_min(1e-12)
        out[name] = (h - lo) / span
    return out


def _display_image(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H, W, 3)`` in ``[0, 1]``, min-max scaled per image."""
    img = x[:, :3] if x.shape[1] == 3 else x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    lo = img.amin(dim=(1, 2, 3), keepdim=True)
    span = (img.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
    return ((img - lo) / span).permute(0, 2, 3, 1)


def save_mask_overlays(
    model: nn.Module,
    x: torch.Tensor,
    out_dir: str | Path,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    prefix: str = "masks",
) -> list[Path]:
    """Overlay every module's mask on each input image and save one PNG per image.

    Each PNG is a row of panels: the input, then one panel per spatial tap (titled by the module's
    name) with the mask heat map (``mask_heatmaps``) drawn over the input with opacity ``alpha``.

    Args:
        model: a model with spatial taps, e.g. ``visattn.create_model("attention56_cifar")``.
        x: the input ``(B, C, H, W)`` exactly as the model takes it.
        out_dir: folder for the PNGs (created if missing).
        alpha: opacity of the heat map, in ``[0, 1]``.
        cmap: a matplotlib colormap name.
        prefix: file names are ``{prefix}_{b}.png`` for image ``b``.

    Returns:
        The paths written, one per image.

    Raises:
        ValueError: the model has no spatial taps, or a bad ``alpha``/``cmap``.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    check_tensor(x, "x", ndim=4)
    check_range(alpha, "alpha", 0.0, 1.0)
    check_type(prefix, "prefix", str)
    if cmap not in colormaps:
        raise ValueError(f"cmap must be a matplotlib colormap name, got {cmap!r}")
    masks = record_spatial_masks(model, x)
    if not masks:
        raise ValueError(f"model has no AttentionTap('spatial') submodules to record: {type(model).__name__}")
    heat = mask_heatmaps(masks, (x.shape[-2], x.shape[-1]))
    images = _display_image(x.detach().float()).cpu().numpy()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for b in range(x.shape[0]):
        n = len(heat) + 1
        fig = Figure(figsize=(2.2 * n, 2.5))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, n, squeeze=False)[0]
        axes[0].imshow(images[b])
        axes[0].set_title("input", fontsize=8)
        for ax, (name, h) in zip(axes[1:], heat.items()):
            ax.imshow(images[b])
            ax.imshow(h[b].cpu().numpy(), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
            ax.set_title(name.removesuffix(".tap"), fontsize=8)
        for ax in axes:
            ax.set_axis_off()
        fig.tight_layout()
        path = out / f"{prefix}_{b}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths
