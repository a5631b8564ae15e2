"""``load_model``: a registered model rebuilt as it was trained and its weights loaded (weights-only).

The one place that turns "model name + options + weights file" into a module: ``visattn.train.load_run``
uses it for trained runs, and dasNet's builder for its frozen base network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from visattn.checkpoint import load_state, safe_load
from visattn.models._registry import create_model

__all__ = ["load_model"]


def load_model(
    name: str,
    weights: str | Path | dict[str, Any] | None,
    *,
    num_classes: int,
    in_chans: int,
    retrofit: str | None = None,
    retrofit_kwargs: dict[str, Any] | None = None,
    strict: bool = True,
    source: str | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """``create_model(name, ...)``, then ``retrofit`` (if the weights were trained with inserted attention),
    then the weights: a file (``.pt`` loaded with ``weights_only=True``, or ``.safetensors``) or an already
    loaded checkpoint / state dict; ``None`` leaves the initial weights.

    ``ValueError`` naming the tensor when a shape does not fit, and (``strict``) listing missing or
    unexpected keys. ``source`` names the weights in messages (default: the path).

    >>> import torch
    >>> sd = create_model("mnist_cnn", num_classes=10, in_chans=1).state_dict()
    >>> m = load_model("mnist_cnn", {"model": sd}, num_classes=10, in_chans=1)
    >>> torch.equal(m.state_dict()["fc.weight"], sd["fc.weight"])
    True
    """
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, **model_kwargs)
    if retrofit:
        from visattn.retrofit import retrofit as insert

        insert(model, retrofit, **(retrofit_kwargs or {}))
    if weights is not None:
        obj = safe_load(weights) if isinstance(weights, (str, Path)) else weights
        label = source or (repr(str(weights)) if isinstance(weights, (str, Path)) else "weights")
        load_state(model, obj, source=label, strict=strict)
    return model
