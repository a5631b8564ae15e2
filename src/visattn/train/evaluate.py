"""Evaluation: mean cross-entropy, top-1 and top-5 of a model over a loader (summed over processes).

One helper for the engine, ``visattn eval``, the report and the benchmarks, so every published
accuracy comes from the same loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visattn._dist import all_reduce_sum
from visattn.train.metrics import topk_correct

__all__ = ["evaluate", "logits_of", "autocast"]


def logits_of(output: Any) -> torch.Tensor:
    """The logits ``(B, K)`` of a model output (a tensor, or a dict with ``"logits"``).

    >>> logits_of({"logits": torch.zeros(2, 3)}).shape
    torch.Size([2, 3])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    raise TypeError(f"a model must return logits or a dict with 'logits', got {type(output).__name__}")


def autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    *,
    amp: bool = False,
    channels_last: bool = False,
    desc: str | None = None,
) -> dict[str, float]:
    """Mean cross-entropy ``loss``, ``top1`` and ``top5`` accuracy (%) and the count ``n`` over ``loader``.

    ``loader`` yields ``x (B, C, H, W)``, ``y (B,)``; the model returns logits ``(B, K)`` (or a dict
    with ``"logits"``) and runs in ``eval()`` mode. Sums are all-reduced over processes under
    ``torch.distributed`` (each rank passes its own shard). ``device`` defaults to the model's.
    ``desc``: show a progress bar with this label.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> batches = [(torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))]
    >>> r = evaluate(net, batches)
    >>> sorted(r), r["n"]
    (['loss', 'n', 'top1', 'top5'], 5)
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    if desc is not None:
        from tqdm import tqdm

        loader = tqdm(loader, desc=desc, unit="batch", mininterval=1.0, leave=False)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = logits_of(model(x)).float()
        top1, top5 = topk_correct(logits, y, (1, 5))
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                top1,
                top5,
                torch.tensor(float(y.numel()), dtype=torch.float64, device=device),
            ]
        )
    all_reduce_sum(sums)
    n = max(1.0, sums[3].item())
    return {
        "loss": sums[0].item() / n,
        "top1": 100 * sums[1].item() / n,
        "top5": 100 * sums[2].item() / n,
        "n": int(sums[3].item()),
    }
