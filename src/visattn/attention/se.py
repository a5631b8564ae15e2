"""Squeeze-and-Excitation (Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018,
arXiv:1709.01507).

A channel gate computed from global context. For ``x`` of shape ``(B, C, H, W)``:

* squeeze (eq. 2): ``s_c = mean_{h,w} x[:, c]`` (``pool="avg"``) or ``max_{h,w} x[:, c]`` (``pool="max"``);
* excitation (eq. 3): ``z = W2 relu(W1 s + b1) + b2`` with ``W1: C -> C/r`` and ``W2: C/r -> C``, then a gate
  ``g = gate(z)``, shape ``(B, C)``;
* scale (eq. 4): ``y = g[:, :, None, None] * x``.

Gates (``gate=``), and the form each takes with ``identity_init=True``:

========  ===========================  ===================================================
gate      ``identity_init=False``      ``identity_init=True`` (``W2 = 0``)
========  ===========================  ===================================================
sigmoid   ``sigmoid(z)`` in (0, 1)     ``2 sigmoid(z)`` in (0, 2), ``b2 = 0`` -> ``g = 1``
tanh      ``tanh(z)`` in (-1, 1)       ``1 + tanh(z)`` in (0, 2), ``b2 = 0`` -> ``g = 1``
relu      ``relu(z)`` in [0, inf)      ``relu(z)``, ``b2 = 1`` -> ``g = 1``
========  ===========================  ===================================================

Identity init and training: with ``W2 = 0`` the gate is exactly 1 for every input (``sigmoid(0) = 0.5``
is exact in floating point), so a module inserted into a trained network (``visattn.retrofit``) leaves its
outputs unchanged. ``W2`` and ``b2`` still get gradients at the first step (``dL/dW2 = dL/dz h^T`` with
``h = relu(W1 s + b1) != 0``), while ``W1`` gets none until ``W2`` has moved (as with a zero-initialised
residual branch), so the gate departs from 1 smoothly. The centred forms ``2 sigmoid`` and ``1 + tanh`` can
amplify a channel up to 2x as well as suppress it, unlike the paper's ``sigmoid`` in (0, 1); ``identity_init``
is stored on the module, so rebuild with the same value before loading a checkpoint.

The gate ``g`` passes through ``self.tap = AttentionTap("channel")``, shape ``(B, C)``.
"""

from __future__ import annotations

import torch
from torch import nn

from visattn._validate import check_choice, check_positive, check_tensor, check_type
from visattn.attention import _se_fused
from visattn.attention._registry import register_attention
from visattn.attention._se_fused import (
    AvgSEResidualReLU,
    BNAvgSEResidualReLU,
    bn_train_stats,
    can_fuse,
)
from visattn.attention._tap import AttentionTap

__all__ = ["SqueezeExcite", "POOLS", "GATES"]

POOLS = ("avg", "max")
GATES = ("sigmoid", "tanh", "relu")


@register_attention("se")
class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation channel gate, ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``, the number of input (and output) channels.
        reduction: ``r``; the hidden layer has ``max(1, C // r)`` units (the paper uses 16).
        pool: squeeze by global ``"avg"`` (the paper) or ``"max"`` pooling.
        gate: ``"sigmoid"`` (the paper), ``"tanh"`` or ``"relu"`` (the paper's excitation ablation).
        identity_init: zero the last layer so the module starts as the identity (see the module
            docstring for the gate forms this selects).

    Shapes: ``x (B, C, H, W) -> (B, C, H, W)``; the gate ``(B, C)`` goes through ``self.tap``.

    >>> se = SqueezeExcite(32, reduction=8)
    >>> se(torch.randn(2, 32, 5, 7)).shape
    torch.Size([2, 32, 5, 7])
    >>> se.excitation(torch.randn(2, 32, 5, 7)).shape
    torch.Size([2, 32])
    >>> x = torch.randn(2, 32, 5, 7)
    >>> torch.equal(SqueezeExcite(32, identity_init=True)(x), x)
    True
    """

    supports_identity_init = True

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        pool: str = "avg",
        gate: str = "sigmoid",
        identity_init: bool = False,
    ) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_positive(reduction, "reduction", integer=True)
        check_choice(pool, "pool", POOLS)
        check_choice(gate, "gate", GATES)
        check_type(identity_init, "identity_init", bool)
        self.channels = channels
        self.reduction = reduction
        self.pool = pool
        self.gate = gate
        self.identity_init = identity_init
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.tap = AttentionTap("channel")
        if identity_init:
            nn.init.zeros_(self.fc2.weight)
            nn.init.constant_(self.fc2.bias, 1.0 if gate == "relu" else 0.0)

    def _gate(self, s: torch.Tensor, alpha: float) -> torch.Tensor:
        """Eq. 3 from the pooled sums or maxima ``s (B, C)``; ``alpha`` is the pooling's ``1 / (H W)``."""
        fc1, fc2 = self.fc1, self.fc2
        if _se_fused.exporting():  # plain layers an exporter translates; same values (tests/test_export.py)
            z = fc2(torch.relu(fc1(s * alpha)))
            if self.gate == "sigmoid":
                g = 2.0 * torch.sigmoid(z) if self.identity_init else torch.sigmoid(z)
            elif self.gate == "tanh":
                g = 1.0 + torch.tanh(z) if self.identity_init else torch.tanh(z)
            else:
                g = torch.relu(z)
            return self.tap(g)
        return _se_fused.excite(self, s, alpha, fc1.weight, fc1.bias, fc2.weight, fc2.bias)[2]

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The gate ``g`` of eqs. 2-3, ``(B, C, H, W) -> (B, C)``, emitted through ``self.tap``."""
        check_tensor(x, "x", ndim=4, channels=self.channels)
        # Squeeze: the average pool's 1 / (H W) is folded into the first layer (addmm's alpha).
        if self.pool == "avg":
            return self._gate(x.sum((2, 3)), 1.0 / (x.shape[2] * x.shape[3]))
        return self._gate(x.amax((2, 3)), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale the channels of ``x`` (eq. 4): ``(B, C, H, W) -> (B, C, H, W)``."""
        g = self.excitation(x)
        return x * g[:, :, None, None]

    def residual_relu(
        self, x: torch.Tensor, shortcut: torch.Tensor, *, inplace: bool = False
    ) -> torch.Tensor:
        """``relu(self(x) + shortcut)``, the tail of an SE-ResNet block (Fig. 3), in fewer memory passes.

        The rescale and the residual add are one ``addcmul``. Without autograd recording and with
        ``inplace=True`` the result is written into ``x``'s memory. When autograd records and
        ``pool="avg"``, a fused function differentiates the whole tail by hand: ``dL/dg`` as per-channel
        sums of ``r * x`` (``r`` the gradient behind the ReLU), the small MLP's gradients as ``(B, C)``
        matrix products, and ``dL/dx = r * g + dL/ds`` in one pass written into the buffer of the first
        (no call back into autograd); it is not differentiable twice. The gate still goes through
        ``self.tap`` (hooks may read it; the backward differentiates the gate as the MLP computed it).

        Shapes: ``x (B, C, H, W)``, ``shortcut (B, C, H, W)`` -> ``(B, C, H, W)``.

        >>> se = SqueezeExcite(8, reduction=2)
        >>> x, sc = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5)
        >>> torch.allclose(se.residual_relu(x, sc), torch.relu(se(x) + sc))
        True
        """
        check_tensor(x, "x", ndim=4, channels=self.channels)
        if shortcut.shape != x.shape:
            raise ValueError(
                f"shortcut must have the shape of x {tuple(x.shape)}, got {tuple(shortcut.shape)}"
            )
        b, c, h, w = x.shape
        if _se_fused.exporting():  # the unfused composition (see ``_se_fused.exporting``)
            return torch.relu(self(x) + shortcut)
        if torch.is_grad_enabled():
            fc1, fc2 = self.fc1, self.fc2
            weights = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
            if x.requires_grad or shortcut.requires_grad or any(p.requires_grad for p in weights):
                if self.pool == "avg":
                    return AvgSEResidualReLU.apply(x, shortcut, self, *weights)
                return torch.addcmul(shortcut, x, self.excitation(x).reshape(b, c, 1, 1)).relu_()
        # no autograd: squeeze, excite, then rescale + add + ReLU in one pass (the check above suffices)
        s = x.sum((2, 3)) if self.pool == "avg" else x.amax((2, 3))
        g = self._gate(s, 1.0 / (h * w) if self.pool == "avg" else 1.0)
        return torch.addcmul(shortcut, x, g.reshape(b, c, 1, 1), out=x if inplace else None).relu_()

    def norm_residual_relu(
        self, c: torch.Tensor, norm: nn.Module, shortcut: torch.Tensor, *, inplace: bool = False
    ) -> torch.Tensor:
        """``relu(self(norm(c)) + shortcut)``: the block tail from the last convolution's output ``c``.

        When ``pool="avg"``, ``norm`` is a plain affine ``nn.BatchNorm2d`` without hooks, ``c`` is
        NCHW-contiguous and autocast is off, the normalised map ``x = norm(c)`` is never written: with
        ``x = a c + b`` per channel, SE's squeeze is ``a mean_hw c + b`` and its rescale merges with the
        batch norm's affine map, ``y = relu((a g) c + (b g) + shortcut)`` (``visattn.attention._se_fused``):

        * batch statistics (training mode): one function with a hand-written backward
          (``BNAvgSEResidualReLU``): the batch moments, the running statistics (and
          ``num_batches_tracked``) updated exactly as ``norm(c)`` updates them, and in backward every
          reduction SE and the batch norm need from one fused pass;
        * running statistics (eval mode), no autograd and a map of at least
          ``_se_fused.EVAL_FUSE_MIN_NUMEL`` elements: three passes (squeeze, scale and shift, add and
          ReLU), written into ``c``'s memory when ``inplace=True``. Smaller maps (e.g. batch-1
          inference) take the unfused path: there one pass costs less than the six small operations
          that fold the batch norm into the gate (see ``docs/results/se.md``).

        Otherwise (and while exporting: ``_se_fused.exporting()``) this is ``self.residual_relu(norm(c), shortcut, inplace=...)``. Outputs, gradients and
        buffers equal the unfused composition's up to float rounding (tested in float64).

        Shapes: ``c (B, C, H, W)``, ``shortcut (B, C, H, W)`` -> ``(B, C, H, W)``.

        >>> se, bn = SqueezeExcite(8, reduction=2), nn.BatchNorm2d(8)
        >>> c, sc = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5)
        >>> y = se.norm_residual_relu(c, bn, sc)
        >>> x = nn.functional.batch_norm(c, None, None, training=True)  # gamma = 1, beta = 0 at init
        >>> bool(torch.allclose(y, torch.relu(se(x) + sc), atol=1e-6)), int(bn.num_batches_tracked)
        (True, 1)
        """
        if (
            self.pool == "avg"
            and not _se_fused.exporting()  # exporters record the plain composition below
            and type(norm) is nn.BatchNorm2d
            and norm.affine
            and not (norm._forward_hooks or norm._forward_pre_hooks)
            and can_fuse(c)
            and not torch.is_autocast_enabled(c.device.type)
        ):
            check_tensor(c, "c", ndim=4, channels=self.channels)
            if shortcut.shape != c.shape:
                raise ValueError(
                    f"shortcut must have the shape of c {tuple(c.shape)}, got {tuple(shortcut.shape)}"
                )
            b, _, h, w = c.shape
            if norm.training or norm.running_mean is None:
                if b * h * w > 1:  # else BatchNorm2d raises its own error below
                    return self._bn_train_tail(c, norm, shortcut)
            elif c.numel() >= _se_fused.EVAL_FUSE_MIN_NUMEL and (
                not torch.is_grad_enabled()
                or not any(t.requires_grad for t in (c, shortcut, norm.weight, norm.bias, *self.parameters()))
            ):
                with torch.no_grad():
                    return _se_fused.bn_eval_se_residual_relu(self, c, norm, shortcut, inplace)
        return self.residual_relu(norm(c), shortcut, inplace=inplace)

    def _bn_train_tail(self, c: torch.Tensor, norm: nn.BatchNorm2d, shortcut: torch.Tensor) -> torch.Tensor:
        """The batch-statistics case of ``norm_residual_relu`` (running statistics as ``BatchNorm2d``)."""
        fc1, fc2 = self.fc1, self.fc2
        tensors = (norm.weight, norm.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        return BNAvgSEResidualReLU.apply(c, shortcut, self, bn_train_stats(norm), *tensors)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, reduction={self.reduction}, pool={self.pool!r}, gate={self.gate!r}, "
            f"identity_init={self.identity_init}"
        )
