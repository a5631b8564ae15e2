"""What the timm-backed drop-in modules (``eca``, ``cbam``) share: the lazy import of timm's attention
factory (``timm.layers.create_attn``) and the gate that replaces timm's ``sigmoid``.

Why the gate is replaced. timm's ECA and CBAM rescale ``x`` by ``sigmoid(z)``. A sigmoid is never 1, and
no initialisation of timm's weights makes the module the identity (with a zeroed last layer it halves
every activation: ``sigmoid(0) = 0.5``), so inserting it into a trained network would change its
outputs. With ``identity_init=True`` visattn swaps each ``gate`` submodule of the timm module (by name,
no forward is patched) for :class:`TimmGate` with ``centred=True``, i.e. ``2 sigmoid(z)`` in ``(0, 2)``,
and zeroes the layer that produces ``z``: the gate is then exactly 1 (``2 * 0.5`` is exact in floating
point) and the module the identity, the same centred form as visattn's SE (``visattn.attention.se``).
The zeroed layer still gets a gradient at the first step, so the gate departs from 1 smoothly. With
``identity_init=False`` the gate is timm's ``sigmoid`` and timm's initialisation is kept.

Every gate passes through an ``AttentionTap``: channel gates as ``(B, C)`` (kind ``"channel"``), spatial
gates as ``(B, 1, H, W)`` (kind ``"spatial"``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from visattn._validate import check_choice, check_tensor, check_type
from visattn.attention._tap import AttentionTap

__all__ = ["TimmGate", "create_timm_attn", "check_timm_input"]


def create_timm_attn(attn_type: str, channels: int | None, **kwargs: Any) -> nn.Module:
    """``timm.layers.create_attn(attn_type, channels, **kwargs)``; ImportError saying how to install timm."""
    try:
        from timm.layers import create_attn
    except ImportError as err:
        raise ImportError(
            f"attention {attn_type!r} wraps timm's module: pip install 'visattn[timm]' (or pip install timm)"
        ) from err
    module = create_attn(attn_type, channels, **kwargs)
    if module is None:  # pragma: no cover - only if timm drops the name
        raise ValueError(f"timm.layers.create_attn does not know {attn_type!r}")
    return module


class TimmGate(nn.Module):
    """``sigmoid(z)`` (timm's gate) or ``2 sigmoid(z)`` (``centred=True``), through ``self.tap``.

    Shapes: ``z`` of any shape ``(B, ...)``; a ``"channel"`` gate is tapped as ``(B, C)`` (its trailing
    dims flattened) and returned in ``z``'s shape.

    >>> g = TimmGate("channel", centred=True)
    >>> g(torch.zeros(2, 1, 8)).shape, bool((g(torch.zeros(2, 1, 8)) == 1).all())
    (torch.Size([2, 1, 8]), True)
    """

    def __init__(self, kind: str, *, centred: bool) -> None:
        super().__init__()
        check_choice(kind, "kind", ("channel", "spatial"))
        check_type(centred, "centred", bool)
        self.kind = kind
        self.centred = centred
        self.tap = AttentionTap(kind)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(z)
        if self.centred:
            g = 2.0 * g
        if self.kind == "channel":
            return self.tap(g.flatten(1)).view_as(g)
        return self.tap(g)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, centred={self.centred}"


def check_timm_input(module: nn.Module, x: Any, channels: int) -> torch.Tensor:
    """``check_tensor`` for a timm-backed module's input; a BatchNorm in training mode also needs more
    than one value per channel, said here instead of by BatchNorm."""
    check_tensor(x, "x", ndim=4, channels=channels)
    if module.training and x.shape[0] * x.shape[2] * x.shape[3] < 2 and _has_batchnorm(module):
        raise ValueError(
            f"x: a {type(module).__name__} in training mode needs more than one value per channel for its "
            f"BatchNorm (B*H*W > 1), got x of shape {tuple(x.shape)}; call .eval() or pass a larger batch"
        )
    return x


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
