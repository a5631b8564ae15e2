"""The STN paper's networks: shapes, gradients, identity start, parallel transformers, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import visattn
from visattn.attention import AttentionTap, SpatialTransformer

MNIST_MODELS = [
    ("fcn_mnist", {}),
    ("cnn_mnist", {}),
    ("st_fcn_mnist", {"transform": "affine"}),
    ("st_fcn_mnist", {"transform": "tps"}),
    ("st_cnn_mnist", {"transform": "affine"}),
    ("st_cnn_mnist", {"transform": "projective"}),
    ("st_cnn_mnist", {"transform": "tps", "grid_size": 4}),
]


@pytest.mark.parametrize("name,opts", MNIST_MODELS)
@pytest.mark.parametrize("size", [28, 42])
def test_mnist_models_forward_backward(name: str, opts: dict, size: int) -> None:
    torch.manual_seed(0)
    model = visattn.create_model(name, image_size=size, **opts)
    x = torch.randn(3, 1, size, size, requires_grad=True)
    out = model(x)
    assert out.shape == (3, 10)
    out.logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    sts = [m for m in model.modules() if isinstance(m, SpatialTransformer)]
    assert len(sts) == (1 if name.startswith("st_") else 0)
    for st in sts:  # the zero-initialised last layer of the localisation net learns first
        last = [m for m in st.localization.modules() if isinstance(m, torch.nn.Linear)][-1]
        assert last.weight.grad.abs().sum() > 0
    model.eval()
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("kind", ["fcn", "cnn"])
def test_st_model_starts_as_its_classifier(kind: str) -> None:
    torch.manual_seed(1)
    plain = visattn.create_model(f"{kind}_mnist", image_size=42).eval()
    st = visattn.create_model(f"st_{kind}_mnist", image_size=42).eval()
    st.classifier.load_state_dict(plain.classifier.state_dict())
    x = torch.rand(4, 1, 42, 42)
    torch.testing.assert_close(st(x), plain(x), atol=1e-4, rtol=1e-4)


def test_st_out_size_downsamples_before_the_classifier() -> None:
    model = visattn.create_model("st_cnn_mnist", image_size=42, st_out_size=28)
    seen = []
    h = model.st.tap.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert model(torch.rand(2, 1, 42, 42)).shape == (2, 10)
    h.remove()
    assert seen == [torch.Size([2, 28, 28, 2])]


@pytest.mark.parametrize("kind", ["fcn", "cnn"])
def test_loc_downsample_feeds_the_localisation_net_a_pooled_image(kind: str) -> None:
    torch.manual_seed(0)
    full = visattn.create_model(f"st_{kind}_mnist", image_size=42)
    small = visattn.create_model(f"st_{kind}_mnist", image_size=42, loc_downsample=2)
    x = torch.rand(3, 1, 42, 42)
    seen = {}
    first = next(m for m in small.st.localization.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    first.register_forward_pre_hook(lambda _m, inp: seen.setdefault("x", inp[0]))
    y = small(x)
    got = seen["x"] if kind == "cnn" else seen["x"].view(3, 1, 21, 21)
    assert torch.allclose(got, F.avg_pool2d(x, 2))  # the localisation net sees the pooled image
    base = visattn.create_model(f"{kind}_mnist", image_size=42)
    base.classifier.load_state_dict(small.classifier.state_dict())
    assert torch.allclose(y, base(x), atol=1e-6)  # still the identity warp at initialisation
    n_small = sum(p.numel() for p in small.st.parameters())
    n_full = sum(p.numel() for p in full.st.parameters())
    assert n_small < n_full if kind == "fcn" else n_small == n_full
    y.sum().backward()
    assert all(p.grad is not None for p in small.st.parameters())
    with pytest.raises(ValueError, match="loc_downsample"):
        visattn.create_model(f"st_{kind}_mnist", image_size=42, loc_downsample=11)
    with pytest.raises(TypeError, match="loc_downsample"):
        visattn.create_model(f"{kind}_mnist", image_size=42, loc_downsample=2)


def test_st_cnn_parallel_transformers_over_resnet18() -> None:
    torch.manual_seed(2)
    model = visattn.create_model(
        "st_cnn", backbone="resnet18", num_transformers=2, num_classes=5, st_out_size=32
    )
    taps = [m for m in model.modules() if isinstance(m, AttentionTap) and m.kind == "warp"]
    assert len(taps) == 2 and model.fc.in_features == 2 * 512
    x = torch.randn(2, 3, 48, 40)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    for st in model.transformers:
        assert st.localization[-1].weight.grad.abs().sum() > 0


def test_st_cnn_other_backbone_and_transform() -> None:
    model = visattn.create_model(
        "st_cnn", backbone="resnet20", num_transformers=3, transform="affine", in_chans=1, num_classes=4
    )
    assert len(model.branches) == 3
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="transform"):
        visattn.create_model("st_cnn_mnist", transform="attention")
    with pytest.raises(ValueError, match="transform"):
        visattn.create_model("st_cnn", transform="similarity")
    with pytest.raises(ValueError, match="image_size"):
        visattn.create_model("cnn_mnist", image_size=4)
    with pytest.raises(ValueError, match="unknown model"):
        visattn.create_model("st_cnn", backbone="no_such_net")
    with pytest.raises(ValueError, match="'fc'"):
        visattn.create_model("st_cnn", backbone="fcn_mnist", in_chans=1)
    with pytest.raises(ValueError, match="num_transformers"):
        visattn.create_model("st_cnn", num_transformers=0)
    with pytest.raises(ValueError, match="st_out_size"):
        visattn.create_model("st_cnn", backbone="resnet18", st_out_size=16)
    model = visattn.create_model("st_cnn_mnist")
    with pytest.raises(ValueError, match="28x28"):
        model(torch.randn(2, 1, 42, 42))
    with pytest.raises(ValueError, match="1 channels"):
        model(torch.randn(2, 3, 28, 28))


def test_cnn_pool_before_relu_is_exactly_conv_relu_pool() -> None:
    """The CNN pools before its ReLUs (cheaper); values and gradients equal the textbook order."""
    torch.manual_seed(3)
    model = visattn.create_model("cnn_mnist", image_size=42)
    f = model.classifier.features
    conv1, conv2 = f[0], f[3]
    assert isinstance(f[1], torch.nn.MaxPool2d) and isinstance(f[2], torch.nn.ReLU)
    x = torch.randn(4, 1, 42, 42, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = model(x)
    pool, relu = torch.nn.functional.max_pool2d, torch.relu
    h = pool(relu(conv2(pool(relu(conv1(x_ref)), 2))), 2)
    ref = model.classifier.fc(h.flatten(1))
    assert torch.equal(out, ref)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x_ref)
    assert torch.equal(g, g_ref) and g.abs().sum() > 0


def test_the_baselines_refuse_spatial_transformer_options():
    """The four MNIST builders are one (registered with functools.partial); the baselines have no ST."""
    import visattn

    with pytest.raises(
        TypeError, match=r"fcn_mnist has no spatial transformer.*\['transform'\].*st_fcn_mnist"
    ):
        visattn.create_model("fcn_mnist", transform="tps")
    with pytest.raises(TypeError, match="bogus"):
        visattn.create_model("st_cnn_mnist", bogus=1)
    assert visattn.create_model("cnn_mnist").st.__class__.__name__ == "Identity"
