"""Excitation per class, block by block (Hu et al., "Squeeze-and-Excitation Networks", arXiv:1709.01507,
Fig. 6 and sec. 7.2: early SE gates are nearly class-agnostic, later ones class-specific).

``excitation_stats`` hooks every ``AttentionTap("channel")`` of a model (the gate ``(B, C)`` of each SE
module, inserted or built in), runs the data through the model in ``eval()`` mode without gradients, and
averages the gate per class: one ``(K, C)`` tensor per tap. ``plot_excitations`` draws these as one panel
per block (channel index on x, mean excitation on y, one line per class) and writes a PNG with
matplotlib's Agg canvas (no display needed). Hooks are removed and the model's mode restored afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from visattn._validate import check_positive, check_tensor, check_type
from visattn.attention import AttentionTap
from visattn.viz.views import View, ViewContext, file_png, register_view

__all__ = ["channel_taps", "excitation_stats", "plot_excitations"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def channel_taps(model: nn.Module) -> dict[str, AttentionTap]:
    """The model's ``AttentionTap("channel")`` submodules, keyed by their owner's name (``layer1.0.attn``)."""
    check_type(model, "model", nn.Module)
    taps = {}
    for name, m in model.named_modules():
        if isinstance(m, AttentionTap) and m.kind == "channel":
            taps[name.rpartition(".")[0] or name] = m
    return taps


def _batches(data: Batches | tuple[torch.Tensor, torch.Tensor], batch_size: int) -> Batches:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = cast(torch.Tensor, data[0]), cast(torch.Tensor, data[1])
        check_tensor(x, "data[0]", ndim=4)
        check_tensor(y, "data[1]", ndim=1, floating=False, layout="(B,)")
        if len(x) != len(y):
            raise ValueError(f"data must be (x, y) of equal length, got {len(x)} images and {len(y)} labels")
        return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return data  # type: ignore[return-value]


@torch.no_grad()
def excitation_stats(
    model: nn.Module,
    data: Batches | tuple[torch.Tensor, torch.Tensor],
    *,
    num_classes: int | None = None,
    max_batches: int | None = None,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Mean excitation per class of every channel tap.

    Args:
        model: a network with ``AttentionTap("channel")`` submodules (e.g. ``se_resnet20``).
        data: an iterable of ``(x (B, C, H, W), y (B,))`` batches (a ``DataLoader``) or one ``(x, y)`` pair.
        num_classes: ``K``; by default ``max(y) + 1`` over the data seen.
        max_batches: stop after this many batches.
        batch_size: batch size used when ``data`` is one ``(x, y)`` pair.

    Returns:
        ``{block name: (K, C) float tensor}``; rows of classes never seen are NaN.

    >>> import visattn
    >>> net = visattn.create_model("se_resnet20")
    >>> stats = excitation_stats(net, (torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])))
    >>> stats["layer3.2.attn"].shape
    torch.Size([3, 64])
    """
    taps = channel_taps(model)
    if not taps:
        raise ValueError(f"model {type(model).__name__} has no AttentionTap('channel') to record")
    if num_classes is not None:
        check_positive(num_classes, "num_classes", integer=True)
    if max_batches is not None:
        check_positive(max_batches, "max_batches", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    sums: dict[str, list[torch.Tensor]] = {name: [] for name in taps}
    current: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            current[name] = output.detach().float().reshape(output.shape[0], -1)

        return record

    handles = [tap.register_forward_hook(hook(name)) for name, tap in taps.items()]
    was_training = model.training
    labels: list[torch.Tensor] = []
    model.eval()
    try:
        for i, (x, y) in enumerate(_batches(data, batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            current.clear()
            model(x)
            labels.append(y.detach().long().cpu())
            for name in taps:
                if name not in current:
                    raise ValueError(f"tap {name!r} did not fire for batch {i}; is it on the forward path?")
                sums[name].append(current[name].cpu())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not labels:
        raise ValueError("data yielded no batches")
    y_all = torch.cat(labels)
    k = int(y_all.max()) + 1 if num_classes is None else num_classes
    if int(y_all.min()) < 0 or int(y_all.max()) >= k:
        raise ValueError(f"labels must be in [0, {k}), got range [{int(y_all.min())}, {int(y_all.max())}]")
    counts = torch.bincount(y_all, minlength=k).float()[:, None]
    stats = {}
    for name, chunks in sums.items():
        g = torch.cat(chunks)
        total = torch.zeros(k, g.shape[1]).index_add_(0, y_all, g)
        stats[name] = total / counts  # 0 / 0 = NaN for unseen classes
    return stats


def plot_excitations(
    model: nn.Module,
    data: Batches | tuple[torch.Tensor, torch.Tensor],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    max_batches: int | None = None,
    blocks: Sequence[str] | None = None,
    ncols: int = 4,
) -> dict[str, torch.Tensor]:
    """Plot the mean excitation per class of each block (SE paper Fig. 6) and save it as a PNG.

    Args:
        model, data, num_classes, max_batches: as in ``excitation_stats``.
        path: the PNG file to write (parent folders are created).
        class_names: legend labels, one per class (default ``"class k"``).
        blocks: names of the blocks to draw (keys of ``excitation_stats``); default all.
        ncols: panels per row.

    Returns:
        The statistics drawn, ``{block name: (K, C)}``.
    """
    from matplotlib.figure import Figure  # local: matplotlib is only needed to draw

    check_positive(ncols, "ncols", integer=True)
    stats = excitation_stats(model, data, num_classes=num_classes, max_batches=max_batches)
    if blocks is not None:
        unknown = [b for b in blocks if b not in stats]
        if unknown:
            raise ValueError(f"blocks {unknown} have no channel tap; valid names: {list(stats)}")
        stats = {b: stats[b] for b in blocks}
    k = next(iter(stats.values())).shape[0]
    if class_names is not None and len(class_names) != k:
        raise ValueError(f"class_names must have {k} entries (one per class), got {len(class_names)}")
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(k)]
    cols = min(ncols, len(stats))
    rows = math.ceil(len(stats) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (block, values) in zip(axes.flat, stats.items()):
        for cls in range(k):
            ax.plot(values[cls].numpy(), linewidth=0.8, label=names[cls])
        ax.set_title(block, fontsize=9)
        ax.set_xlabel("channel index", fontsize=8)
        ax.set_ylabel("excitation", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(stats) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(k, 10), fontsize=7)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return stats


@register_view("channel weights", kinds=("channel",), order=70)
def _channel_view(ctx: ViewContext, records: dict[str, Any]) -> list[View]:
    """Channel gates (SE paper, Fig. 6): mean excitation per class, block by block, over the whole batch."""
    names = ctx.class_names
    png = file_png(
        lambda p: plot_excitations(
            ctx.model, (ctx.x, ctx.labels), p, class_names=names, num_classes=len(names) if names else None
        )
    )
    return [View("channel weights", "Mean excitation per class, block by block.", png)]
