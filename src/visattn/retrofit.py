"""Insert attention into existing, possibly trained, networks (the SE paper's practical point:
Hu et al., "Squeeze-and-Excitation Networks", arXiv:1709.01507, sec. 3.3 "Instantiations").

``visattn.retrofit(model, attention="se", *, targets=None, identity_init=True, **attention_kwargs)``
builds one attention module per insertion point with ``create_attention(attention, channels,
identity_init=True, **attention_kwargs)`` and puts it into the model **by replacing submodules by
name** (no ``forward`` is patched). With ``identity_init=True`` (the default) every inserted module
is the identity when created, so the model computes what it computed before; any registered
attention class with ``supports_identity_init = True`` works, others raise ``ValueError``.

Where it inserts, without ``targets`` (on the residual branch before the addition, SE-Net Fig. 3):

================================  =========================================================================
network                           insertion
================================  =========================================================================
visattn backbones                 each block's ``attn`` ``nn.Identity`` is replaced (``layer1.0.attn``)
torchvision ``ResNet``            ``bn2`` (basic) / ``bn3`` (bottleneck) becomes ``InsertedAttention(bn,
                                  attn)`` (``layer1.0.bn2.attn``)
timm ``ResNet``                   each block's empty ``se`` slot is filled (``layer1.0.se``)
EfficientNet(-Lite) ``MBConv``    ``_project_conv`` becomes ``InsertedAttention(conv, attn,
                                  where="before")``: after the depthwise conv and its activation,
                                  where EfficientNet has its SE (``_blocks.3._project_conv.attn``)
================================  =========================================================================

With ``targets=["name", ...]`` (any network), attention goes right after each named module, which is
wrapped in ``InsertedAttention``. The channel count comes from the replaced module (``num_features``,
``out_channels``, ``num_channels``; the last such child of an ``nn.Sequential``). Unknown names, and
modules whose channels cannot be inferred, raise ``ValueError`` naming the target.

State-dict names: a wrapped module's parameters move from ``bn2.weight`` to ``bn2.module.weight``
(the model's ``state_dict`` uses the new names). ``InsertedAttention`` also accepts the old names when
loading, so ``model.load_state_dict(original_state_dict, strict=False)`` loads weights saved before the
retrofit (only the attention's own keys are then missing). Slots that were empty (visattn's ``attn``,
timm's ``se``) add keys and rename none.

The model records what was inserted: ``model.visattn_inserted`` is the list of qualified names of the
inserted attention modules. ``visattn.retrofit.parameters(model)`` yields their parameters
(``inserted=False``: all the others), ``visattn.retrofit.freeze_except_inserted(model)`` trains only
them, ``visattn.retrofit.unfreeze(model)`` everything again. ``visattn.retrofit`` is an instance of
``Retrofit``: a callable whose attributes are these helpers (``from visattn.retrofit import
inserted_parameters`` reaches the same functions).

>>> import copy, torch, visattn
>>> net = visattn.create_model("resnet20").eval()
>>> before = copy.deepcopy(net)
>>> net = visattn.retrofit(net, "se", reduction=4)
>>> len(net.visattn_inserted), net.visattn_inserted[0]
(9, 'layer1.0.attn')
>>> x = torch.randn(2, 3, 32, 32)
>>> bool((net(x) - before(x)).abs().max() <= 1e-5)
True
>>> sum(p.numel() for p in visattn.retrofit.parameters(net))
8484
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from visattn._validate import check_choice, check_type
from visattn.attention import check_drop_in, create_attention, get_attention_class, list_attention

__all__ = [
    "INSERTED_ATTR",
    "InsertedAttention",
    "InsertionPoint",
    "Retrofit",
    "check_fit",
    "find_insertion_points",
    "freeze_except_inserted",
    "inserted_names",
    "inserted_parameters",
    "retrofit",
    "retrofit_model",
    "unfreeze",
]

INSERTED_ATTR = "visattn_inserted"
_WRAPPED_CHILDREN = ("module", "attn")


def _accept_unwrapped_keys(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Load-state-dict pre-hook: ``prefix + "weight"`` -> ``prefix + "module.weight"`` (pre-retrofit names)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if rest.split(".", 1)[0] not in _WRAPPED_CHILDREN:
            state_dict[prefix + "module." + rest] = state_dict.pop(key)


class InsertedAttention(nn.Module):
    """``module`` followed by ``attn`` (``where="after"``) or preceded by it (``where="before"``).

    Shapes: whatever ``module`` takes and returns; ``attn`` maps ``(B, C, H, W) -> (B, C, H, W)``.
    Loading accepts the wrapped module's pre-retrofit key names (see the module docstring).

    >>> m = InsertedAttention(nn.BatchNorm2d(8), nn.Identity())
    >>> m(torch.randn(2, 8, 3, 5)).shape
    torch.Size([2, 8, 3, 5])
    >>> _ = m.load_state_dict(nn.BatchNorm2d(8).state_dict())
    """

    def __init__(self, module: nn.Module, attn: nn.Module, *, where: str = "after") -> None:
        super().__init__()
        check_choice(where, "where", ("after", "before"))
        self.module = module
        self.attn = attn
        self.where = where
        self.register_load_state_dict_pre_hook(_accept_unwrapped_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.where == "after":
            return self.attn(self.module(x))
        return self.module(self.attn(x))

    def extra_repr(self) -> str:
        return f"where={self.where!r}"


@dataclass(frozen=True)
class InsertionPoint:
    """Where one attention module goes: ``parent.attr`` gets it (``mode="set"``), or is wrapped."""

    parent: str
    attr: str
    channels: int
    mode: Literal["set", "after", "before"]

    @property
    def name(self) -> str:
        """Qualified name the inserted attention module will have."""
        slot = f"{self.parent}.{self.attr}" if self.parent else self.attr
        return slot if self.mode == "set" else f"{slot}.attn"


def _channels_of(module: nn.Module) -> int | None:
    """Output channels of ``module`` (or of the last child of an ``nn.Sequential`` that has them)."""
    if isinstance(module, nn.Sequential):
        for child in reversed(list(module.children())):
            c = _channels_of(child)
            if c is not None:
                return c
        return None
    for attr in ("num_features", "out_channels", "num_channels"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _channels_before(block: nn.Module, attr: str) -> int | None:
    """Channels of the last child registered before ``attr`` that declares them."""
    if isinstance(getattr(block, "attn_channels", None), int):
        return block.attn_channels  # type: ignore[return-value]
    channels = None
    for key, child in block.named_children():
        if key == attr:
            break
        channels = _channels_of(child) or channels
    return channels


def _family(module: nn.Module) -> str | None:
    cls = type(module)
    mod, name = cls.__module__, cls.__name__
    if mod.startswith("visattn.models") and isinstance(getattr(module, "attn", None), nn.Module):
        return "visattn"
    if mod == "torchvision.models.resnet" and name in ("BasicBlock", "Bottleneck"):
        return "torchvision"
    if (
        mod.startswith("timm.models.resnet")
        and name in ("BasicBlock", "Bottleneck")
        and hasattr(module, "se")
    ):
        return "timm"
    if name == "MBConvBlock" and hasattr(module, "_project_conv") and hasattr(module, "has_se"):
        return "mbconv"
    return None


def _auto_points(model: nn.Module) -> tuple[list[InsertionPoint], list[str]]:
    """Insertion points of the known block families, and the blocks that already have attention."""
    points: list[InsertionPoint] = []
    taken: list[str] = []
    for name, block in model.named_modules():
        family = _family(block)
        if family is None:
            continue
        if family == "visattn":
            attr, mode = "attn", "set"
            free = type(block.attn) is nn.Identity
            channels = _channels_before(block, "attn")
        elif family in ("torchvision", "timm"):
            last_bn = "bn3" if hasattr(block, "bn3") else "bn2"
            channels = _channels_of(getattr(block, last_bn))
            if family == "torchvision":
                attr, mode = last_bn, "after"
                free = not isinstance(getattr(block, last_bn), InsertedAttention)
            else:
                attr, mode, free = "se", "set", block.se is None
        else:
            attr, mode = "_project_conv", "before"
            conv = block._project_conv
            free = not block.has_se and not isinstance(conv, InsertedAttention)
            channels = getattr(conv, "in_channels", None)
        if not free:
            taken.append(name)
            continue
        if channels is None:
            raise ValueError(f"cannot infer the channels of block {name!r} ({type(block).__name__})")
        points.append(InsertionPoint(name, attr, channels, mode))  # type: ignore[arg-type]
    return points, taken


def _target_points(model: nn.Module, targets: Sequence[str]) -> list[InsertionPoint]:
    points = []
    for target in targets:
        if not isinstance(target, str) or not target:
            raise ValueError(f"targets must be non-empty module names, got {target!r}")
        try:
            module = model.get_submodule(target)
        except AttributeError:
            raise ValueError(f"target {target!r} is not a submodule of {type(model).__name__}") from None
        if isinstance(module, InsertedAttention):
            raise ValueError(f"target {target!r} already has inserted attention")
        channels = _channels_of(module)
        if channels is None:
            raise ValueError(
                f"cannot infer the channels after target {target!r} ({type(module).__name__}); name a "
                "module with num_features, out_channels or num_channels (a norm or conv layer)"
            )
        parent, _, attr = target.rpartition(".")
        points.append(InsertionPoint(parent, attr, channels, "after"))
    return points


def find_insertion_points(
    model: nn.Module, targets: Sequence[str] | str | None = None
) -> list[InsertionPoint]:
    """Where ``retrofit`` would insert attention into ``model`` (nothing is changed).

    Raises:
        ValueError: a bad target, or no insertion point found.

    >>> import visattn
    >>> [p.name for p in find_insertion_points(visattn.create_model("mnist_cnn"))]
    ['stage1.attn', 'stage2.attn']
    """
    check_type(model, "model", nn.Module)
    if targets is not None:
        targets = [targets] if isinstance(targets, str) else list(targets)
        if not targets:
            raise ValueError("targets must name at least one module, got an empty sequence")
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets must be distinct, got {targets!r}")
        return _target_points(model, targets)
    points, taken = _auto_points(model)
    if not points:
        why = f"{len(taken)} blocks already have attention ({taken[:3]}...)" if taken else "no known block"
        raise ValueError(
            f"found no insertion point in {type(model).__name__}: {why}; pass targets=[module names] "
            "to insert attention after those modules"
        )
    return points


def _probe_size(model: nn.Module, input_size: int | tuple[int, int] | None) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the probe image, or ``None`` when there is no size to check at."""
    spec = getattr(model, "input_spec", None)
    if input_size is not None:
        hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
            raise ValueError(f"input_size must be a positive int or (H, W), got {input_size!r}")
    elif spec is not None and spec.size is not None:
        hw = tuple(spec.size)
    elif spec is None:
        hw = (224, 224)
    else:
        return None
    if spec is not None:
        chans = spec.in_chans
    else:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            return None
        chans = conv.in_channels
    return chans, hw[0], hw[1]


def _map_shapes(model: nn.Module, points: Sequence[InsertionPoint], x: torch.Tensor) -> list[Any] | None:
    """The feature-map shape at each insertion point in a forward pass on ``x`` (``None``: it failed)."""
    shapes: list[Any] = [None] * len(points)
    handles = []

    def hook(i: int, use_input: bool):
        def fn(module: nn.Module, args: Any, output: Any) -> None:
            t = args[0] if use_input else output
            if isinstance(t, torch.Tensor) and shapes[i] is None:
                shapes[i] = tuple(t.shape)

        return fn

    for i, p in enumerate(points):
        parent = model.get_submodule(p.parent)
        slot = getattr(parent, p.attr, None)
        use_input = p.mode in ("set", "before")
        if not isinstance(slot, nn.Module):  # an empty slot (timm's ``se = None``): the map of the last norm
            slot = getattr(parent, "bn3", None) or getattr(parent, "bn2", None)
            use_input = False
        if isinstance(slot, nn.Module):
            handles.append(slot.register_forward_hook(hook(i, use_input)))
    modes = [m.training for m in model.modules()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()(x)
    except Exception:  # the unmodified model cannot run at this size: nothing to check against
        return None
    finally:
        for h in handles:
            h.remove()
        for m, training in zip(model.modules(), modes):
            m.training = training
    return shapes


def check_fit(
    model: nn.Module,
    points: Sequence[InsertionPoint],
    modules: Sequence[nn.Module],
    attention: str = "attention",
    input_size: int | tuple[int, int] | None = None,
) -> None:
    """Raise ``ValueError`` unless each of ``modules`` runs on the feature map at its insertion point.

    The maps come from one forward pass of ``model`` on zeros at ``input_size`` (see
    ``retrofit_model``); the message lists the points that fit and, for each that does not, its map
    size and the module's own error (which names its minimum size). Nothing is changed.
    """
    probe = _probe_size(model, input_size)
    if probe is None or not points:
        return
    ref = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    kw: dict[str, Any] = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
    shapes = _map_shapes(model, points, torch.zeros(1, *probe, **kw))
    if shapes is None:
        return
    fit, misfit, why = [], [], ""
    for p, m, shape in zip(points, modules, shapes):
        slot = f"{p.parent}.{p.attr}" if p.parent else p.attr
        if shape is None:
            fit.append(slot)  # not reached at this input size; nothing to check
            continue
        training = m.training
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                out = m.eval()(torch.zeros(shape, **kw))
            if isinstance(out, torch.Tensor) and tuple(out.shape) != shape:
                raise ValueError(f"returned shape {tuple(out.shape)}, not {shape}")
            fit.append(f"{slot} ({shape[-2]}x{shape[-1]})")
        except Exception as e:  # the module's own error says why (e.g. its minimum size)
            why = why or (str(e).strip().splitlines() or [type(e).__name__])[0]
            misfit.append(f"{slot} ({shape[1]} channels, {shape[-2]}x{shape[-1]})")
        finally:
            m.train(training)
    if misfit:
        raise ValueError(
            f"attention {attention!r} does not fit {len(misfit)} of {len(points)} insertion points of "
            f"{type(model).__name__} at a {probe[1]}x{probe[2]} input, so the model was not changed. "
            f"Too small: {', '.join(misfit)} (first error: {why}). Fits: {', '.join(fit) or 'none'}. "
            "Pass targets=[...] naming points that fit, or input_size= if the model takes larger images."
        )


def retrofit_model(
    model: nn.Module,
    attention: str = "se",
    *,
    targets: Sequence[str] | str | None = None,
    identity_init: bool = True,
    input_size: int | tuple[int, int] | None = None,
    **attention_kwargs: Any,
) -> nn.Module:
    """Insert ``attention`` into ``model`` in place and return ``model`` (see the module docstring).

    Before the model is changed, one forward pass on zeros records the feature-map size at every
    insertion point and each new module is run on a map of that size (``check_fit``): if one does
    not fit (e.g. residual attention on a 7x7 map), ``ValueError`` names the points that fit and
    those that do not, and the model is left as it was.

    Args:
        model: any ``nn.Module``; without ``targets`` it must contain known residual blocks.
        attention: a registered attention name (``visattn.list_attention()``).
        targets: qualified module names to put attention after, e.g. ``["layer1.0.bn2"]``.
        identity_init: start every inserted module as the identity (needs ``supports_identity_init``).
        input_size: image size ``(H, W)`` (or ``H``) the fit check uses; default the model's
            ``input_spec.size``, else 224 for networks without an ``input_spec`` (torchvision, timm);
            a visattn model that takes any size is checked only when this is given.
        **attention_kwargs: options for the attention class (e.g. ``reduction=8``).

    Returns:
        ``model``, with ``model.visattn_inserted`` extended by the inserted modules' names.

    Raises:
        ValueError: unknown attention, no identity init available, bad or unusable targets.
    """
    check_type(model, "model", nn.Module)
    check_type(identity_init, "identity_init", bool)
    cls = get_attention_class(check_drop_in(attention, "attention"))
    if identity_init and not getattr(cls, "supports_identity_init", False):
        able = [
            n for n in list_attention() if getattr(get_attention_class(n), "supports_identity_init", False)
        ]
        raise ValueError(
            f"attention {attention!r} does not support identity_init, so inserting it would change the "
            f"model's outputs; use one of {able} or pass identity_init=False"
        )
    points = find_insertion_points(model, targets)
    options = dict(attention_kwargs, identity_init=True) if identity_init else dict(attention_kwargs)
    built: list[nn.Module] = []  # every module is built and checked before the model is touched
    for point in points:
        parent = model.get_submodule(point.parent)
        attn = create_attention(attention, point.channels, **options)
        ref = next((t for t in (*parent.parameters(), *parent.buffers()) if t.is_floating_point()), None)
        if ref is not None:
            attn = attn.to(device=ref.device, dtype=ref.dtype)
        attn.train(parent.training)
        built.append(attn)
    check_fit(model, points, built, attention, input_size)
    for point, attn in zip(points, built):
        parent = model.get_submodule(point.parent)
        old = getattr(parent, point.attr)
        new = attn if point.mode == "set" else InsertedAttention(old, attn, where=point.mode)
        setattr(parent, point.attr, new)
    record = list(getattr(model, INSERTED_ATTR, []))
    setattr(model, INSERTED_ATTR, record + [p.name for p in points])
    return model


def inserted_names(model: nn.Module) -> list[str]:
    """Qualified names of the attention modules ``retrofit`` inserted into ``model``."""
    check_type(model, "model", nn.Module)
    names = getattr(model, INSERTED_ATTR, None)
    if names is None:
        raise ValueError(f"{type(model).__name__} has not been retrofitted (no {INSERTED_ATTR!r} record)")
    return list(names)


def inserted_parameters(model: nn.Module, inserted: bool = True) -> Iterator[nn.Parameter]:
    """Parameters of the inserted attention modules (``inserted=False``: all the others)."""
    prefixes = tuple(n + "." for n in inserted_names(model))
    for name, p in model.named_parameters():
        if name.startswith(prefixes) == inserted:
            yield p


def freeze_except_inserted(model: nn.Module) -> nn.Module:
    """Train only the inserted attention: ``requires_grad`` on its parameters alone; returns ``model``.

    BatchNorm running statistics still update in ``train()`` mode; call ``.eval()`` on the layers whose
    statistics must stay fixed.
    """
    keep = {id(p) for p in inserted_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Make every parameter of ``model`` trainable again; returns ``model``."""
    check_type(model, "model", nn.Module)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


class Retrofit:
    """``visattn.retrofit``: call it to insert attention; its attributes are the helpers.

    ``visattn.retrofit(model, ...)`` is ``retrofit_model``; ``.parameters`` is ``inserted_parameters``,
    ``.inserted`` ``inserted_names``, ``.points`` ``find_insertion_points``, ``.freeze_except_inserted``
    and ``.unfreeze`` the functions of those names.
    """

    __call__ = staticmethod(retrofit_model)
    parameters = staticmethod(inserted_parameters)
    inserted = staticmethod(inserted_names)
    points = staticmethod(find_insertion_points)
    freeze_except_inserted = staticmethod(freeze_except_inserted)
    unfreeze = staticmethod(unfreeze)

    def __repr__(self) -> str:
        return "visattn.retrofit"


retrofit = Retrofit()
