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
        if torch.is_grad_enabled():
            fc1, fc2 = self.fc1, self.fc2
            weights = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
            if x.requires_grad or shortcut.requires_grad or any(p.requires_grad for p in weights):
                if self.pool == "avg":
                    return _AvgSEResidualReLU.apply(x, shortcut, self, *weights)
                return torch.addcmul(shortcut, x, self.excitation(x).reshape(b, c, 1, 1)).relu_()
        # no autograd: squeeze, excite, then rescale + add + ReLU in one pass (the check above suffices)
        s = x.sum((2, 3)) if self.pool == "avg" else x.amax((2, 3))
        g = self._gate(s, 1.0 / (h * w) if self.pool == "avg" else 1.0)
        return torch.addcmul(shortcut, x, g.reshape(b, c, 1, 1), out=x if inplace else None).relu_()

    def norm_residual_relu(
        self, c: torch.Tensor, norm: nn.Module, shortcut: torch.Tensor, *, inplace: bool = False
    ) -> torch.Tensor:
        """``relu(self(norm(c)) + shortcut)``: the block tail from the last convolution's output ``c``.

        When autograd records, ``pool="avg"`` and ``norm`` is a plain affine ``nn.BatchNorm2d`` in
        training mode (batch statistics) without hooks, the batch norm, the gate, the rescale, the add
        and the ReLU are one function with a hand-written backward that does not keep the normalised map
        ``x = norm(c)`` alive until backward (``c`` is kept, as the batch norm would keep it anyway):
        ``sum_hw r * x`` is rebuilt as ``a sum_hw r * c + b sum_hw r`` with the batch norm's per-channel
        ``x = a c + b``. The running statistics (and ``num_batches_tracked``) are updated exactly as
        ``norm(c)`` updates them. Otherwise this is ``self.residual_relu(norm(c), shortcut, inplace=...)``.

        Shapes: ``c (B, C, H, W)``, ``shortcut (B, C, H, W)`` -> ``(B, C, H, W)``.

        >>> se, bn = SqueezeExcite(8, reduction=2), nn.BatchNorm2d(8)
        >>> c, sc = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5)
        >>> y = se.norm_residual_relu(c, bn, sc)
        >>> x = nn.functional.batch_norm(c, None, None, training=True)  # gamma = 1, beta = 0 at init
        >>> bool(torch.allclose(y, torch.relu(se(x) + sc), atol=1e-6)), int(bn.num_batches_tracked)
        (True, 1)
        """
        if (
            torch.is_grad_enabled()
            and self.pool == "avg"
            and type(norm) is nn.BatchNorm2d
            and norm.training
            and norm.affine
            and not (norm._forward_hooks or norm._forward_pre_hooks)
            and not torch.is_autocast_enabled(c.device.type)
        ):
            check_tensor(c, "c", ndim=4, channels=self.channels)
            if shortcut.shape != c.shape:
                raise ValueError(
                    f"shortcut must have the shape of c {tuple(c.shape)}, got {tuple(shortcut.shape)}"
                )
            fc1, fc2 = self.fc1, self.fc2
            tensors = (norm.weight, norm.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
            if c.requires_grad or shortcut.requires_grad or any(t.requires_grad for t in tensors):
                factor = 0.0 if norm.momentum is None else norm.momentum  # as _BatchNorm.forward
                running_mean = running_var = None
                if norm.track_running_stats:
                    running_mean, running_var = norm.running_mean, norm.running_var
                    if norm.num_batches_tracked is not None:
                        norm.num_batches_tracked.add_(1)
                        if norm.momentum is None:  # cumulative moving average
                            factor = 1.0 / float(norm.num_batches_tracked)
                stats = (running_mean, running_var, factor, norm.eps)
                return _BNAvgSEResidualReLU.apply(c, shortcut, self, stats, *tensors)
        return self.residual_relu(norm(c), shortcut, inplace=inplace)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, reduction={self.reduction}, pool={self.pool!r}, gate={self.gate!r}, "
            f"identity_init={self.identity_init}"
        )


def _excite(
    se: SqueezeExcite,
    s: torch.Tensor,
    alpha: float,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 3 without a graph, from the pooled sums ``s (B, C)``: the hidden layer, ``q = act(z)``, the
    gate ``g`` (after ``se.tap``), for the hand-written backward of ``_excite_backward``."""
    hid = torch.addmm(b1, s, w1.t(), alpha=alpha).relu_()
    z = torch.addmm(b2, hid, w2.t())
    if se.gate == "sigmoid":
        q = z.sigmoid_()
        g = q * 2.0 if se.identity_init else q
    elif se.gate == "tanh":
        q = z.tanh_()
        g = q + 1.0 if se.identity_init else q
    else:
        q = g = z.relu_()
    return hid, q, se.tap(g)


def _excite_backward(
    ctx: Any,
    grad_g: torch.Tensor,
    s: torch.Tensor,
    hid: torch.Tensor,
    q: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``dL/ds`` and the MLP's ``(dW1, db1, dW2, db2)`` (``None`` where ``needs`` is false) from ``dL/dg``."""
    if ctx.gate == "sigmoid":
        dz = q.mul(1.0 - q).mul_(grad_g)
        if ctx.identity_init:
            dz.mul_(2.0)
    elif ctx.gate == "tanh":
        dz = (1.0 - q * q).mul_(grad_g)
    else:
        dz = torch.ops.aten.threshold_backward(grad_g, q, 0)
    dh = torch.ops.aten.threshold_backward(torch.mm(dz, w2), hid, 0)
    grad_w1 = torch.mm(dh.t(), s).mul_(ctx.alpha) if needs[0] else None
    grad_b1 = dh.sum(0) if needs[1] else None
    grad_w2 = torch.mm(dz.t(), hid) if needs[2] else None
    grad_b2 = dz.sum(0) if needs[3] else None
    return torch.mm(dh, w1).mul_(ctx.alpha), grad_w1, grad_b1, grad_w2, grad_b2


class _AvgSEResidualReLU(torch.autograd.Function):
    """``y = relu(x * g(mean(x)) + shortcut)`` with a hand-written backward (see ``residual_relu``).

    Forward, no graph: ``s = sum_hw x``, ``h = relu(a s W1^T + b1)`` (``a = 1 / (H W)``),
    ``z = h W2^T + b2``, ``q = act(z)``, ``g = q``, ``2 q`` (sigmoid, identity init) or ``1 + q`` (tanh,
    identity init). Backward, with ``r = dL/dy * [y > 0]``: ``dL/dshortcut = r``;
    ``dL/dg = sum_hw r * x``; ``dL/dz = dL/dg * act'(z)`` (from ``q``; times 2 for ``2 sigmoid``);
    ``dL/dW2 = dz^T h``, ``dL/db2 = sum_b dz``, ``dh = (dz W2) [h > 0]``, ``dL/dW1 = a dh^T s``,
    ``dL/db1 = sum_b dh``, ``dL/ds = a dh W1``; ``dL/dx = r * g + dL/ds`` (broadcast over ``H, W``).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        shortcut: torch.Tensor,
        se: SqueezeExcite,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        ctx.alpha, ctx.gate, ctx.identity_init = 1.0 / (h * w), se.gate, se.identity_init
        s = x.sum((2, 3))
        hid, q, g = _excite(se, s, ctx.alpha, w1, b1, w2, b2)
        y = torch.addcmul(shortcut, x, g.reshape(b, c, 1, 1)).relu_()
        ctx.save_for_backward(x, y, s, hid, q, g, w1, w2)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor):
        x, y, s, hid, q, g, w1, w2 = ctx.saved_tensors
        need_x, need_sc = ctx.needs_input_grad[:2]
        b, c = g.shape
        r = torch.ops.aten.threshold_backward(grad_y, y, 0)
        buf = torch.mul(r, x)  # reused below for dL/dx
        ds, *grads = _excite_backward(ctx, buf.sum((2, 3)), s, hid, q, w1, w2, ctx.needs_input_grad[3:])
        grad_x = None
        if need_x:
            grad_x = torch.addcmul(ds.reshape(b, c, 1, 1), r, g.reshape(b, c, 1, 1), out=buf)
        return grad_x, r if need_sc else None, None, *grads


class _BNAvgSEResidualReLU(torch.autograd.Function):
    """``y = relu(x * g(mean(x)) + shortcut)`` with ``x = BN(c)`` (batch statistics), by hand (see
    ``norm_residual_relu``).

    Forward: ``x, mu, istd = native_batch_norm(c, ...)`` (running statistics updated), then as
    ``_AvgSEResidualReLU``, ``y`` written over ``x`` (which is not kept). Backward: with
    ``a = gamma istd`` and ``b = beta - a mu`` (so ``x = a c + b``), ``dL/dg = a sum_hw r * c +
    b sum_hw r``; the gate's backward as in ``_AvgSEResidualReLU``; ``dL/dx = r * g + dL/ds``; then
    the batch norm's own backward (``native_batch_norm_backward``) for ``dL/dc``, ``dL/dgamma``,
    ``dL/dbeta``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        c: torch.Tensor,
        shortcut: torch.Tensor,
        se: SqueezeExcite,
        stats: tuple,
        gamma: torch.Tensor,
        beta: torch.Tensor,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
    ) -> torch.Tensor:
        running_mean, running_var, factor, eps = stats
        b, ch, h, w = c.shape
        ctx.alpha, ctx.gate, ctx.identity_init, ctx.eps = 1.0 / (h * w), se.gate, se.identity_init, eps
        x, mean, istd = torch.native_batch_norm(c, gamma, beta, running_mean, running_var, True, factor, eps)
        s = x.sum((2, 3))
        hid, q, g = _excite(se, s, ctx.alpha, w1, b1, w2, b2)
        y = torch.addcmul(shortcut, x, g.reshape(b, ch, 1, 1), out=x).relu_()
        ctx.save_for_backward(c, y, s, hid, q, g, w1, w2, gamma, beta, mean, istd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor):
        c, y, s, hid, q, g, w1, w2, gamma, beta, mean, istd = ctx.saved_tensors
        need_c, need_sc, _, _, need_gamma, need_beta = ctx.needs_input_grad[:6]
        b, ch = g.shape
        r = torch.ops.aten.threshold_backward(grad_y, y, 0)
        a = gamma * istd
        shift = beta - a * mean
        buf = torch.mul(r, c)  # reused below for dL/dx
        grad_g = buf.sum((2, 3)).mul_(a).add_(r.sum((2, 3)).mul_(shift))
        ds, *grads = _excite_backward(ctx, grad_g, s, hid, q, w1, w2, ctx.needs_input_grad[6:])
        grad_c = grad_gamma = grad_beta = None
        if need_c or need_gamma or need_beta:
            grad_x = torch.addcmul(ds.reshape(b, ch, 1, 1), r, g.reshape(b, ch, 1, 1), out=buf)
            grad_c, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
                grad_x, c, gamma, None, None, mean, istd, True, ctx.eps, [need_c, need_gamma, need_beta]
            )
        return grad_c, r if need_sc else None, None, None, grad_gamma, grad_beta, *grads
