"""Pictures of dasNet's feedback attention (Stollenga et al., "Deep Networks with Internal Selective
Attention through Feedback Connections", NIPS 2014, Fig. 3-4: filter gains change over the passes, and
some images are classified differently after the feedback).

``gain_trajectories`` runs a :class:`visattn.models.dasnet.DasNet` on a batch and returns every pass's
logits ``(T, B, K)`` and gains ``(T, B, F)`` (pass 1: all ones). ``plot_gain_evolution`` draws the gains
of a few filters against the pass, one panel per image; by default it picks the filters whose gains moved
most from 1. ``plot_changed_predictions`` shows the images whose predicted class differs between pass 1
(the base CNN) and the last pass, titled ``base -> dasNet (true)``. ``dasnet_report`` writes both PNGs.
Figures use matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visattn._validate import check_positive, check_tensor, check_type
from visattn.models.dasnet import DasNet
from visattn.viz.views import View, ViewContext, file_png, register_view

__all__ = [
    "gain_trajectories",
    "changed_predictions",
    "plot_gain_evolution",
    "plot_changed_predictions",
    "dasnet_report",
]


def _check_dasnet(model: Any) -> None:
    check_type(model, "model", DasNet)


@torch.no_grad()
def gain_trajectories(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every pass of ``model`` (a ``DasNet``, in eval mode) on ``x (B, C, H, W)``.

    Returns ``logits (T, B, K)``, ``gains (T, B, F)`` and ``pred (T, B)`` (argmax per pass). The mode of
    the model is restored afterwards.

    >>> from visattn.models.mnist_cnn import MnistCNN
    >>> from visattn.models.dasnet import DasNet
    >>> tr = gain_trajectories(DasNet(MnistCNN(), num_classes=10, passes=2), torch.randn(3, 1, 28, 28))
    >>> tr["gains"].shape, tr["pred"].shape
    (torch.Size([2, 3, 96]), torch.Size([2, 3]))
    """
    _check_dasnet(model)
    was_training = model.training
    model.eval()
    try:
        out = model.forward_passes(x)  # type: ignore[operator]
    finally:
        model.train(was_training)
    out["pred"] = out["logits"].argmax(-1)
    return out


def changed_predictions(pred: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Indices of images whose class changed between pass 1 and the last pass, from ``pred (T, B)``.

    With labels ``y (B,)`` also ``fixed`` (wrong -> right) and ``broken`` (right -> wrong).

    >>> changed_predictions(torch.tensor([[1, 2, 3], [1, 0, 3]]), torch.tensor([1, 0, 2]))["fixed"]
    tensor([1])
    """
    check_tensor(pred, "pred", ndim=2, floating=False, layout="(T, B)")
    first, last = pred[0], pred[-1]
    out = {"changed": (first != last).nonzero().flatten()}
    if y is not None:
        check_tensor(y, "y", ndim=1, floating=False, layout="(B,)")
        if y.shape[0] != pred.shape[1]:
            raise ValueError(f"y must have {pred.shape[1]} labels, got shape {tuple(y.shape)}")
        out["fixed"] = ((first != y) & (last == y)).nonzero().flatten()
        out["broken"] = ((first == y) & (last != y)).nonzero().flatten()
    return out


def plot_gain_evolution(
    gains: torch.Tensor,
    path: str | Path,
    *,
    images: Sequence[int] = (0, 1, 2, 3),
    filters: Sequence[int] | None = None,
    num_filters: int = 6,
    filter_names: Sequence[str] | None = None,
) -> Path:
    """Plot gains ``(T, B, F)`` of a few filters against the pass, one panel per image; write a PNG.

    Args:
        gains: per-pass gains, e.g. ``gain_trajectories(...)["gains"]``.
        path: the PNG to write.
        images: which images (indices into ``B``) get a panel.
        filters: which filters (indices into ``F``) to draw; default: the ``num_filters`` filters whose
            gains moved most from 1 (mean ``|a - 1|`` over the chosen images and passes).
        num_filters: how many filters to pick when ``filters`` is ``None``.
        filter_names: a label per filter index (length ``F``), e.g. ``"stage2.conv[7]"``.
    """
    check_tensor(gains, "gains", ndim=3, layout="(T, B, F)")
    check_positive(num_filters, "num_filters", integer=True)
    t_, b_, f_ = gains.shape
    images = [int(i) for i in images if 0 <= int(i) < b_]
    if not images:
        raise ValueError(f"images must hold indices in [0, {b_}), got none that fit")
    g = gains.detach().float().cpu()
    if filters is None:
        moved = (g[:, images] - 1).abs().mean(dim=(0, 1))
        filters = moved.topk(min(num_filters, f_)).indices.tolist()
    bad = [f for f in filters if not 0 <= f < f_]
    if bad:
        raise ValueError(f"filters must be indices in [0, {f_}), got {bad}")
    if filter_names is not None and len(filter_names) != f_:
        raise ValueError(f"filter_names must have {f_} entries, got {len(filter_names)}")
    from matplotlib.figure import Figure  # local: matplotlib is only needed to draw

    cols = min(4, len(images))
    rows = math.ceil(len(images) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows + 0.6), layout="constrained")
    passes = list(range(1, t_ + 1))
    for k, i in enumerate(images):
        ax = fig.add_subplot(rows, cols, k + 1)
        for f in filters:
            label = filter_names[f] if filter_names is not None else f"filter {f}"
            ax.plot(passes, g[:, i, f].tolist(), marker="o", label=label)
        ax.axhline(1.0, color="grey", lw=0.5, ls="--")
        ax.set_title(f"image {i}")
        ax.set_xlabel("pass")
        ax.set_xticks(passes)
        if k % cols == 0:
            ax.set_ylabel("gain")
    fig.legend(
        *fig.axes[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncol=min(6, len(filters)),
        fontsize="small",
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


def plot_changed_predictions(
    x: torch.Tensor,
    pred: torch.Tensor,
    path: str | Path,
    *,
    y: torch.Tensor | None = None,
    max_images: int = 16,
    class_names: Sequence[str] | None = None,
) -> tuple[Path, torch.Tensor]:
    """Show images ``x (B, C, H, W)`` whose class changed between pass 1 and the last pass of ``pred (T, B)``.

    Titles read ``base -> dasNet (true)``; green when the feedback fixed the image, red when it broke it.
    Returns the PNG path and the indices shown. With no changed image the figure says so.
    """
    check_tensor(x, "x", ndim=4)
    check_positive(max_images, "max_images", integer=True)
    ch = changed_predictions(pred, y)
    idx = ch["changed"][:max_images]
    name = (lambda c: class_names[c]) if class_names is not None else str  # noqa: E731
    from matplotlib.figure import Figure  # local: matplotlib is only needed to draw

    cols = max(1, min(8, len(idx)))
    rows = max(1, math.ceil(len(idx) / cols))
    fig = Figure(figsize=(1.6 * cols + 0.4, 1.8 * rows + 0.4), layout="constrained")
    if len(idx) == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no prediction changed", ha="center", va="center")
        ax.axis("off")
    for k, i in enumerate(idx.tolist()):
        ax = fig.add_subplot(rows, cols, k + 1)
        img = x[i].detach().float().cpu()
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-8)
        ax.imshow((img[0] if img.shape[0] == 1 else img[:3].permute(1, 2, 0)).numpy(), cmap="gray")
        first, last = int(pred[0, i]), int(pred[-1, i])
        title, color = f"{name(first)} -> {name(last)}", "black"
        if y is not None:
            truth = int(y[i])
            title += f" ({name(truth)})"
            color = "green" if last == truth else ("red" if first == truth else "black")
        ax.set_title(title, fontsize="small", color=color)
        ax.axis("off")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out, idx


def dasnet_report(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, out_dir: str | Path, *, images: int = 4
) -> dict[str, Any]:
    """Write ``gains.png`` and ``changed.png`` for ``model`` on ``x`` into ``out_dir``; return counts and paths.

    The filters in ``gains.png`` are labelled ``layer[index]`` from the model's ``steer`` list.
    """
    _check_dasnet(model)
    check_positive(images, "images", integer=True)
    tr = gain_trajectories(model, x)
    steer: list[str] = model.steer  # type: ignore[assignment]
    counts: list[int] = model.filter_counts  # type: ignore[assignment]
    names = [f"{layer}[{j}]" for layer, c in zip(steer, counts) for j in range(c)]
    out_dir = Path(out_dir)
    g_path = plot_gain_evolution(tr["gains"], out_dir / "gains.png", images=range(images), filter_names=names)
    c_path, shown = plot_changed_predictions(x, tr["pred"], out_dir / "changed.png", y=y)
    ch = changed_predictions(tr["pred"], y)
    return {
        "gains_png": g_path,
        "changed_png": c_path,
        "shown": shown,
        **{k: int(v.numel()) for k, v in ch.items()},
    }


@register_view("gain evolution", kinds=("gains",), model=DasNet, order=50)
def _gain_evolution_view(ctx: ViewContext, records: dict[str, Any]) -> list[View]:
    """dasNet: the gains of the most-moved filters, pass by pass."""
    gains = gain_trajectories(ctx.model, ctx.xs)["gains"]
    png = file_png(lambda p: plot_gain_evolution(gains, p, images=range(min(4, ctx.show))))
    return [View("gain evolution", "dasNet gains of the most-moved filters per pass.", png)]
