"""Squeeze-and-Excitation: shapes, gradients, each option's documented effect, identity init, SE-ResNets,
and the per-class excitation plot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visattn
from visattn.attention import AttentionTap, SqueezeExcite, create_attention, get_attention_class
from visattn.viz.excitation import excitation_stats, plot_excitations

POOLS = ("avg", "max")
GATES = ("sigmoid", "tanh", "relu")


def _reference_gate(se: SqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    """Eqs. 2-3 written out plainly, with the gate forms of the module docstring."""
    s = x.mean((2, 3)) if se.pool == "avg" else x.amax((2, 3))
    z = F.linear(F.relu(F.linear(s, se.fc1.weight, se.fc1.bias)), se.fc2.weight, se.fc2.bias)
    if se.gate == "sigmoid":
        return 2 * torch.sigmoid(z) if se.identity_init else torch.sigmoid(z)
    if se.gate == "tanh":
        return 1 + torch.tanh(z) if se.identity_init else torch.tanh(z)
    return F.relu(z)


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("identity_init", [False, True])
def test_matches_equations_on_non_square_input(pool, gate, identity_init):
    torch.manual_seed(0)
    se = SqueezeExcite(24, reduction=4, pool=pool, gate=gate, identity_init=identity_init)
    torch.nn.init.normal_(se.fc2.weight)  # move away from the identity so every form is exercised
    x = torch.randn(3, 24, 5, 9)
    y = se(x)
    assert y.shape == (3, 24, 5, 9)
    g = _reference_gate(se, x)
    torch.testing.assert_close(se.excitation(x), g)
    torch.testing.assert_close(y, x * g[:, :, None, None])


def test_gate_ranges_follow_the_documented_forms():
    torch.manual_seed(0)
    x = torch.randn(8, 16, 4, 4) * 5
    ranges = {
        ("sigmoid", False): (0, 1),
        ("sigmoid", True): (0, 2),
        ("tanh", False): (-1, 1),
        ("tanh", True): (0, 2),
    }
    for (gate, ident), (lo, hi) in ranges.items():
        se = SqueezeExcite(16, reduction=2, gate=gate, identity_init=ident)
        torch.nn.init.normal_(se.fc2.weight, std=3.0)
        g = se.excitation(x)
        assert lo <= g.min() and g.max() <= hi
        assert g.max() - g.min() > 0.1
    se = SqueezeExcite(16, reduction=2, gate="relu")
    torch.nn.init.normal_(se.fc2.weight, std=3.0)
    g = se.excitation(x)
    assert g.min() == 0 and g.max() > 1  # unbounded above, exactly 0 where z < 0
    assert SqueezeExcite(16, gate="tanh").excitation(x).min() < 0  # tanh can flip a channel's sign


def test_each_option_changes_the_output():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 6, 7)
    torch.manual_seed(1)
    base = SqueezeExcite(32)
    for option in ({"pool": "max"}, {"gate": "tanh"}, {"gate": "relu"}):
        torch.manual_seed(1)
        other = SqueezeExcite(32, **option)
        other.load_state_dict(base.state_dict())  # same weights: only the option differs
        assert not torch.allclose(other(x), base(x)), option
    # reduction sets the hidden width, max(1, C // r)
    assert SqueezeExcite(32, reduction=8).fc1.out_features == 4
    assert SqueezeExcite(32, reduction=64).fc1.out_features == 1
    assert SqueezeExcite(32).fc1.out_features == 2
    # max pooling reacts to one bright pixel, average pooling much less
    spike = x.clone()
    spike[:, :, 0, 0] += 100
    torch.manual_seed(1)
    mx = SqueezeExcite(32, pool="max")
    d_max = (mx.excitation(spike) - mx.excitation(x)).abs().max()
    d_avg = (base.excitation(spike) - base.excitation(x)).abs().max()
    assert d_max > d_avg


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("pool", POOLS)
def test_identity_init_is_exact(gate, pool):
    x = torch.randn(2, 40, 3, 11)
    se = SqueezeExcite(40, reduction=4, gate=gate, pool=pool, identity_init=True)
    assert torch.equal(se(x), x)
    assert torch.equal(se.excitation(x), torch.ones(2, 40))
    assert not torch.equal(SqueezeExcite(40, gate=gate, pool=pool)(x), x)


def test_gradients_reach_every_parameter_and_the_input():
    torch.manual_seed(0)
    se = SqueezeExcite(16, reduction=4)
    x = torch.randn(2, 16, 5, 3, requires_grad=True)
    se(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in se.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_identity_init_gradients_as_documented():
    """W2, b2 learn at once; W1 gets no gradient until W2 has moved (like a zero-initialised branch)."""
    torch.manual_seed(0)
    se = SqueezeExcite(16, reduction=4, identity_init=True)
    x = torch.randn(4, 16, 5, 3)
    (se(x) * torch.randn_like(x)).sum().backward()
    assert se.fc2.weight.grad.abs().sum() > 0 and se.fc2.bias.grad.abs().sum() > 0
    assert torch.count_nonzero(se.fc1.weight.grad) == 0


def test_gradcheck_float64():
    torch.manual_seed(0)
    se = SqueezeExcite(6, reduction=2, gate="tanh").double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(se, (x,))


def test_tap_emits_the_gate():
    se = SqueezeExcite(12, reduction=3)
    assert isinstance(se.tap, AttentionTap) and se.tap.kind == "channel"
    seen = []
    se.tap.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(2, 12, 4, 6)
    y = se(x)
    assert seen[0].shape == (2, 12)
    torch.testing.assert_close(y, x * seen[0][:, :, None, None])


def test_registry_and_bad_arguments():
    assert get_attention_class("se") is SqueezeExcite and SqueezeExcite.supports_identity_init
    assert isinstance(create_attention("se", 8, reduction=2), SqueezeExcite)
    with pytest.raises(ValueError, match="reduction"):
        SqueezeExcite(8, reduction=0)
    with pytest.raises(ValueError, match="pool.*'mean'"):
        SqueezeExcite(8, pool="mean")
    with pytest.raises(ValueError, match="gate.*'softmax'"):
        SqueezeExcite(8, gate="softmax")
    with pytest.raises(TypeError, match="identity_init"):
        SqueezeExcite(8, identity_init=1)
    with pytest.raises(ValueError, match=r"x must have 8 channels.*\(2, 4, 3, 3\)"):
        SqueezeExcite(8)(torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match="x must have 4 dims"):
        SqueezeExcite(8)(torch.zeros(2, 8))


def test_state_dict_round_trip():
    a, b = SqueezeExcite(16, reduction=4), SqueezeExcite(16, reduction=4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 3, 5)
    assert torch.equal(a(x), b(x))


# --- SE-ResNets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["se_resnet20", "se_resnet32", "se_resnet56", "se_resnet110"])
def test_cifar_se_resnets(name):
    net = visattn.create_model(name, num_classes=7)
    n_blocks = 3 * (int(name.removeprefix("se_resnet")) - 2) // 6
    ses = [m for m in net.modules() if isinstance(m, SqueezeExcite)]
    assert len(ses) == n_blocks
    if name == "se_resnet20":
        assert net(torch.randn(2, 3, 32, 40)).shape == (2, 7)


@pytest.mark.parametrize(
    ("name", "plain", "n_se"), [("se_resnet18", "resnet18", 8), ("se_resnet50", "resnet50", 16)]
)
def test_fused_imagenet_blocks_match_the_plain_block_with_se(name, plain, n_se):
    """SEBasicBlock/SEBottleneck (rescale fused into the add) compute what resnet*(attn_layer="se") does."""
    torch.manual_seed(0)
    fused = visattn.create_model(name, num_classes=5)
    ref = visattn.create_model(plain, num_classes=5, attn_layer="se")
    ref.load_state_dict(fused.state_dict())  # same names, strict
    assert sum(isinstance(m, SqueezeExcite) for m in fused.modules()) == n_se
    x = torch.randn(2, 3, 48, 40)
    for train in (False, True):
        fused.train(train), ref.train(train)
        with torch.no_grad():
            torch.testing.assert_close(fused(x), ref(x), atol=1e-5, rtol=1e-4)
        out = fused(x)  # with autograd: the out-of-place path
        torch.testing.assert_close(out, ref(x), atol=1e-5, rtol=1e-4)
    out.sum().backward()
    missing = [n for n, p in fused.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_se_block_refuses_other_attention():
    with pytest.raises(TypeError, match="attn_layer"):
        visattn.create_model("se_resnet18", attn_layer="cbam")
    with pytest.raises(ValueError, match="attn_layer"):
        visattn.models.SEBottleneck(64, 16, attn_layer="cbam")


# --- excitation plot ----------------------------------------------------------------------------------


def test_excitation_stats_are_per_class_means(tmp_path):
    torch.manual_seed(0)
    net = visattn.create_model("se_resnet20", num_classes=3)
    x, y = torch.randn(12, 3, 16, 16), torch.tensor([0, 1, 2, 1] * 3)
    net.train()
    stats = excitation_stats(net, [(x[:5], y[:5]), (x[5:], y[5:])], num_classes=4)
    assert net.training  # mode restored
    assert set(stats) == {f"layer{i}.{j}.attn" for i in (1, 2, 3) for j in range(3)}
    net.eval()
    gates = []
    handle = net.layer2.get_submodule("1.attn").tap.register_forward_hook(lambda m, i, o: gates.append(o))
    net(x)
    handle.remove()
    expected = torch.stack([gates[0][y == k].mean(0) for k in range(3)])
    torch.testing.assert_close(stats["layer2.1.attn"][:3], expected, atol=1e-6, rtol=1e-5)
    assert torch.isnan(stats["layer2.1.attn"][3]).all()  # class 3 never seen
    assert not any(t._forward_hooks for t in net.modules() if isinstance(t, AttentionTap))

    path = tmp_path / "sub" / "exc.png"
    drawn = plot_excitations(net, (x, y), path, class_names=["a", "b", "c"], blocks=["layer3.2.attn"])
    assert list(drawn) == ["layer3.2.attn"] and drawn["layer3.2.attn"].shape == (3, 64)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="class_names"):
        plot_excitations(net, (x, y), path, class_names=["a"])
    with pytest.raises(ValueError, match="no AttentionTap"):
        excitation_stats(visattn.create_model("resnet20"), (x, y))


# --- fused block tail ---------------------------------------------------------------------------------


def test_the_block_tails_moved_beside_the_se_resnets_keep_working_with_a_warning():
    """Issue 16: ``SqueezeExcite`` is a plain gate; its old tail methods forward to ``visattn.models._se_fused``."""
    se = SqueezeExcite(6, reduction=2).eval()
    x, sc, bn = torch.randn(2, 6, 3, 4), torch.randn(2, 6, 3, 4), torch.nn.BatchNorm2d(6).eval()
    with pytest.warns(DeprecationWarning, match="se_residual_relu"):
        torch.testing.assert_close(se.residual_relu(x, sc), torch.relu(se(x) + sc))
    with pytest.warns(DeprecationWarning, match="se_norm_residual_relu"):
        torch.testing.assert_close(se.norm_residual_relu(x, bn, sc), torch.relu(se(bn(x)) + sc))
