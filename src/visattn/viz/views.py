"""The view registry: each record kind, mechanism or model registers how its attention is drawn.

A *view* turns what :func:`~visattn.viz.recorder.record_attention` captured into pictures
(:class:`View`: title, caption, PNG bytes). :func:`register_view` adds one; ``attention_views``
(``visattn.viz.render``) runs every registered view whose records are present. A new mechanism
therefore adds its picture beside its own code, without editing the renderer:

>>> from visattn.viz.views import ViewContext, register_view, registered_views
>>> @register_view("demo: channel count", kinds=("channel",), order=99)
... def _count(ctx: ViewContext, records) -> list[View]:
...     return []
>>> "demo: channel count" in registered_views()
True
>>> unregister_view("demo: channel count")

Matching: a view gets the records of its ``kinds`` (``spatial``, ``channel``, ``warp``, ``location``,
``gains``) whose owning module (the module holding the tap) is an instance of ``owner``, in models
that are instances of ``model`` (``None``: any). An ``exclusive`` view takes its records away from
the generic views (``owner`` and ``model`` both ``None``) of the same kinds: RAM's own glimpse
picture replaces the generic glimpse path for RAM's location tap. Views run in ``order``.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visattn._validate import check_type
from visattn.attention._tap import TAP_KINDS

__all__ = [
    "View",
    "ViewContext",
    "ViewSpec",
    "figure_png",
    "file_png",
    "matching_records",
    "register_view",
    "registered_views",
    "unregister_view",
]


@dataclass(frozen=True)
class View:
    """One rendered picture: a title, a caption and the PNG bytes."""

    title: str
    caption: str
    png: bytes


@dataclass
class ViewContext:
    """What every view may use: the model (in ``eval()`` mode) and the batch it was recorded on.

    ``x (B, C, H, W)`` is the whole batch (per-class plots), ``xs`` its first ``show`` images
    (overlays, paths); ``labels (B,)`` the classes (the predictions when none were given) and
    ``pred (B,)`` the predictions, both on the CPU; ``titles`` one "true→predicted" title per shown
    image; ``align_corners`` the grid convention of each tap whose owner declares one.
    """

    model: nn.Module
    x: torch.Tensor
    xs: torch.Tensor
    labels: torch.Tensor
    pred: torch.Tensor
    titles: list[str]
    class_names: list[str] | None
    boxes: torch.Tensor | None
    show: int
    with_gradcam: bool
    align_corners: dict[str, bool] = field(default_factory=dict)


ViewFn = Callable[[ViewContext, dict[str, Any]], list[View]]


@dataclass(frozen=True)
class ViewSpec:
    """A registered view (see :func:`register_view`)."""

    name: str
    fn: ViewFn
    kinds: tuple[str, ...]
    owner: type | tuple[type, ...] | None = None
    model: type | tuple[type, ...] | None = None
    exclusive: bool = False
    always: bool = False
    order: int = 50

    @property
    def generic(self) -> bool:
        return self.owner is None and self.model is None


_VIEWS: dict[str, ViewSpec] = {}


def register_view(
    name: str,
    *,
    kinds: Sequence[str],
    owner: type | tuple[type, ...] | None = None,
    model: type | tuple[type, ...] | None = None,
    exclusive: bool = False,
    always: bool = False,
    order: int = 50,
) -> Callable[[ViewFn], ViewFn]:
    """Decorator registering ``fn(ctx: ViewContext, records: dict[name, TapRecord]) -> list[View]``.

    Args:
        name: unique name of the view.
        kinds: tap kinds whose records the view draws.
        owner: only taps held by modules of this type (e.g. ``SpatialTransformer``).
        model: only in models of this type (e.g. ``RecurrentAttention``).
        exclusive: the records it matches are not given to generic views of the same kinds.
        always: called even when no record matches (e.g. the overlay, which adds Grad-CAM).
        order: views run (and their pictures appear) in increasing ``order``.
    """
    check_type(name, "name", str)
    bad = [k for k in kinds if k not in TAP_KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {TAP_KINDS}, got {tuple(kinds)}")
    if name in _VIEWS:
        raise ValueError(f"a view named {name!r} is already registered")

    def deco(fn: ViewFn) -> ViewFn:
        _VIEWS[name] = ViewSpec(name, fn, tuple(kinds), owner, model, exclusive, always, order)
        return fn

    return deco


def unregister_view(name: str) -> None:
    """Remove the view registered as ``name`` (``KeyError`` if there is none)."""
    del _VIEWS[name]


def registered_views() -> list[str]:
    """Names of the registered views, in the order they run."""
    return [s.name for s in _ordered()]


def _ordered() -> list[ViewSpec]:
    return sorted(_VIEWS.values(), key=lambda s: s.order)  # stable: registration order within an order


def _owner(model: nn.Module, tap_name: str, modules: dict[str, nn.Module]) -> nn.Module:
    return modules.get(tap_name.rpartition(".")[0], model)


def matching_records(model: nn.Module, records: dict[str, Any]) -> list[tuple[ViewSpec, dict[str, Any]]]:
    """Each registered view (in order) with the records it draws (views with none left out, unless ``always``)."""
    modules = dict(model.named_modules())
    specs = _ordered()

    def match(spec: ViewSpec) -> dict[str, Any]:
        if spec.model is not None and not isinstance(model, spec.model):
            return {}
        return {
            n: r
            for n, r in records.items()
            if r.kind in spec.kinds
            and (spec.owner is None or isinstance(_owner(model, n, modules), spec.owner))
        }

    matched = {s.name: match(s) for s in specs}
    claimed = {(n, r.kind) for s in specs if s.exclusive for n, r in matched[s.name].items()}
    out = []
    for s in specs:
        recs = matched[s.name]
        if s.generic:
            recs = {n: r for n, r in recs.items() if (n, r.kind) not in claimed}
        if recs or s.always:
            out.append((s, recs))
    return out


def figure_png(fig: Any, *, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib ``Figure``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def file_png(draw: Callable[[Path], Any]) -> bytes:
    """Run ``draw(path)`` (a renderer that writes a PNG file) and return the bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "view.png"
        draw(path)
        return path.read_bytes()
