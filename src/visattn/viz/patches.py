"""Pictures of patch attention: the boxes of the two-level pipeline (Xiao et al., CVPR 2015, Fig. 1 and 5).

Three panels side by side, over the same image: the bottom-up proposals (thin, grey), the patches the
object-level filter kept (green), and the patch each part detector chose (one colour per detector,
numbered in the figure version). :func:`draw_boxes` and :func:`render_patch_panels` work on tensors
and return ``uint8`` arrays (no matplotlib); :func:`plot_patch_attention` returns a
``matplotlib.figure.Figure`` drawn on the Agg canvas.

Convention: boxes are pixel boxes ``(x0, y0, x1, y1)`` of the given image, ``x`` to the right, ``y``
down, ``x1``/``y1`` exclusive; boxes partly outside the image are clipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from visattn._validate import check_positive, check_tensor

__all__ = ["PART_COLOURS", "draw_boxes", "render_patch_panels", "plot_patch_attention"]

PART_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (245, 130, 48), (70, 240, 240),
    (240, 50, 230), (60, 180, 75),
)  # fmt: skip


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    check_tensor(image, "image", ndim=3, floating=False, layout="(3, H, W)")
    if image.shape[0] not in (1, 3):
        raise ValueError(f"image must be (3, H, W) or (1, H, W), got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return image.expand(3, -1, -1).clone()


def _check_boxes(boxes: torch.Tensor | Sequence[Sequence[float]], name: str) -> torch.Tensor:
    b = torch.as_tensor(boxes, dtype=torch.float32)
    if b.numel() == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} must be (N, 4) boxes (x0, y0, x1, y1), got shape {tuple(b.shape)}")
    return b


def draw_boxes(
    image: torch.Tensor,
    boxes: torch.Tensor | Sequence[Sequence[float]],
    colours: Sequence[tuple[int, int, int]] | tuple[int, int, int] = (0, 200, 0),
    *,
    width: int = 1,
) -> torch.Tensor:
    """Box outlines drawn on a copy of ``image``.

    Args:
        image: ``(3, H, W)`` (or ``(1, H, W)``) ``uint8``, or float in ``[0, 1]``.
        boxes: ``(N, 4)`` pixel boxes ``(x0, y0, x1, y1)``.
        colours: one RGB colour for all boxes, or one per box.
        width: line width in pixels.

    Returns:
        ``uint8 (3, H, W)``.

    >>> out = draw_boxes(torch.zeros(3, 8, 8), [[1, 1, 5, 5]], (255, 0, 0))
    >>> out.shape, out[:, 1, 1].tolist(), out[:, 3, 3].tolist()
    (torch.Size([3, 8, 8]), [255, 0, 0], [0, 0, 0])
    """
    check_positive(width, "width", integer=True)
    img = _as_uint8(image)
    b = _check_boxes(boxes, "boxes")
    if isinstance(colours, tuple) and len(colours) == 3 and all(isinstance(c, int) for c in colours):
        cols = [colours] * len(b)
    else:
        cols = list(colours)  # type: ignore[arg-type]
        if len(cols) != len(b):
            raise ValueError(
                f"colours must be one RGB triple or {len(b)} of them (one per box), got {len(cols)}"
            )
    _, h, w = img.shape
    for (x0, y0, x1, y1), c in zip(b.round().long().tolist(), cols):
        x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1 - 1, w - 1))
        y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1 - 1, h - 1))
        col = torch.tensor(c, dtype=torch.uint8)[:, None, None]
        img[:, y0 : min(y0 + width, y1 + 1), x0 : x1 + 1] = col
        img[:, max(y1 - width + 1, y0) : y1 + 1, x0 : x1 + 1] = col
        img[:, y0 : y1 + 1, x0 : min(x0 + width, x1 + 1)] = col
        img[:, y0 : y1 + 1, max(x1 - width + 1, x0) : x1 + 1] = col
    return img


def render_patch_panels(
    image: torch.Tensor,
    proposals: torch.Tensor | Sequence[Sequence[float]],
    kept: torch.Tensor | Sequence[Sequence[float]],
    parts: torch.Tensor | Sequence[Sequence[float]],
    *,
    gap: int = 4,
) -> torch.Tensor:
    """Proposals | kept patches | part patches, side by side: ``uint8 (3, H, 3 W + 2 gap)``.

    >>> render_patch_panels(torch.zeros(3, 16, 20), [[0, 0, 10, 10]], [[2, 2, 8, 8]], [[4, 4, 12, 12]]).shape
    torch.Size([3, 16, 68])
    """
    check_positive(gap, "gap", integer=True, allow_zero=True)
    base = _as_uint8(image)
    part_b = _check_boxes(parts, "parts")
    panels = [
        draw_boxes(base, proposals, (160, 160, 160)),
        draw_boxes(base, kept, (0, 200, 0)),
        draw_boxes(base, part_b, [PART_COLOURS[i % len(PART_COLOURS)] for i in range(len(part_b))], width=2),
    ]
    sep = torch.full((3, base.shape[1], gap), 255, dtype=torch.uint8)
    return torch.cat([panels[0], sep, panels[1], sep, panels[2]], 2)


def plot_patch_attention(
    image: torch.Tensor,
    proposals: torch.Tensor | Sequence[Sequence[float]],
    kept: torch.Tensor | Sequence[Sequence[float]],
    parts: torch.Tensor | Sequence[Sequence[float]],
    *,
    title: str | None = None,
):
    """The three panels as a ``matplotlib.figure.Figure`` with titles and numbered part boxes.

    >>> fig = plot_patch_attention(torch.zeros(3, 16, 16), [[0, 0, 8, 8]], [[0, 0, 8, 8]], [[2, 2, 9, 9]])
    >>> len(fig.axes)
    3
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    base = _as_uint8(image)
    prop_b, kept_b, part_b = (
        _check_boxes(b, n) for b, n in ((proposals, "proposals"), (kept, "kept"), (parts, "parts"))
    )
    fig = Figure(figsize=(9, 3.4))
    FigureCanvasAgg(fig)
    names = (
        f"{len(prop_b)} proposals",
        f"{len(kept_b)} kept (object level)",
        f"{len(part_b)} part detectors",
    )
    imgs = (
        draw_boxes(base, prop_b, (160, 160, 160)),
        draw_boxes(base, kept_b, (0, 200, 0)),
        draw_boxes(base, part_b, [PART_COLOURS[i % len(PART_COLOURS)] for i in range(len(part_b))], width=2),
    )
    for i, (img, name) in enumerate(zip(imgs, names)):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(name, fontsize=9)
        ax.axis("off")
        if i == 2:
            for j, (x0, y0, _, _) in enumerate(part_b.tolist()):
                c = tuple(v / 255 for v in PART_COLOURS[j % len(PART_COLOURS)])
                ax.text(
                    x0 + 1, y0 + 1, str(j), color="white", fontsize=7, va="top", bbox={"color": c, "pad": 1}
                )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
