"""dasNet on Fashion-MNIST (or MNIST) or CIFAR-10: base CNN vs SNES-trained feedback attention, and the
speed of batched vs one-at-a-time population evaluation.

1. Train the base briefly on the training split minus a validation split (``--val`` images carved
   from the training set with ``--seed``): ``mnist_cnn`` with Adam (``--dataset fashion_mnist``), or
   ``resnet20`` with SGD, a cosine schedule and pad-4 crop + flip (``--dataset cifar10``, an ``.npz``
   such as the JPEG copy ``/work/shared/data/cifar10_jpeg.npz``). ``--base-only`` stops here.
2. Wrap it in ``DasNet`` and run SNES for ``--search-seconds`` (or exactly ``--search-iterations``):
   each iteration uses ``--batch`` random (un-augmented) training images as the fitness images.
   Every ``--eval-every`` iterations ``mu`` is scored on the validation split; the best ``mu`` on
   validation (iteration 0 = the base itself) is kept.
3. Evaluate the base and the validation-selected dasNet once on the same test images.
4. Time ``population_fitness`` for the ``p`` candidates in one batched call vs ``p`` calls of one.

    nice python benchmarks/bench_dasnet.py --data /usr/share/datasets/fashion-mnist --threads 1
    nice python benchmarks/bench_dasnet.py --base runs/bench_dasnet_s0/base.pt --speed-only \
        --batch 32 --population 32 --passes 2 --speed-rounds 7     # step 4 alone
    nice python benchmarks/bench_dasnet.py --dataset cifar10 --base-only --base-epochs 3 --out runs/c10
    nice python benchmarks/bench_dasnet.py --dataset cifar10 --base runs/c10/base.pt --sigma0 0.035 \
        --steer layer3.0.conv2,layer3.1.conv2,layer3.2.conv2 --search-iterations 150 --batch 32 \
        --eval-every 10 --val-eval 1000 --speed-rounds 0 --out runs/c10_s0

Writes ``results.json``, ``base.pt``, ``mu.pt`` (final and selected ``mu``), ``gains.png`` and
``changed.png`` under ``--out``
(``speed.json`` only, with ``--speed-only``; ``base.pt`` and ``base.json`` with ``--base-only``).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from visattn.data.npz import load_npz_arrays
from visattn.data.transforms import random_crop_flip
from visattn.models import create_model
from visattn.models.dasnet import DasNet
from visattn.models.mnist_cnn import MnistCNN

DEFAULT_DATA = {
    "fashion_mnist": "/usr/share/datasets/fashion-mnist",
    "cifar10": "/work/shared/data/cifar10_jpeg.npz",
}
DEFAULT_MODEL = {"fashion_mnist": "mnist_cnn", "cifar10": "resnet20"}


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` (uint8 images ``(N, 28, 28)``) from idx.gz files or an .npz."""
    if data.suffix == ".npz":
        z = np.load(data)
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    return (
        _idx(data / "train-images-idx3-ubyte.gz"),
        _idx(data / "train-labels-idx1-ubyte.gz"),
        _idx(data / "t10k-images-idx3-ubyte.gz"),
        _idx(data / "t10k-labels-idx1-ubyte.gz"),
    )


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    hits = sum(
        (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item() for i in range(0, len(x), batch)
    )
    return 100.0 * hits / len(x)


def make_base(args) -> torch.nn.Module:
    if args.model == "mnist_cnn":
        return MnistCNN()
    return create_model(args.model, num_classes=10, in_chans=3 if args.dataset == "cifar10" else 1)


def train_cifar_base(xtr_u8: torch.Tensor, ytr: torch.Tensor, prep, args) -> tuple[torch.nn.Module, float]:
    """SGD (Nesterov, momentum 0.9, weight decay 5e-4), batch 128, linear warm-up over the first 2% of
    the steps then cosine to 0, pad-4 random crop + horizontal flip; trained channels-last (faster on
    CPU), returned in the default memory format."""
    torch.manual_seed(args.seed)
    net = make_base(args).to(memory_format=torch.channels_last)
    decay = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
        lr=args.base_lr,
        momentum=0.9,
        nesterov=True,
    )
    steps = args.base_epochs * -(-len(xtr_u8) // 128)
    warm = max(1, steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + np.cos(np.pi * (s - warm) / (steps - warm)))
    )
    gen = torch.Generator().manual_seed(args.seed)
    t0, step = time.perf_counter(), 0
    net.train()
    for epoch in range(args.base_epochs):
        for idx in torch.randperm(len(xtr_u8), generator=gen).split(128):
            xb = prep(random_crop_flip(xtr_u8[idx], 4, 0.5, generator=gen))
            loss = F.cross_entropy(net(xb.contiguous(memory_format=torch.channels_last)), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(
                    f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} {time.perf_counter() - t0:.0f}s",
                    flush=True,
                )
    return net.to(memory_format=torch.contiguous_format).eval(), time.perf_counter() - t0


def train_base(xtr, ytr, args) -> tuple[MnistCNN, float]:
    torch.manual_seed(args.seed)
    net = MnistCNN()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    t0, step = time.perf_counter(), 0
    net.train()
    for _ in range(args.base_epochs):
        for idx in torch.randperm(len(xtr), generator=gen).split(128):
            loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return net.eval(), time.perf_counter() - t0


def recalibrate_bn(base: torch.nn.Module, x: torch.Tensor, n: int = 10000) -> torch.nn.Module:
    """A copy of ``base`` with its BatchNorm statistics re-estimated on ``x[:n]`` (a control: a briefly
    trained net's running statistics lag its weights, and gains before BN could just repair that)."""
    recal = copy.deepcopy(base)
    for m in recal.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    recal.train()
    with torch.no_grad():
        for i in range(0, min(n, len(x)), 500):
            recal(x[i : i + 500])
    return recal.eval()


def time_population(net: DasNet, x, y, rounds: int = 3) -> dict[str, float]:
    """Median seconds to score the ``p`` candidates: one batched call vs ``p`` single-candidate calls.

    Interleaved A/B rounds (batched, then one at a time, ``rounds`` times) after one warm-up round; both
    paths run the same code (``population_fitness``), the one-at-a-time path with ``P = 1``, so it
    shares pass 1 and the cached prefix only between its own passes. Process CPU time is the headline
    (the machine is shared, so wall time is noisy); wall time is reported too.
    """
    _, theta = net.search.ask()
    p = len(theta)

    def batched() -> torch.Tensor:
        return net.population_fitness(x, y, theta)

    def single() -> torch.Tensor:
        return torch.stack([net.population_fitness(x, y, theta[k : k + 1])[0] for k in range(p)])

    fb, fs = batched(), single()  # warm-up
    cpu: dict[str, list[float]] = {"batched": [], "single": []}
    wall: dict[str, list[float]] = {"batched": [], "single": []}
    for _ in range(rounds):
        for name, fn in (("batched", batched), ("single", single)):
            t, w = time.process_time(), time.perf_counter()
            fn()
            cpu[name].append(time.process_time() - t)
            wall[name].append(time.perf_counter() - w)
    tb, ts = statistics.median(cpu["batched"]), statistics.median(cpu["single"])
    wb, ws = statistics.median(wall["batched"]), statistics.median(wall["single"])
    return {
        "population": p,
        "images": len(x),
        "passes": net.passes,
        "max_images": net.max_images,
        "channels_last": net.channels_last,
        "rounds": rounds,
        "batched_s": tb,
        "one_at_a_time_s": ts,
        "batched_candidates_per_s": p / tb,
        "one_at_a_time_candidates_per_s": p / ts,
        "speedup": ts / tb,
        "speedup_min_max": [
            min(cpu["single"]) / max(cpu["batched"]),
            max(cpu["single"]) / min(cpu["batched"]),
        ],
        "wall_batched_s": wb,
        "wall_one_at_a_time_s": ws,
        "wall_speedup": ws / wb,
        "max_abs_fitness_diff": (fb - fs).abs().max().item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DEFAULT_DATA), default="fashion_mnist")
    ap.add_argument("--data", type=Path, default=None, help="idx.gz folder or .npz (default per --dataset)")
    ap.add_argument(
        "--model", choices=["mnist_cnn", "resnet20"], default=None, help="base (default per --dataset)"
    )
    ap.add_argument("--out", type=Path, default=Path("runs/bench_dasnet"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="data split and base training")
    ap.add_argument("--search-seed", type=int, default=0)
    ap.add_argument("--val", type=int, default=5000)
    ap.add_argument("--base-epochs", type=int, default=1)
    ap.add_argument("--base-lr", type=float, default=0.1, help="peak SGD lr of the CIFAR base")
    ap.add_argument("--base-only", action="store_true", help="train the base, evaluate it, and stop")
    ap.add_argument(
        "--recalibrate-bn", action="store_true", help="re-estimate the base's BN statistics first"
    )
    ap.add_argument("--base", type=Path, default=None, help="load this base.pt instead of training one")
    ap.add_argument("--train-limit", type=int, default=None, help="use only this many training images")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64, help="fitness images per SNES iteration")
    ap.add_argument("--population", type=int, default=None)
    ap.add_argument("--sigma0", type=float, default=0.05)
    ap.add_argument("--eta-mu", type=float, default=None, help="SNES step of mu (default 1)")
    ap.add_argument("--steer", type=str, default=None, help="comma-separated layer names")
    ap.add_argument("--search-seconds", type=float, default=180.0)
    ap.add_argument(
        "--search-iterations",
        type=int,
        default=None,
        help="run exactly this many SNES iterations (not seconds)",
    )
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--val-eval", type=int, default=2000, help="validation images scored during the search")
    ap.add_argument(
        "--speed-only", action="store_true", help="only time batched vs one-at-a-time scoring (needs --base)"
    )
    ap.add_argument(
        "--speed-rounds", type=int, default=3, help="interleaved A/B timing rounds (0: no timing)"
    )
    ap.add_argument("--max-images", type=int, default=64, help="DasNet max_images (images per base forward)")
    args = ap.parse_args()
    args.data = Path(DEFAULT_DATA[args.dataset]) if args.data is None else args.data
    args.model = DEFAULT_MODEL[args.dataset] if args.model is None else args.model
    if args.speed_only and args.base is None:
        ap.error("--speed-only needs --base")
    if args.speed_only and args.speed_rounds < 1:
        ap.error("--speed-only needs --speed-rounds >= 1")
    if args.dataset == "cifar10" and args.model == "mnist_cnn":
        ap.error("--dataset cifar10 needs a 3-channel base, e.g. --model resnet20")
    if args.dataset != "cifar10" and args.model != "mnist_cnn":
        ap.error(f"--model {args.model} is trained here only with --dataset cifar10")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    if args.dataset == "cifar10":  # uint8 (N, 3, 32, 32); training images stay uint8 (augmented per batch)
        arr = load_npz_arrays(args.data)
        perm = np.random.default_rng(args.seed).permutation(len(arr["x_train"]))
        val_idx, tr_idx = perm[: args.val], perm[args.val :][: args.train_limit]
        xtr = arr["x_train"][torch.from_numpy(tr_idx)]
        cmean = xtr.float().mean(dim=(0, 2, 3)).view(1, 3, 1, 1) / 255.0
        cstd = xtr.float().std(dim=(0, 2, 3)).view(1, 3, 1, 1) / 255.0

        def prep_c(a: torch.Tensor) -> torch.Tensor:
            return (a.float() / 255.0 - cmean) / cstd

        ytr = arr["y_train"][torch.from_numpy(tr_idx)]
        xva, yva = (
            prep_c(arr["x_train"][torch.from_numpy(val_idx)]),
            arr["y_train"][torch.from_numpy(val_idx)],
        )
        xte, yte = prep_c(arr["x_test"]), arr["y_test"]

        def fetch(i):
            return prep_c(xtr[i])
    else:
        x_train, y_train, x_test, y_test = load(args.data)
        perm = np.random.default_rng(args.seed).permutation(len(x_train))
        val_idx, tr_idx = perm[: args.val], perm[args.val :][: args.train_limit]
        mean, std = x_train[tr_idx].mean() / 255.0, x_train[tr_idx].std() / 255.0

        def prep(a):
            return ((torch.from_numpy(np.ascontiguousarray(a)).float() / 255.0 - mean) / std)[:, None]

        xtr, ytr = prep(x_train[tr_idx]), torch.from_numpy(y_train[tr_idx].astype(np.int64))
        xva, yva = prep(x_train[val_idx]), torch.from_numpy(y_train[val_idx].astype(np.int64))
        xte, yte = prep(x_test), torch.from_numpy(y_test.astype(np.int64))

        def fetch(i):
            return xtr[i]

    if args.base is not None:
        base, base_time = make_base(args).eval(), 0.0
        base.load_state_dict(torch.load(args.base, weights_only=True))
    elif args.dataset == "cifar10":
        base, base_time = train_cifar_base(xtr, ytr, prep_c, args)
    else:
        base, base_time = train_base(xtr, ytr, args)
    if args.base_only:
        torch.save(base.state_dict(), args.out / "base.pt")
        recal = recalibrate_bn(base, fetch(slice(0, 10000)))
        res = {
            "data": str(args.data),
            "dataset": args.dataset,
            "model": args.model,
            "seed": args.seed,
            "base_epochs": args.base_epochs,
            "base_lr": args.base_lr,
            "train_images": len(xtr),
            "val_images": len(xva),
            "base_train_s": base_time,
            "base_val_top1": accuracy(base, xva, yva),
            "bn_recalibrated_base_val_top1": accuracy(recal, xva, yva),
            "test_images": len(xte),
            "base_test_top1": accuracy(base, xte, yte),
            "bn_recalibrated_base_test_top1": accuracy(recal, xte, yte),
            "total_s": time.perf_counter() - t_start,
            "total_cpu_s": time.process_time(),
        }
        (args.out / "base.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return
    if args.recalibrate_bn:
        base = recalibrate_bn(base, fetch(slice(0, 10000)))
    torch.save(base.state_dict(), args.out / "base.pt")
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    steer = [s.strip() for s in args.steer.split(",")] if args.steer else None
    net = DasNet(
        base,
        num_classes=10,
        passes=args.passes,
        steer=steer,
        population=args.population,
        sigma0=args.sigma0,
        eta_mu=args.eta_mu,
        seed=args.search_seed,
        max_images=args.max_images,
    )
    if args.speed_only:  # the candidates are drawn around mu = 0 (timing does not depend on theta)
        net.calibrate(fetch(slice(0, args.batch)))
        speed = time_population(net, fetch(slice(0, args.batch)), ytr[: args.batch], args.speed_rounds)
        res = {"data": str(args.data), "base": str(args.base), "threads": args.threads, "speed": speed}
        (args.out / "speed.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return
    xv, yv = xva[: args.val_eval], yva[: args.val_eval]
    base_val = accuracy(base, xv, yv)
    print(
        f"base trained in {base_time:.0f}s: val top1 {base_val:.2f}% (on {len(xv)}), policy d={net.policy_dim}, "
        f"p={net.search.population}",
        flush=True,
    )

    gen = torch.Generator().manual_seed(args.search_seed)
    best = {"iteration": 0, "val_top1": base_val, "mu": net.search.mu.clone()}
    history = []
    t0, c0, it = time.perf_counter(), time.process_time(), 0

    def searching() -> bool:
        if args.search_iterations is not None:
            return it < args.search_iterations
        return time.perf_counter() - t0 < args.search_seconds

    while searching():
        idx = torch.randint(0, len(xtr), (args.batch,), generator=gen)
        net.train()
        stats = net.train_step(fetch(idx), ytr[idx])
        it += 1
        if it % args.eval_every == 0:
            val = accuracy(net, xv, yv)
            history.append({"iteration": it, "t": time.perf_counter() - t0, "val_top1": val, **stats})
            print(
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in history[-1].items()}),
                flush=True,
            )
            if val > best["val_top1"]:
                best = {"iteration": it, "val_top1": val, "mu": net.search.mu.clone()}
    search_time, search_cpu = time.perf_counter() - t0, time.process_time() - c0
    unchanged = all(torch.equal(base_state[k], v) for k, v in net.base.state_dict().items())

    torch.save({"final_mu": net.search.mu.clone(), "best_mu": best["mu"]}, args.out / "mu.pt")
    net.search.mu.copy_(best["mu"])
    test_base = accuracy(base, xte, yte)
    test_das = accuracy(net, xte, yte)
    test_recal = accuracy(recalibrate_bn(base, fetch(slice(0, 10000))), xte, yte)
    speed = (
        time_population(net, fetch(slice(0, args.batch)), ytr[: args.batch], args.speed_rounds)
        if args.speed_rounds > 0
        else None
    )
    from visattn.viz.gains import dasnet_report

    rep = dasnet_report(net, xte[:512], yte[:512], args.out, images=4)
    res = {
        "data": str(args.data),
        "dataset": args.dataset,
        "model": args.model,
        "base": str(args.base),
        "seed": args.seed,
        "search_seed": args.search_seed,
        "passes": args.passes,
        "policy_dim": net.policy_dim,
        "population": net.search.population,
        "batch": args.batch,
        "sigma0": args.sigma0,
        "eta_mu": net.search.eta_mu,
        "steer": net.steer,
        "base_epochs": args.base_epochs,
        "recalibrate_bn": args.recalibrate_bn,
        "base_train_s": base_time,
        "search_iterations": it,
        "search_iterations_fixed": args.search_iterations is not None,
        "search_s": search_time,
        "search_cpu_s": search_cpu,
        "best_val_iteration": best["iteration"],
        "val_images": len(xv),
        "base_val_top1": base_val,
        "best_val_top1": best["val_top1"],
        "test_images": len(xte),
        "base_test_top1": test_base,
        "dasnet_test_top1": test_das,
        "bn_recalibrated_base_test_top1": test_recal,
        "base_weights_unchanged": unchanged,
        "speed": speed,
        "history": history,
        "test512_changed": rep["changed"],
        "test512_fixed": rep["fixed"],
        "test512_broken": rep["broken"],
        "total_s": time.perf_counter() - t_start,
        "total_cpu_s": time.process_time(),
    }
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
