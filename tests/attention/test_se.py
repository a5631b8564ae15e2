"""Squeeze-and-Excitation: shapes, gradients, each option's documented effect, identity init, SE-ResNets,
and the per-class excitation plot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visattn
from visattn.attention import AttentionTap, SqueezeExcite, _se_fused, create_attention, get_attention_class
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


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("identity_init", [False, True])
def test_residual_relu_gradcheck_and_matches_unfused(gate, identity_init):
    torch.manual_seed(0)
    se = SqueezeExcite(6, reduction=2, gate=gate, identity_init=identity_init).double()
    torch.nn.init.normal_(se.fc2.weight)
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    sc = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: se.residual_relu(a, b), (x, sc))
    w = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    grads = []
    for fn in (lambda: se.residual_relu(x, sc), lambda: torch.relu(se(x) + sc)):
        se.zero_grad()
        x.grad, sc.grad = None, None
        (fn() * w).sum().backward()
        grads.append([x.grad, sc.grad, *(p.grad for p in se.parameters())])
    for fused, plain in zip(*grads):
        torch.testing.assert_close(fused, plain)


def test_residual_relu_paths():
    torch.manual_seed(0)
    x, sc = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5)
    for pool in POOLS:
        se = SqueezeExcite(8, reduction=2, pool=pool)
        expected = torch.relu(se(x) + sc)
        torch.testing.assert_close(se.residual_relu(x, sc), expected)  # autograd path (params need grad)
        with torch.no_grad():
            buf = x.clone()
            out = se.residual_relu(buf, sc, inplace=True)
        assert out.data_ptr() == buf.data_ptr()  # written into x's memory
        torch.testing.assert_close(out, expected)
    se = SqueezeExcite(8, reduction=2).requires_grad_(False)  # frozen SE, gradient to the input only
    xg = x.clone().requires_grad_()
    se.residual_relu(xg, sc).sum().backward()
    xr = x.clone().requires_grad_()
    torch.relu(se(xr) + sc).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)
    with pytest.raises(
        ValueError, match=r"shortcut must have the shape of x \(2, 8, 3, 5\), got \(2, 8, 3, 4\)"
    ):
        se.residual_relu(x, sc[..., :4])


def _bn_pair(momentum: float | None, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.BatchNorm2d, ...]:
    torch.manual_seed(1)
    bn = torch.nn.BatchNorm2d(6, momentum=momentum).to(dtype)
    with torch.no_grad():
        bn.weight.normal_(1, 0.5), bn.bias.normal_(0, 0.5)
        bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    twin = torch.nn.BatchNorm2d(6, momentum=momentum).to(dtype)
    twin.load_state_dict(bn.state_dict())
    return bn, twin


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("identity_init", [False, True])
def test_norm_residual_relu_gradcheck_and_matches_unfused(gate, identity_init):
    # training-mode BN fused with SE, add and ReLU: same output, gradients and running statistics
    torch.manual_seed(0)
    se = SqueezeExcite(6, reduction=2, gate=gate, identity_init=identity_init).double()
    torch.nn.init.normal_(se.fc2.weight)
    c = torch.randn(3, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    sc = torch.randn(3, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    bn, twin = _bn_pair(0.1, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: se.norm_residual_relu(a, bn, b), (c, sc))
    bn, twin = _bn_pair(0.1, torch.float64)
    w = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    grads = []
    for norm, fn in (
        (bn, lambda: se.norm_residual_relu(c, bn, sc)),
        (twin, lambda: torch.relu(se(twin(c)) + sc)),
    ):
        se.zero_grad()
        c.grad, sc.grad = None, None
        y = fn()
        assert y.grad_fn is not None
        (y * w).sum().backward()
        grads.append(
            [y, c.grad, sc.grad, norm.weight.grad, norm.bias.grad, *(p.grad for p in se.parameters())]
        )
    assert type(grads[0][0].grad_fn).__name__.startswith("BNAvgSEResidualReLU")  # the fused path ran
    for fused, plain in zip(*grads):
        torch.testing.assert_close(fused, plain)
    for name, buf in bn.named_buffers():
        torch.testing.assert_close(buf, twin.get_buffer(name), msg=name)


def test_norm_residual_relu_running_stats_and_fallbacks():
    torch.manual_seed(0)
    se = SqueezeExcite(6, reduction=2)
    c, sc = torch.randn(4, 6, 5, 3), torch.randn(4, 6, 5, 3)
    bn, twin = _bn_pair(None)  # cumulative moving average: uses num_batches_tracked
    for _ in range(3):
        y = se.norm_residual_relu(c * 1.5, bn, sc)
        ref = torch.relu(se(twin(c * 1.5)) + sc)
    torch.testing.assert_close(y, ref)
    assert int(bn.num_batches_tracked) == 3
    for name, buf in bn.named_buffers():
        torch.testing.assert_close(buf, twin.get_buffer(name), msg=name)
    # eval mode, hooks on the norm, no affine parameters, max pooling, no autograd: the unfused path
    seen = []
    bn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert se.norm_residual_relu(c, bn, sc).grad_fn.__class__.__name__.startswith("AvgSEResidualReLU")
    assert seen == [c.shape]
    for norm in (torch.nn.BatchNorm2d(6).eval(), torch.nn.BatchNorm2d(6, affine=False)):
        torch.testing.assert_close(se.norm_residual_relu(c, norm, sc), torch.relu(se(norm(c)) + sc))
    se_max = SqueezeExcite(6, reduction=2, pool="max")
    torch.testing.assert_close(se_max.norm_residual_relu(c, twin, sc), torch.relu(se_max(twin(c)) + sc))
    with torch.no_grad():
        torch.testing.assert_close(se.norm_residual_relu(c, twin, sc), torch.relu(se(twin(c)) + sc))
    with pytest.raises(ValueError, match=r"shortcut must have the shape of c"):
        se.norm_residual_relu(c, torch.nn.BatchNorm2d(6), sc[..., :2])


@pytest.mark.parametrize(("name", "plain"), [("se_resnet18", "resnet18"), ("se_resnet50", "resnet50")])
def test_se_resnet_training_step_equals_the_unfused_model(name, plain):
    # the fused tails (BN + SE + add + ReLU by hand) give the unfused model's loss, gradients and BN
    # statistics; in float64, so that float32 rounding through 16 blocks does not hide a real difference
    torch.manual_seed(0)
    fused = visattn.create_model(name, num_classes=5).double().train()
    ref = visattn.create_model(plain, num_classes=5, attn_layer="se").double().train()
    ref.load_state_dict(fused.state_dict())
    x, y = torch.randn(3, 3, 40, 36, dtype=torch.float64), torch.tensor([0, 3, 4])
    losses = [F.cross_entropy(model(x), y) for model in (fused, ref)]
    nodes, stack = set(), [losses[0].grad_fn]
    while stack:  # the autograd graph of the fused model holds the fused tails
        node = stack.pop()
        if node is not None and type(node).__name__ not in nodes:
            nodes.add(type(node).__name__)
            stack.extend(fn for fn, _ in node.next_functions)
    assert any(n.startswith("BNAvgSEResidualReLU") for n in nodes)
    torch.testing.assert_close(losses[0], losses[1])
    for loss in losses:
        loss.backward()
    ref_params = dict(ref.named_parameters())
    for n, p in fused.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[n].grad, msg=n)
    ref_bufs = dict(ref.named_buffers())
    for n, b in fused.named_buffers():
        torch.testing.assert_close(b, ref_bufs[n], msg=n)


@pytest.mark.parametrize("min_numel", [0, 1 << 30])
def test_norm_residual_relu_eval_fused_path(monkeypatch, min_numel):
    # eval-mode BN without autograd: BN(c) never written, squeeze from c, result into c when inplace
    # (min_numel 0); maps under the size threshold take the unfused path (1 << 30): same results
    monkeypatch.setattr(_se_fused, "EVAL_FUSE_MIN_NUMEL", min_numel)
    calls = []
    monkeypatch.setattr(
        _se_fused,
        "bn_eval_se_residual_relu",
        lambda *a, _f=_se_fused.bn_eval_se_residual_relu: calls.append(1) or _f(*a),
    )
    torch.manual_seed(0)
    se = SqueezeExcite(6, reduction=2)
    torch.nn.init.normal_(se.fc2.weight)
    bn, _ = _bn_pair(0.1)
    bn.eval()
    c, sc = torch.randn(2, 6, 5, 7) * 3 + 2, torch.randn(2, 6, 5, 7)
    expected = torch.relu(se(bn(c)) + sc)
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            buf = c.clone()
            out = se.norm_residual_relu(buf, bn, sc, inplace=True)
            assert (out.data_ptr() == buf.data_ptr()) == (min_numel == 0)  # unfused: into BN(c)
            torch.testing.assert_close(out, expected)
            torch.testing.assert_close(se.norm_residual_relu(c, bn, sc), expected)
    # nothing requires grad: the fused path, no graph, input untouched without inplace
    frozen = SqueezeExcite(6, reduction=2).requires_grad_(False)
    bn.requires_grad_(False)
    out = frozen.norm_residual_relu(c, bn, sc)
    assert out.grad_fn is None
    torch.testing.assert_close(out, torch.relu(frozen(bn(c)) + sc))
    # eval mode with autograd (e.g. fine-tuning SE behind a frozen BN): the differentiable path
    cg = c.clone().requires_grad_()
    out = se.norm_residual_relu(cg, bn, sc)
    assert type(out.grad_fn).__name__.startswith("AvgSEResidualReLU")
    out.sum().backward()
    cr = c.clone().requires_grad_()
    torch.relu(se(bn(cr)) + sc).sum().backward()
    torch.testing.assert_close(cg.grad, cr.grad)
    assert len(calls) == (5 if min_numel == 0 else 0)


def test_norm_residual_relu_float32_offsets_channels_last_and_single_value():
    # float32 with channel means far from 0 (cancellation-prone), against the unfused composition
    torch.manual_seed(0)
    se = SqueezeExcite(16, reduction=4)
    torch.nn.init.normal_(se.fc2.weight, std=0.3)
    c = (torch.randn(4, 16, 9, 11) * 0.5 + torch.linspace(-20, 20, 16)[:, None, None]).requires_grad_()
    sc = torch.randn(4, 16, 9, 11, requires_grad=True)
    bn, twin = torch.nn.BatchNorm2d(16), torch.nn.BatchNorm2d(16)
    w = torch.randn(4, 16, 9, 11)
    grads = []
    for norm, fn in (
        (bn, lambda: se.norm_residual_relu(c, bn, sc)),
        (twin, lambda: torch.relu(se(twin(c)) + sc)),
    ):
        se.zero_grad()
        c.grad = sc.grad = None
        y = fn()
        (y * w).sum().backward()
        grads.append(
            [y, c.grad, sc.grad, norm.weight.grad, norm.bias.grad, *(p.grad for p in se.parameters())]
        )
    for fused, plain in zip(*grads):
        torch.testing.assert_close(fused, plain, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(bn.running_mean, twin.running_mean)
    torch.testing.assert_close(bn.running_var, twin.running_var)
    # channels_last is not NCHW-contiguous: the unfused path, same result
    cl = c.detach().to(memory_format=torch.channels_last)
    y = se.norm_residual_relu(cl, torch.nn.BatchNorm2d(16), sc)
    assert not type(y.grad_fn).__name__.startswith("BNAvg")
    torch.testing.assert_close(y, torch.relu(se(torch.nn.BatchNorm2d(16)(cl)) + sc))
    # one value per channel in training: BatchNorm2d's own error, as unfused
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        se.norm_residual_relu(torch.randn(1, 16, 1, 1), torch.nn.BatchNorm2d(16), torch.randn(1, 16, 1, 1))


def test_fused_plain_bn_tail_matches_batchnorm():
    # the benchmark's reference tail (fused BN + add + ReLU, no gate) is exact too
    from visattn.attention._se_fused import BNResidualReLU

    c = torch.randn(3, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    sc = torch.randn(3, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    bn, twin = _bn_pair(0.1, torch.float64)

    def fused(a, b):
        return BNResidualReLU.apply(a, b, (bn.running_mean, bn.running_var, 0.1, bn.eps), bn.weight, bn.bias)

    assert torch.autograd.gradcheck(fused, (c, sc))
    bn, twin = _bn_pair(0.1, torch.float64)
    w = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    grads = []
    for norm, fn in ((bn, lambda: fused(c, sc)), (twin, lambda: torch.relu(twin(c) + sc))):
        c.grad = sc.grad = None
        y = fn()
        (y * w).sum().backward()
        grads.append([y, c.grad, sc.grad, norm.weight.grad, norm.bias.grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(bn.running_mean, twin.running_mean)
    torch.testing.assert_close(bn.running_var, twin.running_var)
