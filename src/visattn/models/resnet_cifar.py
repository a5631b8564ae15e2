"""CIFAR ResNets (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, sec. 4.2).

Depth ``6n + 2``: a 3x3 stem with 16 filters, three stages of ``n`` basic blocks with 16, 32,
64 filters (stride 2 at the start of stages 2 and 3), global average pooling and a linear
classifier. Shortcuts follow the paper's CIFAR option A: identity, or sub-sampling plus
zero-padding of the channels when the shape changes (no parameters), so ``resnet20`` has
0.27M parameters as in the paper's Table 6.

Each block takes an attention layer by name (``attn_layer``), applied to the residual branch
before the addition (SE-Net Fig. 3); without one, ``block.attn`` is an ``nn.Identity`` that
``visattn.retrofit`` can replace.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visattn.models._common import InputSpec, check_input, check_model_args
from visattn.models._registry import register_model
from visattn.models.resnet import BasicBlock

__all__ = ["CifarBasicBlock", "CifarResNet", "resnet_cifar"]


class _PadShortcut(nn.Module):
    """Option-A shortcut: ``x[:, :, ::2, ::2]`` zero-padded to ``out_planes`` channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.pad // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad - half))


class CifarBasicBlock(BasicBlock):
    """``BasicBlock`` (two 3x3 conv-BN layers, attention on the residual branch) with the paper's CIFAR
    option-A shortcut: identity, or sub-sampling plus zero-padded channels (no parameters).

    Shapes: ``(B, in_planes, H, W) -> (B, planes, H / stride, W / stride)``.

    >>> CifarBasicBlock(16, 32, 2)(torch.zeros(1, 16, 8, 8)).shape
    torch.Size([1, 32, 4, 4])
    """

    def _shortcut(self, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
        if stride == 1 and in_planes == out_planes:
            return None
        return _PadShortcut(in_planes, out_planes, stride)

    @property
    def shortcut(self) -> nn.Module:
        """The shortcut module (``nn.Identity`` when the shape is kept); held as ``downsample``."""
        return self.downsample if self.downsample is not None else nn.Identity()


class CifarResNet(nn.Module):
    """ResNet of depth ``6n + 2`` for 32x32 images (any size >= 8x8 runs).

    Args:
        depth: 20, 32, 44, 56, 110 or any ``6n + 2``.
        num_classes: size of the output.
        in_chans: input channels (3 for CIFAR, 1 for MNIST-like data).
        attn_layer: registered attention name used in every block, or ``None``.
        attn_kwargs: options for that attention layer.
        zero_init_residual: zero every block's last BN scale.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``.
    """

    def __init__(
        self,
        depth: int = 20,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        attn_layer: str | None = None,
        attn_kwargs: dict | None = None,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans)
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {depth!r}")
        n = (depth - 2) // 6
        self.input_spec = InputSpec(in_chans, min_size=(8, 8))
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        block = partial(CifarBasicBlock, attn_layer=attn_layer, attn_kwargs=attn_kwargs)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [block(in_planes, planes, stride)] + [block(planes, planes, 1) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, CifarBasicBlock):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, 64, H / 4, W / 4)``."""
        check_input(self.input_spec, x)
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet_cifar(depth: int, **kwargs: Any) -> CifarResNet:
    """Build a CIFAR ResNet of ``depth``."""
    return CifarResNet(depth, **kwargs)


for _depth in (20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}")(partial(resnet_cifar, _depth))
