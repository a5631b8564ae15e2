"""The spatial transformer module.

Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer Networks", NIPS 2015.

A localisation network regresses the parameters ``theta = f_loc(U)`` of a transformation from the
input ``U`` itself; a grid generator turns them into a sampling grid ``T_theta(G)`` (eq. 1); a
bilinear sampler reads ``U`` at the grid to give the output ``V`` (eq. 5). The whole module is
differentiable, so the localisation network learns from the classification loss alone.

Coordinate convention: that of ``visattn.functional.warp``: ``(x, y)`` order, ``[-1, 1]``,
``theta`` maps output to input coordinates, ``align_corners=True`` by default.

Identity at insertion: the localisation network's last linear layer starts with zero weights and
a bias equal to the identity parameters, so ``theta`` is exactly the identity for every input. With
``align_corners=True`` and an unchanged output size the identity grid lands on the input's pixel
centres, so a freshly inserted transformer returns its input up to float rounding (``visattn.
retrofit`` relies on this).

Why ``padding_mode="border"`` by default (the collapse pitfall): when the grid leaves the image,
``"zeros"`` reads the constant 0, which after input normalisation is not the background (MNIST's
background is about -0.42), so a zoomed-out transformer paints a bright frame around a shrunken
digit, the classifier can fit that frame, and the gradient of the sampled value with respect to
the grid is exactly zero everywhere outside the image, so nothing pulls the transformer back: it
drifts to a degenerate zoom-out, as users of the PyTorch tutorial report. ``"border"`` repeats the
image's own edge (normally background), so leaving the image creates no artificial edge to latch
onto. ``"zeros"`` and ``"reflection"`` remain available.
"""

from __future__ import annotations

import torch
from torch import nn

from visattn._validate import check_choice, check_positive, check_tensor, check_type
from visattn.attention._registry import register_attention
from visattn.attention._tap import AttentionTap
from visattn.functional.warp import (
    PADDING_MODES,
    TRANSFORMS,
    _pair,
    identity_params,
    make_grid,
    num_params,
)

__all__ = ["SpatialTransformer", "default_localization"]

MIN_SIZE = 8


def default_localization(
    channels: int, num_outputs: int, *, width: int = 32, hidden: int = 64
) -> nn.Sequential:
    """A localisation network for any ``(B, channels, H, W)`` input with ``H, W >= 8``.

    ``conv5x5(width) - maxpool2 - ReLU - conv3x3(width) - ReLU - adaptive avg-pool to 4x4 -
    FC(hidden) - ReLU - FC(num_outputs)``: the adaptive pool keeps a coarse 4x4 layout of where
    things are whatever the input size, so one network serves a 28x28 digit and a 14x14 feature map.

    >>> default_localization(3, 6)(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 6])
    """
    return nn.Sequential(
        nn.Conv2d(channels, width, 5, padding=2),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(1),
        nn.Linear(16 * width, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_outputs),
    )


def _last_linear(module: nn.Module) -> nn.Linear | None:
    last = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


@register_attention("spatial_transformer")
class SpatialTransformer(nn.Module):
    """Spatial transformer: ``V = Sample(U, T_theta(G))`` with ``theta = f_loc(U)``.

    Args:
        channels: ``C`` of the input ``(B, C, H, W)``.
        transform: ``"affine"`` (6 parameters, eq. 1), ``"attention"`` (isotropic scale and
            translation, 3 parameters, eq. 2), ``"projective"`` (a 3x3 homography, 9 parameters)
            or ``"tps"`` (thin-plate spline, ``2 * gh * gw`` control-point offsets).
        localization: a module ``(B, C, H, W) -> (B, P)`` giving the transform's flat parameters
            (``P`` from ``visattn.functional.num_params``); default ``default_localization``, which
            adapts to any input of at least 8x8. With ``identity_init`` its last ``nn.Linear`` must
            have ``P`` outputs; it is zero-initialised with the identity as bias.
        out_size: output ``(H_out, W_out)`` (an int for square); default the input's size. A
            smaller size makes a down-sampling transformer.
        grid_size: the TPS control lattice ``(gh, gw)``; used by ``transform="tps"`` only.
        padding_mode: ``"border"`` (default, see the module doc on collapse), ``"zeros"`` or
            ``"reflection"``.
        identity_init: start exactly at the identity transform.
        align_corners: the grid convention (``visattn.functional.warp``); ``True`` makes the
            identity exact.

    Shapes: ``(B, C, H, W) -> (B, C, H_out, W_out)``. The sampling grid ``(B, H_out, W_out, 2)``
    passes through ``self.tap`` (``AttentionTap("warp")``); ``localize`` returns ``theta``.

    >>> st = SpatialTransformer(3, transform="tps")
    >>> x = torch.rand(2, 3, 12, 10)
    >>> st(x).shape
    torch.Size([2, 3, 12, 10])
    >>> bool(torch.allclose(st(x), x, atol=1e-5))
    True
    >>> SpatialTransformer(3, out_size=6)(x).shape
    torch.Size([2, 3, 6, 6])
    """

    supports_identity_init = True

    def __init__(
        self,
        channels: int,
        *,
        transform: str = "affine",
        localization: nn.Module | None = None,
        out_size: int | tuple[int, int] | None = None,
        grid_size: int | tuple[int, int] = (4, 4),
        padding_mode: str = "border",
        identity_init: bool = True,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_choice(transform, "transform", TRANSFORMS)
        check_choice(padding_mode, "padding_mode", PADDING_MODES)
        check_type(identity_init, "identity_init", bool)
        check_type(align_corners, "align_corners", bool)
        self.channels = channels
        self.transform = transform
        self.grid_size = _pair(grid_size, "grid_size")
        if transform == "tps" and min(self.grid_size) < 2:
            raise ValueError(f"grid_size must be at least (2, 2) for a thin-plate spline, got {grid_size!r}")
        self.out_size = None if out_size is None else _pair(out_size, "out_size")
        self.padding_mode = padding_mode
        self.align_corners = align_corners
        self.num_params = num_params(transform, self.grid_size)
        # the default net needs 8x8 (one 2x2 pool, then a 4x4 adaptive pool); a user net sets its own
        self.min_size = MIN_SIZE if localization is None else 1
        if localization is None:
            localization = default_localization(channels, self.num_params)
        check_type(localization, "localization", nn.Module)
        self.localization = localization
        self.tap = AttentionTap("warp")
        if identity_init:
            self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero the localisation net's last linear layer and set its bias to the identity parameters."""
        last = _last_linear(self.localization)
        if last is None or last.out_features != self.num_params or last.bias is None:
            got = (
                "none"
                if last is None
                else f"nn.Linear(out_features={last.out_features}, bias={last.bias is not None})"
            )
            raise ValueError(
                f"identity_init needs the localization's last nn.Linear to have {self.num_params} outputs"
                f" and a bias for transform={self.transform!r}; got {got}"
            )
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(identity_params(self.transform, self.grid_size, dtype=last.bias.dtype))

    def localize(self, x: torch.Tensor) -> torch.Tensor:
        """Transform parameters ``theta`` ``(B, P)`` for ``x`` ``(B, C, H, W)``."""
        theta = self.localization(x)
        if theta.ndim != 2 or theta.shape != (x.shape[0], self.num_params):
            raise ValueError(
                f"localization must return (B, {self.num_params}) parameters for"
                f" transform={self.transform!r}, got shape {tuple(theta.shape)}"
            )
        return theta

    def sampling_grid(self, x: torch.Tensor) -> torch.Tensor:
        """The grid ``(B, H_out, W_out, 2)`` of input coordinates ``(x_s, y_s)`` the output samples."""
        size = (x.shape[-2], x.shape[-1]) if self.out_size is None else self.out_size
        return make_grid(
            self.localize(x),
            size,
            transform=self.transform,
            grid_size=self.grid_size,
            align_corners=self.align_corners,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=4, channels=self.channels, min_size=self.min_size)
        grid = self.tap(self.sampling_grid(x))
        return nn.functional.grid_sample(
            x,
            grid.to(x.dtype),
            mode="bilinear",
            padding_mode=self.padding_mode,
            align_corners=self.align_corners,
        )

    def extra_repr(self) -> str:
        extra = f", grid_size={self.grid_size}" if self.transform == "tps" else ""
        return (
            f"{self.channels}, transform={self.transform!r}, out_size={self.out_size}{extra},"
            f" padding_mode={self.padding_mode!r}"
        )
