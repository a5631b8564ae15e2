"""The pre-activation bottleneck residual unit (He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual
Networks", ECCV 2016, arXiv:1603.05027), the building block of the Residual Attention Network.

``y = s(x) + W3 relu(BN3(W2 relu(BN2(W1 relu(BN1(x))))))`` with ``W1: 1x1, C_in -> w``, ``W2: 3x3, w -> w``
(carrying the stride), ``W3: 1x1, w -> C_out`` and ``w = max(1, C_out // 4)`` (or a given ``width``; the
stacked hourglass uses ``C_out // 2``). The shortcut ``s`` is the
identity, or, when the shape changes, a strided 1x1 convolution of the pre-activated input
``relu(BN1(x))`` (He et al. 2016, fig. 4e / their code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PreActBottleneck", "preact_stack"]


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck, ``(B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s))``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``; the bottleneck width is ``max(1, C_out // 4)``.
        stride: stride ``s`` of the 3x3 convolution (and of the projection shortcut).
        width: bottleneck width ``w``; default ``max(1, C_out // 4)``.

    >>> PreActBottleneck(16, 64, stride=2)(torch.randn(2, 16, 9, 8)).shape
    torch.Size([2, 64, 5, 4])
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, *, width: int | None = None
    ) -> None:
        super().__init__()
        width = max(1, out_channels // 4) if width is None else width
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def zero_init_last(self) -> None:
        """Zero ``W3`` so that a unit with an identity shortcut starts as exactly the identity."""
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x), inplace=True)  # a fresh tensor: x itself is never modified
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        del pre  # free the full-width pre-activation now (lower peak memory, fewer fresh pages)
        out = self.conv2(F.relu_(self.bn2(out)))
        out = self.conv3(F.relu_(self.bn3(out)))
        return out.add_(identity)


def preact_stack(channels: int, n: int, width: int | None = None) -> nn.Sequential:
    """``n`` shape-preserving units on ``channels`` of bottleneck ``width`` (default ``channels // 4``);
    an empty ``Sequential`` is the identity."""
    return nn.Sequential(*[PreActBottleneck(channels, channels, width=width) for _ in range(n)])
