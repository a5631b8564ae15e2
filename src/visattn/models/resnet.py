"""ImageNet-style ResNets (He et al., CVPR 2016) whose parameter names match torchvision's.

``resnet18`` (basic blocks) and ``resnet50`` (bottlenecks) use the names ``conv1``, ``bn1``,
``layer1..4``, ``fc`` and, inside blocks, ``conv1/bn1/conv2/bn2[/conv3/bn3]`` and
``downsample``, so ``model.load_state_dict(torchvision_resnet.state_dict())`` works with
``strict=True``. Each block also holds ``attn``: the attention layer named by ``attn_layer``
applied to the residual branch before the addition (SE-Net Fig. 3), or an ``nn.Identity``
(no parameters, so torchvision weights still load) that ``visattn.retrofit`` can replace.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from visattn.models._common import InputSpec, check_input, check_model_args, make_attention
from visattn.models._registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def _downsample(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


def _add_shortcut(out: torch.Tensor, identity: torch.Tensor, attn: nn.Module) -> torch.Tensor:
    """``out + identity``; in place when ``out`` is the batch norm's own output (no attention module),
    as torchvision's blocks do (batch norm's backward does not need its output), which saves one
    allocation per block; a new tensor otherwise, since an attention module's backward may need it."""
    if type(attn) is nn.Identity:
        return out.add_(identity)
    return out + identity


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``(B, in_planes, H, W) -> (B, planes, H / stride, W / stride)``."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        attn_layer: str | None = None,
        attn_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = make_attention(attn_layer, planes, attn_kwargs)
        self.downsample = self._shortcut(in_planes, planes, stride)

    def _shortcut(self, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
        """The shortcut when the shape changes (``None``: identity); a 1x1 conv + BN here (option B)."""
        return _downsample(in_planes, out_planes, stride)

    def zero_init_last(self) -> None:
        """Zero the last BN's scale so the block starts as its shortcut."""
        nn.init.zeros_(self.bn2.weight)

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, nn.BatchNorm2d]:
        """The residual branch up to its last convolution: that conv's output and the BN that follows."""
        out = self.relu(self.bn1(self.conv1(x)))
        return self.conv2(out), self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        c, bn = self.branch(x)
        out = self.attn(bn(c))
        return self.relu(_add_shortcut(out, identity, self.attn))


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck (stride on the 3x3, as torchvision's V1.5);
    ``(B, in_planes, H, W) -> (B, 4 * planes, H / stride, W / stride)``."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        attn_layer: str | None = None,
        attn_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.attn = make_attention(attn_layer, out_planes, attn_kwargs)
        self.downsample = _downsample(in_planes, out_planes, stride)

    def zero_init_last(self) -> None:
        """Zero the last BN's scale so the block starts as its shortcut."""
        nn.init.zeros_(self.bn3.weight)

    def branch(self, x: torch.Tensor) -> tuple[torch.Tensor, nn.BatchNorm2d]:
        """The residual branch up to its last convolution: that conv's output and the BN that follows."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.conv3(out), self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        c, bn = self.branch(x)
        out = self.attn(bn(c))
        return self.relu(_add_shortcut(out, identity, self.attn))


class ResNet(nn.Module):
    """ImageNet-style ResNet: 7x7 stem, max-pool, four stages, global pool, linear head.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: size of the output (1000 for ImageNet weights).
        in_chans: input channels.
        attn_layer: registered attention name used in every block, or ``None``.
        attn_kwargs: options for that attention layer.
        zero_init_residual: zero every block's last BN scale.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``, ``H, W >= 32``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        attn_layer: str | None = None,
        attn_kwargs: dict | None = None,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans)
        self.input_spec = InputSpec(in_chans, min_size=(32, 32))
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        make = partial(block, attn_layer=attn_layer, attn_kwargs=attn_kwargs)
        in_planes = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            blocks = [make(in_planes, planes, stride)]
            in_planes = planes * block.expansion
            blocks += [make(in_planes, planes, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, 512 * expansion, H / 32, W / 32)``."""
        check_input(self.input_spec, x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


@register_model("resnet18")
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (11.7M parameters with 1000 classes)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model("resnet50")
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (25.6M parameters with 1000 classes)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)
