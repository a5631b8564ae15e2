"""A name -> builder registry, shared by the model and attention registries.

Unknown and duplicate names raise ``ValueError`` listing the valid names (the habit of
torchvision's ``register_model``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """Maps names to builders.

    >>> reg = Registry("toy")
    >>> @reg.register("double")
    ... def double(x):
    ...     return 2 * x
    >>> reg.create("double", 4)
    8
    >>> reg.names()
    ['double']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator registering a builder under ``name`` (default: its ``__name__``)."""

        def deco(fn: F) -> F:
            key = name or fn.__name__
            if not isinstance(key, str) or not key:
                raise ValueError(f"{self.kind} name must be a non-empty string, got {key!r}")
            if key in self._entries:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered; registered names: {self.names()}"
                )
            self._entries[key] = fn
            return fn

        return deco

    def get(self, name: str) -> F:
        """Return the builder registered under ``name``."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a str, got {type(name).__name__} {name!r}")
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {self.names()}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the entry registered under ``name``."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        """Sorted list of registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
