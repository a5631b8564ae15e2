"""``AttentionRecorder``: capture every mechanism's attention during one forward pass.

After vit-pytorch's ``Recorder`` (lucidrains/vit-pytorch, ``vit_pytorch/recorder.py``): every
mechanism in visattn passes its attention through a named :class:`~visattn.attention._tap.AttentionTap`
submodule, so one recorder can hook all of them, whatever the mechanism, including modules
inserted into a torchvision or timm network by ``visattn.retrofit``. Hooks exist only inside the
``with`` block and are removed on exit, also when the block raises.

What is collected, keyed by the tap's qualified name in the model (``"layer1.0.attn.tap"``):

* ``spatial``: ``(B, C or 1, H, W)`` masks (residual attention)
* ``channel``: ``(B, C)`` channel weights (squeeze-and-excitation)
* ``warp``: ``(B, H_out, W_out, 2)`` sampling grids, ``(x, y)`` in ``[-1, 1]`` (spatial transformer)
* ``location``: ``(B, 2)`` locations, ``(x, y)`` in ``[-1, 1]`` (glimpses)
* ``gains``: ``(B, F)`` filter gains (dasNet)

A tap that fires several times in one forward pass (a recurrent model's glimpse location at each
of ``T`` steps) keeps every call: :attr:`TapRecord.calls` in order, :meth:`TapRecord.stacked`
gives ``(B, T, ...)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from visattn._validate import check_choice, check_type
from visattn.attention._tap import TAP_KINDS, AttentionTap

__all__ = ["AttentionRecorder", "TapRecord", "find_taps", "record_attention"]


@dataclass
class TapRecord:
    """What one tap emitted during a forward pass.

    Attributes:
        name: the tap's qualified name in the model.
        kind: one of ``TAP_KINDS``.
        calls: the tap's output at each call, in call order (detached, on ``device`` if set).
    """

    name: str
    kind: str
    calls: list[torch.Tensor] = field(default_factory=list)

    @property
    def value(self) -> torch.Tensor:
        """The output of the last call (the documented shape of ``kind``)."""
        if not self.calls:
            raise ValueError(f"tap {self.name!r} did not fire during the forward pass")
        return self.calls[-1]

    def stacked(self) -> torch.Tensor:
        """All calls stacked on dim 1: ``(B, T, ...)`` for ``T`` calls.

        >>> r = TapRecord("glimpse.tap", "location", [torch.zeros(4, 2), torch.ones(4, 2)])
        >>> r.stacked().shape
        torch.Size([4, 2, 2])
        """
        return torch.stack(self.calls, dim=1)


def find_taps(model: nn.Module) -> dict[str, AttentionTap]:
    """Every ``AttentionTap`` of ``model`` by qualified name, in module order.

    >>> from visattn.attention._tap import AttentionTap
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), AttentionTap("spatial"))
    >>> list(find_taps(net))
    ['1']
    """
    check_type(model, "model", nn.Module)
    return {name: m for name, m in model.named_modules() if isinstance(m, AttentionTap)}


class AttentionRecorder:
    """Context manager hooking every ``AttentionTap`` of a model.

    Args:
        model: any ``nn.Module``; its taps are found by ``named_modules``.
        kinds: record only taps of these kinds (default: all of ``TAP_KINDS``).
        device: move recorded tensors there (default ``"cpu"``; ``None`` keeps them in place).

    Inside the block every call of a tap appends its (detached) output to
    ``recorder.records[name].calls``. :meth:`clear` empties them between forward passes. Hooks are
    removed on exit; ``recorder.records`` stays readable afterwards.

    >>> from visattn.attention._tap import AttentionTap
    >>> class Toy(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = nn.Conv2d(1, 4, 3, padding=1)
    ...         self.mask = AttentionTap("spatial")
    ...     def forward(self, x):
    ...         y = self.conv(x)
    ...         return y * self.mask(torch.sigmoid(y.mean(1, keepdim=True)))
    >>> net = Toy()
    >>> with AttentionRecorder(net) as rec:
    ...     _ = net(torch.rand(2, 1, 8, 8))
    >>> rec.records["mask"].kind, rec.records["mask"].value.shape
    ('spatial', torch.Size([2, 1, 8, 8]))
    >>> len(net.mask._forward_hooks)
    0
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        kinds: Iterable[str] | None = None,
        device: str | torch.device | None = "cpu",
    ) -> None:
        check_type(model, "model", nn.Module)
        wanted = tuple(TAP_KINDS if kinds is None else kinds)
        for k in wanted:
            check_choice(k, "kinds", TAP_KINDS)
        self.model = model
        self.kinds = wanted
        self.device = None if device is None else torch.device(device)
        self.taps = {n: t for n, t in find_taps(model).items() if t.kind in wanted}
        self.records: dict[str, TapRecord] = {n: TapRecord(n, t.kind) for n, t in self.taps.items()}
        self._handles: list[RemovableHandle] = []

    def _hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"AttentionTap {name!r} must pass a tensor, got {type(output).__name__}")
            t = output.detach()
            self.records[name].calls.append(t if self.device is None else t.to(self.device))

        return hook

    def __enter__(self) -> AttentionRecorder:
        if self._handles:
            raise RuntimeError("this AttentionRecorder is already active; it is not re-entrant")
        self.clear()
        self._handles = [tap.register_forward_hook(self._hook(n)) for n, tap in self.taps.items()]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this recorder placed (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def active(self) -> bool:
        """Whether hooks are in place."""
        return bool(self._handles)

    def clear(self) -> None:
        """Forget what was recorded (call between forward passes)."""
        for r in self.records.values():
            r.calls.clear()

    def fired(self) -> dict[str, TapRecord]:
        """The records of taps that fired at least once."""
        return {n: r for n, r in self.records.items() if r.calls}

    def by_kind(self, kind: str) -> dict[str, TapRecord]:
        """The fired records of one ``kind``."""
        check_choice(kind, "kind", TAP_KINDS)
        return {n: r for n, r in self.fired().items() if r.kind == kind}


def record_attention(
    model: nn.Module,
    x: torch.Tensor,
    *,
    kinds: Iterable[str] | None = None,
    grad: bool = False,
) -> tuple[Any, dict[str, TapRecord]]:
    """Run ``model(x)`` once and return ``(output, records of the taps that fired)``.

    The model's ``training`` flag is left as it is (call ``model.eval()`` first for inference
    views); ``grad=False`` runs under ``torch.no_grad()``.

    >>> from visattn.attention._tap import AttentionTap
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), AttentionTap("gains"))
    >>> out, recs = record_attention(net, torch.rand(5, 1, 2, 2))
    >>> out.shape, recs["2"].value.shape
    (torch.Size([5, 3]), torch.Size([5, 3]))
    """
    with AttentionRecorder(model, kinds=kinds) as rec, torch.set_grad_enabled(grad):
        out = model(x)
    return out, rec.fired()
