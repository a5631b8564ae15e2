"""Multi-context attention (Chu, Yang, Ouyang, Ma, Yuille, Wang, "Multi-Context Attention for Human Pose
Estimation", CVPR 2017, arXiv:1702.07432, sec. 3-4).

The pieces, each usable alone (the model ``mca_hourglass`` in ``visattn.models.multi_context`` switches
each on with a flag, so the paper's ablation is a set of flags):

* :class:`HourglassResidualUnit` (HRU, sec. 4.1, fig. 4): ``y = x + F(x) + P(x)``, a residual unit with
  a third branch ``P`` that sees a larger context: 2x2 max-pool, two 3x3 convolutions, nearest
  up-sampling back to ``(H, W)``. ``F`` is the hourglass's bottleneck ``C -> C/2 -> C/2 -> C``; ``P``
  goes ``C -> C/2 -> C`` (the paper does not give its widths; ``C/2`` keeps the unit's cost near the
  bottleneck's).
* :class:`CRFAttention` (sec. 3.1-3.2, eq. 1-4): a map ``U = W_a * f`` (3x3 convolution, one channel
  per map) scored by a conditional random field whose mean-field inference is unrolled as a recurrent
  convolution with *shared* weights ``W_k`` (``k x k``, one per map):
  ``Phi_0 = sigmoid(U)``, ``Phi_t = sigmoid(U + W_k * Phi_{t-1})`` for ``t = 1..crf_iters``.
  ``crf_iters = 0`` is attention without the CRF. The authors' Lua code (bearpaw/pose-attention) uses the
  sigmoid as here (the paper writes a spatial softmax) and starts its first message from ``U``; here the
  first message is from ``Phi_0``, the usual mean-field order. The maps ``Phi (B, M, H, W)`` in
  ``(0, 1)`` go through ``self.tap = AttentionTap("spatial")``.
* :class:`HolisticAttention` (registered as attention ``"multi_context"``): ``h = Phi * f`` with one map
  for all channels (the early stacks' holistic attention).
* :class:`PartAttention`: one map per joint; joint ``p``'s heatmap is ``w_p . (Phi_p * f) + b_p``
  (the later stacks' part attention), computed as ``Phi_p * (w_p . f) + b_p``, which is the same.
* :class:`MultiResolutionAttention` (sec. 3.3): inside the hourglass, a map from the top-down features
  at each of the ``n_res`` finest resolutions, each up-sampled (bilinear) to the output size; the
  features are weighted by their mean ``Phi = mean_r up(Phi_r)`` (the paper sums the attended features;
  the mean keeps their scale). The mean map goes through the tap.
* :class:`MCAHourglass`: Newell's hourglass (``visattn.attention.hourglass``) with HRUs (``use_hru``)
  and multi-resolution attention on its output (``multires``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visattn._validate import check_positive, check_tensor, check_type
from visattn.attention._preact import PreActBottleneck
from visattn.attention._registry import register_attention
from visattn.attention._tap import AttentionTap
from visattn.attention.hourglass import Hourglass

__all__ = [
    "HourglassResidualUnit",
    "CRFAttention",
    "HolisticAttention",
    "PartAttention",
    "MultiResolutionAttention",
    "MCAHourglass",
]


class HourglassResidualUnit(nn.Module):
    """HRU, ``(B, C, H, W) -> (B, C, H, W)``: ``x + F(x) + P(x)`` (module docstring).

    >>> HourglassResidualUnit(16)(torch.randn(2, 16, 9, 8)).shape
    torch.Size([2, 16, 9, 8])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        width = max(1, channels // 2)
        self.channels = channels
        self.residual = PreActBottleneck(channels, channels, width=width)  # x + F(x)
        self.pooled = nn.Sequential(  # P, applied after a 2x2 max-pool
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pooled(F.max_pool2d(x, 2, 2, ceil_mode=True))
        p = F.interpolate(p, size=x.shape[-2:], mode="nearest")
        return self.residual(x).add_(p)


class CRFAttention(nn.Module):
    """Attention maps refined by mean-field CRF iterations, ``(B, C, H, W) -> (B, M, H, W)`` in ``(0, 1)``.

    Args:
        channels: ``C`` of the features.
        maps: ``M`` maps (1: holistic; one per joint: part attention).
        crf_iters: mean-field iterations ``T`` (0: ``sigmoid(U)``, no CRF); the message convolution
            ``W_k`` is shared by all iterations.
        kernel: ``k``, the side of ``W_k`` (odd; the authors use 3).

    >>> att = CRFAttention(16, maps=3, crf_iters=2)
    >>> att(torch.randn(2, 16, 8, 8)).shape
    torch.Size([2, 3, 8, 8])
    """

    def __init__(self, channels: int, *, maps: int = 1, crf_iters: int = 3, kernel: int = 3) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_positive(maps, "maps", integer=True)
        check_positive(crf_iters, "crf_iters", integer=True, allow_zero=True)
        check_positive(kernel, "kernel", integer=True)
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (a centred message), got {kernel}")
        self.channels, self.maps, self.crf_iters, self.kernel = channels, maps, crf_iters, kernel
        self.unary = nn.Conv2d(channels, maps, 3, padding=1)  # U = W_a * f
        # W_k: one k x k kernel per map, the same at every iteration (weights shared across the unroll)
        self.message = nn.Conv2d(maps, maps, kernel, padding=kernel // 2, groups=maps) if crf_iters else None
        self.tap = AttentionTap("spatial")

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        check_tensor(f, "f", ndim=4, channels=self.channels)
        u = self.unary(f)
        phi = torch.sigmoid(u)
        for _ in range(self.crf_iters):
            assert self.message is not None
            phi = torch.sigmoid(u + self.message(phi))
        return self.tap(phi)

    def extra_repr(self) -> str:
        return f"{self.channels}, maps={self.maps}, crf_iters={self.crf_iters}, kernel={self.kernel}"


@register_attention("multi_context")
class HolisticAttention(nn.Module):
    """Holistic attention, ``(B, C, H, W) -> (B, C, H, W)``: ``Phi * f`` with one CRF-refined map.

    >>> HolisticAttention(16, crf_iters=1)(torch.randn(2, 16, 8, 6)).shape
    torch.Size([2, 16, 8, 6])
    """

    def __init__(self, channels: int, *, crf_iters: int = 3, kernel: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.attention = CRFAttention(channels, maps=1, crf_iters=crf_iters, kernel=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=4, channels=self.channels)
        return x * self.attention(x)


class PartAttention(nn.Module):
    """Part attention heatmaps, ``(B, C, H, W) -> (B, J, H, W)``: ``Phi_p * (w_p . f) + b_p`` per joint.

    >>> PartAttention(16, num_joints=14, crf_iters=1)(torch.randn(2, 16, 8, 8)).shape
    torch.Size([2, 14, 8, 8])
    """

    def __init__(self, channels: int, *, num_joints: int, crf_iters: int = 3, kernel: int = 3) -> None:
        super().__init__()
        check_positive(num_joints, "num_joints", integer=True)
        self.channels, self.num_joints = channels, num_joints
        self.attention = CRFAttention(channels, maps=num_joints, crf_iters=crf_iters, kernel=kernel)
        self.score = nn.Conv2d(channels, num_joints, 1, bias=False)  # w_p
        self.bias = nn.Parameter(torch.zeros(1, num_joints, 1, 1))  # b_p

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, self.attention(f), self.score(f))


class MultiResolutionAttention(nn.Module):
    """Multi-resolution attention: ``f * mean_r up(Phi_r)`` with ``Phi_r`` from the top-down map at
    resolution ``r`` (``feats``, finest last, the last one of ``f``'s size).

    >>> mra = MultiResolutionAttention(8, n_res=2, crf_iters=1)
    >>> feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 8, 8, 8)]
    >>> mra(feats[-1], feats).shape
    torch.Size([2, 8, 8, 8])
    """

    def __init__(self, channels: int, *, n_res: int = 3, crf_iters: int = 3, kernel: int = 3) -> None:
        super().__init__()
        check_positive(n_res, "n_res", integer=True)
        self.channels, self.n_res = channels, n_res
        self.maps = nn.ModuleList(
            [CRFAttention(channels, maps=1, crf_iters=crf_iters, kernel=kernel) for _ in range(n_res)]
        )
        self.tap = AttentionTap("spatial")

    def forward(self, f: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        if len(feats) < self.n_res:
            raise ValueError(f"feats must hold at least n_res={self.n_res} maps, got {len(feats)}")
        size = f.shape[-2:]
        phi = None
        for att, g in zip(self.maps, feats[-self.n_res :], strict=True):
            p = att(g)
            if p.shape[-2:] != size:
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            phi = p if phi is None else phi + p
        assert phi is not None
        return f * self.tap(phi / self.n_res)


class MCAHourglass(Hourglass):
    """Hourglass with HRUs and multi-resolution attention on its output, ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``.
        depth, units: as :class:`~visattn.attention.hourglass.Hourglass`.
        use_hru: HRUs instead of residual units.
        multires: multi-resolution attention from the ``n_res`` finest top-down maps (at most
            ``depth + 1``).
        crf_iters: CRF iterations of the multi-resolution maps.

    >>> MCAHourglass(16, depth=2, n_res=2)(torch.randn(2, 16, 8, 8)).shape
    torch.Size([2, 16, 8, 8])
    """

    def __init__(
        self,
        channels: int,
        *,
        depth: int = 4,
        units: int = 1,
        use_hru: bool = True,
        multires: bool = True,
        n_res: int = 3,
        crf_iters: int = 3,
    ) -> None:
        check_type(use_hru, "use_hru", bool)
        check_type(multires, "multires", bool)
        super().__init__(channels, depth=depth, units=units, unit=HourglassResidualUnit if use_hru else None)
        if multires and not 1 <= n_res <= depth + 1:
            raise ValueError(f"n_res must be in [1, depth + 1 = {depth + 1}], got {n_res}")
        self.use_hru = use_hru
        self.multires = (
            MultiResolutionAttention(channels, n_res=n_res, crf_iters=crf_iters) if multires else None
        )

    def forward(self, x: torch.Tensor, *, keep: list[torch.Tensor] | None = None) -> torch.Tensor:
        if self.multires is None:
            return super().forward(x, keep=keep)
        feats: list[torch.Tensor] = []
        out = super().forward(x, keep=feats)
        if keep is not None:
            keep.extend(feats)
        return self.multires(out, feats)
