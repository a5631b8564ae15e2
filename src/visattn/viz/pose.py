"""Pose pictures: predicted skeletons over the input crops beside the attention maps that produced them
(multi-context attention's holistic and part maps, Chu et al., CVPR 2017).

:func:`draw_skeleton` draws LSP's 14-joint stick figure; :func:`pose_attention_panel` runs a pose model
under :class:`~visattn.viz.recorder.AttentionRecorder` and lays out, per image: the crop with the
predicted skeleton (arg-max of the last stack's heatmaps, mapped to crop pixels by the heatmap stride),
then every recorded spatial map (mean over its channels) up-sampled to the crop and blended over it.
Images of research-only data sets (LSPET) must not be committed: render them locally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from visattn._validate import check_tensor
from visattn.viz.recorder import AttentionRecorder

__all__ = ["LSP_LIMBS", "draw_skeleton", "pose_attention_panel"]

# (joint, joint, side): LSP order (0 r_ankle .. 13 head_top); side "r", "l" or "c" (centre)
LSP_LIMBS = (
    (0, 1, "r"), (1, 2, "r"), (5, 4, "l"), (4, 3, "l"), (6, 7, "r"), (7, 8, "r"), (11, 10, "l"), (10, 9, "l"),
    (2, 3, "c"), (8, 12, "r"), (9, 12, "l"), (2, 8, "r"), (3, 9, "l"), (12, 13, "c"),
)  # fmt: skip
_COLOURS = {"r": (230, 40, 40), "l": (40, 120, 240), "c": (250, 200, 0)}


def _to_pil(image: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> Image.Image:
    x = image.detach().float().cpu()
    if image.dtype == torch.uint8:
        x = x / 255
    elif mean is not None and std is not None:
        x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    x = x.clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))


def draw_skeleton(
    image: torch.Tensor,
    joints: torch.Tensor,
    visible: torch.Tensor | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: int = 2,
) -> Image.Image:
    """The image ``(3 | 1, H, W)`` (uint8, or float un-normalised by ``mean``/``std``, else in ``[0, 1]``)
    with the skeleton of ``joints (14, 2)`` (``(x, y)`` pixels) drawn on it, enlarged ``scale`` times.

    Right limbs red, left blue, centre yellow; limbs with an invisible end (``visible == 0``) are left out.

    >>> im = draw_skeleton(torch.zeros(3, 32, 32), torch.full((14, 2), 16.0))
    >>> im.size
    (64, 64)
    """
    check_tensor(image, "image", ndim=3, floating=False, layout="(C, H, W)")
    pil = _to_pil(image, mean, std)
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(pil)
    pts = ((joints.detach().float().cpu() + 0.5) * scale - 0.5).tolist()
    vis = [True] * len(pts) if visible is None else (visible.detach().cpu() > 0).tolist()
    for a, b, side in LSP_LIMBS:
        if a < len(pts) and b < len(pts) and vis[a] and vis[b]:
            draw.line([tuple(pts[a]), tuple(pts[b])], fill=_COLOURS[side], width=max(1, scale))
    for (x, y), v in zip(pts, vis, strict=True):
        if v:
            r = max(1.5, scale)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
    return pil


def _blend(base: Image.Image, amap: torch.Tensor) -> Image.Image:
    """``amap (h, w)`` min-max scaled, up-sampled to ``base`` and blended over it (red = high)."""
    m = amap[None, None].float()
    m = F.interpolate(m, size=(base.height, base.width), mode="bilinear", align_corners=False)[0, 0]
    m = (m - m.min()) / (m.max() - m.min()).clamp(min=1e-8)
    heat = torch.stack([m, 0.2 * m, 1 - m], -1)
    rgb = torch.from_numpy(np.asarray(base, dtype=np.float32) / 255)
    out = 0.45 * rgb + 0.55 * heat
    return Image.fromarray((out.clamp(0, 1).numpy() * 255).round().astype("uint8"))


@torch.no_grad()
def pose_attention_panel(
    model: nn.Module,
    x: torch.Tensor,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: int = 2,
    skip: Sequence[str] = (".multires.maps.",),
) -> tuple[Image.Image, dict[str, Any]]:
    """One row per image of ``x (B, 3, H, W)``: the predicted skeleton, then each recorded spatial map.

    Taps whose name contains a string of ``skip`` are left out (default: the per-resolution maps inside
    multi-resolution attention, whose mean is shown).

    Returns the picture and ``{"joints": (B, J, 2) crop pixels, "maps": [tap names in column order]}``.
    """
    check_tensor(x, "x", ndim=4)
    model.eval()
    with AttentionRecorder(model, kinds=("spatial",)) as rec:
        out = model(x)
    heat = out["heatmaps"] if isinstance(out, dict) else out
    b, j, h, w = heat.shape
    idx = heat.reshape(b, j, -1).argmax(-1)
    stride = x.shape[-1] / w
    joints = (torch.stack([idx % w, idx // w], -1).float() + 0.5) * stride - 0.5
    names = [n for n in rec.fired() if not any(s in n for s in skip)]
    tile_w, tile_h = x.shape[-1] * scale, x.shape[-2] * scale
    panel = Image.new("RGB", (tile_w * (1 + len(names)), tile_h * b), (255, 255, 255))
    for i in range(b):
        sk = draw_skeleton(x[i], joints[i], mean=mean, std=std, scale=scale)
        panel.paste(sk, (0, i * tile_h))
        base = _to_pil(x[i], mean, std).resize((tile_w, tile_h))
        for c, name in enumerate(names):
            amap = rec.records[name].value[i].mean(0)
            panel.paste(_blend(base, amap), ((c + 1) * tile_w, i * tile_h))
    return panel, {"joints": joints, "maps": names}
