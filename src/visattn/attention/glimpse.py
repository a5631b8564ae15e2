"""The glimpse sensor (retina) of the Recurrent Attention Model.

Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual Attention", NIPS 2014, sec. 4:
``rho(x_t, l_{t-1})`` reads ``k`` patches of sides ``g, 2g, 4g, ...`` centred at ``l`` and resizes
each to ``g x g``. Hard attention: which pixels are read depends on ``l``, chosen by a policy.

Coordinate convention: that of ``visattn.functional.glimpse``: ``l = (x, y)`` in ``[-1, 1]``,
``(-1, -1)`` the top-left image *corner* (``align_corners=False``), ``(0, 0)`` the centre; the
patch of side ``s`` covers pixels ``[p - s/2, p + s/2)`` around ``p = (l + 1) (W, H) / 2``;
outside the image it reads ``padding_mode`` (``"zeros"`` by default: 0 in input units).

Observability: the locations pass through ``self.tap = AttentionTap("location")`` ``(B, 2)``; the
patches are the module's output.
"""

from __future__ import annotations

import torch
from torch import nn

from visattn._validate import check_choice, check_positive, check_tensor
from visattn.attention._registry import register_sensor
from visattn.attention._tap import AttentionTap
from visattn.functional.glimpse import (
    GLIMPSE_PADDING_MODES,
    GlimpsePyramid,
    extract_glimpses,
    glimpse_pyramid,
    glimpse_sides,
)

__all__ = ["GlimpseSensor"]


@register_sensor("glimpse")
class GlimpseSensor(nn.Module):
    """Multi-scale glimpse sensor: ``(B, C, H, W)`` image and ``(B, 2)`` locations -> ``(B, k, C, g, g)``.

    Args:
        channels: ``C``, the image's channels (the attention contract's first argument).
        size: ``g``, the side of the smallest patch and of every output patch (8 for 28x28 MNIST,
            12 for the 60x60 tasks in the paper).
        num_scales: ``k``, patches of sides ``g, f g, ..., f^(k-1) g`` (1 and 3 in the paper).
        scale_factor: ``f``, an integer (2 in the paper).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``: what is read outside the image.

    The sensor has no parameters. ``num_features = k C g^2`` is the length of a flattened glimpse.

    >>> sensor = GlimpseSensor(1, size=12, num_scales=3)
    >>> sensor(torch.rand(2, 1, 60, 60), torch.zeros(2, 2)).shape
    torch.Size([2, 3, 1, 12, 12])
    >>> sensor.num_features
    432
    """

    def __init__(
        self,
        channels: int,
        *,
        size: int = 8,
        num_scales: int = 1,
        scale_factor: int = 2,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        glimpse_sides(size, num_scales, scale_factor)  # validates the three
        check_choice(padding_mode, "padding_mode", GLIMPSE_PADDING_MODES)
        self.channels = channels
        self.size = size
        self.num_scales = num_scales
        self.scale_factor = scale_factor
        self.padding_mode = padding_mode
        self.tap = AttentionTap("location")

    @property
    def num_features(self) -> int:
        """Length of one flattened glimpse, ``k * C * g * g``."""
        return self.num_scales * self.channels * self.size * self.size

    @property
    def sides(self) -> list[int]:
        """Sides in pixels of the ``k`` patches before resizing."""
        return glimpse_sides(self.size, self.num_scales, self.scale_factor)

    def pyramid(self, x: torch.Tensor) -> GlimpsePyramid:
        """Box-filtered copies of ``x (B, C, H, W)`` to pass to several ``forward`` calls on the same ``x``.

        A recurrent model takes ``T`` glimpses of one image: building this once per episode instead
        of once per glimpse is what makes the sensor cheap (``visattn.functional.glimpse_pyramid``).
        """
        check_tensor(x, "x", ndim=4, channels=self.channels)
        return glimpse_pyramid(
            x,
            size=self.size,
            num_scales=self.num_scales,
            scale_factor=self.scale_factor,
            padding_mode=self.padding_mode,
        )

    def forward(
        self, x: torch.Tensor, locations: torch.Tensor, pyramid: GlimpsePyramid | None = None
    ) -> torch.Tensor:
        """Read the glimpses of ``x (B, C, H, W)`` at ``locations (B, 2)``; returns ``(B, k, C, g, g)``.

        ``pyramid``: ``self.pyramid(x)``, reused across calls on the same ``x`` (built here if ``None``).
        """
        check_tensor(x, "x", ndim=4, channels=self.channels)
        locations = self.tap(locations)
        return extract_glimpses(
            x,
            locations,
            size=self.size,
            num_scales=self.num_scales,
            scale_factor=self.scale_factor,
            padding_mode=self.padding_mode,
            pyramid=pyramid,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, size={self.size}, num_scales={self.num_scales}, "
            f"scale_factor={self.scale_factor}, padding_mode={self.padding_mode!r}"
        )
