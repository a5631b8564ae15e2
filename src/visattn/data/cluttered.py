"""Translated and cluttered MNIST of the Recurrent Attention Model.

Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual Attention", NIPS 2014, sec. 5:

* **translated**: the 28x28 digit placed at a uniformly random position on a blank 60x60 canvas;
* **cluttered**: the same, plus ``num_clutter`` pieces of ``8 x 8`` pixels cut from *other*
  random digits and pasted at random places on the canvas: 4 pieces on 60x60 and 8 pieces on
  100x100 (the paper's "60x60 cluttered translated MNIST" and "100x100" tasks).

Choices the paper leaves open, stated here: positions are uniform over the integer offsets that
keep the whole 28x28 frame (or the whole 8x8 piece) inside the canvas; a piece is cut at a uniform
offset inside its source digit's 28x28 frame (so some pieces are nearly blank, as in random crops);
the source digit is uniform over all the *other* images of the same set; digit and pieces are
combined by the pixel-wise maximum (no piece erases a stroke, and overlaps are order-independent).

Every generator draws all its random numbers up front from a ``torch.Generator`` seeded with
``seed`` (the output is a pure function of the inputs and the seed) and renders in chunks with
one ``scatter_reduce(amax)`` per chunk, without per-image Python loops.

Each generator returns ``(images, labels, boxes)``: ``uint8 (N, 1, S, S)`` canvases, the labels
unchanged, and ``int64 (N, 4)`` digit boxes ``(x0, y0, x1, y1)`` in canvas pixels, the tight box
of the digit's non-zero pixels with exclusive ends (``canvas[y0:y1, x0:x1]`` holds every stroke;
an all-zero digit gets its whole 28x28 frame), for localisation scores of attention models.

Registered datasets (``visattn.data.load_dataset``): ``"mnist_translated60"``,
``"mnist_cluttered60"`` and ``"mnist_cluttered100"``: the train set from ``seed``, the test set from
``test_seed`` (fixed across ``seed``, so every model meets the same test images), with the boxes in
``extras["train_boxes"]`` and ``extras["test_boxes"]``.
"""

from __future__ import annotations

from typing import Any

import torch

from visattn._validate import check_positive, check_tensor, check_type
from visattn.data._registry import DatasetSplits, ImageTensorDataset, load_dataset, register_dataset

__all__ = [
    "TASKS",
    "translated_mnist",
    "cluttered_mnist",
    "draw_layout",
    "render",
    "ink_boxes",
]

_CHUNK = 2048  # canvases rendered at once (bounds the memory of the index tensors)

# registered name -> (canvas side, clutter pieces)
TASKS = {"mnist_translated60": (60, 0), "mnist_cluttered60": (60, 4), "mnist_cluttered100": (100, 8)}


def _check_digits(images: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor(images, "images", ndim=4, channels=1, floating=False, layout="(N, 1, h, w)")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (N, 1, h, w), got dtype {images.dtype}")
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {got}")
    return images, labels


def ink_boxes(images: torch.Tensor) -> torch.Tensor:
    """Tight boxes ``(x0, y0, x1, y1)`` (exclusive ends) of the non-zero pixels of ``(N, 1, h, w)`` images.

    An all-zero image gets its whole frame ``(0, 0, w, h)``.

    >>> im = torch.zeros(1, 1, 5, 6, dtype=torch.uint8); im[0, 0, 1:3, 2:5] = 9
    >>> ink_boxes(im)
    tensor([[2, 1, 5, 3]])
    """
    check_tensor(images, "images", ndim=4, floating=False, nonempty=False, layout="(N, 1, h, w)")
    h, w = images.shape[-2:]
    ink = images.amax(1) > 0  # (N, h, w), any channel
    rows, cols = ink.any(2), ink.any(1)  # (N, h), (N, w)

    def span(mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = mask.to(torch.uint8)
        first = m.argmax(1)
        last = n - m.flip(1).argmax(1)
        empty = ~mask.any(1)
        return first.masked_fill(empty, 0), last.masked_fill(empty, n)

    x0, x1 = span(cols, w)
    y0, y1 = span(rows, h)
    return torch.stack([x0, y0, x1, y1], dim=1)


def draw_layout(
    num_images: int,
    *,
    canvas: int,
    digit_size: int = 28,
    num_clutter: int = 0,
    clutter_size: int = 8,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Draw where every digit and clutter piece goes; all integer pixel offsets, ``int64``.

    Returns ``{"digit_xy": (N, 2), "clutter_src": (N, P), "clutter_from": (N, P, 2),
    "clutter_xy": (N, P, 2)}``: the top-left ``(x, y)`` of each digit on the canvas, the index of
    each piece's source digit (never the image itself), the top-left of the piece inside its source,
    and the top-left of the piece on the canvas.

    >>> lay = draw_layout(5, canvas=60, num_clutter=4, seed=0)
    >>> lay["digit_xy"].shape, lay["clutter_xy"].shape
    (torch.Size([5, 2]), torch.Size([5, 4, 2]))
    """
    check_positive(num_images, "num_images", integer=True)
    check_positive(canvas, "canvas", integer=True)
    check_positive(digit_size, "digit_size", integer=True)
    check_positive(num_clutter, "num_clutter", integer=True, allow_zero=True)
    check_positive(clutter_size, "clutter_size", integer=True)
    check_type(seed, "seed", int)
    if canvas < digit_size:
        raise ValueError(f"canvas must be >= the digit size {digit_size}, got {canvas}")
    if clutter_size > digit_size:
        raise ValueError(f"clutter_size must be <= the digit size {digit_size}, got {clutter_size}")
    if num_clutter > 0 and num_images < 2:
        raise ValueError(
            f"clutter is cut from other digits: need at least 2 images, got num_images={num_images}"
        )
    g = torch.Generator().manual_seed(seed)
    n, p = num_images, num_clutter
    digit_xy = torch.randint(0, canvas - digit_size + 1, (n, 2), generator=g)
    shift = torch.randint(1, max(n, 2), (n, p), generator=g)  # 1..n-1: never the image itself
    clutter_src = (torch.arange(n)[:, None] + shift) % n
    clutter_from = torch.randint(0, digit_size - clutter_size + 1, (n, p, 2), generator=g)
    clutter_xy = torch.randint(0, canvas - clutter_size + 1, (n, p, 2), generator=g)
    return {
        "digit_xy": digit_xy,
        "clutter_src": clutter_src,
        "clutter_from": clutter_from,
        "clutter_xy": clutter_xy,
    }


def _flat(xy: torch.Tensor, side: int, canvas: int) -> torch.Tensor:
    """Flat canvas indices of a ``side x side`` square at top-left ``xy (..., 2)``: ``(..., side * side)``."""
    r = torch.arange(side)
    offs = (r[:, None] * canvas + r[None, :]).reshape(-1)
    return (xy[..., 1:2] * canvas + xy[..., 0:1]) + offs


def render(
    images: torch.Tensor, layout: dict[str, torch.Tensor], *, canvas: int, clutter_size: int = 8
) -> torch.Tensor:
    """Paint digits and clutter pieces of ``layout`` onto blank canvases: ``uint8 (N, 1, canvas, canvas)``.

    ``canvas[n] = max(digit n at digit_xy[n], piece of images[clutter_src[n, j]] at clutter_xy[n, j] for j)``.

    >>> im = torch.full((3, 1, 28, 28), 7, dtype=torch.uint8)
    >>> render(im, draw_layout(3, canvas=40, num_clutter=2), canvas=40).shape
    torch.Size([3, 1, 40, 40])
    """
    check_tensor(images, "images", ndim=4, channels=1, floating=False, layout="(N, 1, h, w)")
    n, _, h, w = images.shape
    if h != w:
        raise ValueError(f"images must be square (N, 1, s, s), got shape {tuple(images.shape)}")
    if layout["digit_xy"].shape[0] != n:
        raise ValueError(f"layout is for {layout['digit_xy'].shape[0]} images, got {n} images")
    s = clutter_size
    digits = images[:, 0]
    out = torch.empty(n, canvas * canvas, dtype=images.dtype)
    ar = torch.arange(s)
    for a in range(0, n, _CHUNK):
        b = min(a + _CHUNK, n)
        idx = [_flat(layout["digit_xy"][a:b], h, canvas)]
        val = [digits[a:b].reshape(b - a, -1)]
        if layout["clutter_src"].shape[1] > 0:
            src = layout["clutter_src"][a:b][..., None, None]  # (n, P, 1, 1)
            fx, fy = layout["clutter_from"][a:b].unbind(-1)
            pieces = digits[
                src, fy[..., None, None] + ar[:, None], fx[..., None, None] + ar[None, :]
            ]  # (n,P,s,s)
            idx.append(_flat(layout["clutter_xy"][a:b], s, canvas).flatten(1))
            val.append(pieces.flatten(1))
        chunk = torch.zeros(b - a, canvas * canvas, dtype=images.dtype)
        chunk.scatter_reduce_(1, torch.cat(idx, 1), torch.cat(val, 1), reduce="amax")
        out[a:b] = chunk
    return out.reshape(n, 1, canvas, canvas)


def cluttered_mnist(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    canvas: int = 60,
    num_clutter: int = 4,
    clutter_size: int = 8,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cluttered translated MNIST: ``uint8 (N, 1, h, h)`` digits -> ``(N, 1, canvas, canvas)``, labels, boxes ``(N, 4)``.

    The paper's settings: ``canvas=60, num_clutter=4`` and ``canvas=100, num_clutter=8``, 8x8 pieces.

    >>> x = torch.randint(0, 255, (6, 1, 28, 28), dtype=torch.uint8)
    >>> imgs, labels, boxes = cluttered_mnist(x, torch.arange(6), seed=1)
    >>> imgs.shape, boxes.shape
    (torch.Size([6, 1, 60, 60]), torch.Size([6, 4]))
    """
    _check_digits(images, labels)
    n, _, h, w = images.shape
    if h != w:
        raise ValueError(f"images must be square (N, 1, s, s), got shape {tuple(images.shape)}")
    layout = draw_layout(
        n, canvas=canvas, digit_size=h, num_clutter=num_clutter, clutter_size=clutter_size, seed=seed
    )
    out = render(images, layout, canvas=canvas, clutter_size=clutter_size)
    boxes = ink_boxes(images) + layout["digit_xy"].repeat(1, 2)
    return out, labels.clone(), boxes


def translated_mnist(
    images: torch.Tensor, labels: torch.Tensor, *, canvas: int = 60, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Translated MNIST: each digit at a uniformly random place on a blank ``canvas x canvas`` image.

    Same as ``cluttered_mnist(..., num_clutter=0)``.

    >>> x = torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.uint8)
    >>> translated_mnist(x, torch.arange(2))[0].shape
    torch.Size([2, 1, 60, 60])
    """
    return cluttered_mnist(images, labels, canvas=canvas, num_clutter=0, seed=seed)


def _mean_std(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of ``uint8`` images scaled to ``[0, 1]``, accumulated in float64 chunks (bounded memory)."""
    total = total_sq = 0.0
    for a in range(0, images.shape[0], _CHUNK):
        x = images[a : a + _CHUNK].to(torch.float64).div_(255)
        total += float(x.sum())
        total_sq += float(x.square().sum())
    count = images.numel()
    mean = total / count
    return mean, max(total_sq / count - mean * mean, 0.0) ** 0.5


def _generated_mnist(
    name: str, *, data_dir: str | None, download: bool, seed: int, test_seed: int
) -> DatasetSplits:
    canvas, num_clutter = TASKS[name]
    check_type(seed, "seed", int)
    check_type(test_seed, "test_seed", int)
    base = load_dataset("mnist", data_dir=data_dir, download=download)
    tr, te = base.train, base.test
    if not isinstance(tr, ImageTensorDataset) or not isinstance(te, ImageTensorDataset):
        raise TypeError(f"the mnist loader must give in-memory ImageTensorDatasets, got {type(tr).__name__}")
    x_tr, y_tr, b_tr = cluttered_mnist(
        tr.images, tr.labels, canvas=canvas, num_clutter=num_clutter, seed=seed
    )
    x_te, y_te, b_te = cluttered_mnist(
        te.images, te.labels, canvas=canvas, num_clutter=num_clutter, seed=test_seed
    )
    mean, std = _mean_std(x_tr)
    return DatasetSplits(
        name=name,
        train=ImageTensorDataset(x_tr, y_tr, source=f"{name} train (seed {seed})"),
        test=ImageTensorDataset(x_te, y_te, source=f"{name} test (seed {test_seed})"),
        num_classes=base.num_classes,
        in_chans=1,
        image_size=(canvas, canvas),
        mean=(mean,),
        std=(std,),
        class_names=base.class_names,
        extras={"train_boxes": b_tr, "test_boxes": b_te},
    )


def _register(name: str) -> None:
    canvas, num_clutter = TASKS[name]

    def builder(
        *, data_dir: str | None = None, download: bool = False, seed: int = 0, test_seed: int = 10_000
    ) -> DatasetSplits:
        return _generated_mnist(name, data_dir=data_dir, download=download, seed=seed, test_seed=test_seed)

    builder.__name__ = name
    builder.__doc__ = (
        f"MNIST digits on a {canvas}x{canvas} canvas with {num_clutter} clutter pieces of 8x8 (Mnih et al. 2014);"
        " train from ``seed``, test from ``test_seed``; digit boxes in ``extras['train_boxes'/'test_boxes']``."
    )
    register_dataset(name)(builder)


for _name in TASKS:
    _register(_name)
