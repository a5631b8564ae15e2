"""The attention registry: ``register_attention``, ``create_attention``, ``list_attention``.

Every registered attention module follows one contract (``../shared/STYLE.md`` rule 1):
``Module(channels: int, *, ...)`` with keyword-only options, and, where it can start as
the identity, an ``identity_init`` option. Classes declare ``supports_identity_init``.

*Sensors* (``register_sensor``) are modules with another forward, e.g. the glimpse sensor's
``forward(x, locations)``: they cannot stand where a drop-in attention goes (``attn_layer``,
``retrofit``), so they are listed apart (``list_sensors``). ``create_attention("glimpse", ...)``
still builds one, with a ``DeprecationWarning`` pointing to ``create_sensor``.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from visattn.registry import Registry

__all__ = [
    "register_attention",
    "create_attention",
    "list_attention",
    "get_attention_class",
    "check_drop_in",
    "register_sensor",
    "create_sensor",
    "get_sensor_class",
    "list_sensors",
]

_ATTENTION: Registry[Any] = Registry("attention")
_SENSORS: Registry[Any] = Registry("sensor")


def register_attention(name: str | None = None):
    """Class decorator registering an attention module under ``name``."""
    return _ATTENTION.register(name)


def _sensor_fallback(name: str) -> Any:
    """The sensor registered as ``name`` (with a DeprecationWarning), for the old attention-registry path."""
    warnings.warn(
        f"{name!r} is a sensor (its forward takes more than the feature map), not a drop-in attention; "
        f"use visattn.attention.create_sensor/get_sensor_class({name!r}, ...)",
        DeprecationWarning,
        stacklevel=3,
    )
    return _SENSORS.get(name)


def create_attention(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """Build the attention module registered as ``name`` for ``channels`` input channels.

    >>> import visattn
    >>> type(visattn.create_attention("se", 16)).__name__
    'SqueezeExcite'
    """
    if isinstance(name, str) and name not in _ATTENTION and name in _SENSORS:
        return _sensor_fallback(name)(channels, **kwargs)
    return _ATTENTION.create(name, channels, **kwargs)


def get_attention_class(name: str) -> Any:
    """Return the class (or builder) registered as ``name``."""
    if isinstance(name, str) and name not in _ATTENTION and name in _SENSORS:
        return _sensor_fallback(name)
    return _ATTENTION.get(name)


def list_attention(filter: str | None = None) -> list[str]:
    """Names of the drop-in attention modules (``Module(channels, ...)``, ``forward(x)``), sorted;
    ``filter`` is a glob (``"se*"``)."""
    return _ATTENTION.names(filter)


def check_drop_in(name: str, argument: str) -> str:
    """Return ``name`` if it names a drop-in attention; ``ValueError`` naming ``argument`` otherwise
    (a sensor gets a message saying why it does not fit).

    >>> check_drop_in("glimpse", "attn_layer")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: attn_layer: 'glimpse' is a sensor (forward(x, locations)), not a drop-in attention; ...
    """
    if isinstance(name, str) and name not in _ATTENTION and name in _SENSORS:
        raise ValueError(
            f"{argument}: {name!r} is a sensor (forward(x, locations)), not a drop-in attention; "
            f"drop-in attention: {list_attention()}"
        )
    _ATTENTION.get(name)
    return name


def register_sensor(name: str | None = None):
    """Class decorator registering a sensor (a module with its own forward signature) under ``name``."""
    return _SENSORS.register(name)


def create_sensor(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """Build the sensor registered as ``name`` for ``channels``-channel images.

    >>> create_sensor("glimpse", 1, size=8).size
    8
    """
    return _SENSORS.create(name, channels, **kwargs)


def get_sensor_class(name: str) -> Any:
    """Return the class registered as sensor ``name``."""
    return _SENSORS.get(name)


def list_sensors(filter: str | None = None) -> list[str]:
    """Names of all registered sensors, sorted; ``filter`` is a glob."""
    return _SENSORS.names(filter)
