"""The multi-context attention pose network (Chu, Yang, Ouyang, Ma, Yuille, Wang, "Multi-Context Attention
for Human Pose Estimation", CVPR 2017, arXiv:1702.07432, sec. 3-4, fig. 2).

A stacked hourglass (``visattn.models.hourglass``) with the paper's pieces from
``visattn.attention.multi_context``, each a flag so that the ablation is a set of flags:

* ``use_hru``: hourglass residual units inside every hourglass;
* ``multires``: multi-resolution attention on every hourglass's output (``n_res`` finest resolutions);
* ``holistic``: a holistic attention map before the heatmap convolution of every stack;
* ``part``: part attention (one map per joint) produces the heatmaps of the stacks from ``part_from``
  on (default: the later half, ``n_stacks // 2``; the paper: 4 of 8); with ``holistic`` too, the part
  maps read the holistically attended features, as in the authors' code;
* ``crf_iters``: the mean-field CRF iterations of every attention map (0: no CRF).

With every flag off the network is exactly ``hourglass`` (same layers and parameter count).
Every attention map passes an ``AttentionTap("spatial")``, so ``visattn.viz.AttentionRecorder`` records
the multi-resolution, holistic ``(B, 1, h, w)`` and part ``(B, J, h, w)`` maps.
"""

from __future__ import annotations

import torch  # noqa: F401  (the doctests use it)
from torch import nn

from visattn._validate import check_positive, check_type
from visattn.attention.multi_context import HolisticAttention, MCAHourglass, PartAttention
from visattn.models._registry import register_model
from visattn.models.hourglass import StackedHourglass, _joints

__all__ = ["MCAPoseNet", "mca_hourglass"]


class MCAPoseNet(StackedHourglass):
    """Stacked hourglass with multi-context attention (module docstring); output as ``StackedHourglass``.

    >>> m = MCAPoseNet(num_joints=14, n_stacks=2, depth=2, width=32)
    >>> m(torch.randn(2, 3, 64, 64))["heatmaps"].shape
    torch.Size([2, 14, 16, 16])
    """

    def __init__(
        self,
        *,
        num_joints: int = 14,
        in_chans: int = 3,
        n_stacks: int = 2,
        depth: int = 4,
        width: int = 128,
        units: int = 1,
        use_hru: bool = True,
        multires: bool = True,
        n_res: int = 3,
        holistic: bool = True,
        part: bool = True,
        part_from: int | None = None,
        crf_iters: int = 3,
    ) -> None:
        for name, v in (("use_hru", use_hru), ("multires", multires), ("holistic", holistic), ("part", part)):
            check_type(v, name, bool)
        check_positive(crf_iters, "crf_iters", integer=True, allow_zero=True)
        part_from = n_stacks // 2 if part_from is None else part_from
        check_positive(part_from, "part_from", integer=True, allow_zero=True)
        if part and part_from >= n_stacks:
            raise ValueError(f"part_from must be < n_stacks={n_stacks} when part=True, got {part_from}")
        self.use_hru, self.multires, self.n_res = use_hru, multires, n_res
        self.holistic, self.part, self.part_from, self.crf_iters = holistic, part, part_from, crf_iters
        super().__init__(
            num_joints=num_joints, in_chans=in_chans, n_stacks=n_stacks, depth=depth, width=width, units=units
        )

    def make_hourglass(self, stack: int) -> nn.Module:
        if not (self.use_hru or self.multires):
            return super().make_hourglass(stack)
        return MCAHourglass(
            self.width,
            depth=self.depth,
            units=self.units,
            use_hru=self.use_hru,
            multires=self.multires,
            n_res=self.n_res,
            crf_iters=self.crf_iters,
        )

    def make_head(self, stack: int) -> nn.Module:
        layers: list[nn.Module] = []
        if self.holistic:
            layers.append(HolisticAttention(self.width, crf_iters=self.crf_iters))
        if self.part and stack >= self.part_from:
            layers.append(PartAttention(self.width, num_joints=self.num_joints, crf_iters=self.crf_iters))
        else:
            layers.append(super().make_head(stack))
        return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


@register_model("mca_hourglass")
def mca_hourglass(
    *,
    num_joints: int = 14,
    num_classes: int | None = None,
    in_chans: int = 3,
    n_stacks: int = 2,
    depth: int = 4,
    width: int = 128,
    units: int = 1,
    use_hru: bool = True,
    multires: bool = True,
    n_res: int = 3,
    holistic: bool = True,
    part: bool = True,
    part_from: int | None = None,
    crf_iters: int = 3,
) -> MCAPoseNet:
    """Multi-context attention pose network (``num_classes``, when given, is the joint count).

    >>> m = mca_hourglass(n_stacks=2, depth=3, width=32, crf_iters=2)
    >>> m(torch.randn(1, 3, 128, 128))["heatmaps"].shape
    torch.Size([1, 14, 32, 32])
    """
    return MCAPoseNet(
        num_joints=_joints(num_joints, num_classes),
        in_chans=in_chans,
        n_stacks=n_stacks,
        depth=depth,
        width=width,
        units=units,
        use_hru=use_hru,
        multires=multires,
        n_res=n_res,
        holistic=holistic,
        part=part,
        part_from=part_from,
        crf_iters=crf_iters,
    )


mca_hourglass.task = "pose"  # type: ignore[attr-defined]
