"""Translated and cluttered MNIST generators: a per-image reference, boxes, seeds, registered datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visattn.data import cluttered, load_dataset
from visattn.data.cluttered import cluttered_mnist, draw_layout, ink_boxes, render, translated_mnist


def _digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fake digits: a random blob of strokes inside each 28x28 frame, zero background."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    keep = torch.rand(n, 1, 28, 28, generator=g) < 0.3
    x = x * keep
    x[:, :, :3] = 0  # blank margins, as in MNIST
    x[:, :, :, -5:] = 0
    return x.to(torch.uint8), torch.randint(0, 10, (n,), generator=g)


def reference_render(images, layout, canvas, s=8):
    """One image at a time, one piece at a time, with numpy slicing and a maximum."""
    imgs = images[:, 0].numpy()
    out = np.zeros((len(imgs), canvas, canvas), dtype=np.uint8)
    for i in range(len(imgs)):
        x, y = layout["digit_xy"][i].tolist()
        out[i, y : y + 28, x : x + 28] = imgs[i]
        for j in range(layout["clutter_src"].shape[1]):
            src = int(layout["clutter_src"][i, j])
            fx, fy = layout["clutter_from"][i, j].tolist()
            cx, cy = layout["clutter_xy"][i, j].tolist()
            piece = imgs[src, fy : fy + s, fx : fx + s]
            out[i, cy : cy + s, cx : cx + s] = np.maximum(out[i, cy : cy + s, cx : cx + s], piece)
    return torch.from_numpy(out)[:, None]


@pytest.mark.parametrize("canvas,num_clutter", [(60, 0), (60, 4), (100, 8)])
def test_render_equals_a_per_image_reference(canvas, num_clutter):
    images, _ = _digits(9)
    layout = draw_layout(9, canvas=canvas, num_clutter=num_clutter, seed=3)
    torch.testing.assert_close(
        render(images, layout, canvas=canvas), reference_render(images, layout, canvas), rtol=0, atol=0
    )


def test_clutter_count_and_sources_are_right():
    # images with constant, distinct values: every piece is a full 8x8 square of its source's value
    n, p = 7, 4
    images = (
        (torch.arange(1, n + 1, dtype=torch.uint8) * 30)[:, None, None, None].expand(n, 1, 28, 28).clone()
    )
    layout = draw_layout(n, canvas=60, num_clutter=p, seed=5)
    assert layout["clutter_src"].shape == (n, p) and layout["clutter_xy"].shape == (n, p, 2)
    assert (layout["clutter_src"] != torch.arange(n)[:, None]).all(), "a piece must come from another digit"
    out = render(images, layout, canvas=60)
    for i in range(n):
        x, y = layout["digit_xy"][i].tolist()
        mask = torch.zeros(60, 60, dtype=torch.bool)
        mask[y : y + 28, x : x + 28] = True
        for j in range(p):
            cx, cy = layout["clutter_xy"][i, j].tolist()
            mask[cy : cy + 8, cx : cx + 8] = True
            # each piece shows at least its source's value everywhere it lies
            src_value = int(images[layout["clutter_src"][i, j], 0, 0, 0])
            assert (out[i, 0, cy : cy + 8, cx : cx + 8] >= src_value).all()
        assert torch.equal(out[i, 0] > 0, mask), f"image {i}: ink outside the digit and its {p} pieces"
    # translated: no clutter at all, the canvas holds exactly the digit's ink
    images, labels = _digits(5)
    out, _, _ = translated_mnist(images, labels, seed=0)
    assert torch.equal(
        out.sum(dim=(1, 2, 3), dtype=torch.int64), images.sum(dim=(1, 2, 3), dtype=torch.int64)
    )


@pytest.mark.parametrize("canvas,num_clutter", [(60, 0), (60, 4), (100, 8)])
def test_every_digit_lies_inside_its_tight_box(canvas, num_clutter):
    images, labels = _digits(20, seed=1)
    out, out_labels, boxes = cluttered_mnist(images, labels, canvas=canvas, num_clutter=num_clutter, seed=2)
    assert out.shape == (20, 1, canvas, canvas) and out.dtype == torch.uint8
    assert torch.equal(out_labels, labels) and boxes.dtype == torch.int64
    layout = draw_layout(20, canvas=canvas, num_clutter=num_clutter, seed=2)
    for i in range(20):
        x0, y0, x1, y1 = boxes[i].tolist()
        assert 0 <= x0 < x1 <= canvas and 0 <= y0 < y1 <= canvas
        x, y = layout["digit_xy"][i].tolist()
        placed = torch.zeros(canvas, canvas, dtype=torch.uint8)
        placed[y : y + 28, x : x + 28] = images[i, 0]
        inside = torch.zeros_like(placed, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert not (placed[~inside] > 0).any(), "stroke outside its box"
        # the box is tight: every edge row/column of the box touches the digit's ink
        assert (placed[y0] > 0).any() and (placed[y1 - 1] > 0).any()
        assert (placed[:, x0] > 0).any() and (placed[:, x1 - 1] > 0).any()
        assert (out[i, 0] >= placed).all(), "clutter must never erase a stroke"
    if num_clutter == 0:
        ink = out[:, 0] > 0
        for i in range(20):
            x0, y0, x1, y1 = boxes[i].tolist()
            assert ink[i].sum() == ink[i, y0:y1, x0:x1].sum()


def test_ink_boxes_of_a_blank_image_is_its_frame():
    im = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    im[1, 0, 27, 0] = 1
    assert ink_boxes(im).tolist() == [[0, 0, 28, 28], [0, 27, 1, 28]]


def test_generators_are_deterministic_from_the_seed_and_cover_the_canvas(monkeypatch):
    images, labels = _digits(300)
    a = cluttered_mnist(images, labels, seed=4)
    b = cluttered_mnist(images, labels, seed=4)
    c = cluttered_mnist(images, labels, seed=5)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a[0], c[0])
    xy = draw_layout(300, canvas=60, seed=4)["digit_xy"]
    assert xy.min() == 0 and xy.max() == 32  # every admissible offset range is used, none beyond
    # rendering in chunks changes nothing
    lay = draw_layout(300, canvas=60, num_clutter=4, seed=4)
    whole = render(images, lay, canvas=60)
    monkeypatch.setattr(cluttered, "_CHUNK", 7)
    torch.testing.assert_close(render(images, lay, canvas=60), whole, rtol=0, atol=0)
    torch.testing.assert_close(whole, reference_render(images, lay, 60), rtol=0, atol=0)


def test_registered_datasets_load_from_an_mnist_npz(tmp_path):
    x_tr, y_tr = _digits(40, seed=0)
    x_te, y_te = _digits(12, seed=1)
    path = tmp_path / "mnist.npz"
    np.savez(
        path, x_train=x_tr[:, 0].numpy(), y_train=y_tr.numpy(), x_test=x_te[:, 0].numpy(), y_test=y_te.numpy()
    )
    s0 = load_dataset("mnist_cluttered60", data_dir=str(path), seed=0)
    s1 = load_dataset("mnist_cluttered60", data_dir=str(path), seed=1)
    assert s0.image_size == (60, 60) and s0.in_chans == 1 and s0.num_classes == 10
    assert s0.train.images.shape == (40, 1, 60, 60) and s0.test.images.shape == (12, 1, 60, 60)
    assert s0.extras["test_boxes"].shape == (12, 4) and s0.extras["train_boxes"].shape == (40, 4)
    assert torch.equal(s0.test.labels, y_te)
    assert not torch.equal(s0.train.images, s1.train.images)  # train follows seed
    assert torch.equal(s0.test.images, s1.test.images)  # test is fixed across seeds
    assert 0 < s0.mean[0] < 1 and 0 < s0.std[0] < 1
    want = s0.train.images.double().div(255)
    assert abs(s0.mean[0] - float(want.mean())) < 1e-9 and abs(s0.std[0] - float(want.std())) < 1e-3
    big = load_dataset("mnist_cluttered100", data_dir=str(path))
    assert big.test.images.shape == (12, 1, 100, 100)
    tr = load_dataset("mnist_translated60", data_dir=str(path))
    assert torch.equal((tr.test.images > 0).sum(), (x_te > 0).sum())


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"images": torch.zeros(3, 1, 28, 28)}, TypeError, "images"),
        ({"images": torch.zeros(3, 2, 28, 28, dtype=torch.uint8)}, ValueError, "channels"),
        ({"images": torch.zeros(3, 1, 28, 20, dtype=torch.uint8)}, ValueError, "square"),
        ({"labels": torch.zeros(4)}, ValueError, "labels"),
        ({"canvas": 20}, ValueError, "canvas"),
        ({"clutter_size": 30}, ValueError, "clutter_size"),
        ({"num_clutter": -1}, ValueError, "num_clutter"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_inputs_raise(kwargs, exc, match):
    args = {"images": torch.zeros(3, 1, 28, 28, dtype=torch.uint8), "labels": torch.zeros(3)}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        cluttered_mnist(**args)


def test_clutter_needs_another_digit():
    with pytest.raises(ValueError, match="at least 2 images"):
        cluttered_mnist(torch.zeros(1, 1, 28, 28, dtype=torch.uint8), torch.zeros(1))
    out, _, _ = translated_mnist(torch.zeros(1, 1, 28, 28, dtype=torch.uint8), torch.zeros(1))
    assert out.shape == (1, 1, 60, 60)
