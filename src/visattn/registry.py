"""A name -> builder registry, shared by the model and attention registries.

Unknown and duplicate names raise ``ValueError`` listing the valid names (the habit of
torchvision's ``register_model``).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "accepted_options", "suggest"]

F = TypeVar("F", bound=Callable[..., Any])


def suggest(name: object, valid: list[str]) -> str:
    """`` (did you mean 'x'?)`` naming the closest valid name (difflib), or ``""``.

    >>> suggest("se_resnt20", ["resnet20", "se_resnet20"])
    " (did you mean 'se_resnet20'?)"
    """
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _named_params(fn: Any) -> tuple[list[str], bool]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], True
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [n for n, p in sig.parameters.items() if p.kind in kinds and n != "self"]
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def accepted_options(fn: Any) -> list[str] | None:
    """Keyword options ``fn`` accepts; a builder ``f(**kwargs) -> Cls`` also accepts ``Cls``'s. ``None``
    when they cannot be known (a ``**kwargs`` that goes elsewhere)."""
    names, var_kw = _named_params(fn)
    while isinstance(fn, functools.partial):
        fn = fn.func
    if var_kw:
        ret = getattr(fn, "__annotations__", {}).get("return")
        if isinstance(ret, str):
            ret = getattr(fn, "__globals__", {}).get(ret)
        if not isinstance(ret, type):
            return None
        more, var_kw = _named_params(ret)
        if var_kw:
            return None
        names += [n for n in more if n not in names]
    return sorted(names)


_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


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
            raise ValueError(
                f"unknown {self.kind} {name!r}{suggest(name, self.names())}; valid names: {self.names()}"
            ) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the entry registered under ``name``; a misspelt option raises ``TypeError`` listing the
        valid ones, with the closest as "did you mean"."""
        fn = self.get(name)
        try:
            return fn(*args, **kwargs)
        except TypeError as e:
            m = _UNEXPECTED.search(str(e))
            if m is None or m.group(1) not in kwargs:
                raise
            bad, valid = m.group(1), accepted_options(fn)
            listing = f"; valid options: {valid}" if valid is not None else ""
            raise TypeError(
                f"{self.kind} {name!r} has no option {bad!r}{suggest(bad, valid or [])}{listing}"
            ) from None

    def names(self, filter: str | None = None) -> list[str]:
        """Sorted list of registered names (``filter``: a glob such as ``"se_*"``)."""
        names = sorted(self._entries)
        return names if filter is None else [n for n in names if fnmatch.fnmatchcase(n, filter)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
