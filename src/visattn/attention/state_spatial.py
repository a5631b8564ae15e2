"""Soft spatial attention driven by a recurrent state (the attention step of Zhao et al., "Diversified
Visual Attention Networks for Fine-Grained Object Classification", arXiv:1606.08572; the
additive form of Xu et al., "Show, Attend and Tell", ICML 2015, eq. 4-6).

For a feature map ``X (B, C, h, w)`` with positions ``i = 1..N`` (``N = h w``) and a state
``h_{t-1} (B, D)``::

    e_i = w^T tanh(W_x X_i + W_h h_{t-1} + b)         (B, N) scores
    l   = softmax_i(e)                                  (B, N) a distribution over positions
    x_t = sum_i l_i X_i                                 (B, C) the attended feature

The map ``l`` goes through ``self.tap = AttentionTap("spatial")`` as ``(B, 1, h, w)``, so
``visattn.viz.AttentionRecorder`` records one map per call (``T`` calls for a ``T``-step model).

Not registered with ``create_attention``: its forward takes a state besides the feature map.
"""

from __future__ import annotations

import torch
from torch import nn

from visattn._validate import check_positive, check_tensor
from visattn.attention._tap import AttentionTap

__all__ = ["StateSpatialAttention"]


class StateSpatialAttention(nn.Module):
    """``(X (B, C, h, w), state (B, D)) -> (attended (B, C), map (B, h, w))``.

    Args:
        channels: ``C``.
        state_size: ``D``, the size of the state vector.
        hidden: size of the additive-attention hidden layer (``W_x``, ``W_h`` map to it).

    At ``w = 0`` (the initialisation) every map is uniform, so a new model starts from average pooling.

    >>> att = StateSpatialAttention(8, state_size=5)
    >>> x_t, l = att(torch.randn(2, 8, 3, 4), torch.zeros(2, 5))
    >>> x_t.shape, l.shape, bool(torch.allclose(l.sum((1, 2)), torch.ones(2)))
    (torch.Size([2, 8]), torch.Size([2, 3, 4]), True)
    """

    def __init__(self, channels: int, *, state_size: int, hidden: int = 256) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_positive(state_size, "state_size", integer=True)
        check_positive(hidden, "hidden", integer=True)
        self.channels, self.state_size = channels, state_size
        self.feat_proj = nn.Conv2d(channels, hidden, 1)  # W_x and b
        self.state_proj = nn.Linear(state_size, hidden, bias=False)  # W_h
        self.score = nn.Conv2d(hidden, 1, 1, bias=False)  # w
        nn.init.zeros_(self.score.weight)
        self.tap = AttentionTap("spatial")

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor(x, "x", ndim=4, channels=self.channels)
        check_tensor(state, "state", ndim=2, channels=self.state_size, layout="(B, D)")
        b, c, h, w = x.shape
        hid = torch.tanh(self.feat_proj(x) + self.state_proj(state)[:, :, None, None])
        scores = self.score(hid).flatten(1)  # (B, N)
        weights = torch.softmax(scores.float(), dim=1).to(x.dtype).view(b, 1, h, w)
        weights = self.tap(weights)
        attended = (x * weights).sum(dim=(2, 3))
        return attended, weights[:, 0]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, state_size={self.state_size}"
