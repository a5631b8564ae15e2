"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017): class-discriminative heat maps of any CNN, eq. 1-2.

Computed by the ``grad-cam`` package (``pip install grad-cam``, the ``viz`` extra), not a
hand-written copy. Its own file so that both the renderers (``visattn.viz.render``) and the
localisation scores (``visattn.viz.localization``) use it without importing each other.
"""

from __future__ import annotations

import torch
from torch import nn

from visattn._validate import check_tensor, check_type

__all__ = ["cam_layer", "gradcam"]


class _Logits(nn.Module):
    """Wraps a model whose output may be a dict with ``"logits"`` so Grad-CAM sees a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out["logits"] if isinstance(out, dict) else out


def cam_layer(model: nn.Module) -> nn.Module | None:
    """The default Grad-CAM layer: the model's last ``nn.Conv2d`` in module order (``None`` if none)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    *,
    targets: torch.Tensor | None = None,
    layer: nn.Module | None = None,
) -> torch.Tensor:
    """Grad-CAM heat maps ``(B, H, W)`` in ``[0, 1]`` of ``model`` on ``x`` ``(B, C, H, W)``.

    ``L = ReLU(sum_k a_k A^k)`` with ``a_k`` the spatial mean of ``d y_c / d A^k`` (Selvaraju et al.,
    eq. 1-2), computed by ``pytorch_grad_cam.GradCAM`` at ``layer`` (default :func:`cam_layer`),
    resized to the input and scaled to ``[0, 1]`` per image. ``targets`` ``(B,)`` are the classes
    explained (default: the predicted ones). ``ValueError`` when the model has no ``Conv2d`` or its
    forward runs without autograd. The model is left in ``eval()`` mode and its ``.grad``
    fields are zeroed (the package calls ``model.zero_grad()``).

    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3))
    >>> gradcam(net, torch.rand(2, 1, 10, 12)).shape
    torch.Size([2, 10, 12])
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    check_type(model, "model", nn.Module)
    check_tensor(x, "x", ndim=4)
    layer = cam_layer(model) if layer is None else check_type(layer, "layer", nn.Module)
    if layer is None:
        raise ValueError(f"gradcam needs a convolutional layer; {type(model).__name__} has no nn.Conv2d")
    cam_targets = None
    if targets is not None:
        check_tensor(targets, "targets", ndim=1, floating=False, layout="(B,)")
        cam_targets = [ClassifierOutputTarget(int(c)) for c in targets.tolist()]
    try:
        with torch.enable_grad(), GradCAM(model=_Logits(model), target_layers=[layer]) as cam:
            maps = cam(input_tensor=x, targets=cam_targets)
    except RuntimeError as e:
        if "does not require grad" not in str(e):
            raise
        raise ValueError(
            f"gradcam needs gradients through {type(model).__name__}, whose forward runs without autograd"
        ) from e
    return torch.from_numpy(maps).float()
