"""Pictures of any mechanism's attention, from what :class:`~visattn.viz.recorder.AttentionRecorder` captured.

Generic renderers, one per tap kind, for the mechanisms' own papers' figures:

* spatial masks (Wang et al., "Residual Attention Network", CVPR 2017, Fig. 1): heat maps over the
  input (:func:`overlay_grid`), one row per tap, plus Grad-CAM;
* channel weights (Hu et al., "Squeeze-and-Excitation Networks", Fig. 6): the per-class plot of
  ``visattn.viz.excitation``;
* warps (Jaderberg et al., "Spatial Transformer Networks", Fig. 3): ``visattn.viz.warps``;
* glimpse paths (Mnih et al., "Recurrent Models of Visual Attention", NIPS 2014, Fig. 3):
  :func:`plot_glimpse_path`;
* filter gains (Stollenga et al., "Deep Networks with Internal Selective Attention through Feedback
  Connections", NIPS 2014): per-class mean gains, :func:`plot_class_weights`.

Models without spatial attention get a Grad-CAM view (Selvaraju et al., ICCV 2017; ``visattn.viz.gradcam``).
:func:`attention_views` draws every view registered with :func:`visattn.viz.views.register_view`
whose records the model emits: the generic ones are here (the overlay, glimpse paths, per-class
gains); mechanisms register their own beside their renderers (warps in ``visattn.viz.warps``, RAM's
glimpses in ``visattn.viz.glimpses``, channel weights in ``visattn.viz.excitation``, dasNet's gain
evolution in ``visattn.viz.gains``).
All figures are ``matplotlib.figure.Figure`` objects drawn on the Agg canvas (no display, no pyplot
state); :func:`figure_png` turns one into PNG bytes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from visattn._validate import check_positive, check_tensor
from visattn.viz.gradcam import cam_layer, gradcam
from visattn.viz.localization import _warp_conventions, tap_heatmaps
from visattn.viz.recorder import record_attention
from visattn.viz.views import View, ViewContext, figure_png, matching_records, register_view
from visattn.viz.warps import grid_to_pixels

__all__ = [
    "View",
    "ViewContext",
    "figure_png",
    "register_view",
    "to_display",
    "cam_layer",
    "gradcam",
    "overlay_grid",
    "plot_glimpse_path",
    "plot_class_weights",
    "attention_views",
]


def to_display(img: torch.Tensor) -> Any:
    """``(C, H, W)`` -> a ``[0, 1]`` array ``imshow`` takes: RGB for 3 channels, else the channel mean.

    >>> to_display(torch.rand(3, 5, 4)).shape, to_display(torch.rand(1, 5, 4)).shape
    ((5, 4, 3), (5, 4))
    """
    check_tensor(img, "img", ndim=3, layout="(C, H, W)")
    t = img.detach().float().cpu()
    t = t.permute(1, 2, 0) if t.shape[0] == 3 else t.mean(0)
    lo, hi = t.min(), t.max()
    return ((t - lo) / (hi - lo).clamp_min(1e-8)).numpy()


def _boxes_px(boxes: torch.Tensor | None, n: int) -> list[tuple[float, float, float, float] | None]:
    if boxes is None:
        return [None] * n
    return [tuple(float(v) for v in b) for b in boxes[:n].tolist()]  # type: ignore[misc]


def overlay_grid(
    images: torch.Tensor,
    maps: dict[str, torch.Tensor],
    *,
    boxes: torch.Tensor | None = None,
    titles: Sequence[str] | None = None,
    alpha: float = 0.5,
) -> Any:
    """Heat maps over their inputs: row 0 the images, then one row per entry of ``maps``.

    Args:
        images: ``(B, C, H, W)`` inputs (shown min-max scaled).
        maps: ``{row label: (B, H, W)}`` non-negative heat maps at the input's size (each scaled
            to its own maximum per image, drawn with the ``jet`` colour map at ``alpha``).
        boxes: optional ``(B, 4)`` object boxes ``(x0, y0, x1, y1)`` (half-open pixels), drawn in white.
        titles: column titles (e.g. the labels), one per image.

    >>> fig = overlay_grid(torch.rand(3, 1, 8, 8), {"mask": torch.rand(3, 8, 8)})
    >>> len(fig.axes)
    6
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    check_tensor(images, "images", ndim=4)
    b, (h, w) = images.shape[0], images.shape[-2:]
    for label, m in maps.items():
        check_tensor(m, f"maps[{label!r}]", ndim=3, layout="(B, H, W)")
        if tuple(m.shape) != (b, h, w):
            raise ValueError(f"maps[{label!r}] must be ({b}, {h}, {w}), got shape {tuple(m.shape)}")
    if titles is not None and len(titles) != b:
        raise ValueError(f"titles must have {b} entries (one per image), got {len(titles)}")
    rows = 1 + len(maps)
    fig = Figure(figsize=(1.3 * b + 1.2, 1.35 * rows), layout="constrained")
    axes = fig.subplots(rows, b, squeeze=False)
    box_list = _boxes_px(boxes, b)
    for j in range(b):
        base = to_display(images[j])
        entries: list[tuple[str, torch.Tensor | None]] = [("input", None), *maps.items()]
        for i, (label, heat) in enumerate(entries):
            ax = axes[i, j]
            ax.imshow(base, cmap="gray", interpolation="nearest")
            if heat is not None:
                hm = heat[j].detach().float().cpu().clamp_min(0)
                ax.imshow((hm / hm.max().clamp_min(1e-12)).numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
            bx = box_list[j]
            if bx is not None:
                x0, y0, x1, y1 = bx
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="w", lw=1))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label if len(label) <= 18 else "…" + label[-17:], fontsize=7)
        if titles is not None:
            axes[0, j].set_title(str(titles[j]), fontsize=8)
    return fig


def plot_glimpse_path(
    images: torch.Tensor,
    locations: torch.Tensor,
    *,
    glimpse_px: float | None = None,
    align_corners: bool = False,
    titles: Sequence[str] | None = None,
) -> Any:
    """Glimpse paths over the inputs: ``images (B, C, H, W)``, ``locations (B, T, 2)`` ``(x, y)`` in ``[-1, 1]``.

    Each path is drawn in order (numbered, first green, last red); ``glimpse_px`` also draws each
    glimpse's square of that side in pixels. ``align_corners=False``: ``-1``/``1`` are the image edges.

    >>> fig = plot_glimpse_path(torch.rand(2, 1, 16, 16), torch.zeros(2, 3, 2), glimpse_px=4)
    >>> len(fig.axes)
    2
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    check_tensor(images, "images", ndim=4)
    check_tensor(locations, "locations", ndim=3, layout="(B, T, 2)")
    if locations.shape[0] != images.shape[0] or locations.shape[-1] != 2:
        raise ValueError(
            f"locations must be ({images.shape[0]}, T, 2) for {images.shape[0]} images, "
            f"got shape {tuple(locations.shape)}"
        )
    if glimpse_px is not None:
        check_positive(glimpse_px, "glimpse_px")
    b, (h, w) = images.shape[0], images.shape[-2:]
    px = grid_to_pixels(locations.detach().float().cpu(), (h, w), align_corners=align_corners)
    fig = Figure(figsize=(1.6 * b + 0.4, 1.9), layout="constrained")
    axes = fig.subplots(1, b, squeeze=False)[0]
    t = px.shape[1]
    for j, ax in enumerate(axes):
        ax.imshow(to_display(images[j]), cmap="gray", interpolation="nearest")
        ax.plot(px[j, :, 0], px[j, :, 1], "-", color="yellow", lw=1)
        ax.scatter(px[j, :, 0], px[j, :, 1], c=range(t), cmap="RdYlGn_r", s=14, zorder=3)
        for k in range(t):
            ax.annotate(str(k + 1), (float(px[j, k, 0]), float(px[j, k, 1])), color="w", fontsize=6)
            if glimpse_px is not None:
                cx, cy = float(px[j, k, 0]), float(px[j, k, 1])
                half = glimpse_px / 2
                ax.add_patch(
                    Rectangle((cx - half, cy - half), glimpse_px, glimpse_px, fill=False, ec="c", lw=0.6)
                )
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(str(titles[j]), fontsize=8)
    return fig


def plot_class_weights(
    weights: torch.Tensor,
    labels: torch.Tensor,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "",
    ylabel: str = "weight",
) -> Any:
    """Mean weight per class and unit: ``weights (N, F)``, ``labels (N,)`` -> one line per class.

    The filter-gain view of dasNet (and of any ``(B, F)`` tap); classes absent from ``labels`` are
    left out.

    >>> fig = plot_class_weights(torch.rand(6, 5), torch.tensor([0, 1, 0, 1, 2, 2]))
    >>> len(fig.axes[0].lines)
    3
    """
    from matplotlib.figure import Figure

    check_tensor(weights, "weights", ndim=2, layout="(N, F)")
    check_tensor(labels, "labels", ndim=1, floating=False, layout="(N,)")
    if labels.shape[0] != weights.shape[0]:
        raise ValueError(f"labels must be ({weights.shape[0]},), got shape {tuple(labels.shape)}")
    w, y = weights.detach().float().cpu(), labels.long().cpu()
    k = int(y.max()) + 1
    counts = torch.bincount(y, minlength=k).float()
    means = torch.zeros(k, w.shape[1]).index_add_(0, y, w) / counts.clamp_min(1)[:, None]
    fig = Figure(figsize=(5.5, 2.6), layout="constrained")
    ax = fig.subplots()
    for c in range(k):
        if counts[c] > 0:
            name = class_names[c] if class_names is not None and c < len(class_names) else f"class {c}"
            ax.plot(means[c].numpy(), lw=0.8, label=name)
    ax.set_xlabel("unit index", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, ncols=2, loc="best")
    return fig


def _label(ctx: ViewContext, c: int) -> str:
    names = ctx.class_names
    return names[c] if names is not None and c < len(names) else str(c)


@register_view("overlay", kinds=("spatial", "warp"), always=True, order=10)
def _overlay_view(ctx: ViewContext, records: dict[str, Any]) -> list[View]:
    """Spatial masks and warp-grid densities over the input, plus Grad-CAM."""
    size = (ctx.x.shape[-2], ctx.x.shape[-1])
    rows = {n: m[: ctx.show] for n, m in tap_heatmaps(records, size, align_corners=ctx.align_corners).items()}
    if (ctx.with_gradcam or not records) and cam_layer(ctx.model) is not None:
        try:
            rows["Grad-CAM"] = gradcam(ctx.model, ctx.xs, targets=ctx.labels[: ctx.show])
        except ValueError:  # a forward without autograd (dasNet): no Grad-CAM row
            pass
        except ImportError:  # the optional ``grad-cam`` package (extra ``viz``) is missing
            warnings.warn(
                "Grad-CAM views need the grad-cam package: pip install 'visattn[viz]'", stacklevel=2
            )
    if not rows:
        return []
    boxes = None if ctx.boxes is None else ctx.boxes[: ctx.show]
    fig = overlay_grid(ctx.xs.cpu(), rows, boxes=boxes, titles=ctx.titles)
    caption = (
        "Heat maps over the input (true→predicted): "
        + ", ".join(rows)
        + ". Spatial masks: channel mean upsampled to the input; warps: density of the"
        " sampling grid's points on the input."
    )
    return [View("where it looks", caption, figure_png(fig))]


@register_view("glimpse path", kinds=("location",), order=30)
def _location_view(ctx: ViewContext, records: dict[str, Any]) -> list[View]:
    """Each location tap's glimpse centres in order over the input."""
    views = []
    for name, rec in records.items():
        loc = rec.stacked() if len(rec.calls) > 1 else rec.value[:, None]
        fig = plot_glimpse_path(
            ctx.xs.cpu(), loc[: ctx.show], align_corners=ctx.align_corners.get(name, False), titles=ctx.titles
        )
        views.append(View(f"glimpse path: {name}", "Glimpse centres in order (1 = first).", figure_png(fig)))
    return views


@register_view("filter gains", kinds=("gains",), order=40)
def _gains_view(ctx: ViewContext, records: dict[str, Any]) -> list[View]:
    """Mean gain per class and unit of each gains tap."""
    return [
        View(
            f"filter gains: {name}",
            "Mean gain per class and filter.",
            figure_png(
                plot_class_weights(
                    rec.value.flatten(1), ctx.labels, class_names=ctx.class_names, title=name, ylabel="gain"
                )
            ),
        )
        for name, rec in records.items()
    ]


def attention_views(
    model: nn.Module,
    x: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    boxes: torch.Tensor | None = None,
    show: int = 6,
    with_gradcam: bool = True,
) -> list[View]:
    """Render every kind of attention ``model`` emits on ``x`` ``(B, C, H, W)``.

    Runs each view registered with :func:`visattn.viz.views.register_view` whose records the model
    emits. The first ``show`` images get overlays (spatial masks, warp-grid densities, Grad-CAM),
    the warp grids of spatial transformers and glimpse paths; per-class plots (channel weights,
    gains) use the whole batch with ``labels`` (default: the predicted classes). Grad-CAM is added
    when the model has no spatial tap, or always with ``with_gradcam=True`` (when it has a
    ``Conv2d``). The model runs in ``eval()`` mode; its mode is restored afterwards.

    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> [v.title for v in attention_views(net, torch.rand(4, 1, 12, 12), show=2)]
    ['where it looks']
    """
    check_tensor(x, "x", ndim=4)
    check_positive(show, "show", integer=True)
    was_training = model.training
    model.eval()
    views: list[View] = []
    try:
        out, recs = record_attention(model, x)
        logits = out["logits"] if isinstance(out, dict) else out
        pred = logits.argmax(1).cpu()
        y = pred if labels is None else labels.long().cpu()
        ctx = ViewContext(
            model=model,
            x=x,
            xs=x[:show],
            labels=y,
            pred=pred,
            titles=[],
            class_names=list(class_names) if class_names is not None else None,
            boxes=boxes,
            show=show,
            with_gradcam=with_gradcam,
            align_corners=_warp_conventions(model),
        )
        ctx.titles = [f"{_label(ctx, int(t))}→{_label(ctx, int(p))}" for t, p in zip(y[:show], pred[:show])]
        for spec, records in matching_records(model, recs):
            views += spec.fn(ctx, records)
    finally:
        model.train(was_training)
    return views
