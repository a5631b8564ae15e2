"""CBAM, the convolutional block attention module (Woo, Park, Lee, Kweon, "CBAM: Convolutional Block
Attention Module", ECCV 2018, arXiv:1807.06521), as timm builds it (``timm.layers.create_attn("cbam",
C)``), behind visattn's drop-in contract.

For ``x`` of shape ``(B, C, H, W)`` (eqs. 1-3): a channel gate
``M_c = sigmoid(MLP(avgpool x) + MLP(maxpool x))`` (``(B, C)``, a shared MLP ``C -> C/r -> C``), then on
``x' = M_c x`` a spatial gate ``M_s = sigmoid(f^{7x7}([mean_c x'; max_c x']))`` (``(B, 1, H, W)``; timm's
``f`` is a conv followed by BatchNorm), output ``M_s x'``.

``identity_init=True``: both of timm's ``sigmoid`` gates become ``2 sigmoid``; the MLP's last layer
(``channel.fc2``) and the spatial branch's BatchNorm scale and shift are zeroed, so both gates are exactly
1 and the module is the identity when created (see ``visattn.attention._timm`` for why timm's module
cannot be identity-initialised as is). Taps: ``module.channel.gate.tap`` (``"channel"``, ``(B, C)``) and
``module.spatial.gate.tap`` (``"spatial"``, ``(B, 1, H, W)``). Needs timm (``pip install 'visattn[timm]'``).

>>> import torch
>>> cbam = ConvBlockAttention(32, reduction=8, identity_init=True).eval()
>>> x = torch.randn(2, 32, 6, 6)
>>> cbam(x).shape, torch.equal(cbam(x), x)
(torch.Size([2, 32, 6, 6]), True)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from visattn._validate import check_positive, check_type
from visattn.attention._registry import register_attention
from visattn.attention._timm import TimmGate, check_timm_input, create_timm_attn

__all__ = ["ConvBlockAttention"]


@register_attention("cbam")
class ConvBlockAttention(nn.Module):
    """CBAM (timm's ``CbamModule``): channel then spatial gate, ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``.
        reduction: ``r``; the MLP's hidden layer has ``max(1, round(C / r))`` units (the paper's 16).
        spatial_kernel_size: odd side of the spatial gate's conv (the paper's 7).
        identity_init: start as the identity (``2 sigmoid`` gates, zeroed last layers; module docstring).

    Shapes: ``x (B, C, H, W) -> (B, C, H, W)``; gates ``(B, C)`` and ``(B, 1, H, W)`` through the taps.
    In training mode the spatial branch's BatchNorm needs ``B * H * W > 1``.
    """

    supports_identity_init = True

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        spatial_kernel_size: int = 7,
        identity_init: bool = False,
    ) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_positive(reduction, "reduction", integer=True)
        check_positive(spatial_kernel_size, "spatial_kernel_size", integer=True)
        if spatial_kernel_size % 2 == 0:
            raise ValueError(
                f"spatial_kernel_size must be odd (the map keeps its H x W), got {spatial_kernel_size}"
            )
        check_type(identity_init, "identity_init", bool)
        self.channels = channels
        self.reduction = reduction
        self.identity_init = identity_init
        module: Any = create_timm_attn(
            "cbam", channels, rd_ratio=1.0 / reduction, spatial_kernel_size=spatial_kernel_size
        )
        module.channel.gate = TimmGate("channel", centred=identity_init)
        module.spatial.gate = TimmGate("spatial", centred=identity_init)
        if identity_init:
            nn.init.zeros_(module.channel.fc2.weight)
            bn = module.spatial.conv.bn
            nn.init.zeros_(bn.weight)
            nn.init.zeros_(bn.bias)
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate the channels, then the positions, of ``x``: ``(B, C, H, W) -> (B, C, H, W)``."""
        return self.module(check_timm_input(self, x, self.channels))

    def extra_repr(self) -> str:
        return f"{self.channels}, reduction={self.reduction}, identity_init={self.identity_init}"
