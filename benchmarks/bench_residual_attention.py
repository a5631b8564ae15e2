"""Residual Attention Network (Wang et al., CVPR 2017) benchmarks on CPU.

Sections (``--what``):

* ``size``: parameters and multiply-adds of attention56/92 (224x224) and the CIFAR variants (32x32)
  against the paper. Multiply-adds = ``torch.utils.flop_counter`` FLOPs / 2 (it counts 2 FLOPs per
  multiply-add of convolutions and matmuls; BN, ReLU, pooling, interpolation and the mask's element-wise
  ops are not counted, as in the paper's figures).
* ``speed``: one thread, interleaved rounds, medians. Inference at batch 1, 224x224 (eval mode,
  ``torch.inference_mode``) of ``attention56`` vs torchvision's ``resnet50`` and ``resnet152`` (random
  weights), and torchvision's ``resnet50`` with its stem max-pool computed by visattn's kernel (a peer
  without the slow NCHW max-pool); medians and per-round paired ratios; a training step (forward,
  cross-entropy, backward, SGD step) at batch 32, 32x32, of ``attention92_cifar`` vs visattn's
  ``resnet56``.
* ``ablation``: attention residual learning vs naive attention at two depths (Attention-56/92, CIFAR
  layout) and the three mask activations (Attention-56), on a Fashion-MNIST subset, a fixed small budget,
  3 seeds, through the library's engine (``visattn.train.Trainer``, SGD, warm-up + cosine); BN statistics
  re-estimated on training batches at the end of each epoch (a ``Trainer`` hook); the epoch is chosen
  on a validation split carved from the training set; the test subset is evaluated once, at that epoch.
  (Until 2026-12-06 this section had its own loop with ``OneCycleLR`` and a fixed split;
  docs/results/residual_attention.md's ablation figures were measured with it.)

Usage::

    python benchmarks/bench_residual_attention.py --what size speed
    python benchmarks/bench_residual_attention.py --what ablation
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import visattn
from visattn.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import memory_dataset, train_config, write_result  # noqa: E402

PAPER = {"attention56": (31.9, 6.2), "attention92": (51.3, 10.4), "attention92_cifar": (1.9, None)}


def size_table() -> list[dict]:
    rows = []
    for name, hw, classes in (
        ("attention56", 224, 1000),
        ("attention92", 224, 1000),
        ("attention56_cifar", 32, 10),
        ("attention92_cifar", 32, 10),
    ):
        with torch.device("meta"):
            model = visattn.create_model(name, num_classes=classes)
            x = torch.empty(1, 3, hw, hw)
        with FlopCounterMode(display=False) as counter:
            model(x)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        gmacs = counter.get_total_flops() / 2e9
        ref_p, ref_g = PAPER.get(name, (None, None))
        rows.append(
            {
                "model": name,
                "input": f"{hw}x{hw}",
                "params_M": round(params, 2),
                "paper_params_M": ref_p,
                "params_rel": None if ref_p is None else round(params / ref_p - 1, 4),
                "GMACs": round(gmacs, 3),
                "paper_GMACs": ref_g,
                "GMACs_rel": None if ref_g is None else round(gmacs / ref_g - 1, 4),
            }
        )
    return rows


def _interleaved(cases: dict, rounds: int) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Median wall and thread-CPU seconds per call of each ``fn`` in ``cases``, interleaved by round
    (the order rotating each round), and the per-round thread-CPU seconds.

    On a shared machine the CPU time of the (single) compute thread is the steadier figure: it does not
    count the time the thread waits for a core.
    """
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():  # warm-up
        fn()
    names = list(cases)
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            w0, c0 = time.perf_counter(), time.thread_time()
            cases[k]()
            cpu[k].append(time.thread_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    medians = {k: {"wall": statistics.median(wall[k]), "cpu": statistics.median(cpu[k])} for k in cases}
    return medians, cpu


def _paired(cpu: dict[str, list[float]], a: str, b: str) -> dict[str, float]:
    """Median, min and max over rounds of the per-round CPU-time ratio ``a / b``."""
    ratios = [x / y for x, y in zip(cpu[a], cpu[b])]
    return {k: round(f(ratios), 3) for k, f in (("median", statistics.median), ("min", min), ("max", max))}


class _FastMaxPool(torch.nn.Module):
    """torchvision's stem max-pool (3x3, stride 2, padding 1) computed by visattn's ``_maxpool``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from visattn.attention.residual import _maxpool

        return _maxpool(x)


def speed(rounds: int) -> dict:
    import torchvision

    torch.manual_seed(0)
    r50_fast = torchvision.models.resnet50().eval()
    r50_fast.maxpool = _FastMaxPool()
    nets = {
        "attention56": visattn.create_model("attention56", num_classes=1000).eval(),
        "resnet50 (torchvision)": torchvision.models.resnet50().eval(),
        "resnet152 (torchvision)": torchvision.models.resnet152().eval(),
        # the same network with attention56's max-pool kernel (its NCHW stem max-pool is slow on CPU)
        "resnet50 (torchvision, visattn max-pool)": r50_fast,
    }
    x = torch.randn(1, 3, 224, 224)

    def infer(net):
        def run():
            with torch.inference_mode():
                net(x)

        return run

    load = [round(v, 2) for v in os.getloadavg()]
    inf, inf_cpu = _interleaved({k: infer(n) for k, n in nets.items()}, rounds)

    train_nets = {
        "attention92_cifar": visattn.create_model("attention92_cifar").train(),
        "resnet56": visattn.create_model("resnet56").train(),
    }
    xb, yb = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))

    def step(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def run():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), yb).backward()
            opt.step()

        return run

    tr, _ = _interleaved({k: step(n) for k, n in train_nets.items()}, max(3, rounds // 2))
    a56, r50, r152 = (inf[k] for k in ("attention56", "resnet50 (torchvision)", "resnet152 (torchvision)"))
    r50f = inf["resnet50 (torchvision, visattn max-pool)"]
    a92c, r56 = tr["attention92_cifar"], tr["resnet56"]
    return {
        "load_average_1_5_15min_at_start": load,
        "load_average_1_5_15min_at_end": [round(v, 2) for v in os.getloadavg()],
        "inference_batch1_224_ms": {k: {c: round(v[c] * 1e3, 1) for c in v} for k, v in inf.items()},
        "attention56_over_resnet50": {c: round(a56[c] / r50[c], 3) for c in a56},
        "attention56_over_resnet152": {c: round(a56[c] / r152[c], 3) for c in a56},
        "attention56_over_resnet50_visattn_maxpool": {c: round(a56[c] / r50f[c], 3) for c in a56},
        "paired_cpu_ratio_attention56_over": {
            k: _paired(inf_cpu, "attention56", k) for k in nets if k != "attention56"
        },
        "train_step_batch32_32x32_ms": {k: {c: round(v[c] * 1e3, 1) for c in v} for k, v in tr.items()},
        "attention92_cifar_over_resnet56": {c: round(a92c[c] / r56[c], 3) for c in a92c},
        "rounds": rounds,
    }


def _load_fmnist(
    root: Path | None, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fashion-MNIST through ``visattn.data``, as ``uint8 (N, 1, size, size)`` (anti-aliased bilinear)."""
    from visattn.data import load_dataset

    splits = load_dataset("fashion_mnist", data_dir=None if root is None else str(root))

    def resize(images: torch.Tensor) -> torch.Tensor:
        if size == images.shape[-1]:
            return images
        x = F.interpolate(
            images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        return x.round().clamp(0, 255).to(torch.uint8)

    return (
        resize(splits.train.images),
        splits.train.labels,
        resize(splits.test.images),
        splits.test.labels,
    )


class RecalibratingTrainer(Trainer):
    """The engine's ``Trainer`` plus this recipe's hook: after each epoch, BN statistics re-estimated.

    After a few dozen steps the running averages (momentum 0.1) still remember the random initial network,
    so an eval-mode model scores at chance; the usual fix for short runs is to re-estimate them as exact
    averages over ``batches`` training batches before validating.
    """

    recal_batches = 8

    def train_epoch(self, batches: Any = None) -> dict[str, float]:
        out = super().train_epoch(batches)
        view = self.loaders.train.dataset
        n = min(len(view), self.cfg.batch_size * self.recal_batches)
        x, _ = self.train_loader.collate_fn(view.__getitems__(list(range(n))))
        bns = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.model.train()
        with torch.no_grad():
            for i in range(0, n, self.cfg.batch_size):
                self.model(x[i : i + self.cfg.batch_size])
        for m, mom in zip(bns, saved):
            m.momentum = mom
        return out


def ablation(
    data: Path | None,
    size: int,
    n_train: int,
    n_val: int,
    n_test: int,
    epochs: int,
    seeds: list[int],
    runs: Path = Path("runs/bench_residual_attention"),
) -> list[dict]:
    """Each configuration through the engine on an in-memory Fashion-MNIST subset (``visattn.data``)."""
    xtr_all, ytr_all, xte, yte = _load_fmnist(data, size)
    split = torch.Generator().manual_seed(1234)
    perm = torch.randperm(len(xtr_all), generator=split)
    pool = perm[: n_train + n_val]  # the engine carves n_val of these for validation (seeded by the run)
    te = torch.randperm(len(xte), generator=split)[:n_test]
    name = memory_dataset(
        f"fmnist{size}_ablation",
        (xtr_all[pool], ytr_all[pool]),
        (xte[te], yte[te]),
        mean=(0.286,),
        std=(0.353,),
        num_classes=10,
    )
    configs = [
        ("attention56_cifar", "mixed", True),
        ("attention56_cifar", "mixed", False),
        ("attention92_cifar", "mixed", True),
        ("attention92_cifar", "mixed", False),
        ("attention56_cifar", "channel", True),
        ("attention56_cifar", "spatial", True),
    ]
    rows = []
    for model, mask, residual in configs:
        for seed in seeds:
            cfg = train_config(
                model=model,
                model_kwargs={"mask": mask, "residual": residual},
                data=name,
                val_fraction=n_val / (n_train + n_val),
                augment="none",
                epochs=epochs,
                batch_size=64,
                eval_batch_size=500,
                lr=0.05,
                momentum=0.9,
                nesterov=True,
                weight_decay=1e-4,
                schedule="cosine",
                warmup_epochs=0.3 * epochs,
                seed=seed,
                out=str(runs / f"{model}_{mask}_{'arl' if residual else 'naive'}_s{seed}"),
            )
            t0 = time.perf_counter()
            summary = RecalibratingTrainer(cfg).run()
            row = {
                "model": model,
                "mask": mask,
                "residual": residual,
                "seed": seed,
                "val_acc": round(summary["best_val_top1"] / 100, 4),
                "test_acc": round(summary["test_top1"] / 100, 4),
                "train_s": round(time.perf_counter() - t0, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", nargs="+", choices=("size", "speed", "ablation"), default=["size", "speed"])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    ap.add_argument(
        "--data", type=Path, default=None, help="Fashion-MNIST (default: where visattn.data finds it)"
    )
    ap.add_argument("--img-size", type=int, default=28, help="ablation image side (Fashion-MNIST is 28)")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results: dict = {"torch": torch.__version__}
    if "size" in args.what:
        results["size"] = size_table()
        print(json.dumps(results["size"], indent=1), flush=True)
    if "speed" in args.what:
        results["speed"] = speed(args.rounds)
        print(json.dumps(results["speed"], indent=1), flush=True)
    if "ablation" in args.what:
        results["ablation"] = ablation(
            args.data, args.img_size, args.n_train, args.n_val, args.n_test, args.epochs, args.seeds
        )
    write_result(args.out, results)


if __name__ == "__main__":
    main()
