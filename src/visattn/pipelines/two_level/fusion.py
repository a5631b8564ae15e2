"""Fusion of the object-level and part-level scores (Xiao et al., CVPR 2015, Sec. 4.3).

``p(k | I) = a * p_obj(k | I) + (1 - a) * p_part(k | I)``, with the weight ``a`` chosen on the
validation split from ``a in {0, 1/(G-1), ..., 1}`` (``G = fuse_grid``; ties go to the larger ``a``,
the object level). The test split is scored only when ``score_test`` is set, once, with the chosen ``a``.
"""

from __future__ import annotations

import torch

__all__ = ["choose_weight", "top1"]


def top1(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (%) of ``probs`` ``(N, K)`` against ``labels`` ``(N,)``.

    >>> top1(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))
    50.0
    """
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"probs must be (N, K) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    if len(labels) == 0:
        raise ValueError("top1 needs at least one image, got 0")
    return 100.0 * int((probs.argmax(1) == labels).sum()) / len(labels)


def choose_weight(
    obj_val: torch.Tensor, part_val: torch.Tensor, labels_val: torch.Tensor, *, grid: int = 11
) -> tuple[float, list[tuple[float, float]]]:
    """The object-level weight ``a`` with the best validation top-1, and the whole curve ``[(a, top1)]``.

    >>> obj = torch.tensor([[0.6, 0.4], [0.6, 0.4]]); part = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    >>> a, curve = choose_weight(obj, part, torch.tensor([1, 0]), grid=3)
    >>> a, curve  # a = 0 and a = 0.5 are both right on both images; the tie goes to the larger a
    (0.5, [(0.0, 100.0), (0.5, 100.0), (1.0, 50.0)])
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")
    curve = []
    for i in range(grid):
        a = i / (grid - 1)
        curve.append((a, top1(a * obj_val + (1 - a) * part_val, labels_val)))
    best = max(curve, key=lambda t: (t[1], t[0]))
    return best[0], curve
