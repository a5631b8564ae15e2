"""Regenerate the docs' mechanism figures (docs/figures/*.png) with visattn's own renderers.

    python docs/gen_figures.py            # writes docs/figures/{se,residual_attention,...}.png

Every figure is drawn on synthetic images (a square, a plus or a ring, at a random place, with a little
clutter; the class is the shape), with no data set and no download. SE, residual attention and the
spatial transformer are first trained on that toy task for 100, 60 and 150 Adam steps (about a minute of
CPU time in all, one thread); RAM and dasNet are drawn at their initialisation, dasNet with a random policy
(their training takes REINFORCE or evolution, far beyond a figure script). The figures show what each renderer draws and how to read it,
not what a model trained on real data learned: the results pages hold those numbers. Seeded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import visattn
from visattn.viz import attention_views, plot_excitations, plot_gain_evolution, plot_glimpses, plot_warps
from visattn.viz.gains import gain_trajectories

OUT = Path(__file__).resolve().parent / "figures"
MAX_BYTES = 100_000


def synthetic_shapes(
    n: int, size: int, *, seed: int = 0, clutter: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``(n, 1, size, size)`` in ``[0, 1]`` and labels ``(n,)``: 0 square, 1 plus, 2 ring."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    y = torch.randint(0, 3, (n,), generator=g)
    s = max(5, size // 4)  # the shape's side
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    c = (s - 1) / 2
    r = ((yy - c) ** 2 + (xx - c) ** 2).sqrt()
    shapes = [
        torch.ones(s, s),
        ((yy - c).abs() <= s / 8 + 0.5) | ((xx - c).abs() <= s / 8 + 0.5),
        (r <= c + 0.5) & (r >= c - 1.5),
    ]
    for i in range(n):
        for _ in range(clutter):  # small bright bits elsewhere
            py, px = torch.randint(0, size - 2, (2,), generator=g).tolist()
            x[i, 0, py : py + 2, px : px + 2] = 0.5
        py, px = torch.randint(0, size - s + 1, (2,), generator=g).tolist()
        x[i, 0, py : py + s, px : px + s] = torch.maximum(
            x[i, 0, py : py + s, px : px + s], shapes[y[i]].float()
        )
    return x, y


def train_toy(net: torch.nn.Module, size: int, steps: int, *, batch: int = 32, lr: float = 1e-3) -> float:
    """Adam on fresh synthetic batches for ``steps`` steps; returns the accuracy on 256 new images."""
    torch.manual_seed(0)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    net.train()
    for step in range(steps):
        x, y = synthetic_shapes(batch, size, seed=1000 + step)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = synthetic_shapes(256, size, seed=99)
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def fig_se(path: Path) -> None:
    """SE: mean channel excitation per class, block by block (Hu et al., Fig. 6)."""
    net = visattn.create_model("se_resnet20", num_classes=3, in_chans=1)
    print(f"se_resnet20 toy accuracy {train_toy(net, 32, 100):.3f}")
    x, y = synthetic_shapes(48, 32)
    blocks = ["layer1.0.attn", "layer2.0.attn", "layer3.2.attn"]  # first, middle and last stage
    plot_excitations(net, (x, y), path, class_names=["square", "plus", "ring"], num_classes=3, blocks=blocks)


def fig_residual_attention(path: Path) -> None:
    """Residual attention: each module's soft mask (channel mean) over the input."""
    net = visattn.create_model("attention56_cifar", num_classes=3, in_chans=1)
    print(f"attention56_cifar toy accuracy {train_toy(net, 32, 60):.3f}")
    x, _ = synthetic_shapes(4, 32, seed=1)
    (view,) = [v for v in attention_views(net, x, show=4, with_gradcam=False) if v.title == "where it looks"]
    path.write_bytes(view.png)


def fig_spatial_transformer(path: Path) -> None:
    """Spatial transformer: input, transformed input and the sampling grid on the input."""
    net = visattn.create_model("st_cnn_mnist", num_classes=3, in_chans=1)
    print(f"st_cnn_mnist toy accuracy {train_toy(net, 28, 150):.3f}")
    x, _ = synthetic_shapes(3, 28, seed=2)
    plot_warps(net, x, path, max_images=3)


def fig_ram(path: Path) -> None:
    """RAM: the glimpse path and the multi-scale patches, as the model saw them."""
    torch.manual_seed(0)
    net = visattn.create_model("ram", num_glimpses=4, patch_size=12, num_scales=3).eval()
    x, y = synthetic_shapes(2, 60, seed=3, clutter=12)
    plot_glimpses(net, x, path, labels=y, max_images=2, dpi=60)


def fig_dasnet(path: Path) -> None:
    """dasNet: gains of the most-moved filters per pass, for a random policy ``theta``."""
    torch.manual_seed(0)
    base = visattn.create_model("mnist_cnn", num_classes=3).eval()
    net = visattn.create_model("dasnet", base=base, num_classes=3, passes=3, population=4).eval()
    with torch.no_grad():
        net.search.mu.normal_(0.0, 0.05)
    x, _ = synthetic_shapes(2, 28, seed=4)
    plot_gain_evolution(gain_trajectories(net, x)["gains"], path, images=[0, 1], num_filters=4)


FIGURES = {
    "se": fig_se,
    "residual_attention": fig_residual_attention,
    "spatial_transformer": fig_spatial_transformer,
    "ram": fig_ram,
    "dasnet": fig_dasnet,
}


def shrink_png(path: Path, colours: int = 128) -> None:
    """Re-save a PNG with an adaptive palette of ``colours`` colours (plots lose nothing visible)."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT, help="folder for the PNGs (default docs/figures)")
    p.add_argument("names", nargs="*", help="figures to draw (default all)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or FIGURES:
        path = args.out / f"{name}.png"
        torch.manual_seed(0)  # each figure's model starts from the same weights whatever ran before
        FIGURES[name](path)
        shrink_png(path)
        size = path.stat().st_size
        print(f"{path}: {size / 1000:.1f} kB")
        if size > MAX_BYTES:
            raise SystemExit(f"{path} is {size} bytes, over the {MAX_BYTES}-byte budget for docs figures")


if __name__ == "__main__":
    main()
