"""``AttentionTap``: the named submodule through which every mechanism emits its attention.

A mechanism passes its attention (a mask, a gate, a warp grid, a glimpse location, filter
gains) through ``self.tap = AttentionTap(kind)``; the tap returns its input unchanged, so
it costs nothing, and a recorder (``visattn.viz``) can hook every tap of a model and remove
its hooks afterwards (the habit of vit-pytorch's recorder).

Kinds and the shapes they carry:

* ``"spatial"``: ``(B, C or 1, H, W)`` maps in ``[0, 1]`` (or unbounded, documented per module)
* ``"channel"``: ``(B, C)`` channel weights
* ``"warp"``: ``(B, H_out, W_out, 2)`` sampling grids in ``[-1, 1]``, ``(x, y)`` order
* ``"location"``: ``(B, 2)`` locations in ``[-1, 1]``, ``(x, y)`` order
* ``"gains"``: ``(B, F)`` per-filter gains
"""

from __future__ import annotations

from torch import nn

__all__ = ["AttentionTap", "TAP_KINDS"]

TAP_KINDS = ("spatial", "channel", "warp", "location", "gains")


class AttentionTap(nn.Identity):
    """Identity module that marks a tensor as attention of a given ``kind``.

    >>> import torch
    >>> tap = AttentionTap("channel")
    >>> tap(torch.ones(2, 4)).shape
    torch.Size([2, 4])
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in TAP_KINDS:
            raise ValueError(f"kind must be one of {list(TAP_KINDS)}, got {kind!r}")
        self.kind = kind

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
