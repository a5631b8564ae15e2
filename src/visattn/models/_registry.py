"""The model registry: ``register_model``, ``create_model``, ``list_models``.

Builders are keyword-only: ``create_model(name, *, num_classes=10, in_chans=3, ...)``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from visattn.registry import Registry

__all__ = ["register_model", "create_model", "list_models", "get_model_builder"]

_MODELS: Registry[Any] = Registry("model")


def register_model(name: str | None = None):
    """Decorator registering a model builder under ``name``."""
    return _MODELS.register(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``; options are keyword-only.

    >>> import torch, visattn
    >>> m = visattn.create_model("resnet20", num_classes=10)
    >>> m(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    return _MODELS.create(name, **kwargs)


def get_model_builder(name: str) -> Any:
    """Return the builder registered as ``name``."""
    return _MODELS.get(name)


def list_models(filter: str | None = None) -> list[str]:
    """Names of all registered models, sorted; ``filter`` is a glob (``"se_*"``).

    >>> list_models("se_resnet2?")
    ['se_resnet20']
    """
    return _MODELS.names(filter)
