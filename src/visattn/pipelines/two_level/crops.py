"""Batched patch crops, batched scoring, and the small fine-tuning loop of the two-level pipeline.

Patches are cut with ``torchvision.ops.roi_align`` (one call per image for all its boxes, adaptive
sampling so large boxes are averaged, not aliased) and resized to ``patch_size x patch_size``.

Why not ``visattn.train.fit``: the engine builds its model from the model registry by name and its
data from the dataset registry; the pipeline fine-tunes an arbitrary ``nn.Module`` on in-memory
patch tensors that exist only inside one stage. :func:`finetune` is the documented minimal loop
instead: AdamW (head at 10x the body's learning rate), cosine decay per step, label smoothing 0.1,
random horizontal flips, a ``torch.Generator`` seeded with ``seed`` for the order and the flips.
It trains for a fixed number of epochs and selects nothing (no checkpoint choice on validation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from visattn.pipelines.two_level.images import load_rgb, resize_short, to_chw

__all__ = ["crop_boxes", "iter_image_boxes", "finetune", "predict"]


def crop_boxes(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop and resize boxes of one image.

    Args:
        image: ``uint8 (3, H, W)``.
        boxes: ``(N, 4)`` pixel boxes ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive.
        size: output side.

    Returns:
        ``uint8 (N, 3, size, size)``.

    >>> crop_boxes(torch.zeros(3, 20, 30, dtype=torch.uint8), torch.tensor([[0, 0, 30, 20], [5, 5, 10, 10]]), 8).shape
    torch.Size([2, 3, 8, 8])
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {tuple(boxes.shape)}")
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes.float()], 1)
    out = roi_align(
        image[None].float(), rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )
    return out.round().clamp(0, 255).to(torch.uint8)


def iter_image_boxes(
    paths: Sequence[str], boxes: Sequence[torch.Tensor], *, image_size: int, patch_size: int, batch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(patches uint8 (b, 3, P, P), owner int64 (b,))`` over all boxes of all images, ``b <= batch``.

    ``owner`` holds each patch's position in ``paths``. Images are decoded and resized (shorter side
    ``image_size``) one at a time, the same way the proposals stage did.
    """
    buf: list[torch.Tensor] = []
    own: list[torch.Tensor] = []
    n = 0
    for i, (p, b) in enumerate(zip(paths, boxes)):
        if len(b) == 0:
            continue
        img = to_chw(resize_short(load_rgb(p), image_size))
        crops = crop_boxes(img, b, patch_size)
        buf.append(crops)
        own.append(torch.full((len(b),), i, dtype=torch.int64))
        n += len(b)
        while n >= batch:
            x, o = torch.cat(buf), torch.cat(own)
            yield x[:batch], o[:batch]
            buf, own, n = [x[batch:]], [o[batch:]], n - batch
    if n:
        yield torch.cat(buf), torch.cat(own)


def _float(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, *, batch: int = 64) -> torch.Tensor:
    """Softmax ``(N, K)`` of ``net`` (eval mode) over uint8 images ``x`` ``(N, 3, H, W)``."""
    net.eval()
    return torch.cat([net(_float(x[i : i + batch])).softmax(1) for i in range(0, len(x), batch)])


def finetune(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch: int,
    seed: int,
    head: nn.Module | None = None,
) -> list[float]:
    """Fine-tune ``net`` on uint8 images ``x`` ``(N, 3, H, W)`` and labels ``y`` ``(N,)``; returns epoch losses.

    ``head`` (e.g. ``net.head``) gets ``10 * lr``; everything else ``lr``. Zero epochs leave ``net`` as is.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    if epochs == 0:
        return []
    gen = torch.Generator().manual_seed(seed)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    body = [p for p in net.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": body, "lr": lr}]
    if head is not None:
        groups.append({"params": list(head.parameters()), "lr": 10 * lr})
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    net.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(net(_float(xb)), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x))
    net.eval()
    return losses
