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

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from visattn._validate import check_choice, check_positive, check_tensor, check_type
from visattn.attention._registry import register_attention
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
        h = torch.addmm(self.fc1.bias, s, self.fc1.weight.t(), alpha=alpha).relu_()
        z = torch.addmm(self.fc2.bias, h, self.fc2.weight.t())
        if self.gate == "sigmoid":
            g = z.sigmoid_()
            if self.identity_init:
                g = g * 2.0
        elif self.gate == "tanh":
            g = z.tanh_()
            if self.identity_init:
                g = g + 1.0
        else:
            g = z.relu_()
        return self.tap(g)

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
        ``pool="avg"``, a fused backward computes ``dL/dg`` as batched dot products and adds the
        squeeze's gradient to ``dL/dx`` in the same pass (the gate's small MLP is differentiated
        by autograd); it is not differentiable twice.

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
        if torch.is_grad_enabled():
            weights = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
            params = [p for p in weights if p.requires_grad]
            if params or x.requires_grad or shortcut.requires_grad:
                if self.pool == "avg":
                    return _AvgSEResidualReLU.apply(x, shortcut, self, *params)
                return torch.addcmul(shortcut, x, self.excitation(x)[:, :, None, None]).relu_()
        g = self.excitation(x)[:, :, None, None]
        return torch.addcmul(shortcut, x, g, out=x if inplace else None).relu_()

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, reduction={self.reduction}, pool={self.pool!r}, gate={self.gate!r}, "
            f"identity_init={self.identity_init}"
        )


class _AvgSEResidualReLU(torch.autograd.Function):
    """``y = relu(x * g(mean(x)) + shortcut)`` with a fused backward (see ``residual_relu``).

    Backward, with ``r = dL/dy * [y > 0]``: ``dL/dshortcut = r``; ``dL/dg = sum_hw r * x`` (one batched
    dot product per channel, no ``(B, C, H, W)`` temporary); ``dL/ds`` and the MLP's parameter
    gradients by autograd on the saved ``(B, C)`` graph of ``g(s)``, ``s = sum_hw x`` (the ``1 / (H W)``
    is inside ``g``); ``dL/dx = r * g + dL/ds`` in one pass.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shortcut: torch.Tensor, se: SqueezeExcite, *params: torch.Tensor):
        with torch.enable_grad():  # keep the small (B, C) graph of the gate for backward
            s = x.detach().sum((2, 3)).requires_grad_()
            g = se._gate(s, 1.0 / (x.shape[2] * x.shape[3]))
        y = torch.addcmul(shortcut, x, g.detach()[:, :, None, None]).relu_()
        ctx.save_for_backward(x, y)
        ctx.s, ctx.g, ctx.params = s, g, params
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor):
        x, y = ctx.saved_tensors
        s, g, params = ctx.s, ctx.g, ctx.params
        r = torch.ops.aten.threshold_backward(grad_y, y, 0)
        b, c = g.shape
        grad_g = torch.bmm(r.reshape(b * c, 1, -1), x.reshape(b * c, -1, 1)).view(b, c)
        # retain: the outer backward may itself be retained (the (B, C) graph dies with ctx)
        grads = torch.autograd.grad(g, (s, *params), grad_g, retain_graph=True)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addcmul(grads[0][:, :, None, None], r, g.detach()[:, :, None, None])
        return (grad_x, r if ctx.needs_input_grad[1] else None, None, *grads[1:])
