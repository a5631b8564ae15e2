"""A small CNN for 28x28 digit and clothing images (MNIST, Fashion-MNIST).

Two conv-BN-ReLU-maxpool stages (32 and 64 filters, 3x3), adaptive average pooling to
4x4, then FC 1024 -> 128 -> classes. An ``attn_layer`` is applied after each conv stage's
norm layer (``stage1.attn``, ``stage2.attn``); ``nn.Identity`` otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from visattn._validate import check_choice
from visattn.models._common import InputSpec, check_input, check_model_args, make_attention
from visattn.models._registry import register_model

__all__ = ["MnistCNN"]


class _Stage(nn.Module):
    def __init__(
        self, cin: int, cout: int, attn_layer: str | None, attn_kwargs: dict | None, norm: str
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout) if norm == "batch" else nn.GroupNorm(8, cout)
        self.attn = make_attention(attn_layer, cout, attn_kwargs)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.attn(self.bn(self.conv(x)))))


class MnistCNN(nn.Module):
    """Small CNN; shapes ``(B, in_chans, H, W) -> (B, num_classes)``, ``H, W >= 8``.

    ``norm="group"`` swaps BatchNorm for GroupNorm(8): its output does not depend on the
    batch, so a multi-process DDP run on CPU (where ``SyncBatchNorm`` is unavailable) computes
    exactly what one process computes on the same global batch.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_chans: int = 1,
        attn_layer: str | None = None,
        attn_kwargs: dict | None = None,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans)
        check_choice(norm, "norm", ("batch", "group"))
        self.input_spec = InputSpec(in_chans, min_size=(8, 8))
        self.stage1 = _Stage(in_chans, 32, attn_layer, attn_kwargs, norm)
        self.stage2 = _Stage(32, 64, attn_layer, attn_kwargs, norm)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(64 * 16, 128)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self.input_spec, x)
        x = self.pool(self.stage2(self.stage1(x)))
        return self.fc(torch.relu(self.fc1(torch.flatten(x, 1))))


@register_model("mnist_cnn")
def mnist_cnn(**kwargs: Any) -> MnistCNN:
    """The small MNIST CNN (about 0.15M parameters)."""
    return MnistCNN(**kwargs)
