"""The one validation helper: every user-facing check in visattn goes through here.

Errors quote the argument's name and the value or shape that was received, so a user
knows what to fix without reading a stack trace. Checks here are cheap (shape, dtype,
type); nothing reads tensor values on a hot path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = [
    "check_tensor",
    "check_positive",
    "check_choice",
    "check_type",
    "check_range",
]


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def check_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    channels: int | None = None,
    min_size: int | tuple[int, int] | None = None,
    size: tuple[int, int] | None = None,
    floating: bool = True,
    nonempty: bool = True,
    layout: str = "(B, C, H, W)",
) -> torch.Tensor:
    """Check a tensor argument and return it unchanged.

    Args:
        x: the value to check.
        name: the argument's name, quoted in the error.
        ndim: allowed number(s) of dimensions.
        channels: required size of dim 1 (the channel dim of ``(B, C, ...)``).
        min_size: smallest allowed ``(H, W)`` (an int applies to both) of the last two dims.
        size: exact ``(H, W)`` required of the last two dims.
        floating: require a floating-point dtype.
        nonempty: require a non-empty batch (dim 0 > 0).
        layout: the expected layout, quoted in errors.

    Raises:
        TypeError: not a tensor, or not floating point when required.
        ValueError: wrong rank, channels, size or an empty batch.

    >>> check_tensor(torch.zeros(2, 3, 8, 8), "x", ndim=4, channels=3).shape
    torch.Size([2, 3, 8, 8])
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dims {layout}, got shape {_shape(x)}"
            )
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype} (shape {_shape(x)})")
    if nonempty and x.ndim > 0 and x.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty batch {layout}, got shape {_shape(x)}")
    if channels is not None and (x.ndim < 2 or x.shape[1] != channels):
        raise ValueError(f"{name} must have {channels} channels {layout}, got shape {_shape(x)}")
    if min_size is not None:
        mh, mw = (min_size, min_size) if isinstance(min_size, int) else min_size
        if x.ndim < 2 or x.shape[-2] < mh or x.shape[-1] < mw:
            raise ValueError(f"{name} must be at least {mh}x{mw} (H x W) {layout}, got shape {_shape(x)}")
    if size is not None and (x.ndim < 2 or tuple(x.shape[-2:]) != tuple(size)):
        raise ValueError(f"{name} must be {size[0]}x{size[1]} (H x W) {layout}, got shape {_shape(x)}")
    return x


def check_type(value: Any, name: str, types: type | tuple[type, ...]) -> Any:
    """Raise ``TypeError`` naming ``name`` unless ``value`` is an instance of ``types``.

    ``bool`` is refused where ``int`` is asked for, since ``True`` is rarely a meant size.

    >>> check_type(3, "reduction", int)
    3
    """
    tup = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in tup:
        raise TypeError(f"{name} must be {' or '.join(t.__name__ for t in tup)}, got bool {value!r}")
    if not isinstance(value, tup):
        raise TypeError(
            f"{name} must be {' or '.join(t.__name__ for t in tup)}, got {type(value).__name__} {value!r}"
        )
    return value


def check_positive(value: Any, name: str, *, integer: bool = False, allow_zero: bool = False) -> Any:
    """Check a number is positive (or non-negative with ``allow_zero``) and return it.

    >>> check_positive(16, "reduction", integer=True)
    16
    """
    check_type(value, name, int if integer else (int, float))
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def check_range(value: Any, name: str, low: float, high: float) -> Any:
    """Check ``low <= value <= high`` and return the value.

    >>> check_range(0.1, "label_smoothing", 0.0, 1.0)
    0.1
    """
    check_type(value, name, (int, float))
    if not (low <= value <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """Check ``value`` is one of ``choices`` and return it.

    >>> check_choice("avg", "pool", ("avg", "max"))
    'avg'
    """
    opts = tuple(choices)
    if value not in opts:
        raise ValueError(f"{name} must be one of {list(opts)}, got {value!r}")
    return value
