"""dasNet on Fashion-MNIST (or MNIST): base CNN vs SNES-trained feedback attention, and the speed of
batched vs one-at-a-time population evaluation.

1. Train ``mnist_cnn`` briefly (Adam) on the training split minus a validation split (``--val``
   images carved from the training set with ``--seed``).
2. Wrap it in ``DasNet`` and run SNES for ``--search-seconds``: each iteration uses ``--batch`` random
   training images as the fitness images. Every ``--eval-every`` iterations ``mu`` is scored on the
   validation split; the best ``mu`` on validation (iteration 0 = the base itself) is kept.
3. Evaluate the base and the validation-selected dasNet once on the same test images.
4. Time ``population_fitness`` for the ``p`` candidates in one batched call vs ``p`` calls of one.

    nice python benchmarks/bench_dasnet.py --data /usr/share/datasets/fashion-mnist --threads 1
    nice python benchmarks/bench_dasnet.py --base runs/bench_dasnet_s0/base.pt --speed-only \
        --batch 32 --population 32 --passes 2 --speed-rounds 7     # step 4 alone

Writes ``results.json``, ``base.pt``, ``gains.png`` and ``changed.png`` under ``--out``
(``speed.json`` only, with ``--speed-only``).
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

from visattn.models.dasnet import DasNet
from visattn.models.mnist_cnn import MnistCNN


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
        for i in range(0, n, 500):
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
    ap.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_dasnet"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="data split and base training")
    ap.add_argument("--search-seed", type=int, default=0)
    ap.add_argument("--val", type=int, default=5000)
    ap.add_argument("--base-epochs", type=int, default=1)
    ap.add_argument(
        "--recalibrate-bn", action="store_true", help="re-estimate the base's BN statistics first"
    )
    ap.add_argument("--base", type=Path, default=None, help="load this base.pt instead of training one")
    ap.add_argument("--train-limit", type=int, default=None, help="use only this many training images")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64, help="fitness images per SNES iteration")
    ap.add_argument("--population", type=int, default=None)
    ap.add_argument("--sigma0", type=float, default=0.05)
    ap.add_argument("--steer", type=str, default=None, help="comma-separated layer names")
    ap.add_argument("--search-seconds", type=float, default=180.0)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--val-eval", type=int, default=2000, help="validation images scored during the search")
    ap.add_argument(
        "--speed-only", action="store_true", help="only time batched vs one-at-a-time scoring (needs --base)"
    )
    ap.add_argument("--speed-rounds", type=int, default=3, help="interleaved A/B timing rounds")
    ap.add_argument("--max-images", type=int, default=64, help="DasNet max_images (images per base forward)")
    args = ap.parse_args()
    if args.speed_only and args.base is None:
        ap.error("--speed-only needs --base")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    x_train, y_train, x_test, y_test = load(args.data)
    perm = np.random.default_rng(args.seed).permutation(len(x_train))
    val_idx, tr_idx = perm[: args.val], perm[args.val :][: args.train_limit]
    mean, std = x_train[tr_idx].mean() / 255.0, x_train[tr_idx].std() / 255.0

    def prep(a):
        return ((torch.from_numpy(np.ascontiguousarray(a)).float() / 255.0 - mean) / std)[:, None]

    xtr, ytr = prep(x_train[tr_idx]), torch.from_numpy(y_train[tr_idx].astype(np.int64))
    xva, yva = prep(x_train[val_idx]), torch.from_numpy(y_train[val_idx].astype(np.int64))
    xte, yte = prep(x_test), torch.from_numpy(y_test.astype(np.int64))

    if args.base is not None:
        base, base_time = MnistCNN().eval(), 0.0
        base.load_state_dict(torch.load(args.base, weights_only=True))
    else:
        base, base_time = train_base(xtr, ytr, args)
    if args.recalibrate_bn:
        base = recalibrate_bn(base, xtr)
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
        seed=args.search_seed,
        max_images=args.max_images,
    )
    if args.speed_only:  # the candidates are drawn around mu = 0 (timing does not depend on theta)
        net.calibrate(xtr[: args.batch])
        speed = time_population(net, xtr[: args.batch], ytr[: args.batch], args.speed_rounds)
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
    while time.perf_counter() - t0 < args.search_seconds:
        idx = torch.randint(0, len(xtr), (args.batch,), generator=gen)
        net.train()
        stats = net.train_step(xtr[idx], ytr[idx])
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

    net.search.mu.copy_(best["mu"])
    test_base = accuracy(base, xte, yte)
    test_das = accuracy(net, xte, yte)
    test_recal = accuracy(recalibrate_bn(base, xtr), xte, yte)
    speed = time_population(net, xtr[: args.batch], ytr[: args.batch], args.speed_rounds)
    from visattn.viz.gains import dasnet_report

    rep = dasnet_report(net, xte[:512], yte[:512], args.out, images=4)
    res = {
        "data": str(args.data),
        "seed": args.seed,
        "search_seed": args.search_seed,
        "passes": args.passes,
        "policy_dim": net.policy_dim,
        "population": net.search.population,
        "batch": args.batch,
        "sigma0": args.sigma0,
        "steer": net.steer,
        "base_epochs": args.base_epochs,
        "recalibrate_bn": args.recalibrate_bn,
        "base_train_s": base_time,
        "search_iterations": it,
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
