"""Top-k accuracy counts: the one helper every evaluation in visattn uses."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from visattn._validate import check_tensor

__all__ = ["topk_correct"]


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """How many rows of ``logits (B, K)`` have ``target (B,)`` among their ``k`` largest, per ``k``.

    ``k`` larger than ``K`` counts every row. Returns a float64 tensor ``(len(ks),)`` on ``logits``'
    device (sums, so they add over batches and processes).

    >>> logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    >>> topk_correct(logits, torch.tensor([1, 2]), ks=(1, 2, 5)).tolist()
    [1.0, 1.0, 2.0]
    """
    check_tensor(logits, "logits", ndim=2, layout="(B, K)")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must be (B,) with B = {logits.shape[0]}, got shape {tuple(target.shape)}")
    kmax = min(max(ks), logits.shape[1])
    hit = logits.topk(kmax, dim=1).indices.eq(target[:, None])
    return torch.stack([hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]).double()
