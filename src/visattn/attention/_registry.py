"""The attention registry: ``register_attention``, ``create_attention``, ``list_attention``.

Every registered attention module follows one contract (``../shared/STYLE.md`` rule 1):
``Module(channels: int, *, ...)`` with keyword-only options, and, where it can start as
the identity, an ``identity_init`` option. Classes declare ``supports_identity_init``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from visattn.registry import Registry

__all__ = ["register_attention", "create_attention", "list_attention", "get_attention_class"]

_ATTENTION: Registry[Any] = Registry("attention")


def register_attention(name: str | None = None):
    """Class decorator registering an attention module under ``name``."""
    return _ATTENTION.register(name)


def create_attention(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """Build the attention module registered as ``name`` for ``channels`` input channels.

    >>> import visattn
    >>> "se" in visattn.list_attention() or True
    True
    """
    return _ATTENTION.create(name, channels, **kwargs)


def get_attention_class(name: str) -> Any:
    """Return the class (or builder) registered as ``name``."""
    return _ATTENTION.get(name)


def list_attention(filter: str | None = None) -> list[str]:
    """Names of all registered attention modules, sorted; ``filter`` is a glob (``"se*"``)."""
    return _ATTENTION.names(filter)
