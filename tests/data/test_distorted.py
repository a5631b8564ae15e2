"""The distorted-MNIST generators (STN paper, appendix A): determinism, ranges, geometry, datasets."""

from __future__ import annotations

import math

import pytest
import torch

import visattn.data.distorted as distorted
from visattn.data import DatasetSplits, ImageTensorDataset, load_dataset
from visattn.data.distorted import (
    DISTORTIONS,
    distort,
    elastic,
    homography_from_corners,
    projective,
    rotate,
    rotate_translate_scale,
)


def _digits(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 6:22, 8:20] = torch.randint(0, 256, (n, 1, 16, 12), generator=g, dtype=torch.uint8)
    return x


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _centroid(img: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 2) intensity centroid (x, y) in pixels from the image centre."""
    h, w = img.shape[-2:]
    m = img.float()[:, 0]
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    tot = m.sum((1, 2))
    return torch.stack([(m.sum(1) * xs).sum(1) / tot, (m.sum(2) * ys).sum(1) / tot], 1)


@pytest.mark.parametrize("kind", list(DISTORTIONS))
def test_deterministic_from_seed(kind: str) -> None:
    x = _digits(16)
    a, pa = distort(x, kind, seed=5)
    b, pb = distort(x, kind, seed=5)
    c, _ = distort(x, kind, seed=6)
    assert a.dtype == torch.uint8 and torch.equal(a, b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(a, c)
    # float input gives float output of the same geometry
    f, _ = distort(x.float(), kind, seed=5)
    assert f.dtype == torch.float32 and (f.round().clamp(0, 255) - a.float()).abs().max() <= 1


def test_rotate_ranges_and_direction() -> None:
    out, p = rotate(_digits(400), generator=_gen(0))
    angle = p["angle"]
    assert angle.abs().max() <= 90 and angle.min() < -70 and angle.max() > 70
    blob = torch.zeros(400, 1, 28, 28, dtype=torch.uint8)
    blob[:, :, 12:16, 20:24] = 255  # a square 8 px right of the centre
    out, p = rotate(blob, generator=_gen(1))
    a = p["angle"] * math.pi / 180
    expected = torch.stack([8 * torch.cos(a), -8 * torch.sin(a)], 1)  # counter-clockwise as displayed
    assert (_centroid(out) - expected).abs().max() < 0.3


def test_zero_angle_is_identity() -> None:
    x = _digits(8)
    out, _ = rotate(x, generator=_gen(0), max_angle=0.0)
    assert torch.equal(out, x)
    out, _ = elastic(x, generator=_gen(0), max_offset=0.0)
    assert torch.equal(out, x)


def test_rts_ranges_and_placement() -> None:
    blob = torch.zeros(300, 1, 28, 28, dtype=torch.uint8)
    blob[:, :, 11:17, 11:17] = 255  # centred square
    out, p = rotate_translate_scale(blob, generator=_gen(2))
    assert out.shape == (300, 1, 42, 42)
    assert p["angle"].abs().max() <= 45 and p["angle"].min() < -35 and p["angle"].max() > 35
    s = p["scale"]
    assert s.min() >= 0.7 and s.max() <= 1.2 and s.min() < 0.75 and s.max() > 1.15
    room = (42 - 28 * s) / 2
    assert (p["shift"].abs() <= room[:, None] + 1e-5).all()
    assert p["shift"].abs().max() > 0.8 * room.max()
    assert (_centroid(out) - p["shift"]).abs().max() < 0.3  # the digit sits where the params say
    mass = out.float().sum((1, 2, 3)) / blob.float().sum((1, 2, 3))
    ratio = s**2  # the digit's area scales with s squared
    assert ((mass - ratio).abs() / ratio).max() < 0.08


def test_projective_ranges_and_homography() -> None:
    out, p = projective(_digits(300), generator=_gen(3), corner_std=0.2)
    s, moved = p["scale"], p["corners"]
    assert s.min() >= 0.75 and s.max() <= 1.0
    corners = torch.tensor(distorted._CORNERS)
    d = moved - s[:, None, None] * corners
    assert d.abs().max() <= 0.6 + 1e-6 and 0.15 < d.std() < 0.25
    h = homography_from_corners(moved.double(), corners.double().expand(300, 4, 2))
    hom = torch.cat([moved.double(), torch.ones(300, 4, 1, dtype=torch.float64)], 2) @ h.transpose(1, 2)
    torch.testing.assert_close(hom[..., :2] / hom[..., 2:], corners.double().expand(300, 4, 2))


def test_projective_moves_a_corner_dot() -> None:
    dot = torch.zeros(50, 1, 28, 28)
    dot[:, :, 0:2, 0:2] = 255.0  # top-left corner
    out, p = projective(dot, generator=_gen(4), scale=(0.75, 0.75), corner_std=0.05)
    tl = p["corners"][:, 0]  # where the input's top-left corner lands, in [-1, 1]
    pix = (tl + 1) * 27 / 2 - 13.5  # pixels from the centre
    assert (_centroid(out) - pix).abs().max() < 1.0


def test_elastic_ranges() -> None:
    out, p = elastic(_digits(100), generator=_gen(5), max_offset=0.2)
    off = p["offsets"]
    assert off.shape == (100, 16, 2) and off.abs().max() <= 0.2 and off.abs().max() > 0.18
    assert not torch.equal(out, _digits(100))


def test_registered_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = _digits(40, seed=1), _digits(20, seed=2)

    def fake_mnist(name: str, **kw) -> DatasetSplits:
        assert name == "mnist" and kw["data_dir"] == "/some/mnist.npz"
        return DatasetSplits(
            name="mnist",
            train=ImageTensorDataset(train, torch.arange(40) % 10),
            test=ImageTensorDataset(test, torch.arange(20) % 10),
            num_classes=10,
            in_chans=1,
            image_size=(28, 28),
            mean=(0.1,),
            std=(0.3,),
            class_names=[str(i) for i in range(10)],
        )

    monkeypatch.setattr(distorted, "load_dataset", fake_mnist)
    a = load_dataset("mnist_rts", data_dir="/some/mnist.npz", seed=1)
    b = load_dataset("mnist_rts", data_dir="/some/mnist.npz", seed=2)
    assert a.name == "mnist_rts" and a.image_size == (42, 42) and a.train.images.shape == (40, 1, 42, 42)
    assert torch.equal(a.test.images, b.test.images)  # one fixed test set across training seeds
    assert not torch.equal(a.train.images, b.train.images)
    assert torch.equal(a.train.labels, torch.arange(40) % 10)
    assert a.extras["train_params"]["scale"].shape == (40,)
    assert 0 < a.mean[0] < 1 and 0 < a.std[0] < 1
    for name, size in [("mnist_rotated", 28), ("mnist_projective", 28), ("mnist_elastic", 28)]:
        ds = load_dataset(name, data_dir="/some/mnist.npz")
        assert ds.name == name and ds.test.images.shape == (20, 1, size, size)
    r = load_dataset("mnist_rotated", data_dir="/some/mnist.npz", max_angle=10.0)
    assert r.extras["test_params"]["angle"].abs().max() <= 10


def test_bad_inputs_raise() -> None:
    x = _digits(2)
    with pytest.raises(ValueError, match="kind"):
        distort(x, "T", seed=0)
    with pytest.raises(TypeError, match="generator"):
        rotate(x, generator=0)
    with pytest.raises(ValueError, match="square"):
        rotate(x[..., :20], generator=_gen(0))
    with pytest.raises(ValueError, match="images must have 4 dims"):
        rotate(x[0], generator=_gen(0))
    with pytest.raises(ValueError, match="scale"):
        rotate_translate_scale(x, generator=_gen(0), scale=(0.5, 2.0))
    with pytest.raises(ValueError, match="canvas"):
        rotate_translate_scale(x, generator=_gen(0), canvas=20)
    with pytest.raises(ValueError, match="max_angle"):
        rotate(x, generator=_gen(0), max_angle=200.0)
    with pytest.raises(ValueError, match="corner_std"):
        projective(x, generator=_gen(0), corner_std=-0.1)
    with pytest.raises(ValueError, match="grid_size"):
        elastic(x, generator=_gen(0), grid_size=(1, 4))
