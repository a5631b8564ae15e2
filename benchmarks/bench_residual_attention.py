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
  3 seeds; BN statistics re-estimated on training batches at the end of each epoch; the epoch is chosen
  on a validation split carved from the training set; the test subset is evaluated once, at that epoch.

Usage::

    python benchmarks/bench_residual_attention.py --what size speed
    python benchmarks/bench_residual_attention.py --what ablation --data /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import visattn

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


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_fmnist(root: Path, size: int) -> tuple[torch.Tensor, ...]:
    xs = {s: _idx(root / f"{s}-images-idx3-ubyte.gz") for s in ("train", "t10k")}
    ys = {s: _idx(root / f"{s}-labels-idx1-ubyte.gz") for s in ("train", "t10k")}

    def norm(a: np.ndarray) -> torch.Tensor:
        x = ((torch.from_numpy(a.copy()).float() / 255.0 - 0.286) / 0.353).unsqueeze(1)
        if size != x.shape[-1]:  # a smaller image for a CPU budget (anti-aliased bilinear)
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x

    return (
        norm(xs["train"]),
        torch.from_numpy(ys["train"].astype(np.int64)),
        norm(xs["t10k"]),
        torch.from_numpy(ys["t10k"].astype(np.int64)),
    )


def _accuracy(net, x, y, batch: int = 500) -> float:
    net.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            correct += (net(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return correct / len(x)


def _recalibrate_bn(net: torch.nn.Module, x: torch.Tensor, batch: int = 128, batches: int = 8) -> None:
    """Re-estimate BN running statistics as exact averages over ``batches`` training batches.

    After a few dozen steps the running averages (momentum 0.1) still remember the random initial
    network, so an eval-mode model scores at chance; this is the usual fix for short runs.
    """
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for i in range(0, min(len(x), batch * batches), batch):
            net(x[i : i + batch])
    for m, mom in zip(bns, saved):
        m.momentum = mom


def ablation(
    data: Path, size: int, n_train: int, n_val: int, n_test: int, epochs: int, seeds: list[int]
) -> list[dict]:
    xtr_all, ytr_all, xte, yte = _load_fmnist(data, size)
    split = torch.Generator().manual_seed(1234)
    perm = torch.randperm(len(xtr_all), generator=split)
    tr_idx, va_idx = perm[:n_train], perm[n_train : n_train + n_val]
    xtr, ytr, xva, yva = xtr_all[tr_idx], ytr_all[tr_idx], xtr_all[va_idx], ytr_all[va_idx]
    te = torch.randperm(len(xte), generator=split)[:n_test]
    xte, yte = xte[te], yte[te]
    configs = [
        ("attention56_cifar", "mixed", True),
        ("attention56_cifar", "mixed", False),
        ("attention92_cifar", "mixed", True),
        ("attention92_cifar", "mixed", False),
        ("attention56_cifar", "channel", True),
        ("attention56_cifar", "spatial", True),
    ]
    rows = []
    for name, mask, residual in configs:
        for seed in seeds:
            torch.manual_seed(seed)
            net = visattn.create_model(name, in_chans=1, num_classes=10, mask=mask, residual=residual)
            steps = epochs * (n_train // 64)
            opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=True)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps)
            best, best_state, t0 = -1.0, None, time.perf_counter()
            g = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                net.train()
                order = torch.randperm(n_train, generator=g)
                for i in range(0, n_train - 63, 64):
                    idx = order[i : i + 64]
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(net(xtr[idx]), ytr[idx]).backward()
                    opt.step()
                    sched.step()
                _recalibrate_bn(net, xtr)
                val = _accuracy(net, xva, yva)
                if val > best:
                    best, best_state = val, {k: v.clone() for k, v in net.state_dict().items()}
            net.load_state_dict(best_state)
            row = {
                "model": name,
                "mask": mask,
                "residual": residual,
                "seed": seed,
                "val_acc": round(best, 4),
                "test_acc": round(_accuracy(net, xte, yte), 4),
                "train_s": round(time.perf_counter() - t0, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", nargs="+", choices=("size", "speed", "ablation"), default=["size", "speed"])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    ap.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
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
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
