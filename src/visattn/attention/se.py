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

The SE-ResNet blocks' fused tails (rescale + residual add + ReLU, with the batch norm folded in) live
beside those blocks, in ``visattn.models._se_fused`` (``se_residual_relu``, ``se_norm_residual_relu``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from visattn._validate import check_choice, check_positive, check_tensor, check_type
from visattn.attention._registry import register_attention
from visattn.attention._tap import AttentionTap

__all__ = ["SqueezeExcite", "POOLS", "GATES", "excite", "exporting"]

POOLS = ("avg", "max")
GATES = ("sigmoid", "tanh", "relu")


def exporting() -> bool:
    """True while ``torch.onnx``, ``torch.export`` or the JIT tracer records a forward: SE then takes the
    plain (unfused) composition, which exporters translate (e.g. ``addmm``'s traced ``alpha`` is not).

    >>> exporting()
    False
    """
    return bool(torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting())


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
        if exporting():  # plain layers an exporter translates; same values (tests/test_export.py)
            z = fc2(torch.relu(fc1(s * alpha)))
            if self.gate == "sigmoid":
                g = 2.0 * torch.sigmoid(z) if self.identity_init else torch.sigmoid(z)
            elif self.gate == "tanh":
                g = 1.0 + torch.tanh(z) if self.identity_init else torch.tanh(z)
            else:
                g = torch.relu(z)
            return self.tap(g)
        return excite(self, s, alpha, fc1.weight, fc1.bias, fc2.weight, fc2.bias)[2]

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The gate ``g`` of eqs. 2-3, ``(B, C, H, W) -> (B, C)``, emitted through ``self.tap``."""
        check_tensor(x, "x", ndim=4, channels=self.channels)
        # Squeeze: the average pool's 1 / (H W) is folded into the first layer (addmm's alpha).
        if self.pool == "avg":
            return self._gate(x.sum((2, 3)), 1.0 / (x.shape[2] * x.shape[3]))
        return self._gate(x.amax((2, 3)), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale the channels of ``x`` (eq. 4): ``(B, C, H, W) -> (B, C, H, W)``."""
        if exporting():  # the gate as (B, C, 1, 1), broadcast by nearest up-sampling (see _export_gate)
            h, w = float(x.shape[2]), float(x.shape[3])
            return x * nn.functional.interpolate(self._export_gate(x), scale_factor=(h, w), mode="nearest")
        g = self.excitation(x)
        return x * g[:, :, None, None]

    def _export_gate(self, x: torch.Tensor) -> torch.Tensor:
        """The gate as ``(B, C, 1, 1)`` for exporters, same values as ``excitation``: in ONNX
        ``AveragePool`` (or ``MaxPool``) over the whole map ``-> Conv 1x1 -> Relu -> Conv 1x1 -> Sigmoid``.
        With the ``Resize`` (nearest) that ``forward`` broadcasts it by, every operation has an onnxruntime
        kernel in its blocked NCHWc layout, so the block stays in the layout its convolutions use; the
        plain form (``ReduceSum, Gemm, Unsqueeze``, a broadcast ``Mul``) made onnxruntime reorder each
        block's map out of and back into that layout (docs/results/export.md; tests/test_export_se.py)."""
        check_tensor(x, "x", ndim=4, channels=self.channels)
        fc1, fc2 = self.fc1, self.fc2
        size = (int(x.shape[2]), int(x.shape[3]))  # fixed at export: AveragePool, not ReduceMean
        if self.pool == "avg":
            s = nn.functional.avg_pool2d(x, size)
        else:
            s = nn.functional.max_pool2d(x, size)
        h = torch.relu(nn.functional.conv2d(s, fc1.weight[:, :, None, None], fc1.bias))
        z = nn.functional.conv2d(h, fc2.weight[:, :, None, None], fc2.bias)
        if self.gate == "sigmoid":
            g = 2.0 * torch.sigmoid(z) if self.identity_init else torch.sigmoid(z)
        elif self.gate == "tanh":
            g = 1.0 + torch.tanh(z) if self.identity_init else torch.tanh(z)
        else:
            g = torch.relu(z)
        self.tap(g.flatten(1))  # recorders see (B, C) as in eager mode
        return g

    def residual_relu(
        self, x: torch.Tensor, shortcut: torch.Tensor, *, inplace: bool = False
    ) -> torch.Tensor:
        """Deprecated: ``visattn.models.se_resnet.se_residual_relu(se, x, shortcut)`` (the SE-ResNet block tail)."""
        from visattn.models._se_fused import se_residual_relu  # architecture: deprecated method (issue 16)

        _moved("residual_relu", "se_residual_relu")
        return se_residual_relu(self, x, shortcut, inplace=inplace)

    def norm_residual_relu(
        self, c: torch.Tensor, norm: nn.Module, shortcut: torch.Tensor, *, inplace: bool = False
    ) -> torch.Tensor:
        """Deprecated: ``visattn.models.se_resnet.se_norm_residual_relu(se, c, norm, shortcut)``."""
        from visattn.models._se_fused import (
            se_norm_residual_relu,
        )  # architecture: deprecated method (issue 16)

        _moved("norm_residual_relu", "se_norm_residual_relu")
        return se_norm_residual_relu(self, c, norm, shortcut, inplace=inplace)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, reduction={self.reduction}, pool={self.pool!r}, gate={self.gate!r}, "
            f"identity_init={self.identity_init}"
        )


def excite(
    se: SqueezeExcite,
    s: torch.Tensor,
    alpha: float,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 3 without a graph, from the pooled sums ``s (B, C)`` (times ``alpha``): the hidden layer,
    ``q = act(z)`` and the gate ``g`` (after ``se.tap``). ``SqueezeExcite`` computes its gate with it; the
    fused SE-ResNet tails (``visattn.models._se_fused``) keep ``hid`` and ``q`` for their hand-written backward.

    >>> se = SqueezeExcite(4, reduction=2)
    >>> [t.shape for t in excite(se, torch.rand(3, 4), 1.0, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias)]
    [torch.Size([3, 2]), torch.Size([3, 4]), torch.Size([3, 4])]
    """
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


def _moved(old: str, new: str) -> None:
    warnings.warn(
        f"SqueezeExcite.{old} moved beside the SE-ResNet blocks: use visattn.models.se_resnet.{new}(se, ...)",
        DeprecationWarning,
        stacklevel=3,
    )
