"""Per-filter gains for feedback attention (Stollenga, Masci, Gomez, Schmidhuber, "Deep Networks with
Internal Selective Attention through Feedback Connections", NIPS 2014, "dasNet").

dasNet looks at an image several times; between passes a policy sets a gain ``a_f`` on every
convolutional filter ``f`` of a trained CNN, and the filter's output map is multiplied by it:

* ``y[b, f] = a[b, f] * w[f] * x[b, f]``  for ``x`` of shape ``(B, C, H, W)``,

where ``a (B, C)`` are the *external* gains set by a controller with :meth:`FilterGains.set_gains`
(the dasNet policy, see ``visattn.models.dasnet``) and ``w (C,)`` is a static learnable per-filter
scale owned by the module (``1`` with ``identity_init=True``). With no external gains set the module
multiplies by ``w`` alone, so an inserted ``FilterGains(C, identity_init=True)`` is exactly the identity
(multiplying by ``1.0`` is exact in floating point) and can be trained by backprop as a static channel
scale. The effective gains ``a * w`` of shape ``(B, C)`` pass through ``self.tap = AttentionTap("gains")``.
Gains may be set for ``R`` copies of the batch (``(R B, C)``): the ``B`` maps are then broadcast to
``R B`` outputs without copying them first, which is how dasNet scores a population of policies on the
same images.
"""

from __future__ import annotations

import torch
from torch import nn

from visattn._validate import check_positive, check_tensor, check_type
from visattn.attention._registry import register_attention
from visattn.attention._tap import AttentionTap

__all__ = ["FilterGains"]


@register_attention("filter_gains")
class FilterGains(nn.Module):
    """Multiply each channel by a gain, ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: ``C``, the number of filters (channels) to scale.
        identity_init: initialise the static scale ``w`` to ones (the module is then the identity
            until gains are set); otherwise ``w ~ U(0.5, 1.5)``, a random start around 1.

    Equation: ``y = (a * w)[:, :, None, None] * x`` with external gains ``a (B, C)`` (all ones while
    unset, see :meth:`set_gains`) and static scale ``w (C,)``. The gains ``a * w`` of shape ``(B, C)``
    go through ``self.tap``.

    >>> fg = FilterGains(4)
    >>> x = torch.randn(2, 4, 5, 7)
    >>> torch.equal(fg(x), x)
    True
    >>> fg.set_gains(torch.full((2, 4), 0.5))
    >>> fg(x).shape
    torch.Size([2, 4, 5, 7])
    >>> torch.allclose(fg(x), 0.5 * x)
    True
    >>> fg.set_gains(torch.rand(6, 4))  # 3 gain settings of the same 2 images
    >>> fg(x).shape
    torch.Size([6, 4, 5, 7])
    """

    supports_identity_init = True

    def __init__(self, channels: int, *, identity_init: bool = True) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_type(identity_init, "identity_init", bool)
        self.channels = channels
        self.identity_init = identity_init
        self.weight = nn.Parameter(torch.ones(channels))
        if not identity_init:
            nn.init.uniform_(self.weight, 0.5, 1.5)
        self.tap = AttentionTap("gains")
        self._gains: torch.Tensor | None = None

    def set_gains(self, gains: torch.Tensor | None) -> None:
        """Set the external gains ``a`` of shape ``(B, C)`` for the next calls (``None`` clears them).

        ``B`` must equal (or be a multiple of, see :meth:`forward`) the batch of the ``x`` later
        passed to ``forward``.
        """
        if gains is not None:
            check_tensor(gains, "gains", ndim=2, channels=self.channels, layout="(B, C)")
        self._gains = gains

    @property
    def gains(self) -> torch.Tensor | None:
        """The external gains ``(B, C)`` currently set, or ``None``."""
        return self._gains

    def effective_gains(self, batch: int) -> torch.Tensor:
        """The gains ``a * w`` applied to a batch of ``batch`` images, ``(R batch, C)``.

        ``R = 1`` unless the gains were set for ``R`` copies of the batch (see :meth:`forward`).
        """
        if self._gains is None:
            return self.weight.expand(batch, self.channels)
        if self._gains.shape[0] % batch:
            raise ValueError(
                f"gains were set for a batch of {self._gains.shape[0]}, got x with batch {batch} "
                "(the gains' batch must be a multiple of x's)"
            )
        return self._gains * self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale the channels of ``x``: ``(B, C, H, W) -> (R B, C, H, W)``.

        ``R = 1`` normally. With gains set for ``R B`` rows (``R`` gain settings of the same ``B``
        images, row ``r B + b`` for image ``b`` under setting ``r``) the output is
        ``y[r B + b] = (a * w)[r B + b] * x[b]``, computed by broadcasting without copying ``x``
        ``R`` times; the output keeps ``x``'s memory format (e.g. ``channels_last``).
        """
        check_tensor(x, "x", ndim=4, channels=self.channels)
        b = x.shape[0]
        g = self.tap(self.effective_gains(b)).to(x.dtype)
        if g.shape[0] == b:
            return x * g[:, :, None, None]
        return (x.unsqueeze(0) * g.view(-1, b, self.channels, 1, 1)).flatten(0, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, identity_init={self.identity_init}"
