"""SE-ResNets (Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507).

A Squeeze-and-Excitation gate (``visattn.attention.SqueezeExcite``) on the residual branch of every block,
before the addition (the paper's Fig. 3): ``y = relu(g(u) * u + shortcut(x))`` with ``u`` the branch output.

* CIFAR: ``se_resnet20/32/56/110`` are ``resnet20/32/56/110`` with ``attn_layer="se"``.
* ImageNet-style: ``se_resnet18`` (basic blocks) and ``se_resnet50`` (bottlenecks) use ``SEBasicBlock`` and
  ``SEBottleneck``: the same parameters and names as ``resnet18/50`` with ``attn_layer="se"`` (so their
  weights load into each other with ``strict=True``), but the block ends in
  ``se_norm_residual_relu(se, c, bn, shortcut)`` (``visattn.models._se_fused``) from the last convolution's output ``c``, which folds
  the batch norm into the gate: with ``bn(c) = a c + b`` per channel, the squeeze is ``a mean_hw c + b`` and
  the block's output ``relu((a g) c + (b g) + shortcut)``, so ``bn(c)`` is never written. In training the
  batch moments, running statistics, squeeze, gate, rescale, add and ReLU are one hand-differentiated
  function whose backward takes every reduction from one fused pass; in eval mode the same folding is used
  for large maps, the plain ``bn`` then ``relu(addcmul(shortcut, u, g))`` for small ones (batch 1).
  Outputs, gradients and BN running statistics equal the unfused block's (tested in float64). See
  ``docs/results/se.md`` for the measured overhead.

SE options go in ``attn_kwargs`` (e.g. ``{"reduction": 8}``).

>>> import torch, visattn
>>> visattn.create_model("se_resnet20")(torch.zeros(2, 3, 32, 40)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import torch
from torch import nn

from visattn._validate import check_choice
from visattn.attention.se import SqueezeExcite
from visattn.models._registry import register_model
from visattn.models._se_fused import se_norm_residual_relu, se_residual_relu
from visattn.models.resnet import BasicBlock, Bottleneck, ResNet
from visattn.models.resnet_cifar import CifarResNet, resnet_cifar

__all__ = [
    "SEBasicBlock",
    "SEBottleneck",
    "se_norm_residual_relu",
    "se_residual_relu",
    "se_resnet18",
    "se_resnet50",
]


class _SETail:
    """Mixin for SE-ResNet blocks: ``attn`` must be SE, and the block ends in the fused tail
    ``se_norm_residual_relu(attn, c, bn, shortcut)`` from the last convolution's output ``c``."""

    downsample: nn.Module | None
    branch: Any

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        attn_layer: str | None = "se",
        attn_kwargs: dict | None = None,
    ) -> None:
        check_choice(attn_layer, "attn_layer", ("se",))
        super().__init__(in_planes, planes, stride, attn_layer="se", attn_kwargs=attn_kwargs)  # type: ignore[call-arg]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        c, bn = self.branch(x)
        attn = cast(SqueezeExcite, self.attn)  # type: ignore[attr-defined]
        return se_norm_residual_relu(attn, c, bn, identity, inplace=True)


class SEBasicBlock(_SETail, BasicBlock):
    """``BasicBlock`` whose ``attn`` is a ``SqueezeExcite``, rescale fused with the residual add.

    Shapes: ``(B, in_planes, H, W) -> (B, planes, H / stride, W / stride)``.
    """


class SEBottleneck(_SETail, Bottleneck):
    """``Bottleneck`` whose ``attn`` is a ``SqueezeExcite``, rescale fused with the residual add.

    Shapes: ``(B, in_planes, H, W) -> (B, 4 * planes, H / stride, W / stride)``.
    """


def _se_cifar(depth: int, **kwargs: Any) -> CifarResNet:
    return resnet_cifar(depth, attn_layer="se", **kwargs)


for _depth in (20, 32, 56, 110):
    register_model(f"se_resnet{_depth}")(partial(_se_cifar, _depth))


@register_model("se_resnet18")
def se_resnet18(**kwargs: Any) -> ResNet:
    """SE-ResNet-18: ``resnet18`` with SE (``r = 16``) in every basic block (11.8M parameters, 1000 classes).

    >>> se_resnet18(num_classes=5)(torch.zeros(1, 3, 64, 48)).shape
    torch.Size([1, 5])
    """
    return ResNet(SEBasicBlock, (2, 2, 2, 2), attn_layer="se", **kwargs)  # type: ignore[arg-type]


@register_model("se_resnet50")
def se_resnet50(**kwargs: Any) -> ResNet:
    """SE-ResNet-50: ``resnet50`` with SE (``r = 16``) in every bottleneck (28.1M parameters, 1000 classes).

    >>> se_resnet50(num_classes=5)(torch.zeros(1, 3, 32, 48)).shape
    torch.Size([1, 5])
    """
    return ResNet(SEBottleneck, (3, 4, 6, 3), attn_layer="se", **kwargs)  # type: ignore[arg-type]
