"""Learning-rate schedules with linear warm-up, as per-step multipliers for ``LambdaLR``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["lr_multiplier"]


def lr_multiplier(
    kind: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    step_epochs: Sequence[int] = (),
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """Return ``f(step) -> multiplier`` of the base learning rate.

    ``cosine``: ``0.5 (1 + cos(pi t))`` over the steps after warm-up; ``step``: multiply by
    ``gamma`` at each epoch in ``step_epochs``; ``constant``: 1. Warm-up rises linearly from
    ``1 / warmup_steps`` to 1.

    >>> f = lr_multiplier("cosine", total_steps=10, steps_per_epoch=5, warmup_steps=2)
    >>> [round(f(s), 3) for s in (0, 1, 2, 10)]
    [0.5, 1.0, 1.0, 0.0]
    """

    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "cosine":
            span = max(1, total_steps - warmup_steps)
            t = min(1.0, (step - warmup_steps) / span)
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if kind == "step":
            epoch = step // max(1, steps_per_epoch)
            return gamma ** sum(epoch >= e for e in step_epochs)
        return 1.0

    return f
