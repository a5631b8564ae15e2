"""GreyConv2d / conv2d_one_channel: the faster one-channel conv computes what nn.Conv2d computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import visattn
from visattn.data import BatchTransform
from visattn.models import _grey_conv
from visattn.models._grey_conv import GreyConv2d, conv2d_one_channel, to_plain_conv2d

ROOT = Path(__file__).resolve().parents[2]
#: Largest gradient difference allowed, relative to the gradient's largest entry (float32 summation order).
GRAD_RTOL = 1e-5


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kernel,padding", [((9, 9), (4, 4)), ((5, 3), (2, 0)), ((3, 3), (0, 0))])
def test_one_channel_conv_equals_conv2d_values_and_gradients(kernel, padding, channels_last, monkeypatch):
    monkeypatch.setattr(_grey_conv, "_CHUNK_BYTES", 1)  # one image per chunk: the chunk loop is exercised
    torch.manual_seed(0)
    x = torch.randn(5, 1, 17, 13)
    w = torch.randn(6, 1, *kernel)
    bias = torch.randn(6)
    if channels_last:
        x, w = (
            x.contiguous(memory_format=torch.channels_last),
            w.contiguous(memory_format=torch.channels_last),
        )
    leaves_ref = [t.clone().requires_grad_(True) for t in (x, w, bias)]
    leaves = [t.clone().requires_grad_(True) for t in (x, w, bias)]
    ref = F.conv2d(*leaves_ref, padding=padding)
    out = conv2d_one_channel(*leaves, padding=padding)
    assert torch.equal(out, ref)
    assert out.grad_fn is not None and "OneChannelConv" in type(out.grad_fn).__name__
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, leaves_ref, g)
    grads = torch.autograd.grad(out, leaves, g)
    assert _rel(grads[0], grads_ref[0]) < GRAD_RTOL and grads[0].abs().sum() > 0
    assert torch.equal(grads[1], grads_ref[1]) and torch.equal(grads[2], grads_ref[2])


def test_one_channel_conv_gradcheck_float64():
    torch.manual_seed(1)
    x = torch.randn(3, 1, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 1, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: conv2d_one_channel(*t, padding=(1, 0)), (x, w, b))
    assert torch.autograd.gradcheck(lambda a, c: conv2d_one_channel(a, c, padding=2), (x, w))


def test_grey_conv_is_an_nn_conv2d_with_its_weights_and_takes_the_fast_path_only_when_it_applies():
    torch.manual_seed(2)
    plain = nn.Conv2d(1, 8, 5, padding=2)
    grey = GreyConv2d(1, 8, 5, padding=2)
    assert isinstance(grey, nn.Conv2d) and repr(grey) == "Grey" + repr(plain)
    grey.load_state_dict(plain.state_dict())  # weights saved from an nn.Conv2d load unchanged
    assert list(grey.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 1, 12, 12)
    assert "OneChannelConv" in type(grey(x.requires_grad_(True)).grad_fn).__name__
    assert torch.equal(grey(x), plain(x))
    no_input_grad = grey(x.detach())  # a plain CNN's first conv: no input gradient, nothing to gain
    assert "OneChannelConv" not in type(no_input_grad.grad_fn).__name__
    with torch.no_grad():
        assert torch.equal(grey(x), plain(x))
    rgb = GreyConv2d(3, 4, 3, padding=1)  # more channels, or strides: exactly nn.Conv2d
    assert "OneChannelConv" not in type(rgb(torch.randn(1, 3, 8, 8, requires_grad=True)).grad_fn).__name__
    strided = GreyConv2d(1, 4, 3, stride=2)
    assert "OneChannelConv" not in type(strided(x).grad_fn).__name__


def test_to_plain_conv2d_swaps_every_grey_conv_and_keeps_the_weights():
    torch.manual_seed(3)
    model = visattn.create_model("st_cnn_mnist", image_size=42)
    greys = [m for m in model.modules() if isinstance(m, GreyConv2d)]
    assert len(greys) == 2  # the classifier's and the localisation net's first convs
    before = {k: v.clone() for k, v in model.state_dict().items()}
    to_plain_conv2d(model)
    assert not any(isinstance(m, GreyConv2d) for m in model.modules())
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("channels_last", [False, True])
def test_st_cnn_fast_step_equals_the_reference(channels_last):
    """Whole ST-CNN: the same logits and, to float rounding, the same gradients as with nn.Conv2d."""
    torch.manual_seed(4)
    fast = visattn.create_model("st_cnn_mnist", image_size=42)
    with torch.no_grad():  # a trained-like localisation net, so the warp is not the identity
        fast.st.localization[-1].weight.normal_(0, 0.05)
    ref = to_plain_conv2d(visattn.create_model("st_cnn_mnist", image_size=42))
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(6, 1, 42, 42)
    if channels_last:
        fast.to(memory_format=torch.channels_last)
        ref.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(6) % 10
    out_fast, out_ref = fast(x), ref(x)
    assert torch.equal(out_fast, out_ref)
    F.cross_entropy(out_fast, y).backward()
    F.cross_entropy(out_ref, y).backward()
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert p.grad is not None and q.grad is not None, name
        assert _rel(p.grad, q.grad) < 1e-4, name  # the sampler and loc net see the input grad's rounding
    loc_first = fast.st.localization[0].weight
    assert loc_first.grad.abs().sum() > 0


def test_shipped_st_cnn_weights_load_and_give_identical_logits():
    model = visattn.create_model("st_cnn_mnist", pretrained=True)
    assert isinstance(model.classifier.features[0], GreyConv2d)
    card = model.pretrained_card
    ref = to_plain_conv2d(visattn.create_model("st_cnn_mnist", **card["model_kwargs"]))
    ref.load_state_dict(model.state_dict())  # strict: the same keys and shapes
    ref.eval()
    with np.load(ROOT / card["slice"]["file"]) as z:
        images, labels = torch.from_numpy(z["images"][:200]), torch.from_numpy(z["labels"][:200]).long()
    x = BatchTransform(card["preprocess"]["mean"], card["preprocess"]["std"], preset="none")(images)
    with torch.no_grad():
        a, b = model(x), ref(x)
    assert torch.equal(a, b)
    assert (a.argmax(1) == labels).float().mean() > 0.85  # the trained weights, not a random net


def test_bad_arguments_raise():
    w = torch.randn(4, 1, 3, 3)
    with pytest.raises(ValueError, match="x"):
        conv2d_one_channel(torch.randn(2, 3, 8, 8), w)
    with pytest.raises(ValueError, match="weight"):
        conv2d_one_channel(torch.randn(2, 1, 8, 8), torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="padding"):
        conv2d_one_channel(torch.randn(2, 1, 8, 8), w, padding=-1)
    with pytest.raises(TypeError, match="x"):
        conv2d_one_channel(np.zeros((2, 1, 8, 8)), w)  # type: ignore[arg-type]
