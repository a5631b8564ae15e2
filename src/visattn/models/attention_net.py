"""Residual Attention Networks (Wang et al., "Residual Attention Network for Image Classification",
CVPR 2017, arXiv:1704.06904): stacks of ``visattn.attention.ResidualAttentionModule`` between
pre-activation bottleneck units.

ImageNet layout (the paper's Table 2; ``attention56``, ``attention92``), input ``224x224``:

=========  ========================================  ===========  ====================
stage      layers                                    output       mask pools (skips)
=========  ========================================  ===========  ====================
stem       7x7 conv 64, stride 2; BN-ReLU;             56x56
           3x3 max-pool, stride 2
1          unit 64 -> 256; ``m1`` modules (C=256)      56x56        3 (2): 56 -> 7
2          unit 256 -> 512, stride 2; ``m2`` modules   28x28        2 (1): 28 -> 7
3          unit 512 -> 1024, stride 2; ``m3`` modules  14x14        1 (0): 14 -> 7
4          unit 1024 -> 2048, stride 2; 2 units        7x7
head       BN-ReLU, global average pool, linear
=========  ========================================  ===========  ====================

``(m1, m2, m3)`` is ``(1, 1, 1)`` for Attention-56 and ``(1, 2, 3)`` for Attention-92; each module has
``p = 1, t = 2, r = 1``. Depth ``20 + 12 (m1 + m2 + m3)``: each module adds 4 units (12 layers) on the
trunk path.

CIFAR layout (``attention56_cifar``, ``attention92_cifar``), where the paper is silent, input ``32x32``:
the paper's CIFAR networks have depth ``36 m + 20`` with ``m`` modules in each stage (Attention-56, -92,
-128, -164 for ``m = 1..4``) and 1.9M parameters for Attention-92; it names neither widths nor the stem.
We use the widths of the pre-activation ResNet-164 the paper compares against (bottleneck widths 16, 32,
64; outputs 64, 128, 256), a 3x3 stem conv with 16 filters at stride 1 (no BN, as pre-act CIFAR ResNets),
and mirror the ImageNet layout one resolution down: stages at 32, 16, 8, a last stage of 3 units at 4x4
that keeps 256 channels (widening to 512 as ImageNet does would give 2.69M parameters), and masks that pool
down to that last resolution (3, 2, 1 poolings: 32, 16, 8 -> 4). This gives 2.03M
parameters for ``attention92_cifar`` (m = 2, +6.6% on the paper's 1.9M) and 1.21M for
``attention56_cifar`` (m = 1). Any input of at least 8x8 works (28x28 Fashion-MNIST with ``in_chans=1``
included): every pooling rounds up and every up-sampling targets the size of its skip, so the same modules
run at 32 (levels 16, 8, 4) and 28 (14, 7, 4).

Every module's mask is emitted through its ``tap`` (``AttentionTap("spatial")``), so
``visattn.viz.masks`` collects all of them in one forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visattn._validate import check_positive, check_type
from visattn.attention._preact import PreActBottleneck
from visattn.attention.residual import ResidualAttentionModule, _maxpool
from visattn.models._common import InputSpec, check_input, check_model_args
from visattn.models._registry import register_model

__all__ = ["ResidualAttentionNet"]

_LAYOUTS = {
    # stem, widths (stages 1..4 outputs), min input size
    "imagenet": (64, (256, 512, 1024, 2048), 32),
    "cifar": (16, (64, 128, 256, 256), 8),
}


class ResidualAttentionNet(nn.Module):
    """Residual Attention Network (see the module docstring for both layouts).

    Args:
        modules_per_stage: ``(m1, m2, m3)`` attention modules in stages 1-3.
        layout: ``"imagenet"`` (7x7 stem and max-pool, widths 256-2048) or ``"cifar"`` (3x3 stem,
            widths 64-256).
        num_classes: size of the output.
        in_chans: input channels.
        mask: mask activation of every module: ``"mixed"``, ``"channel"`` or ``"spatial"``.
        residual: attention residual learning ``(1 + M) * T`` (true) or naive ``M * T``.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``; ``H, W >= 32`` (ImageNet) or ``>= 8`` (CIFAR).

    >>> net = ResidualAttentionNet((1, 1, 1), layout="cifar", num_classes=10)
    >>> net(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        modules_per_stage: tuple[int, int, int],
        *,
        layout: str = "imagenet",
        num_classes: int = 1000,
        in_chans: int = 3,
        mask: str = "mixed",
        residual: bool = True,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans)
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {list(_LAYOUTS)}, got {layout!r}")
        check_type(modules_per_stage, "modules_per_stage", tuple)
        if len(modules_per_stage) != 3:
            raise ValueError(f"modules_per_stage must have 3 entries, got {modules_per_stage!r}")
        for m in modules_per_stage:
            check_positive(m, "modules_per_stage[i]", integer=True, allow_zero=True)
        stem, widths, min_size = _LAYOUTS[layout]
        self.input_spec = InputSpec(in_chans, min_size=(min_size, min_size))
        if layout == "imagenet":
            # the stem's 3x3/2 max-pool is applied in forward (``_maxpool``: channels-last memory)
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
            )
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, stem, 3, 1, 1, bias=False))
        self.stem_pool = layout == "imagenet"
        stages: list[nn.Module] = []
        cin = stem
        for i, (cout, m) in enumerate(zip(widths[:3], modules_per_stage)):
            skip_levels = 2 - i  # pools 3, 2, 1: every mask reaches the last stage's resolution
            blocks: list[nn.Module] = [PreActBottleneck(cin, cout, stride=1 if i == 0 else 2)]
            blocks += [
                ResidualAttentionModule(cout, skip_levels=skip_levels, mask=mask, residual=residual)
                for _ in range(m)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stage1, self.stage2, self.stage3 = stages
        self.stage4 = nn.Sequential(
            PreActBottleneck(cin, widths[3], stride=2),
            PreActBottleneck(widths[3], widths[3]),
            PreActBottleneck(widths[3], widths[3]),
        )
        self.norm = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, C_4, H / 32, W / 32)`` (ImageNet) or ``(H / 8, W / 8)`` (CIFAR)."""
        check_input(self.input_spec, x)
        x = self.stem(x)
        if self.stem_pool:
            x = _maxpool(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        return F.relu_(self.norm(self.stage4(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.forward_features(x), 1), 1))


@register_model("attention56")
def attention56(**kwargs: Any) -> ResidualAttentionNet:
    """Attention-56 for 224x224 input (paper: 31.9M parameters, 6.2G multiply-adds)."""
    return ResidualAttentionNet((1, 1, 1), layout="imagenet", **kwargs)


@register_model("attention92")
def attention92(**kwargs: Any) -> ResidualAttentionNet:
    """Attention-92 for 224x224 input (paper: 51.3M parameters, 10.4G multiply-adds)."""
    return ResidualAttentionNet((1, 2, 3), layout="imagenet", **kwargs)


@register_model("attention56_cifar")
def attention56_cifar(*, num_classes: int = 10, **kwargs: Any) -> ResidualAttentionNet:
    """Attention-56 for 32x32 input (``m = 1``; 1.21M parameters), a CPU-budget CIFAR network."""
    return ResidualAttentionNet((1, 1, 1), layout="cifar", num_classes=num_classes, **kwargs)


@register_model("attention92_cifar")
def attention92_cifar(*, num_classes: int = 10, **kwargs: Any) -> ResidualAttentionNet:
    """Attention-92 for 32x32 input (``m = 2``; paper: 1.9M parameters)."""
    return ResidualAttentionNet((2, 2, 2), layout="cifar", num_classes=num_classes, **kwargs)
