"""ECA, efficient channel attention (Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for
Deep Convolutional Neural Networks", CVPR 2020, arXiv:1910.03151), as timm builds it
(``timm.layers.create_attn("eca", C)``), behind visattn's drop-in contract.

For ``x`` of shape ``(B, C, H, W)``: ``y = mean_{h,w} x`` (``(B, C)``), a 1-D convolution of kernel ``k``
across the channels without bias (eq. 4: local cross-channel interaction, no dimensionality reduction),
``g = sigmoid(conv1d(y))``, output ``g[:, :, None, None] * x``. The kernel is adaptive (eq. 12):
``k = |log2(C) / gamma + beta / gamma|_odd`` (at least 3), or ``kernel_size`` when given.

``identity_init=True``: timm's ``sigmoid`` gate becomes ``2 sigmoid`` and the conv's weights are zeroed,
so the module is the identity when created (see ``visattn.attention._timm`` for why timm's module cannot
be identity-initialised as is). The gate ``(B, C)`` goes through an ``AttentionTap("channel")``
(``module.gate.tap``). Needs timm (``pip install 'visattn[timm]'``).

>>> import torch
>>> eca = EfficientChannelAttention(64, identity_init=True)
>>> x = torch.randn(2, 64, 5, 7)
>>> eca(x).shape, torch.equal(eca(x), x), eca.kernel_size
(torch.Size([2, 64, 5, 7]), True, 3)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from visattn._validate import check_positive, check_type
from visattn.attention._registry import register_attention
from visattn.attention._timm import TimmGate, check_timm_input, create_timm_attn

__all__ = ["EfficientChannelAttention", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
    """ECA-Net eq. 12, as timm computes it: the nearest odd ``int(|log2 C + beta| / gamma)``, at least 3.

    >>> eca_kernel_size(64), eca_kernel_size(1152)
    (3, 5)
    """
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


@register_attention("eca")
class EfficientChannelAttention(nn.Module):
    """ECA channel gate (timm's ``EcaModule``), ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``.
        kernel_size: odd size of the 1-D conv across channels; ``None`` (default): eq. 12 from
            ``gamma`` and ``beta``.
        gamma, beta: eq. 12's constants (the paper's 2 and 1).
        identity_init: start as the identity (``2 sigmoid`` gate, zeroed conv; module docstring).

    Shapes: ``x (B, C, H, W) -> (B, C, H, W)``; the gate ``(B, C)`` through ``self.module.gate.tap``.
    """

    supports_identity_init = True

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int | None = None,
        gamma: float = 2.0,
        beta: float = 1.0,
        identity_init: bool = False,
    ) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_positive(gamma, "gamma")
        check_type(beta, "beta", (int, float))
        check_type(identity_init, "identity_init", bool)
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        check_positive(kernel_size, "kernel_size", integer=True)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the conv keeps C channels), got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.identity_init = identity_init
        # channels=None: timm then uses kernel_size as given (with channels it recomputes eq. 12)
        module: Any = create_timm_attn("eca", None, kernel_size=kernel_size)
        module.gate = TimmGate("channel", centred=identity_init)
        if identity_init:
            nn.init.zeros_(module.conv.weight)
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale the channels of ``x``: ``(B, C, H, W) -> (B, C, H, W)``."""
        return self.module(check_timm_input(self, x, self.channels))

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, identity_init={self.identity_init}"
