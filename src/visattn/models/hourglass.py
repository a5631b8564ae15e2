"""Stacked hourglass network for human pose (Newell, Yang, Deng, "Stacked Hourglass Networks for Human
Pose Estimation", ECCV 2016, arXiv:1603.06937, sec. 3, fig. 1, 3, 4).

``x (B, 3, H, W)`` -> stem (7x7/2 convolution, residual unit, 2x2 max-pool, two residual units) ->
features ``(B, C, H/4, W/4)``; then ``n_stacks`` times: hourglass (``visattn.attention.hourglass``),
``units`` residual units, a 1x1 convolution + BN + ReLU, and a 1x1 convolution to ``J`` heatmaps
(intermediate supervision, sec. 3.4). Between stacks the features are fed forward as
``x + W_f(features) + W_h(heatmaps)`` (two 1x1 convolutions).

Output: a dict with ``"stacks"``, a tuple of ``n_stacks`` heatmaps ``(B, J, H/4, W/4)`` (the loss
supervises every one), and ``"heatmaps"``, the last stack's (the prediction). A 128x128 input gives
32x32 heatmaps. The stem's widths are ``C/2`` then ``C`` (the paper: 64, 128, 256 with ``C = 256``).

The paper's setting is ``n_stacks=8, depth=4, width=256`` at 256 px; the defaults here (2 stacks,
depth 4, width 128) are a CPU-sized version.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from visattn._validate import check_positive
from visattn.attention._preact import PreActBottleneck
from visattn.attention.hourglass import Hourglass, residual_unit, unit_stack
from visattn.models._common import InputSpec, check_input
from visattn.models._registry import register_model

__all__ = ["StackedHourglass", "hourglass"]


class StackedHourglass(nn.Module):
    """Stacked hourglass (module docstring), ``(B, in_chans, H, W) -> {"heatmaps": (B, J, H/4, W/4), ...}``.

    Args:
        num_joints: ``J`` heatmaps per stack.
        in_chans: input channels.
        n_stacks: hourglasses in sequence, each supervised.
        depth: pooling steps inside each hourglass (the input must be at least ``4 * 2^depth`` px).
        width: ``C``, the channels of every hourglass.
        units: residual units per hourglass stack and after each hourglass.

    Subclasses change :meth:`make_hourglass` and :meth:`make_head` (multi-context attention does).

    >>> m = StackedHourglass(num_joints=14, n_stacks=2, depth=2, width=32)
    >>> out = m(torch.randn(2, 3, 64, 48))
    >>> out["heatmaps"].shape, len(out["stacks"])
    (torch.Size([2, 14, 16, 12]), 2)
    """

    task = "pose"

    def __init__(
        self,
        *,
        num_joints: int = 14,
        in_chans: int = 3,
        n_stacks: int = 2,
        depth: int = 4,
        width: int = 128,
        units: int = 1,
    ) -> None:
        super().__init__()
        for name, v in (("num_joints", num_joints), ("in_chans", in_chans), ("n_stacks", n_stacks)):
            check_positive(v, name, integer=True)
        for name, v in (("depth", depth), ("width", width), ("units", units)):
            check_positive(v, name, integer=True)
        if width < 2:
            raise ValueError(f"width must be at least 2, got {width}")
        self.num_joints, self.n_stacks, self.depth, self.width, self.units = (
            num_joints,
            n_stacks,
            depth,
            width,
            units,
        )
        self.input_spec = InputSpec(in_chans, min_size=(4 * 2**depth, 4 * 2**depth))
        half = width // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, half, 7, 2, 3, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            PreActBottleneck(half, width, width=half),
            nn.MaxPool2d(2, 2, ceil_mode=True),
            residual_unit(width),
            residual_unit(width),
        )
        self.hourglasses = nn.ModuleList([self.make_hourglass(i) for i in range(n_stacks)])
        self.post = nn.ModuleList([unit_stack(width, units) for _ in range(n_stacks)])
        self.lin = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
                )
                for _ in range(n_stacks)
            ]
        )
        self.heads = nn.ModuleList([self.make_head(i) for i in range(n_stacks)])
        self.merge_features = nn.ModuleList([nn.Conv2d(width, width, 1) for _ in range(n_stacks - 1)])
        self.merge_heatmaps = nn.ModuleList([nn.Conv2d(num_joints, width, 1) for _ in range(n_stacks - 1)])

    def make_hourglass(self, stack: int) -> nn.Module:
        """The hourglass of stack ``stack`` (0-based)."""
        return Hourglass(self.width, depth=self.depth, units=self.units)

    def make_head(self, stack: int) -> nn.Module:
        """Features ``(B, C, h, w)`` -> heatmaps ``(B, J, h, w)`` of stack ``stack``: a 1x1 convolution."""
        return nn.Conv2d(self.width, self.num_joints, 1)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        check_input(self.input_spec, x)
        x = self.stem(x)
        stacks = []
        for i in range(self.n_stacks):
            f = self.lin[i](self.post[i](self.hourglasses[i](x)))
            heat = self.heads[i](f)
            stacks.append(heat)
            if i < self.n_stacks - 1:
                x = x + self.merge_features[i](f) + self.merge_heatmaps[i](heat)
        return {"heatmaps": stacks[-1], "stacks": tuple(stacks)}


def _joints(num_joints: int, num_classes: int | None) -> int:
    """The engine passes the dataset's output count as ``num_classes``; it must agree with ``num_joints``."""
    if num_classes is not None:
        check_positive(num_classes, "num_classes", integer=True)
    return num_joints if num_classes is None else num_classes


@register_model("hourglass")
def hourglass(
    *,
    num_joints: int = 14,
    num_classes: int | None = None,
    in_chans: int = 3,
    n_stacks: int = 2,
    depth: int = 4,
    width: int = 128,
    units: int = 1,
) -> StackedHourglass:
    """Stacked hourglass for ``num_joints`` heatmaps (``num_classes``, when given, is the joint count:
    the training engine passes the dataset's).

    >>> m = hourglass(num_joints=14, n_stacks=2, depth=3, width=32)
    >>> m(torch.randn(1, 3, 128, 128))["heatmaps"].shape
    torch.Size([1, 14, 32, 32])
    """
    return StackedHourglass(
        num_joints=_joints(num_joints, num_classes),
        in_chans=in_chans,
        n_stacks=n_stacks,
        depth=depth,
        width=width,
        units=units,
    )


hourglass.task = "pose"  # type: ignore[attr-defined]
