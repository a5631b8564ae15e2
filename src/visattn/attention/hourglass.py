"""The hourglass: one bottom-up top-down block (Newell, Yang, Deng, "Stacked Hourglass Networks for Human
Pose Estimation", ECCV 2016, arXiv:1603.06937, sec. 3.1, fig. 3), shared by the stacked hourglass
(``visattn.models.hourglass``), multi-context attention (``visattn.attention.multi_context``) and the soft
mask branch of the Residual Attention Network (``visattn.attention.residual``).

:class:`BottomUpTopDown` holds the block's units and runs it; with ``L`` pooling levels, a feature map
``x = d_0`` of shape ``(B, C, H, W)`` and level ``l`` at resolution ``ceil(H / 2^l) x ceil(W / 2^l)``:

1. bottom-up: ``d_l = D_l(pool(d_{l-1}))`` for ``l = 1..L`` (``self.down[l - 1]``), and a skip
   ``s_l = S_l(d_l)`` at every level ``skip_from <= l < L`` (``self.skips[l - skip_from]``);
2. lowest resolution: ``u_L = U_L(bottom(d_L))`` (``self.up[L - 1]``, ``self.bottom``);
3. top-down: ``u_l = U_l(up(u_{l+1}) + s_l)`` for ``l = L-1..1`` (``self.up[l - 1]``), ``up`` resizing to
   the exact size of ``s_l``;
4. output: ``up(u_1) + s_0`` when ``skip_from == 0``, else ``up(u_1)`` at ``(H, W)``.

The two users differ only in their parts:

* Newell's hourglass (:class:`Hourglass`): ``skip_from = 0`` (a skip at every resolution, the input's
  included), ``bottom`` one more stack of units, 2x2 max-pooling and nearest up-sampling; every unit a
  pre-activation bottleneck of width ``C / 2`` (the paper's residual module, fig. 4 left). Unrolled this
  is the paper's recursion ``hg(n, x) = S(x) + up(U(hg(n - 1, D(pool(x)))))``.
* The Residual Attention Network's mask branch: ``skip_from = 1`` (no skip at the input resolution,
  whose trunk is the attention module's), ``bottom`` the identity, 3x3/2 max-pooling and bilinear
  up-sampling (see that module's docstring).

Pooling rounds up (``ceil_mode``) and up-sampling targets the matching bottom-up size, so any ``H, W``
works and the output has the input's size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from visattn._validate import check_positive, check_tensor
from visattn.attention._preact import PreActBottleneck

__all__ = ["BottomUpTopDown", "Hourglass", "residual_unit", "unit_stack"]


def residual_unit(channels: int) -> nn.Module:
    """Newell's residual module: a pre-activation bottleneck ``C -> C/2 -> C/2 -> C`` with identity skip.

    >>> residual_unit(16)(torch.randn(1, 16, 5, 6)).shape
    torch.Size([1, 16, 5, 6])
    """
    return PreActBottleneck(channels, channels, width=max(1, channels // 2))


def unit_stack(channels: int, n: int, unit: Callable[[int], nn.Module] = residual_unit) -> nn.Sequential:
    """``n`` shape-preserving units ``unit(channels)`` in sequence (``n = 0``: the identity)."""
    return nn.Sequential(*[unit(channels) for _ in range(n)])


class BottomUpTopDown(nn.Module):
    """Base class: the bottom-up top-down pass over ``self.down``, ``self.skips``, ``self.bottom``, ``self.up``.

    Subclasses call :meth:`_build_levels` in ``__init__`` and may override :meth:`pool` and
    :meth:`upsample`; :meth:`bottom_up_top_down` is the one implementation of the pass (module docstring).
    """

    skip_from: int = 0

    def _build_levels(
        self,
        levels: int,
        make: Callable[[], nn.Module],
        *,
        skip_from: int,
        make_skip: Callable[[], nn.Module] | None = None,
        bottom: nn.Module | None = None,
    ) -> None:
        """Create ``down`` (``levels`` x ``make()``), ``skips`` (levels ``skip_from..levels-1``), ``up``
        (``levels`` x ``make()``) in that order (the order fixes the parameter initialisation), then ``bottom``."""
        check_positive(levels, "levels", integer=True)
        if skip_from not in (0, 1):
            raise ValueError(f"skip_from must be 0 or 1, got {skip_from!r}")
        self.skip_from = skip_from
        self.down = nn.ModuleList([make() for _ in range(levels)])
        self.skips = nn.ModuleList([(make_skip or make)() for _ in range(skip_from, levels)])
        self.up = nn.ModuleList([make() for _ in range(levels)])
        self.bottom = bottom if bottom is not None else nn.Identity()

    @property
    def levels(self) -> int:
        """``L``, the number of pooling steps."""
        return len(self.down)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """2x2 max-pool, stride 2, rounding up: ``(B, C, H, W) -> (B, C, ceil(H / 2), ceil(W / 2))``."""
        return F.max_pool2d(x, 2, 2, ceil_mode=True)

    def upsample(self, x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
        """Nearest-neighbour up-sampling to ``size`` (a fresh tensor)."""
        return F.interpolate(x, size=tuple(size), mode="nearest")

    def bottom_up_top_down(self, x: torch.Tensor, *, keep: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The pass of the module docstring, ``(B, C, H, W) -> (B, C, H, W)``.

        ``keep``, when given, receives the top-down maps ``u_L, ..., u_1`` (coarse to fine) and then the
        output, for attention read at several resolutions. Each intermediate map is released once used.
        """
        n = self.levels
        skips = []
        if self.skip_from == 0:
            skips.append(self.skips[0](x))
        d = x
        for i, down in enumerate(self.down):
            d = down(self.pool(d))
            level = i + 1
            if self.skip_from <= level < n:
                skips.append(self.skips[level - self.skip_from](d))
        u = self.up[-1](self.bottom(d))
        del d
        if keep is not None:
            keep.append(u)
        for level in range(n - 1, 0, -1):
            s = skips.pop()  # the skip of this level (appended in level order)
            u = self.upsample(u, s.shape[-2:]).add_(s)
            del s
            u = self.up[level - 1](u)
            if keep is not None:
                keep.append(u)
        if self.skip_from == 0:
            s = skips.pop()
            u = self.upsample(u, s.shape[-2:]).add_(s)
        else:
            u = self.upsample(u, x.shape[-2:])
        if keep is not None:
            keep.append(u)
        return u


class Hourglass(BottomUpTopDown):
    """Newell et al.'s hourglass module, ``(B, C, H, W) -> (B, C, H, W)`` (module docstring).

    Args:
        channels: ``C``, kept at every resolution.
        depth: pooling steps ``L`` (the paper: 4, from 64x64 down to 4x4).
        units: units per stack (every skip, down, bottom and up stack); the paper uses 1.
        unit: ``unit(C) -> nn.Module``, a shape-preserving unit; default :func:`residual_unit`
            (multi-context attention passes its hourglass residual unit).

    >>> hg = Hourglass(16, depth=3)
    >>> hg(torch.randn(2, 16, 12, 9)).shape
    torch.Size([2, 16, 12, 9])
    """

    def __init__(
        self,
        channels: int,
        *,
        depth: int = 4,
        units: int = 1,
        unit: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_positive(depth, "depth", integer=True)
        check_positive(units, "units", integer=True)
        self.channels, self.depth, self.units = channels, depth, units
        make_unit = unit or residual_unit
        self._build_levels(
            depth,
            lambda: unit_stack(channels, units, make_unit),
            skip_from=0,
            bottom=unit_stack(channels, units, make_unit),
        )

    def forward(self, x: torch.Tensor, *, keep: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``; ``keep`` as in :meth:`bottom_up_top_down`."""
        check_tensor(x, "x", ndim=4, channels=self.channels)
        return self.bottom_up_top_down(x, keep=keep)

    def extra_repr(self) -> str:
        return f"{self.channels}, depth={self.depth}, units={self.units}"
