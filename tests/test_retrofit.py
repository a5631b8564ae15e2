"""visattn.retrofit: outputs unchanged at insertion, the right insertion points, training only what was
inserted, name-compatible state dicts, and errors that name the bad target."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torchvision
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

import visattn
from visattn.attention import SqueezeExcite, list_attention, register_attention
from visattn.retrofit import InsertedAttention, inserted_parameters


def _small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, as in a trained network."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


# (builder, input shape, expected number of insertions, name of the first one)
CASES = {
    "torchvision_resnet18": (
        lambda: torchvision.models.resnet18(num_classes=10),
        (2, 3, 64, 48),
        8,
        "layer1.0.bn2.attn",
    ),
    "torchvision_resnet50": (
        lambda: torchvision.models.resnet50(num_classes=10),
        (1, 3, 64, 64),
        16,
        "layer1.0.bn3.attn",
    ),
    "timm_resnet18": (
        lambda: timm.create_model("resnet18", num_classes=10),
        (2, 3, 64, 48),
        8,
        "layer1.0.se",
    ),
    "visattn_resnet20": (lambda: visattn.create_model("resnet20"), (2, 3, 32, 24), 9, "layer1.0.attn"),
    "visattn_resnet18": (
        lambda: visattn.create_model("resnet18", num_classes=10),
        (2, 3, 64, 48),
        8,
        "layer1.0.attn",
    ),
    "visattn_mnist_cnn": (lambda: visattn.create_model("mnist_cnn"), (2, 1, 28, 28), 2, "stage1.attn"),
    "efficientnet_lite0": (
        lambda: EfficientNet.from_name("efficientnet-lite0", num_classes=10),
        (1, 3, 64, 64),
        16,
        "_blocks.0._project_conv.attn",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_unchanged_and_insertions_counted(case):
    build, shape, count, first = CASES[case]
    torch.manual_seed(0)
    model = _randomise_bn(build()).eval()
    original = copy.deepcopy(model)
    x = torch.randn(shape)
    out = visattn.retrofit(model, "se", reduction=4)
    assert out is model
    assert len(model.visattn_inserted) == count and model.visattn_inserted[0] == first
    assert all(isinstance(model.get_submodule(n), SqueezeExcite) for n in model.visattn_inserted)
    assert sum(isinstance(m, SqueezeExcite) for m in model.modules()) == count
    with torch.no_grad():
        assert (model(x) - original(x)).abs().max() <= 1e-5


def test_torchvision_keeps_old_names_loadable_and_round_trips():
    torch.manual_seed(0)
    plain = _randomise_bn(torchvision.models.resnet18(num_classes=10)).eval()
    model = visattn.retrofit(torchvision.models.resnet18(num_classes=10)).eval()
    result = model.load_state_dict(plain.state_dict(), strict=False)  # pre-retrofit names
    assert result.unexpected_keys == []
    assert all(".attn." in k for k in result.missing_keys) and len(result.missing_keys) == 8 * 4
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), atol=1e-5, rtol=0)
    again = visattn.retrofit(torchvision.models.resnet18(num_classes=10)).eval()
    again.load_state_dict(model.state_dict())  # new names, strict
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize("case", ["torchvision_resnet18", "timm_resnet18", "visattn_resnet20"])
def test_training_only_inserted_changes_only_inserted(case):
    build, shape, _, _ = CASES[case]
    torch.manual_seed(0)
    model = visattn.retrofit(_randomise_bn(build()), "se", reduction=4)  # timm zero-inits the last BN scale
    visattn.retrofit.freeze_except_inserted(model)
    ins = {
        n
        for n, _ in model.named_parameters()
        if n.rpartition(".")[0].rpartition(".")[0] in model.visattn_inserted
    }
    assert ins and {n for n, p in model.named_parameters() if p.requires_grad} == ins
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(4, *shape[1:]), torch.randint(0, 10, (4,))
    model.train()
    for _ in range(2):  # step 1 moves W2 away from 0; step 2 then reaches W1 (see the SE docstring)
        _train_step(model, x, y)
    for n, p in model.named_parameters():
        if n in ins:
            assert not torch.equal(p, before[n]), f"{n} did not train"
        else:
            assert torch.equal(p, before[n]), f"{n} changed while frozen"
            assert p.grad is None
    visattn.retrofit.unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())


def test_parameters_helper_partitions_the_model():
    model = visattn.retrofit(visattn.create_model("resnet20"), reduction=4)
    inserted = {id(p) for p in visattn.retrofit.parameters(model)}
    others = {id(p) for p in visattn.retrofit.parameters(model, inserted=False)}
    assert inserted and others and not inserted & others
    assert inserted | others == {id(p) for p in model.parameters()}
    assert len(inserted) == 9 * 4  # fc1/fc2 weight and bias per block
    assert list(inserted_parameters(model)) == list(visattn.retrofit.parameters(model))
    with pytest.raises(ValueError, match="not been retrofitted"):
        list(visattn.retrofit.parameters(visattn.create_model("resnet20")))


def test_targets_on_a_hand_written_model():
    torch.manual_seed(0)
    net = _randomise_bn(_small_net()).eval()
    original = copy.deepcopy(net)
    x = torch.randn(3, 3, 12, 10)
    visattn.retrofit(net, "se", targets=["1", "3"], reduction=2)
    assert net.visattn_inserted == ["1.attn", "3.attn"]
    assert isinstance(net[1], InsertedAttention) and net[1].attn.channels == 8
    assert net[3].attn.channels == 16  # a conv's out_channels
    with torch.no_grad():
        assert (net(x) - original(x)).abs().max() <= 1e-5
    loaded = net.load_state_dict(original.state_dict(), strict=False)
    assert loaded.unexpected_keys == [] and all(".attn." in k for k in loaded.missing_keys)
    visattn.retrofit(net, targets="4")  # a second call extends the record
    assert net.visattn_inserted == ["1.attn", "3.attn", "4.attn"]


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["layer9.0.bn2"], "'layer9.0.bn2'"),
        (["layer1.0.relu"], r"'layer1.0.relu' \(ReLU\)"),
        (["fc.weight"], "'fc.weight'"),
        (["layer1.0.bn2", "layer1.0.bn2"], "distinct"),
        ([], "at least one"),
    ],
)
def test_bad_targets_raise_naming_the_target(targets, message):
    model = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(ValueError, match=message):
        visattn.retrofit(model, targets=targets)
    assert not hasattr(model, "visattn_inserted")


def test_no_insertion_point_and_existing_attention():
    with pytest.raises(ValueError, match="no known block.*targets"):
        visattn.retrofit(_small_net())
    with pytest.raises(ValueError, match="already have attention"):
        visattn.retrofit(visattn.create_model("se_resnet20"))
    model = visattn.retrofit(torchvision.models.resnet18(num_classes=10))
    with pytest.raises(ValueError, match="already have attention"):
        visattn.retrofit(model)
    with pytest.raises(ValueError, match="already has inserted attention"):
        visattn.retrofit(model, targets=["layer1.0.bn2"])


class _NoIdentity(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class _ScaleGate(nn.Module):
    """``(1 + m) * x`` with a learnt per-channel ``m`` that starts at 0 when asked (a later attention type)."""

    supports_identity_init = True

    def __init__(self, channels: int, *, identity_init: bool = False, bias: float = 0.3) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.full((channels, 1, 1), 0.0 if identity_init else bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1 + self.m) * x


@pytest.fixture
def test_attention_types():
    """Register the two test-only attention types for one test, then remove them again (left registered,
    they would leak into the tests that run over every registered attention type)."""
    from visattn.attention._registry import _ATTENTION

    names = ("_test_no_identity", "_test_scale_gate")
    for name, cls in zip(names, (_NoIdentity, _ScaleGate)):
        register_attention(name)(cls)
    try:
        yield names
    finally:
        for name in names:
            _ATTENTION._entries.pop(name, None)
    assert not set(names) & set(list_attention())


def test_any_registered_identity_capable_attention_works(test_attention_types):
    torch.manual_seed(0)
    model = _randomise_bn(timm.create_model("resnet18", num_classes=10)).eval()
    original = copy.deepcopy(model)
    visattn.retrofit(model, "_test_scale_gate", bias=0.7)  # kwargs reach the class
    assert isinstance(model.layer4[1].se, _ScaleGate) and model.layer4[1].se.m.shape == (512, 1, 1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - original(x)).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="'_test_no_identity' does not support identity_init.*'se'"):
        visattn.retrofit(timm.create_model("resnet18", num_classes=10), "_test_no_identity")
    changed = visattn.retrofit(copy.deepcopy(original), "_test_no_identity", identity_init=False)
    with torch.no_grad():
        assert (changed(x) - original(x)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="unknown attention 'nope'"):
        visattn.retrofit(copy.deepcopy(original), "nope")


def test_inserted_modules_follow_dtype_and_mode():
    model = visattn.create_model("resnet20").double().train()
    visattn.retrofit(model, targets=["layer1.0.bn1"])
    attn = model.get_submodule("layer1.0.bn1.attn")
    assert attn.fc1.weight.dtype == torch.float64 and attn.training
    assert model(torch.randn(2, 3, 16, 16, dtype=torch.float64)).dtype == torch.float64


def test_points_is_a_dry_run():
    model = torchvision.models.resnet18()
    points = visattn.retrofit.points(model)
    assert [p.name for p in points][:2] == ["layer1.0.bn2.attn", "layer1.1.bn2.attn"]
    assert [p.channels for p in points] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert not any(isinstance(m, InsertedAttention) for m in model.modules())
