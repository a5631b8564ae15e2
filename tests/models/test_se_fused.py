"""The fused SE-ResNet block tails (``visattn.models._se_fused``): ``relu(SE(x) + shortcut)`` and
``relu(SE(BN(c)) + shortcut)`` equal the unfused composition (outputs, gradients, running statistics).

Moved from ``tests/attention/test_se.py`` with the tails themselves (issue 16)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visattn
from visattn.attention import SqueezeExcite
from visattn.models import _se_fused
from visattn.models._se_fused import se_norm_residual_relu, se_residual_relu

POOLS = ("avg", "max")
GATES = ("sigmoid", "tanh", "relu")


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("identity_init", [False, True])
def test_residual_relu_gradcheck_and_matches_unfused(gate, identity_init):
    torch.manual_seed(0)
    se = SqueezeExcite(6, reduction=2, gate=gate, identity_init=identity_init).double()
    torch.nn.init.normal_(se.fc2.weight)
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    sc = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: se_residual_relu(se, a, b), (x, sc))
    w = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    grads = []
    for fn in (lambda: se_residual_relu(se, x, sc), lambda: torch.relu(se(x) + sc)):
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
        torch.testing.assert_close(se_residual_relu(se, x, sc), expected)  # autograd path (params need grad)
        with torch.no_grad():
            buf = x.clone()
            out = se_residual_relu(se, buf, sc, inplace=True)
        assert out.data_ptr() == buf.data_ptr()  # written into x's memory
        torch.testing.assert_close(out, expected)
    se = SqueezeExcite(8, reduction=2).requires_grad_(False)  # frozen SE, gradient to the input only
    xg = x.clone().requires_grad_()
    se_residual_relu(se, xg, sc).sum().backward()
    xr = x.clone().requires_grad_()
    torch.relu(se(xr) + sc).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)
    with pytest.raises(
        ValueError, match=r"shortcut must have the shape of x \(2, 8, 3, 5\), got \(2, 8, 3, 4\)"
    ):
        se_residual_relu(se, x, sc[..., :4])


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
    assert torch.autograd.gradcheck(lambda a, b: se_norm_residual_relu(se, a, bn, b), (c, sc))
    bn, twin = _bn_pair(0.1, torch.float64)
    w = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    grads = []
    for norm, fn in (
        (bn, lambda: se_norm_residual_relu(se, c, bn, sc)),
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
        y = se_norm_residual_relu(se, c * 1.5, bn, sc)
        ref = torch.relu(se(twin(c * 1.5)) + sc)
    torch.testing.assert_close(y, ref)
    assert int(bn.num_batches_tracked) == 3
    for name, buf in bn.named_buffers():
        torch.testing.assert_close(buf, twin.get_buffer(name), msg=name)
    # eval mode, hooks on the norm, no affine parameters, max pooling, no autograd: the unfused path
    seen = []
    bn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert se_norm_residual_relu(se, c, bn, sc).grad_fn.__class__.__name__.startswith("AvgSEResidualReLU")
    assert seen == [c.shape]
    for norm in (torch.nn.BatchNorm2d(6).eval(), torch.nn.BatchNorm2d(6, affine=False)):
        torch.testing.assert_close(se_norm_residual_relu(se, c, norm, sc), torch.relu(se(norm(c)) + sc))
    se_max = SqueezeExcite(6, reduction=2, pool="max")
    torch.testing.assert_close(se_norm_residual_relu(se_max, c, twin, sc), torch.relu(se_max(twin(c)) + sc))
    with torch.no_grad():
        torch.testing.assert_close(se_norm_residual_relu(se, c, twin, sc), torch.relu(se(twin(c)) + sc))
    with pytest.raises(ValueError, match=r"shortcut must have the shape of c"):
        se_norm_residual_relu(se, c, torch.nn.BatchNorm2d(6), sc[..., :2])


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
            out = se_norm_residual_relu(se, buf, bn, sc, inplace=True)
            assert (out.data_ptr() == buf.data_ptr()) == (min_numel == 0)  # unfused: into BN(c)
            torch.testing.assert_close(out, expected)
            torch.testing.assert_close(se_norm_residual_relu(se, c, bn, sc), expected)
    # nothing requires grad: the fused path, no graph, input untouched without inplace
    frozen = SqueezeExcite(6, reduction=2).requires_grad_(False)
    bn.requires_grad_(False)
    out = se_norm_residual_relu(frozen, c, bn, sc)
    assert out.grad_fn is None
    torch.testing.assert_close(out, torch.relu(frozen(bn(c)) + sc))
    # eval mode with autograd (e.g. fine-tuning SE behind a frozen BN): the differentiable path
    cg = c.clone().requires_grad_()
    out = se_norm_residual_relu(se, cg, bn, sc)
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
        (bn, lambda: se_norm_residual_relu(se, c, bn, sc)),
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
    y = se_norm_residual_relu(se, cl, torch.nn.BatchNorm2d(16), sc)
    assert not type(y.grad_fn).__name__.startswith("BNAvg")
    torch.testing.assert_close(y, torch.relu(se(torch.nn.BatchNorm2d(16)(cl)) + sc))
    # one value per channel in training: BatchNorm2d's own error, as unfused
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        se_norm_residual_relu(
            se, torch.randn(1, 16, 1, 1), torch.nn.BatchNorm2d(16), torch.randn(1, 16, 1, 1)
        )


def test_fused_plain_bn_tail_matches_batchnorm():
    # the benchmark's reference tail (fused BN + add + ReLU, no gate) is exact too
    from visattn.models._se_fused import BNResidualReLU

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
