"""Residual Attention Network: the attention module (Wang, Jiang, Qian, Yang, Li, Zhang, Wang, Tang,
"Residual Attention Network for Image Classification", CVPR 2017, arXiv:1704.06904, sec. 3).

For ``x`` of shape ``(B, C, H, W)`` the module computes (every unit is a pre-activation bottleneck,
``visattn.attention._preact.PreActBottleneck``):

1. ``x <- P(x)``: ``p`` pre-processing units.
2. Trunk ``T(x)``: ``t`` units.
3. Soft mask branch, bottom-up then top-down (sec. 3.2, fig. 2-3), with ``L = skip_levels + 1`` max-pool
   steps: ``d_0 = x``; for ``l = 1..L``: ``d_l = D_l(maxpool(d_{l-1}))`` (3x3, stride 2, padding 1, then
   ``r`` units), and for ``l < L`` a skip ``s_l = S_l(d_l)`` (one unit). Top-down: ``u_L = U_L(d_L)``
   (``r`` units at the lowest resolution); for ``l = L-1..1``: ``u_l = U_l(up(u_{l+1}) + s_l)``
   (bilinear, ``align_corners=False``, to the exact size of ``d_l``); finally ``u_0 = up(u_1)`` to
   ``(H, W)``. Then ``z = W_b relu(BN(W_a relu(BN(u_0))))`` with two 1x1 convolutions ``C -> C``.
4. The mask ``M = f(z)`` (sec. 3.3, ``mask=``), shape ``(B, C, H, W)``:

   * ``"mixed"`` (the paper's default): ``f1 = sigmoid(z)`` per element, in ``(0, 1)`` (``[0, 1]`` once
     float32 rounds a saturated sigmoid);
   * ``"channel"``: ``f2 = z / ||z_{:, i}||_2``, L2 normalisation over the ``C`` channels at each
     position ``i`` (eps ``1e-12``), each element in ``[-1, 1]``;
   * ``"spatial"``: ``f3 = sigmoid((z_c - mean_c) / sqrt(var_c + 1e-5))``, where ``mean_c`` and the
     biased ``var_c`` are taken over the ``H x W`` positions of channel ``c`` of each sample, in ``(0, 1)``
     (``[0, 1]`` in float32).

5. Output ``H = (1 + M) * T`` (eq. 3, attention residual learning, ``residual=True``) or ``H = M * T``
   (eq. 1, "naive attention learning", ``residual=False``), then ``p`` post-processing units.

The mask ``M`` (what multiplies the trunk) goes through ``self.tap = AttentionTap("spatial")``.

Step 3's bottom-up top-down pass is the hourglass block of ``visattn.attention.hourglass``
(:class:`~visattn.attention.hourglass.BottomUpTopDown`, the one implementation the stacked hourglass also
uses), here with no skip at the input resolution, an identity bottom, 3x3/2 max-pooling and bilinear
up-sampling.

Where the paper is silent: the skip connections carry one residual unit (as the authors' released Caffe
model); the up-sampled map is added to the skip only (not also to the un-skipped bottom-up map, nor to the
trunk at the input resolution, as some public ports do). Non-square and odd sizes work: pooling rounds up
and up-sampling targets the size of the matching bottom-up map, so the output always has the input's size.

Depth and input size: the number of pooling steps ``L = skip_levels + 1`` is fixed when the module is
built, and each level's resolution follows the input (``ceil(H / 2^l)``). The paper uses ``skip_levels``
2, 1, 0 in stages 1, 2, 3 so that every mask reaches the network's last resolution (56, 28, 14 -> 7 at
224x224); ``skip_levels_for(size, lowest)`` gives that choice for other sizes. An input with
``min(H, W) < 2**L`` raises ``ValueError``.

Identity at insertion (``identity_init=True``; for ``visattn.retrofit``, which puts the module on the
residual branch of a trained block): the whole module starts as exactly the identity of its input. The
last 1x1 convolution of every pre-processing, trunk and post-processing unit is zeroed (each unit is then
``x + 0``), and the mask becomes ``M = g * f(z)`` with a learnable per-channel gain ``g`` of shape
``(1, C, 1, 1)`` initialised to 0 (as in SkipInit / LayerScale), so ``(1 + M) * T = T = x`` exactly. ``f``
keeps the paper's form and range; ``M`` lies in ``g`` times that range. At the first step only ``g`` and
the zeroed convolutions get gradients (``dL/dg = sum f(z) T dL/dH``); the mask branch learns once ``g``
has moved. ``residual=False`` cannot start as the identity (``M * T = 0``) and is refused with it. The
default ``identity_init=False`` has no gain and is the paper's module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from visattn._validate import check_choice, check_positive, check_tensor, check_type
from visattn.attention._preact import PreActBottleneck, preact_stack
from visattn.attention._registry import register_attention
from visattn.attention._tap import AttentionTap
from visattn.attention.hourglass import BottomUpTopDown

__all__ = ["ResidualAttentionModule", "MASKS", "mask_activation", "skip_levels_for"]

MASKS = ("mixed", "channel", "spatial")
_CL = torch.channels_last


def _recording() -> bool:
    """Whether autograd may record: the in-place / ``out=`` fast paths below run only when it cannot."""
    return torch.is_grad_enabled()


def _every_other(x: torch.Tensor, dim: int, start: int) -> torch.Tensor:
    """The view ``x[..., start::2, :]`` (``dim=-2``) or ``x[..., start::2]`` (``dim=-1``)."""
    return x[..., start::2, :] if dim == -2 else x[..., start::2]


def _max3_stride2(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over the taps ``2i - 1, 2i, 2i + 1`` along ``dim`` (-2 or -1): a 1-D 3/2/1 max-pool."""
    even, odd = _every_other(x, dim, 0), _every_other(x, dim, 1)
    n_out, n_odd = even.shape[dim], odd.shape[dim]
    if n_odd == n_out:
        y = torch.maximum(even, odd)  # taps 2i and 2i + 1
    else:  # odd length: the last output has no tap 2i + 1
        y = even.clone()
        head = y.narrow(dim, 0, n_odd)
        torch.maximum(head, odd, out=head)
    if n_out > 1:  # tap 2i - 1 (padding for i = 0)
        tail = y.narrow(dim, 1, n_out - 1)
        torch.maximum(tail, odd.narrow(dim, 0, n_out - 1), out=tail)
    return y


def _maxpool(x: torch.Tensor) -> torch.Tensor:
    """3x3 max-pool, stride 2, padding 1: ``(B, C, H, W) -> (B, C, ceil(H / 2), ceil(W / 2))``.

    PyTorch's NCHW CPU kernel is slow (about 6 ms for ``(1, 256, 56, 56)`` on one core). Without
    autograd recording, maps of at least 8x8 are pooled separably, rows then columns, by element-wise
    maxima of strided views (exactly ``F.max_pool2d``'s values, about 2.4x faster than the channels-last
    kernel); otherwise, and when autograd records (whose gradient goes to one arg-max per window, as
    ``max_pool2d``'s), the channels-last kernel.
    """
    if not _recording() and min(x.shape[-2:]) >= 8:
        return _max3_stride2(_max3_stride2(x, -2), -1).contiguous()
    return F.max_pool2d(x.contiguous(memory_format=_CL), 3, 2, 1).contiguous()


_INTERP_CACHE: dict[tuple, torch.Tensor] = {}


def _interp_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """``(n_out, n_in)`` weights of 1-D linear interpolation, ``align_corners=False`` (as ``F.interpolate``).

    Cached per ``(n_in, n_out, dtype, device)``; built outside inference mode so that the cached
    matrix can also be used by autograd.
    """
    key = (n_in, n_out, like.dtype, like.device)
    a = _INTERP_CACHE.get(key)
    if a is not None:
        return a
    with torch.inference_mode(False), torch.no_grad():
        i = torch.arange(n_out, device=like.device, dtype=torch.float64)
        src = ((i + 0.5) * (n_in / n_out) - 0.5).clamp_(min=0)
        i0 = src.floor().long().clamp_(max=n_in - 1)
        i1 = (i0 + 1).clamp_(max=n_in - 1)
        w1 = src - i0
        rows = torch.arange(n_out, device=like.device)
        a = torch.zeros(n_out, n_in, device=like.device, dtype=torch.float64)
        a.index_put_((rows, i0), 1 - w1, accumulate=True)
        a.index_put_((rows, i1), w1, accumulate=True)
        a = a.to(like.dtype)
    if len(_INTERP_CACHE) >= 256:
        _INTERP_CACHE.clear()
    _INTERP_CACHE[key] = a
    return a


def _double_last(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Exact 2x linear up-sampling along ``dim`` (-2 or -1), ``align_corners=False``.

    Output ``2i`` is ``0.75 x[i] + 0.25 x[i - 1]``, output ``2i + 1`` is ``0.75 x[i] + 0.25 x[i + 1]``,
    the neighbour clamped at the borders (as ``F.interpolate``); written through ``out=`` views.
    """
    n = x.shape[dim]
    shape = list(x.shape)
    shape[dim] = 2 * n
    y = x.new_empty(shape)
    even, odd = _every_other(y, dim, 0), _every_other(y, dim, 1)
    even.narrow(dim, 0, 1).copy_(x.narrow(dim, 0, 1))
    odd.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 1, 1))
    if n > 1:
        lo, hi = x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1)
        torch.lerp(hi, lo, 0.25, out=even.narrow(dim, 1, n - 1))
        torch.lerp(lo, hi, 0.25, out=odd.narrow(dim, 0, n - 1))
    return y


def _upsample(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear up-sampling to ``size``, equal to ``F.interpolate(..., "bilinear", align_corners=False)``.

    On CPU, NCHW ``F.interpolate`` is slow for the large maps here. Without autograd recording, an
    exact 2x (every level of the paper's layouts) is two separable passes of ``torch.lerp`` (columns,
    then rows); otherwise ``A_h @ x @ A_w^T`` with the cached 1-D interpolation matrices.
    """
    h, w = x.shape[-2:]
    if not _recording() and size[0] == 2 * h and size[1] == 2 * w:
        return _double_last(_double_last(x, -1), -2)
    a_h = _interp_matrix(h, size[0], x)
    a_w = _interp_matrix(w, size[1], x)
    return torch.matmul(torch.matmul(a_h, x), a_w.t())


def mask_activation(z: torch.Tensor, mask: str, *, inplace: bool = False) -> torch.Tensor:
    """The paper's mask activations f1/f2/f3 (sec. 3.3), ``(B, C, H, W) -> (B, C, H, W)``.

    ``"mixed"``: ``sigmoid(z)``; ``"channel"``: ``z`` L2-normalised over channels at each position;
    ``"spatial"``: ``sigmoid`` of ``z`` standardised over the positions of each channel. With
    ``inplace=True`` the result may be written into ``z`` (``"mixed"`` always; ``"spatial"`` when
    autograd does not record); the values are the same.

    >>> m = mask_activation(torch.randn(2, 4, 3, 5), "channel")
    >>> m.shape, bool(torch.allclose(m.norm(dim=1), torch.ones(2, 3, 5)))
    (torch.Size([2, 4, 3, 5]), True)
    """
    check_choice(mask, "mask", MASKS)
    check_type(inplace, "inplace", bool)
    if mask == "mixed":
        return z.sigmoid_() if inplace else torch.sigmoid(z)
    if mask == "channel":
        return F.normalize(z, p=2.0, dim=1, eps=1e-12)
    var, mean = torch.var_mean(z, dim=(2, 3), keepdim=True, correction=0)
    if inplace and not _recording():
        return z.sub_(mean).mul_(var.add_(1e-5).rsqrt_()).sigmoid_()
    return torch.sigmoid((z - mean).mul_(torch.rsqrt(var.add_(1e-5))))


def skip_levels_for(size: int, lowest: int) -> int:
    """Skip levels whose ``skip_levels + 1`` poolings take ``size`` down to ``lowest`` or below.

    The paper's rule (pool down to the network's last resolution): 56, 28, 14 -> 7 give 2, 1, 0.

    >>> [skip_levels_for(s, 7) for s in (56, 28, 14)]
    [2, 1, 0]
    """
    check_positive(size, "size", integer=True)
    check_positive(lowest, "lowest", integer=True)
    steps = max(1, math.ceil(math.log2(size / lowest))) if size > lowest else 1
    return steps - 1


@register_attention("residual")
class ResidualAttentionModule(BottomUpTopDown):
    """Residual attention module, ``(B, C, H, W) -> (B, C, H, W)`` (see the module docstring).

    Args:
        channels: ``C``, input and output channels; units have bottleneck width ``max(1, C // 4)``.
        width: a slimmer module: every unit's bottleneck width, and the mask head becomes
            ``C -> width -> C`` (1x1 convolutions) instead of ``C -> C -> C``. ``None`` (default) is the
            paper's layout. For retrofits into wide layers (an MBConv block's 1,152 expanded channels),
            where the paper's module would add 26x the backbone's parameters.
        p: pre- and post-processing units (each side); the paper uses 1.
        t: trunk units; the paper uses 2.
        r: units between adjacent poolings in the mask branch (each of bottom-up and top-down);
            the paper uses 1.
        skip_levels: skip connections in the mask branch; it pools ``skip_levels + 1`` times, so the
            input must be at least ``2 ** (skip_levels + 1)`` pixels on each side.
        mask: ``"mixed"`` (sigmoid, the paper's), ``"channel"`` or ``"spatial"`` (sec. 3.3).
        residual: ``(1 + M) * T`` (attention residual learning) if true, else ``M * T``.
        identity_init: start as exactly the identity (needs ``residual=True``).

    Shapes: ``x (B, C, H, W) -> (B, C, H, W)``; the mask ``M (B, C, H, W)`` goes through ``self.tap``.

    >>> m = ResidualAttentionModule(16, skip_levels=1)
    >>> m(torch.randn(2, 16, 9, 12)).shape
    torch.Size([2, 16, 9, 12])
    >>> x = torch.randn(2, 16, 8, 8)
    >>> torch.equal(ResidualAttentionModule(16, identity_init=True)(x), x)
    True
    >>> sum(p.numel() for p in ResidualAttentionModule(64, width=4).parameters())
    7848
    """

    supports_identity_init = True

    def __init__(
        self,
        channels: int,
        *,
        p: int = 1,
        t: int = 2,
        r: int = 1,
        skip_levels: int = 1,
        mask: str = "mixed",
        residual: bool = True,
        identity_init: bool = False,
        width: int | None = None,
    ) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        if width is not None:
            check_positive(width, "width", integer=True)
        check_positive(p, "p", integer=True, allow_zero=True)
        check_positive(t, "t", integer=True)
        check_positive(r, "r", integer=True)
        check_positive(skip_levels, "skip_levels", integer=True, allow_zero=True)
        check_choice(mask, "mask", MASKS)
        check_type(residual, "residual", bool)
        check_type(identity_init, "identity_init", bool)
        if identity_init and not residual:
            raise ValueError(
                "identity_init=True needs residual=True: M * T with M = 0 is 0, not the identity; "
                f"got residual={residual!r}"
            )
        self.channels = channels
        self.p, self.t, self.r = p, t, r
        self.skip_levels = skip_levels
        self.mask = mask
        self.residual = residual
        self.identity_init = identity_init
        self.width = width
        levels = skip_levels + 1
        self.pre = preact_stack(channels, p, width)
        self.trunk = preact_stack(channels, t, width)
        self._build_levels(
            levels,
            lambda: preact_stack(channels, r, width),
            skip_from=1,
            make_skip=lambda: PreActBottleneck(channels, channels, width=width),
        )
        mid = channels if width is None else width
        self.mask_head = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 1, bias=False),
        )
        self.gain = nn.Parameter(torch.zeros(1, channels, 1, 1)) if identity_init else None
        self.tap = AttentionTap("spatial")
        self.post = preact_stack(channels, p, width)
        if identity_init:
            for unit in (*self.pre, *self.trunk, *self.post):
                unit.zero_init_last()

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """3x3 max-pool, stride 2, padding 1 (the fast path of :func:`_maxpool`)."""
        return _maxpool(x)

    def upsample(self, x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
        """Bilinear, ``align_corners=False`` (the fast path of :func:`_upsample`)."""
        return _upsample(x, size)

    @property
    def min_size(self) -> int:
        """Smallest ``H`` and ``W`` the module accepts: ``2 ** (skip_levels + 1)``."""
        return 2 ** (self.skip_levels + 1)

    def soft_mask(self, x: torch.Tensor) -> torch.Tensor:
        """The mask ``M`` for (pre-processed) features ``x``: ``(B, C, H, W) -> (B, C, H, W)``.

        Each intermediate map is released as soon as it has been used (the skips once added, the
        up-sampled map once the head's first layer has read it), which keeps the peak memory, and on
        CPU the fresh pages the allocator must fault in, low.
        """
        u = self.bottom_up_top_down(x)
        for layer in self.mask_head:  # layer by layer, so that each input is freed once read
            u = layer(u)
        m = mask_activation(u, self.mask, inplace=True)  # u: the last 1x1 conv's fresh output
        if self.gain is not None:
            m = m * self.gain
        return self.tap(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``: ``post((1 + M) * T)`` or ``post(M * T)``.

        ``(1 + M) * T`` is one ``addcmul(T, M, T)``; without autograd recording it is written into the
        trunk's output (never into ``M``, which a recorder may hold through ``self.tap``).
        """
        check_tensor(x, "x", ndim=4, channels=self.channels)
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"x is {x.shape[-2]}x{x.shape[-1]} (shape {tuple(x.shape)}), too small for "
                f"skip_levels={self.skip_levels}: its {self.skip_levels + 1} max-poolings need H, W >= "
                f"{self.min_size}; build the module with a smaller skip_levels"
            )
        x = self.pre(x)
        trunk = self.trunk(x)  # t >= 1 units: a fresh tensor
        m = self.soft_mask(x)
        del x
        if self.residual:
            out = torch.addcmul(trunk, m, trunk, out=None if _recording() else trunk)
        else:
            out = m * trunk
        del trunk, m
        return self.post(out)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, p={self.p}, t={self.t}, r={self.r}, "
            f"skip_levels={self.skip_levels}, mask={self.mask!r}, residual={self.residual}, "
            f"identity_init={self.identity_init}"
            + (f", width={self.width}" if self.width is not None else "")
        )
