"""Learning-rate schedules with linear warm-up, stepped once per optimisation step.

``build_scheduler`` composes torch's own schedulers (``LinearLR``, ``CosineAnnealingLR``,
``MultiStepLR`` in a ``SequentialLR``); ``lr_multiplier`` is the same schedule as a closed-form
multiplier, kept as the reference the tests compare against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from visattn._validate import check_choice

__all__ = ["lr_multiplier", "build_scheduler", "load_scheduler_state"]


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


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    step_epochs: Sequence[int] = (),
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule of :func:`lr_multiplier`, built from torch's schedulers (stepped once per step).

    Warm-up is ``LinearLR`` from ``1 / warmup_steps`` to 1, then ``CosineAnnealingLR`` to 0 at
    ``total_steps``, ``MultiStepLR`` at the epochs of ``step_epochs``, or ``ConstantLR(factor=1)``,
    joined by ``SequentialLR``. The rates equal ``lr_multiplier``'s (tests/train/test_schedule.py).

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = build_scheduler(opt, "cosine", total_steps=10, steps_per_epoch=5, warmup_steps=2)
    >>> lrs = []
    >>> for _ in range(10):
    ...     lrs.append(round(opt.param_groups[0]["lr"], 3))
    ...     opt.step()
    ...     sched.step()
    >>> lrs[:3], round(opt.param_groups[0]["lr"], 3)
    ([0.5, 1.0, 1.0], 0.0)
    """
    from torch.optim import lr_scheduler as S

    check_choice(kind, "schedule", ("cosine", "step", "constant"))
    warmup = warmup_steps if warmup_steps > 1 else 0  # one warm-up step has factor 1: no warm-up
    if kind == "cosine":
        main: S.LRScheduler = S.CosineAnnealingLR(
            optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=0.0
        )
    elif kind == "step":
        bad = [e for e in step_epochs if e * steps_per_epoch < warmup_steps]
        if bad:
            raise ValueError(f"step_epochs {bad} fall inside the warm-up of {warmup_steps} steps")
        milestones = sorted(e * max(1, steps_per_epoch) - warmup_steps for e in step_epochs)
        main = S.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    else:
        main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if not warmup_steps:
        return main
    if not warmup:  # warmup_steps == 1: step 0 at factor 1, the main schedule from step 1
        first: S.LRScheduler = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        first = S.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return S.SequentialLR(optimizer, [first, main], milestones=[warmup_steps])


def load_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]) -> None:
    """Restore a freshly built ``scheduler`` from a checkpoint; a state saved by the former ``LambdaLR``
    schedule (checkpoints before this version) is replayed by stepping ``last_epoch`` times. Call it
    before the optimiser's ``load_state_dict``, which then restores the saved rates."""
    if "lr_lambdas" in state and not hasattr(scheduler, "lr_lambdas"):
        import warnings

        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(int(state["last_epoch"])):
                scheduler.step()
        return
    scheduler.load_state_dict(state)
