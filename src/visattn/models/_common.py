"""Pieces every visattn classifier shares: an input spec checked at ``forward``.

A model declares ``input_spec = InputSpec(in_chans, min_size)``; ``check_input`` raises a
``ValueError`` naming ``x`` and its shape before any convolution runs. The check reads
only shapes and dtype, never values (it is on the hot path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from visattn._validate import check_positive, check_tensor

__all__ = ["InputSpec", "check_input", "make_attention"]


@dataclass(frozen=True)
class InputSpec:
    """What a model accepts: ``(B, in_chans, H, W)`` with ``H, W >= min_size``.

    ``size`` fixes ``(H, W)`` exactly when the model has a fixed-size head.
    """

    in_chans: int
    min_size: tuple[int, int] = (1, 1)
    size: tuple[int, int] | None = None


def check_input(spec: InputSpec, x: torch.Tensor) -> torch.Tensor:
    """Check ``x`` against ``spec``; return ``x``."""
    return check_tensor(x, "x", ndim=4, channels=spec.in_chans, min_size=spec.min_size, size=spec.size)


def check_model_args(num_classes: int, in_chans: int) -> None:
    """Validate the two arguments every builder takes."""
    check_positive(num_classes, "num_classes", integer=True)
    check_positive(in_chans, "in_chans", integer=True)


def make_attention(attn_layer: str | None, channels: int, attn_kwargs: dict | None = None) -> nn.Module:
    """Build the attention layer named ``attn_layer`` for ``channels``, or ``nn.Identity``.

    The import is local so that ``visattn.attention`` never depends on ``visattn.models``.
    """
    if attn_layer is None:
        return nn.Identity()
    from visattn.attention import check_drop_in, create_attention

    return create_attention(check_drop_in(attn_layer, "attn_layer"), channels, **(attn_kwargs or {}))
