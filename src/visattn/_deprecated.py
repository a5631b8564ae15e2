"""Old module paths kept as thin aliases of their new homes (each import warns once per module)."""

from __future__ import annotations

import warnings

__all__ = ["warn_moved"]


def warn_moved(old: str, new: str) -> None:
    """Emit the ``DeprecationWarning`` of a moved module ``old`` (now ``new``).

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn_moved("visattn.a", "visattn.b")
    >>> str(w[0].message)
    'visattn.a moved to visattn.b; import it from there (the old path will be removed in a later release)'
    """
    warnings.warn(
        f"{old} moved to {new}; import it from there (the old path will be removed in a later release)",
        DeprecationWarning,
        stacklevel=3,
    )
