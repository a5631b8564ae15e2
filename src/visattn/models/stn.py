"""The networks of Spatial Transformer Networks (Jaderberg et al., NIPS 2015, sec. 4.1, 4.3 and appendix A).

Distorted MNIST (Table 1): a fully connected baseline ``fcn_mnist``, a convolutional baseline
``cnn_mnist``, and the same classifiers behind a spatial transformer at the input,
``st_fcn_mnist`` and ``st_cnn_mnist`` (``transform="affine"``, ``"projective"`` or ``"tps"``).
Fine-grained images (sec. 4.3): ``st_cnn`` runs ``num_transformers`` transformers in parallel on
the input, each feeding its own copy of a registered backbone, and classifies the concatenated
features (the paper's 2x/4x ST-CNN).

The paper gives the layer types, not every width; our choices (all ReLU):

* FCN: ``image -> 128 -> 128 -> 128 -> classes``;
* CNN: ``conv9x9(32) - maxpool2 - conv7x7(32) - maxpool2 - FC(classes)`` ('same' padding);
* ST-FCN localisation: ``image -> 32 -> 32 -> P``;
* ST-CNN localisation: ``conv5x5(20) - maxpool2 - conv5x5(20) - maxpool2 - pool to 4x4 - FC(50) - P``;
* ``loc_downsample=k`` (default 1): the localisation network sees the input average-pooled by ``k``
  (the paper regresses the transform from a down-sampled input; the sampler still reads the full image),
  which makes it about ``k^2`` times cheaper;
* the transformer keeps the input size (``st_out_size`` changes it) and pads with ``"border"``;
  TPS uses a 3x3 control lattice (``grid_size``).

Each localisation network ends in a zero-initialised layer whose bias is the identity transform
(``visattn.attention.SpatialTransformer``), so every ST model starts as its plain classifier.

The first convolutions are ``GreyConv2d`` (``visattn.models._grey_conv``): ``nn.Conv2d`` subclasses with
the same weights and outputs whose input gradient, which the ST-CNN's classifier needs behind the
sampler, is computed 3-4x faster on CPU for one input channel.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from visattn._validate import check_choice, check_positive, check_type
from visattn.attention.spatial_transformer import SpatialTransformer
from visattn.functional.warp import TRANSFORMS, _pair, num_params
from visattn.models._common import InputSpec, check_input, check_model_args
from visattn.models._grey_conv import GreyConv2d
from visattn.models._registry import create_model, register_model

__all__ = [
    "FCN",
    "CNN",
    "STClassifier",
    "MultiSTNet",
    "mnist_stn",
    "fcn_mnist",
    "cnn_mnist",
    "st_fcn_mnist",
    "st_cnn_mnist",
    "st_cnn",
]

_MNIST_TRANSFORMS = ("affine", "projective", "tps")


class FCN(nn.Module):
    """Fully connected classifier ``(B, C, H, W) -> (B, num_classes)`` for a fixed ``(H, W)``."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: tuple[int, int],
        hidden: tuple[int, ...] = (128,) * 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(1)]
        width = in_chans * image_size[0] * image_size[1]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Convolutional classifier ``(B, C, H, W) -> (B, num_classes)`` for a fixed ``(H, W)``."""

    def __init__(
        self, *, num_classes: int, in_chans: int, image_size: tuple[int, int], width: int = 32
    ) -> None:
        super().__init__()
        # max-pool before ReLU: relu(maxpool(z)) == maxpool(relu(z)) exactly (values and gradients,
        # both monotone), and the ReLU then touches 4x fewer values (~5% of a CPU training step).
        self.features = nn.Sequential(
            GreyConv2d(in_chans, width, 9, padding=4),  # an nn.Conv2d; faster input gradient for grey images
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 7, padding=3),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
        )
        h, w = image_size[0] // 4, image_size[1] // 4
        self.fc = nn.Linear(width * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def _fcn_localization(in_chans: int, image_size: tuple[int, int], outputs: int) -> nn.Module:
    return FCN(num_classes=outputs, in_chans=in_chans, image_size=image_size, hidden=(32, 32))


def _cnn_localization(in_chans: int, outputs: int) -> nn.Module:
    return nn.Sequential(
        GreyConv2d(in_chans, 20, 5, padding=2),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(20, 20, 5, padding=2),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.AdaptiveMaxPool2d(4),
        nn.Flatten(1),
        nn.Linear(20 * 16, 50),
        nn.ReLU(inplace=True),
        nn.Linear(50, outputs),
    )


class STClassifier(nn.Module):
    """A classifier behind a spatial transformer: ``logits = classifier(ST(x))``.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)`` with ``(H, W) = image_size``; the transformer
    is ``self.st`` (its grid goes through ``self.st.tap``) and outputs ``(B, in_chans, *st_out_size)``.
    """

    def __init__(self, st: SpatialTransformer | None, classifier: nn.Module, spec: InputSpec) -> None:
        super().__init__()
        self.input_spec = spec
        self.st = st if st is not None else nn.Identity()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self.input_spec, x)
        return self.classifier(self.st(x))


def _mnist_model(
    kind: str,
    *,
    with_st: bool,
    num_classes: int,
    in_chans: int,
    image_size: int | tuple[int, int],
    transform: str,
    grid_size: int | tuple[int, int],
    st_out_size: int | tuple[int, int] | None,
    padding_mode: str,
    loc_downsample: int = 1,
) -> STClassifier:
    check_model_args(num_classes, in_chans)
    size = _pair(image_size, "image_size")
    if min(size) < 8:
        raise ValueError(f"image_size must be at least 8x8, got {size}")
    out = size if st_out_size is None else _pair(st_out_size, "st_out_size")
    if min(out) < 4:
        raise ValueError(f"st_out_size must be at least 4x4, got {out}")
    spec = InputSpec(in_chans, min_size=size, size=size)
    st = None
    if with_st:
        check_choice(transform, "transform", _MNIST_TRANSFORMS)
        check_positive(loc_downsample, "loc_downsample", integer=True)
        if min(size) // loc_downsample < 4:
            raise ValueError(
                f"loc_downsample={loc_downsample} leaves the localisation network less than 4x4 of the "
                f"{size} image; use at most {min(size) // 4}"
            )
        p = num_params(transform, grid_size)
        small = (size[0] // loc_downsample, size[1] // loc_downsample)
        loc = _fcn_localization(in_chans, small, p) if kind == "fcn" else _cnn_localization(in_chans, p)
        if loc_downsample > 1:  # the last layer stays last: SpatialTransformer zero-initialises it
            loc = nn.Sequential(nn.AvgPool2d(loc_downsample), *(loc.children() if kind == "cnn" else [loc]))
        st = SpatialTransformer(
            in_chans,
            transform=transform,
            localization=loc,
            out_size=out,
            grid_size=grid_size,
            padding_mode=padding_mode,
        )
    net = FCN if kind == "fcn" else CNN
    return STClassifier(st, net(num_classes=num_classes, in_chans=in_chans, image_size=out), spec)


def mnist_stn(
    kind: str,
    with_st: bool,
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    image_size: int | tuple[int, int] = 28,
    transform: str = "affine",
    grid_size: int | tuple[int, int] = 3,
    st_out_size: int | tuple[int, int] | None = None,
    padding_mode: str = "border",
    loc_downsample: int = 1,
) -> STClassifier:
    """The paper's MNIST networks: ``kind`` ``"fcn"`` (3 hidden layers of 128) or ``"cnn"``
    (conv9x9-pool-conv7x7-pool-FC, 32 filters) for ``image_size`` inputs (28, or 42 for RTS), behind an
    FCN- or CNN-localised spatial transformer (``affine``, ``projective``, ``tps``) when ``with_st``;
    ``loc_downsample=k`` feeds the localisation network the input average-pooled by ``k``.

    Registered as ``fcn_mnist``, ``cnn_mnist`` (baselines: the transformer's options are refused) and
    ``st_fcn_mnist``, ``st_cnn_mnist``.

    >>> mnist_stn("cnn", True, transform="projective", image_size=42)(torch.zeros(2, 1, 42, 42)).shape
    torch.Size([2, 10])
    >>> mnist_stn("fcn", False)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    check_choice(kind, "kind", ("fcn", "cnn"))
    if not with_st:
        st_opts: dict[str, tuple[Any, Any]] = {
            "transform": (transform, "affine"),
            "grid_size": (grid_size, 3),
        }
        st_opts.update(st_out_size=(st_out_size, None), padding_mode=(padding_mode, "border"))
        st_opts.update(loc_downsample=(loc_downsample, 1))
        given = [k for k, (v, default) in st_opts.items() if v != default]
        if given:
            raise TypeError(
                f"{kind}_mnist has no spatial transformer, so it takes no {given}; use st_{kind}_mnist"
            )
    return _mnist_model(
        kind, with_st=with_st, num_classes=num_classes, in_chans=in_chans, image_size=image_size,
        transform=transform, grid_size=grid_size, st_out_size=st_out_size, padding_mode=padding_mode,
        loc_downsample=loc_downsample,
    )  # fmt: skip


fcn_mnist = register_model("fcn_mnist")(partial(mnist_stn, "fcn", False))
cnn_mnist = register_model("cnn_mnist")(partial(mnist_stn, "cnn", False))
st_fcn_mnist = register_model("st_fcn_mnist")(partial(mnist_stn, "fcn", True))
st_cnn_mnist = register_model("st_cnn_mnist")(partial(mnist_stn, "cnn", True))


class MultiSTNet(nn.Module):
    """``N`` spatial transformers in parallel, each feeding its own backbone; features concatenated.

    ``logits = FC([f_1(ST_1(x)), ..., f_N(ST_N(x))])`` where ``f_i`` is a registered backbone with its
    classifier removed (it must have an ``fc`` ``nn.Linear`` head and pool its features, as the
    ResNets do). Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``. The paper shares one
    localisation network among the transformers; here each has its own default one (simpler; the
    backbones' different initialisations break the symmetry of the identity start).
    """

    def __init__(
        self,
        *,
        backbone: str,
        num_transformers: int,
        num_classes: int,
        in_chans: int,
        transform: str,
        st_out_size: int | tuple[int, int] | None,
        padding_mode: str,
        backbone_kwargs: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans)
        check_positive(num_transformers, "num_transformers", integer=True)
        check_type(backbone, "backbone", str)
        check_choice(transform, "transform", TRANSFORMS)
        kwargs = dict(backbone_kwargs or {})
        branches = []
        for _ in range(num_transformers):
            net = create_model(backbone, num_classes=num_classes, in_chans=in_chans, **kwargs)
            head = getattr(net, "fc", None)
            if not isinstance(head, nn.Linear):
                raise ValueError(
                    f"backbone {backbone!r} must have an nn.Linear head named 'fc' to be used by st_cnn"
                )
            feature_dim: int = head.in_features
            net.fc = nn.Identity()
            branches.append(net)
        self.branches = nn.ModuleList(branches)
        self.feature_dim = feature_dim
        bb_min = getattr(getattr(branches[0], "input_spec", None), "min_size", (1, 1))
        self.st_out_size = None if st_out_size is None else _pair(st_out_size, "st_out_size")
        if self.st_out_size is not None and (
            self.st_out_size[0] < bb_min[0] or self.st_out_size[1] < bb_min[1]
        ):
            raise ValueError(
                f"st_out_size must be at least the backbone's minimum {bb_min}, got {self.st_out_size}"
            )
        min_size = (max(8, bb_min[0]), max(8, bb_min[1])) if st_out_size is None else (8, 8)
        self.input_spec = InputSpec(in_chans, min_size=min_size)
        self.transformers = nn.ModuleList(
            SpatialTransformer(
                in_chans, transform=transform, out_size=self.st_out_size, padding_mode=padding_mode
            )
            for _ in range(num_transformers)
        )
        self.fc = nn.Linear(self.feature_dim * num_transformers, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self.input_spec, x)
        feats = [f(st(x)) for st, f in zip(self.transformers, self.branches)]
        return self.fc(torch.cat(feats, dim=1))


@register_model("st_cnn")
def st_cnn(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    backbone: str = "resnet18",
    num_transformers: int = 2,
    transform: str = "attention",
    st_out_size: int | tuple[int, int] | None = None,
    padding_mode: str = "border",
    backbone_kwargs: dict[str, Any] | None = None,
) -> MultiSTNet:
    """The paper's N x ST-CNN (sec. 4.3): ``num_transformers`` parallel transformers over any backbone.

    ``transform="attention"`` (scale and translation) as in the paper's bird experiments;
    ``st_out_size`` down-samples each crop (the paper samples 224 px crops from 448 px images).

    >>> m = st_cnn(backbone="resnet20", num_transformers=2, st_out_size=16)
    >>> m(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    return MultiSTNet(
        backbone=backbone,
        num_transformers=num_transformers,
        num_classes=num_classes,
        in_chans=in_chans,
        transform=transform,
        st_out_size=st_out_size,
        padding_mode=padding_mode,
        backbone_kwargs=backbone_kwargs,
    )
