"""The model registry: ``register_model``, ``create_model``, ``list_models``.

Builders are keyword-only: ``create_model(name, *, num_classes=10, in_chans=3, ...)``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from torch import nn

from visattn.registry import Registry

__all__ = ["register_model", "create_model", "list_models", "get_model_builder"]

_MODELS: Registry[Any] = Registry("model")


def register_model(name: str | None = None):
    """Decorator registering a model builder under ``name``."""
    return _MODELS.register(name)


def create_model(name: str, pretrained: bool | str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``; options are keyword-only.

    ``pretrained``: ``True`` (the package's default weights for ``name``), a tag of its shipped weights,
    a path to a ``.safetensors`` file with its card beside it, or a URL (downloaded once into a cache);
    the model then has its card's kwargs, is in eval mode, and ``model.pretrained_card`` is the card
    (``visattn.models._pretrained``; ``list_pretrained()`` lists the shipped ones).

    A builder with weights of its own (``efficientnet_lite0``'s ImageNet weights) gets ``pretrained``
    passed on: ``None`` (default) is that builder's default, ``False`` a random init, and ``True`` its own
    weights; a tag, path or URL then names visattn's fine-tuned weights (e.g.
    ``create_model("efficientnet_lite0", pretrained="flowers102")``), built without the builder's own.

    >>> import torch, visattn
    >>> m = visattn.create_model("resnet20", num_classes=10)
    >>> m(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> visattn.create_model("mnist_cnn", pretrained=True).pretrained_card["dataset"]
    'mnist'
    """
    builder = _MODELS.get(name)
    own_weights = "pretrained" in inspect.signature(builder).parameters
    if pretrained is None:
        return _MODELS.create(name, **kwargs)
    if pretrained is False:
        return _MODELS.create(name, **({"pretrained": False} if own_weights else {}), **kwargs)
    from visattn.models._pretrained import build_pretrained, list_pretrained

    if pretrained is True and own_weights and not list_pretrained(name, default_only=True):
        return _MODELS.create(name, pretrained=True, **kwargs)
    if own_weights:  # the card's weights replace every parameter: skip loading the builder's own
        kwargs = {"pretrained": False, **kwargs}
    return build_pretrained(builder, name, pretrained, kwargs)


def get_model_builder(name: str) -> Any:
    """Return the builder registered as ``name``."""
    return _MODELS.get(name)


def list_models(filter: str | None = None) -> list[str]:
    """Names of all registered models, sorted; ``filter`` is a glob (``"se_*"``).

    >>> list_models("se_resnet2?")
    ['se_resnet20']
    """
    return _MODELS.names(filter)
