"""Hand-fused tails of an SE-ResNet block: ``relu(SE(x) + shortcut)`` and ``relu(SE(BN(c)) + shortcut)``.

Used by the SE-ResNet blocks (``visattn.models.se_resnet``) through :func:`se_residual_relu` and
:func:`se_norm_residual_relu`; ``SqueezeExcite`` itself (``visattn.attention.se``) is a plain gate. Every
function here computes exactly what the unfused composition computes (up to float rounding; tested in
float64 against it), in fewer passes over the ``(B, C, H, W)`` maps. The key facts:

* With ``x = BN(c) = a c + b`` per channel (``a = gamma istd``, ``b = beta - a mean``), SE's squeeze is
  ``mean_hw x = a mean_hw c + b``, and SE's rescale merges with the batch norm's affine map:
  ``g x = (a g) c + (b g)``. So ``x`` is never written: ``y = relu((a g) c + (b g) + shortcut)``.
* The batch statistics follow from per-sample, per-channel moments: ``mean_c = mean_b m_bc`` and
  ``var_c = mean_b v_bc + mean_b (m_bc - mean_c)^2`` (law of total variance, centred, so stable).
* Per-sample, per-channel sums ``sum_hw u (v - k)`` and ``sum_hw u`` of two maps come from one fused
  pass of ATen's batch-norm backward kernel, viewing ``(B, C, H, W)`` as one sample of ``B C`` channels
  (``_pair_sums``). That gives ``v_bc`` in forward and, in backward, every reduction both SE and the
  batch norm need, so the batch norm's backward is written out as two ``addcmul`` passes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from visattn._validate import check_tensor
from visattn.attention.se import SqueezeExcite, excite, exporting

__all__ = ["se_residual_relu", "se_norm_residual_relu"]

#: Eval-mode maps with fewer elements than this take the unfused tail (``se_norm_residual_relu``).
EVAL_FUSE_MIN_NUMEL = 1 << 20


def _pair_sums(u: torch.Tensor, v: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_hw u (v - k), sum_hw u)``, each ``(B, C)``, for contiguous ``u, v (B, C, H, W)``, ``k (B, C)``,
    in one pass (the batch-norm backward kernel's two reductions over ``B C`` channels of one sample)."""
    b, c, h, w = u.shape
    _, dot, total = torch.ops.aten.native_batch_norm_backward(
        u.view(1, b * c, h, w),
        v.view(1, b * c, h, w),
        None,
        None,
        None,
        k.reshape(b * c),
        torch.ones(b * c, dtype=u.dtype, device=u.device),
        True,
        0.0,
        [False, True, True],
    )
    return dot.view(b, c), total.view(b, c)


def can_fuse(c: torch.Tensor) -> bool:
    """The fused batch-norm tails need an NCHW-contiguous map (``_pair_sums`` views it as one sample)."""
    return c.is_contiguous()


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


class AvgSEResidualReLU(torch.autograd.Function):
    """``y = relu(x * g(mean(x)) + shortcut)`` with a hand-written backward (see ``se_residual_relu``).

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
        se: Any,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        ctx.alpha, ctx.gate, ctx.identity_init = 1.0 / (h * w), se.gate, se.identity_init
        s = x.sum((2, 3))
        hid, q, g = excite(se, s, ctx.alpha, w1, b1, w2, b2)
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


def _scale_shift_add_relu(
    c: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    shortcut: torch.Tensor,
    out: torch.Tensor | None,
) -> torch.Tensor:
    """``relu(scale c + shift + shortcut)`` with ``scale, shift (B, C)``, in two passes over the map
    (``addcmul`` with the full-size ``shortcut`` as its first operand: a broadcast ``(B, C, 1, 1)`` first
    operand is 2-3x slower on CPU)."""
    b, ch = scale.shape
    y = torch.addcmul(shortcut, c, scale.reshape(b, ch, 1, 1), out=out)
    return torch.ops.aten._add_relu_(y, shift.reshape(b, ch, 1, 1))


def bn_eval_se_residual_relu(
    se: Any, c: torch.Tensor, norm: Any, shortcut: torch.Tensor, inplace: bool
) -> torch.Tensor:
    """No autograd, batch norm with running statistics: ``relu(SE(BN(c)) + shortcut)`` in three passes
    (squeeze of ``c``, scale and shift, add and ReLU); ``BN(c)`` itself is never written. With
    ``inplace=True`` the result goes into ``c``'s memory."""
    h, w = c.shape[2:]
    a = torch.rsqrt(norm.running_var + norm.eps).mul_(norm.weight)
    shift = torch.addcmul(norm.bias, norm.running_mean, a, value=-1.0)
    s = torch.addcmul(shift, c.sum((2, 3)), a, value=1.0 / (h * w))  # mean_hw BN(c), (B, C)
    g = se._gate(s, 1.0)
    return _scale_shift_add_relu(c, a * g, shift * g, shortcut, c if inplace else None)


def batch_moments(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(m_bc, mean, var)``: per-sample channel means ``(B, C)``, and the batch mean and biased variance
    ``(C,)`` over ``B, H, W``, from two passes over ``c`` (the sum, then the centred second moment)."""
    b, ch, h, w = c.shape
    m = c.sum((2, 3)).div_(h * w)
    sq, _ = _pair_sums(c, c, m)  # sum_hw c (c - m) = sum_hw (c - m)^2
    mean = m.mean(0)
    var = sq.mean(0).div_(h * w).add_((m - mean).square_().mean(0))
    return m, mean, var


def bn_train_stats(norm: Any) -> tuple:
    """``(running_mean, running_var, factor, eps)`` for a training-mode ``BatchNorm2d`` step, counting
    the batch in ``num_batches_tracked`` and choosing the update factor exactly as ``_BatchNorm.forward``
    does (``momentum=None``: cumulative average); running statistics are ``None`` when not tracked or
    in eval mode without them."""
    factor = 0.0 if norm.momentum is None else norm.momentum
    running_mean = running_var = None
    if norm.training and norm.track_running_stats:
        running_mean, running_var = norm.running_mean, norm.running_var
        if norm.num_batches_tracked is not None:
            norm.num_batches_tracked.add_(1)
            if norm.momentum is None:
                factor = 1.0 / float(norm.num_batches_tracked)
    return running_mean, running_var, factor, norm.eps


def _batch_affine(
    c: torch.Tensor, stats: tuple, gamma: torch.Tensor, beta: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Training-mode batch norm as ``x = a c + b``: ``(m_bc, mean, istd, a, b)`` from ``batch_moments``,
    updating the running statistics in ``stats = (running_mean, running_var, factor, eps)`` (unbiased
    variance, as ``BatchNorm2d``; ``running_mean`` may be ``None``)."""
    running_mean, running_var, factor, eps = stats
    m, mean, var = batch_moments(c)
    if running_mean is not None:
        n = c.shape[0] * c.shape[2] * c.shape[3]
        running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
        running_var.mul_(1.0 - factor).add_(var, alpha=factor * n / (n - 1))
    istd = torch.rsqrt(var + eps)
    a = gamma * istd
    return m, mean, istd, a, torch.addcmul(beta, a, mean, value=-1.0)


class BNAvgSEResidualReLU(torch.autograd.Function):
    """``y = relu(g * BN(c) + shortcut)`` with batch statistics, ``g = SE(BN(c))`` (avg pool), by hand.

    Forward (see the module docstring): ``m_bc, mean, var`` from ``batch_moments``, running statistics
    updated as ``BatchNorm2d`` updates them (unbiased variance), ``istd = (var + eps)^-1/2``,
    ``a = gamma istd``, ``b = beta - a mean``, squeeze ``s = a m_bc + b``, gate ``g`` from the MLP, then
    ``y = relu((a g) c + (b g) + shortcut)``; ``c`` and ``y`` are kept, ``BN(c)`` is never written.

    Backward, with ``r = dL/dy [y > 0]``, ``n = B H W`` and ``(R_bc, S_bc) = (sum_hw r (c - m_bc),
    sum_hw r)`` from one fused pass: ``dL/dshortcut = r``; ``dL/dg = a R + s S``; the MLP's backward
    gives ``dL/ds``; with ``dL/dx = r g + dL/ds / (H W)``: ``dL/dbeta = G1 = sum_b (g S + dL/ds)`` and
    ``dL/dgamma = G2 = istd sum_b [g (R + (m - mean) S) + dL/ds (m - mean)]``; the batch norm's input
    gradient ``a (dL/dx - G1 / n - xhat G2 / n)`` is ``(a g) r + k c + const_bc`` with
    ``k = -a istd G2 / n``: three element-wise passes.
    """

    @staticmethod
    def forward(
        ctx: Any,
        c: torch.Tensor,
        shortcut: torch.Tensor,
        se: Any,
        stats: tuple,
        gamma: torch.Tensor,
        beta: torch.Tensor,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
    ) -> torch.Tensor:
        ctx.alpha, ctx.gate, ctx.identity_init = 1.0, se.gate, se.identity_init
        m, mean, istd, a, shift = _batch_affine(c, stats, gamma, beta)
        s = torch.addcmul(shift, m, a)  # mean_hw BN(c), (B, C)
        hid, q, g = excite(se, s, 1.0, w1, b1, w2, b2)
        y = _scale_shift_add_relu(c, a * g, shift * g, shortcut, None)
        ctx.save_for_backward(c, y, m, s, hid, q, g, w1, w2, a, mean, istd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor):
        c, y, m, s, hid, q, g, w1, w2, a, mean, istd = ctx.saved_tensors
        need_c, need_sc, _, _, need_gamma, need_beta = ctx.needs_input_grad[:6]
        b, ch, h, w = c.shape
        n = b * h * w
        r = torch.ops.aten.threshold_backward(grad_y, y, 0)
        rc, rs = _pair_sums(r, c, m)  # sum_hw r (c - m_bc), sum_hw r
        grad_g = torch.addcmul(s * rs, a, rc)  # sum_hw r BN(c)
        ds, *grads = _excite_backward(ctx, grad_g, s, hid, q, w1, w2, ctx.needs_input_grad[6:])
        dm = m - mean  # (B, C)
        grad_beta = torch.addcmul(ds, g, rs).sum(0)  # G1
        grad_gamma = (g * torch.addcmul(rc, dm, rs)).addcmul_(ds, dm).sum(0).mul_(istd)  # G2
        grad_c = None
        if need_c:
            k = a * istd * grad_gamma / -n  # (C,)
            const = (ds / (h * w) - grad_beta / n).mul_(a).addcmul_(k, mean, value=-1.0)
            # three passes; addcmul(const, r, a g) with the broadcast const first is 3-4x slower on CPU
            grad_c = torch.mul(r, (a * g).reshape(b, ch, 1, 1)).addcmul_(c, k.reshape(1, ch, 1, 1))
            grad_c.add_(const.reshape(b, ch, 1, 1))
        return (
            grad_c,
            r if need_sc else None,
            None,
            None,
            grad_gamma if need_gamma else None,
            grad_beta if need_beta else None,
            *grads,
        )


class BNResidualReLU(torch.autograd.Function):
    """``y = relu(BN(c) + shortcut)`` with batch statistics, by the same passes as ``BNAvgSEResidualReLU``
    without the gate (``g = 1``): a reference for how much of the fused SE tail's speed is the batch
    norm's own fusion (``benchmarks/bench_se_overhead.py --fused-plain``). Not used by the models.
    """

    @staticmethod
    def forward(
        ctx: Any,
        c: torch.Tensor,
        shortcut: torch.Tensor,
        stats: tuple,
        gamma: torch.Tensor,
        beta: torch.Tensor,
    ) -> torch.Tensor:
        b, ch = c.shape[:2]
        m, mean, istd, a, shift = _batch_affine(c, stats, gamma, beta)
        y = _scale_shift_add_relu(c, a.expand(b, ch), shift.expand(b, ch), shortcut, None)
        ctx.save_for_backward(c, y, m, a, mean, istd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor):
        c, y, m, a, mean, istd = ctx.saved_tensors
        b, ch, h, w = c.shape
        n = b * h * w
        r = torch.ops.aten.threshold_backward(grad_y, y, 0)
        rc, rs = _pair_sums(r, c, m)
        grad_beta = rs.sum(0)
        grad_gamma = torch.addcmul(rc, m - mean, rs).sum(0).mul_(istd)
        k = a * istd * grad_gamma / -n
        const = (grad_beta / -n).mul_(a).addcmul_(k, mean, value=-1.0)
        grad_c = torch.mul(r, a.reshape(1, ch, 1, 1)).addcmul_(c, k.reshape(1, ch, 1, 1))
        grad_c.add_(const.reshape(1, ch, 1, 1))
        return grad_c, r, None, grad_gamma, grad_beta


def se_residual_relu(
    se: SqueezeExcite, x: torch.Tensor, shortcut: torch.Tensor, *, inplace: bool = False
) -> torch.Tensor:
    """``relu(se(x) + shortcut)``, the tail of an SE-ResNet block (Fig. 3), in fewer memory passes.

    The rescale and the residual add are one ``addcmul``. Without autograd recording and with
    ``inplace=True`` the result is written into ``x``'s memory. When autograd records and
    ``pool="avg"``, a fused function differentiates the whole tail by hand: ``dL/dg`` as per-channel
    sums of ``r * x`` (``r`` the gradient behind the ReLU), the small MLP's gradients as ``(B, C)``
    matrix products, and ``dL/dx = r * g + dL/ds`` in one pass written into the buffer of the first
    (no call back into autograd); it is not differentiable twice. The gate still goes through
    ``se.tap`` (hooks may read it; the backward differentiates the gate as the MLP computed it).

    Shapes: ``x (B, C, H, W)``, ``shortcut (B, C, H, W)`` -> ``(B, C, H, W)``.

    >>> se = SqueezeExcite(8, reduction=2)
    >>> x, sc = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5)
    >>> torch.allclose(se_residual_relu(se, x, sc), torch.relu(se(x) + sc))
    True
    """
    check_tensor(x, "x", ndim=4, channels=se.channels)
    if shortcut.shape != x.shape:
        raise ValueError(f"shortcut must have the shape of x {tuple(x.shape)}, got {tuple(shortcut.shape)}")
    b, c, h, w = x.shape
    if exporting():  # the unfused composition, which exporters translate
        return torch.relu(se(x) + shortcut)
    if torch.is_grad_enabled():
        fc1, fc2 = se.fc1, se.fc2
        weights = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        if x.requires_grad or shortcut.requires_grad or any(p.requires_grad for p in weights):
            if se.pool == "avg":
                return AvgSEResidualReLU.apply(x, shortcut, se, *weights)
            return torch.addcmul(shortcut, x, se.excitation(x).reshape(b, c, 1, 1)).relu_()
    # no autograd: squeeze, excite, then rescale + add + ReLU in one pass (the check above suffices)
    s = x.sum((2, 3)) if se.pool == "avg" else x.amax((2, 3))
    g = se._gate(s, 1.0 / (h * w) if se.pool == "avg" else 1.0)
    return torch.addcmul(shortcut, x, g.reshape(b, c, 1, 1), out=x if inplace else None).relu_()


def se_norm_residual_relu(
    se: SqueezeExcite, c: torch.Tensor, norm: nn.Module, shortcut: torch.Tensor, *, inplace: bool = False
) -> torch.Tensor:
    """``relu(se(norm(c)) + shortcut)``: the block tail from the last convolution's output ``c``.

    When ``pool="avg"``, ``norm`` is a plain affine ``nn.BatchNorm2d`` without hooks, ``c`` is
    NCHW-contiguous and autocast is off, the normalised map ``x = norm(c)`` is never written: with
    ``x = a c + b`` per channel, SE's squeeze is ``a mean_hw c + b`` and its rescale merges with the
    batch norm's affine map, ``y = relu((a g) c + (b g) + shortcut)`` (this module):

    * batch statistics (training mode): one function with a hand-written backward
      (``BNAvgSEResidualReLU``): the batch moments, the running statistics (and
      ``num_batches_tracked``) updated exactly as ``norm(c)`` updates them, and in backward every
      reduction SE and the batch norm need from one fused pass;
    * running statistics (eval mode), no autograd and a map of at least
      ``EVAL_FUSE_MIN_NUMEL`` elements: three passes (squeeze, scale and shift, add and
      ReLU), written into ``c``'s memory when ``inplace=True``. Smaller maps (e.g. batch-1
      inference) take the unfused path: there one pass costs less than the six small operations
      that fold the batch norm into the gate (see ``docs/results/se.md``).

    Otherwise (and while exporting) this is ``se_residual_relu(se, norm(c), shortcut, inplace=...)``. Outputs, gradients and
    buffers equal the unfused composition's up to float rounding (tested in float64).

    Shapes: ``c (B, C, H, W)``, ``shortcut (B, C, H, W)`` -> ``(B, C, H, W)``.

    >>> se, bn = SqueezeExcite(8, reduction=2), nn.BatchNorm2d(8)
    >>> c, sc = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5)
    >>> y = se_norm_residual_relu(se, c, bn, sc)
    >>> x = nn.functional.batch_norm(c, None, None, training=True)  # gamma = 1, beta = 0 at init
    >>> bool(torch.allclose(y, torch.relu(se(x) + sc), atol=1e-6)), int(bn.num_batches_tracked)
    (True, 1)
    """
    if (
        se.pool == "avg"
        and not exporting()  # exporters record the plain composition below
        and type(norm) is nn.BatchNorm2d
        and norm.affine
        and not (norm._forward_hooks or norm._forward_pre_hooks)
        and can_fuse(c)
        and not torch.is_autocast_enabled(c.device.type)
    ):
        check_tensor(c, "c", ndim=4, channels=se.channels)
        if shortcut.shape != c.shape:
            raise ValueError(
                f"shortcut must have the shape of c {tuple(c.shape)}, got {tuple(shortcut.shape)}"
            )
        b, _, h, w = c.shape
        if norm.training or norm.running_mean is None:
            if b * h * w > 1:  # else BatchNorm2d raises its own error below
                return _bn_train_tail(se, c, norm, shortcut)
        elif c.numel() >= EVAL_FUSE_MIN_NUMEL and (
            not torch.is_grad_enabled()
            or not any(t.requires_grad for t in (c, shortcut, norm.weight, norm.bias, *se.parameters()))
        ):
            with torch.no_grad():
                return bn_eval_se_residual_relu(se, c, norm, shortcut, inplace)
    return se_residual_relu(se, norm(c), shortcut, inplace=inplace)


def _bn_train_tail(
    se: SqueezeExcite, c: torch.Tensor, norm: nn.BatchNorm2d, shortcut: torch.Tensor
) -> torch.Tensor:
    """The batch-statistics case of ``se_norm_residual_relu`` (running statistics as ``BatchNorm2d``)."""
    fc1, fc2 = se.fc1, se.fc2
    tensors = (norm.weight, norm.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    return BNAvgSEResidualReLU.apply(c, shortcut, se, bn_train_stats(norm), *tensors)
