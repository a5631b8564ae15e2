"""Every registered model and attention module, through one set of contract checks."""

from __future__ import annotations

import inspect

import pytest
import torch

import visattn
from visattn.attention import get_attention_class
from visattn.registry import Registry

# Models whose builder needs more than the defaults; the kwargs they get here.
_MODEL_KWARGS = {
    "dasnet": lambda: {"base": visattn.create_model("mnist_cnn", num_classes=7)},
    "dvan": lambda: {"backbone": "resnet20", "feature_layer": "layer3", "image_size": 40, "canvas_size": 32},
}
# Pose models return heatmaps, not logits: their contract is tested in tests/models/test_hourglass.py.
_CLASSIFIERS = [
    n for n in visattn.list_models() if getattr(visattn.models.get_model_builder(n), "task", None) != "pose"
]
# Attention modules whose forward takes more than a feature map (tested in their own files).
_NOT_FEATURE_MAP = {"glimpse"}


def _input_for(model: torch.nn.Module) -> torch.Tensor:
    spec = model.input_spec
    if spec.size is not None:
        h, w = spec.size
    else:
        h, w = max(spec.min_size[0], 28) + 4, max(spec.min_size[1], 28) + 8  # non-square
    return torch.randn(2, spec.in_chans, h, w, generator=torch.Generator().manual_seed(0))


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = _MODEL_KWARGS.get(name, lambda: {})()
    return visattn.create_model(name, num_classes=7, **kwargs)


def _logits(out):
    return out["logits"] if isinstance(out, dict) else out


@pytest.mark.parametrize("name", _CLASSIFIERS)
def test_model_forward_backward_every_parameter_gets_a_gradient(name):
    model = _build(name)
    x = _input_for(model)
    model.train()
    out = model(x)
    logits = _logits(out)
    assert logits.shape == (2, 7)
    if not getattr(model, "uses_optimizer", True):
        assert not any(p.requires_grad for p in model.parameters()), "a model trained without an optimiser"
        return
    y = torch.tensor([1, 3])
    loss = torch.nn.functional.cross_entropy(logits, y)
    if hasattr(model, "extra_losses"):
        loss = loss + sum(model.extra_losses(out, y).values())
    loss.backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", _CLASSIFIERS)
def test_model_eval_is_deterministic_and_state_dict_round_trips(name):
    model = _build(name).eval()
    x = _input_for(model)
    with torch.no_grad():
        a, b = _logits(model(x)), _logits(model(x))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    twin = _build(name)
    twin.load_state_dict(model.state_dict())
    twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(_logits(twin(x)), a)


@pytest.mark.parametrize("name", _CLASSIFIERS)
def test_model_refuses_wrong_channels(name):
    model = _build(name).eval()
    x = _input_for(model)
    bad = torch.randn(2, x.shape[1] + 1, *x.shape[2:])
    with pytest.raises(ValueError, match="channels"):
        model(bad)


@pytest.mark.parametrize("name", sorted(set(visattn.list_attention()) - _NOT_FEATURE_MAP))
def test_attention_contract(name):
    cls = get_attention_class(name)
    params = inspect.signature(cls).parameters
    first = next(iter(params.values()))
    assert first.name == "channels", f"{name}: first argument must be channels"
    assert all(p.kind is p.KEYWORD_ONLY for p in list(params.values())[1:] if p.kind is not p.VAR_KEYWORD)
    torch.manual_seed(0)
    module = visattn.create_attention(name, 8)
    x = torch.randn(2, 8, 12, 16, requires_grad=True)
    out = module(x)
    y = out["output"] if isinstance(out, dict) else out
    assert y.shape[:2] == (2, 8)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if getattr(cls, "supports_identity_init", False):
        ident = visattn.create_attention(name, 8, identity_init=True).eval()
        with torch.no_grad():
            torch.testing.assert_close(ident(x.detach()), x.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(set(visattn.list_attention()) - _NOT_FEATURE_MAP))
def test_attention_refuses_wrong_channels(name):
    module = visattn.create_attention(name, 8)
    with pytest.raises(ValueError):
        module(torch.randn(2, 5, 12, 16))


def test_unknown_names_raise_listing_valid_ones():
    with pytest.raises(ValueError, match="resnet20"):
        visattn.create_model("resnet21")
    with pytest.raises(ValueError, match="valid names"):
        visattn.create_attention("no_such_attention", 8)


def test_duplicate_registration_is_refused():
    reg: Registry = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)


def test_torchvision_resnet_weights_load_into_visattn_resnets():
    import torchvision

    for name in ("resnet18", "resnet50"):
        ours = visattn.create_model(name, num_classes=1000).eval()
        theirs = getattr(torchvision.models, name)().eval()
        ours.load_state_dict(theirs.state_dict(), strict=True)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x))


def test_cifar_resnet_sizes_match_the_paper():
    counts = {
        d: sum(p.numel() for p in visattn.create_model(f"resnet{d}").parameters()) for d in (20, 56, 110)
    }
    # He et al. 2016, Table 6: 0.27M, 0.85M, 1.7M
    assert abs(counts[20] - 0.27e6) / 0.27e6 < 0.02
    assert abs(counts[56] - 0.85e6) / 0.85e6 < 0.02
    assert abs(counts[110] - 1.7e6) / 1.7e6 < 0.02


def test_sensors_are_listed_apart_from_drop_in_attention():
    """Issue 16: the glimpse sensor (forward(x, locations)) is not a drop-in attention."""
    from visattn.attention import GlimpseSensor, check_drop_in, create_sensor, list_sensors

    assert "glimpse" in list_sensors() and "glimpse" not in visattn.list_attention()
    assert isinstance(create_sensor("glimpse", 1), GlimpseSensor)
    with pytest.warns(DeprecationWarning, match="create_sensor"):
        assert isinstance(visattn.create_attention("glimpse", 1), GlimpseSensor)  # the old path still works
    for where in (
        lambda: check_drop_in("glimpse", "attn_layer"),
        lambda: visattn.create_model("resnet20", attn_layer="glimpse"),
        lambda: visattn.retrofit(visattn.create_model("resnet20"), "glimpse"),
    ):
        with pytest.raises(ValueError, match="'glimpse' is a sensor"):
            where()


def test_create_model_hands_pretrained_to_a_builder_with_weights_of_its_own(monkeypatch):
    from visattn.models import _registry

    seen = []

    def own_weights(*, num_classes: int = 3, pretrained: bool | None = None) -> torch.nn.Module:
        seen.append(pretrained)
        return torch.nn.Linear(2, num_classes)

    def plain(*, num_classes: int = 3) -> torch.nn.Module:
        return torch.nn.Linear(2, num_classes)

    monkeypatch.setitem(_registry._MODELS._entries, "test_own_weights", own_weights)
    monkeypatch.setitem(_registry._MODELS._entries, "test_plain", plain)
    for p in (None, False, True):
        visattn.create_model("test_own_weights", pretrained=p)
    # default -> the builder's default; False -> random init; True with no shipped weights -> its own
    assert seen == [None, False, True]
    assert isinstance(visattn.create_model("test_plain", pretrained=False), torch.nn.Linear)
    with pytest.raises(ValueError, match="no shipped weights for model 'test_plain'"):
        visattn.create_model("test_plain", pretrained=True)
