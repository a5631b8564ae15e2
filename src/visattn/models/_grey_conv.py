"""A faster backward for convolutions over one input channel (grey images), same numbers as ``nn.Conv2d``.

Why: on CPU, oneDNN computes the *input* gradient of a ``Conv2d(1, C_out, k)`` with one output channel
per pixel, a shape its kernels do not vectorise: for the ST-CNN's first classifier conv (``9x9``, 32
filters, batch 64 of ``42x42``) it took 60-90 ms of a ~300 ms training step on our shared 2-core CPU,
while the forward pass and the weight gradient of the same conv take 8-17 ms each. The ST-CNN needs that gradient (it
reaches the sampler and the localisation net); a plain CNN does not (its input needs no gradient).

How: the input gradient of a stride-1 convolution with one input channel is

``dL/dx[b, y, x] = sum_{i, j} (sum_o w[o, i, j] dL/dz[b, o, y - i + p_h, x - j + p_w])``,

i.e. one matrix product ``W^T (k_h k_w, C_out) @ dL/dz (C_out, H_out W_out)`` per image followed by
the ``k_h k_w`` shifted sums of a column-to-image ``F.fold``. Done a few images at a time (``_CHUNK_BYTES``
of columns, so they stay in cache), this is faster than oneDNN's kernel here (see
docs/results/stn.md for the measured step).
The forward pass (``F.conv2d``) and the weight and bias gradients (``aten.convolution_backward``, called
as ``nn.Conv2d``'s backward calls it) are torch's own, so outputs and weight and bias gradients are
bit-identical to ``nn.Conv2d``'s, and the input gradient equals it to float rounding (summation order).

:class:`GreyConv2d` is an ``nn.Conv2d`` (same parameters, ``state_dict`` keys and ``repr``); it takes the
fast path only when it pays (one input channel, one group, stride 1, dilation 1, numeric zero padding, an
input that needs its gradient, eager mode) and is otherwise exactly ``nn.Conv2d`` (``torch.compile``, ONNX export
and TorchScript see a plain convolution). Second derivatives through the fast path are not supported.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from visattn._validate import check_tensor

__all__ = ["GreyConv2d", "conv2d_one_channel", "to_plain_conv2d"]

_Pair = tuple[int, int]
_CHUNK_BYTES = 4 << 20  # column buffer per chunk of images in the input-gradient fold (fits in L2/L3)


def _input_grad(
    grad: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """``dL/dx`` ``(B, 1, H, W)`` of a one-channel, stride-1 conv from ``grad`` ``(B, C_out, H_out, W_out)``."""
    b, c_out = grad.shape[:2]
    kh, kw = weight.shape[-2:]
    w_t = weight.reshape(c_out, kh * kw).t().contiguous()  # (k_h k_w, C_out)
    per_image = kh * kw * grad.shape[2] * grad.shape[3] * grad.element_size()
    step = max(1, _CHUNK_BYTES // max(1, per_image))
    out = []
    for s in range(0, b, step):
        g = grad[s : s + step]
        cols = torch.matmul(w_t, g.reshape(g.shape[0], c_out, -1))  # (n, k_h k_w, H_out W_out)
        out.append(F.fold(cols, size, (kh, kw), padding=padding))  # the k_h k_w shifted sums
    return torch.cat(out)


class _OneChannelConv(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        padding: tuple[int, int],
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding  # type: ignore[attr-defined]
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        padding = ctx.padding  # type: ignore[attr-defined]
        need_x, need_w, need_b, _ = ctx.needs_input_grad  # type: ignore[attr-defined]
        gx = gw = gb = None
        if need_x:
            gx = _input_grad(grad, weight, padding, (x.shape[-2], x.shape[-1]))
        if need_w or (need_b and ctx.has_bias):  # type: ignore[attr-defined]
            # torch's own kernel, called as nn.Conv2d's backward calls it: bit-identical gradients
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None,  # type: ignore[attr-defined]
                [1, 1], list(padding), [1, 1], False, [0, 0], 1,
                [False, need_w, need_b and ctx.has_bias],  # type: ignore[attr-defined]
            )  # fmt: skip
        return gx, gw, gb, None


def conv2d_one_channel(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: int | tuple[int, int] = 0,
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1) for one input channel, faster input gradient.

    Args:
        x: ``(B, 1, H, W)``.
        weight: ``(C_out, 1, k_h, k_w)``.
        bias: ``(C_out,)`` or ``None``.
        padding: zero padding ``p`` or ``(p_h, p_w)``.

    Returns:
        ``(B, C_out, H + 2 p_h - k_h + 1, W + 2 p_w - k_w + 1)``, bit-identical to ``F.conv2d``; gradients
        equal to float rounding (see the module doc for the input gradient's form).

    >>> x, w = torch.randn(2, 1, 9, 7, requires_grad=True), torch.randn(4, 1, 3, 3)
    >>> y = conv2d_one_channel(x, w, padding=1)
    >>> y.shape, bool(torch.equal(y, F.conv2d(x, w, padding=1)))
    (torch.Size([2, 4, 9, 7]), True)
    """
    check_tensor(x, "x", ndim=4, channels=1, layout="(B, 1, H, W)")
    check_tensor(weight, "weight", ndim=4, channels=1, layout="(C_out, 1, k_h, k_w)")
    pad = (padding, padding) if isinstance(padding, int) else (int(padding[0]), int(padding[1]))
    if min(pad) < 0 or len(pad) != 2:
        raise ValueError(f"padding must be an int or a pair of ints >= 0, got {padding!r}")
    return _OneChannelConv.apply(x, weight, bias, pad)


class GreyConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose input gradient is computed faster when it has one input channel.

    Same constructor, parameters and ``state_dict`` keys as ``nn.Conv2d``, so weights saved from an
    ``nn.Conv2d`` load unchanged; the output is bit-identical. The fast path (:func:`conv2d_one_channel`)
    is taken when ``in_channels == 1``, ``groups == 1``, stride and dilation 1, numeric zero padding, and
    the input needs its gradient (a conv behind a spatial transformer) in eager mode; otherwise
    ``nn.Conv2d.forward`` runs.

    >>> conv = GreyConv2d(1, 8, 5, padding=2)
    >>> conv(torch.zeros(2, 1, 12, 12, requires_grad=True)).shape
    torch.Size([2, 8, 12, 12])
    >>> sorted(conv.state_dict())
    ['bias', 'weight']
    """

    def _fast(self, x: torch.Tensor) -> bool:
        return (
            self.in_channels == 1
            and self.groups == 1
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and torch.is_grad_enabled()
            and x.requires_grad
            and not torch.jit.is_scripting()
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast(x):
            pad = self.padding
            return _OneChannelConv.apply(x, self.weight, self.bias, (int(pad[0]), int(pad[1])))
        return super().forward(x)


def to_plain_conv2d(module: nn.Module) -> nn.Module:
    """Replace every :class:`GreyConv2d` inside ``module`` by an ``nn.Conv2d`` with the same weights (in place).

    The reference the fast path is measured and tested against; returns ``module``.

    >>> m = to_plain_conv2d(nn.Sequential(GreyConv2d(1, 2, 3)))
    >>> type(m[0]).__name__
    'Conv2d'
    """
    for name, child in list(module.named_children()):
        if isinstance(child, GreyConv2d):
            plain = nn.Conv2d(
                child.in_channels, child.out_channels, cast(_Pair, child.kernel_size),
                stride=cast(_Pair, child.stride), padding=cast("str | _Pair", child.padding),
                dilation=cast(_Pair, child.dilation), groups=child.groups, bias=child.bias is not None,
                padding_mode=child.padding_mode, device=child.weight.device, dtype=child.weight.dtype,
            )  # fmt: skip
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            to_plain_conv2d(child)
    return module
