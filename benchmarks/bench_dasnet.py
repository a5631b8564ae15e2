"""dasNet on Fashion-MNIST (or MNIST) or CIFAR-10: base CNN vs SNES-trained feedback attention, and the
speed of batched vs one-at-a-time population evaluation.

1. Train the base briefly on the training split minus a validation split (``--val`` images carved
   from the training set with ``--seed``): ``mnist_cnn`` with Adam (``--dataset fashion_mnist``), or
   ``resnet20`` with SGD, a cosine schedule and pad-4 crop + flip (``--dataset cifar10``, an ``.npz``
   such as the JPEG copy ``../shared/data/cifar10_jpeg.npz``), through the library's engine
   (``visattn.train.Trainer``). ``--base-only`` stops here.
2. Wrap it in ``DasNet`` and run SNES: with ``--search-iterations``, through the engine (``engine_search``:
   ``visattn.train.Trainer`` calls ``DasNet.train_step`` per batch, validation selects ``mu`` every
   ``--eval-every`` iterations, the base competes as iteration 0, the test set is scored once); with
   ``--search-seconds`` (a wall-clock budget the engine does not express) the script's own loop for ``--search-seconds`` (or exactly ``--search-iterations``):
   each iteration uses ``--batch`` random (un-augmented) training images as the fitness images.
   Every ``--eval-every`` iterations ``mu`` is scored on the validation split; the best ``mu`` on
   validation (iteration 0 = the base itself) is kept.
3. Evaluate the base and the validation-selected dasNet once on the same test images.
4. Time ``population_fitness`` for the ``p`` candidates in one batched call vs ``p`` calls of one.

    nice python benchmarks/bench_dasnet.py --threads 1
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
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from visattn.data import ImageTensorDataset, load_dataset
from visattn.data.npz import load_npz_arrays
from visattn.models import create_model
from visattn.models.dasnet import DasNet
from visattn.train import Trainer, safe_load

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import evaluate, memory_dataset, train_config, write_result  # noqa: E402

DEFAULT_DATA = {"fashion_mnist": None, "cifar10": "../shared/data/cifar10_jpeg.npz"}
DEFAULT_MODEL = {"fashion_mnist": "mnist_cnn", "cifar10": "resnet20"}


def load(dataset: str, data: Path | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x_train, y_train, x_test, y_test`` through ``visattn.data`` (images ``uint8 (N, C, H, W)``)."""
    if dataset == "cifar10":  # an .npz such as the JPEG copy ../shared/data/cifar10_jpeg.npz
        if data is None:
            raise SystemExit("--dataset cifar10 needs --data path/to/cifar10.npz")
        arr = load_npz_arrays(data)
        return arr["x_train"], arr["y_train"], arr["x_test"], arr["y_test"]
    splits = load_dataset(dataset, data_dir=None if data is None else str(data))
    return splits.train.images, splits.train.labels, splits.test.images, splits.test.labels


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Top-1 (%) by the benchmarks' one evaluation helper (the engine's ``evaluate``)."""
    return evaluate(model, (x, y), batch_size=batch)["top1"]


def train_base(
    xtr_u8: torch.Tensor, ytr: torch.Tensor, args: argparse.Namespace
) -> tuple[torch.nn.Module, float]:
    """The base, trained through the engine (``visattn.train.Trainer``) on exactly the training images given.

    ``mnist_cnn``: Adam (``adamw``, weight decay 0), lr 1e-3, constant, batch 128, no augmentation.
    ``resnet20`` (CIFAR-10): SGD (Nesterov, momentum 0.9, weight decay 5e-4), batch 128, linear warm-up over
    the first 2 % of the steps then cosine to 0, pad-4 random crop + horizontal flip, channels-last.
    No validation split inside the engine (``val_fraction=0``: the benchmark's own ``--val`` images are
    held out before) and no test pass (``test_at_end=False``: the test set is scored once, at the end).
    Returned in the default memory format, eval mode.
    """
    cifar = args.dataset == "cifar10"
    name = memory_dataset(
        f"dasnet_base_{args.dataset}",
        (xtr_u8, ytr),
        (xtr_u8[:1], ytr[:1]),  # never evaluated (test_at_end=False)
        num_classes=10,
        default_augment="pad_crop_flip" if cifar else "none",
    )
    common = dict(
        model=args.model,
        data=name,
        val_fraction=0.0,
        test_at_end=False,
        epochs=args.base_epochs,
        batch_size=128,
        seed=args.seed,
        out=str(args.out / "base_run"),
    )
    if cifar:
        steps = args.base_epochs * (len(xtr_u8) // 128)
        cfg = train_config(
            **common,
            lr=args.base_lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
            schedule="cosine",
            warmup_epochs=max(1, steps // 50) / max(1, steps) * args.base_epochs,
            channels_last=True,
        )
    else:
        cfg = train_config(**common, optimizer="adamw", lr=1e-3, weight_decay=0.0, schedule="constant")
    trainer = Trainer(cfg)
    summary = trainer.run()
    net = trainer.model.to(memory_format=torch.contiguous_format).eval()
    return net, summary["train_time_s"]


def make_base(args: argparse.Namespace) -> torch.nn.Module:
    return create_model(args.model, num_classes=10, in_chans=3 if args.dataset == "cifar10" else 1)


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


def engine_search(
    args: argparse.Namespace,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    base_val: float,
) -> tuple[DasNet, dict, list, int, float, float, torch.Tensor]:
    """The SNES search through the engine (``visattn.train.Trainer``; ``DasNet.train_step`` per batch).

    ``--search-iterations`` in periods of ``--eval-every`` iterations (the engine's epochs), ``--batch``
    un-augmented training images per iteration, ``mu`` scored on the ``--val-eval`` validation images after
    each period; the best on validation (the base itself competes: ``select_initial``) is tested once by the
    engine. Returns the selected net and what the results JSON reports.
    """
    x_tr, y_tr = train
    name = memory_dataset(
        f"dasnet_search_{args.dataset}",
        (x_tr, y_tr),
        test,
        num_classes=10,
        extras={"val": ImageTensorDataset(val[0], val[1], source="dasnet validation")},
    )
    steer = [s.strip() for s in args.steer.split(",")] if args.steer else None
    kwargs = {
        "base": str(args.out / "base.pt"),
        "base_model": args.model,
        "passes": args.passes,
        "steer": steer,
    }
    kwargs |= {"sigma0": args.sigma0, "seed": args.search_seed, "max_images": args.max_images}
    kwargs |= {k: v for k, v in (("population", args.population), ("eta_mu", args.eta_mu)) if v is not None}
    periods = -(-args.search_iterations // args.eval_every)
    cfg = train_config(
        model="dasnet",
        model_kwargs=kwargs,
        data=name,
        val_fraction=0.1,  # > 0: the validation images in extras["val"] are used
        augment="none",
        epochs=periods,
        max_steps_per_epoch=args.eval_every,
        batch_size=args.batch,
        eval_batch_size=500,
        select_initial=True,
        seed=args.search_seed,
        out=str(args.out / "search_run"),
    )
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = Trainer(cfg)
    summary = trainer.run()  # ends with the best-on-validation mu loaded
    search_time, search_cpu = time.perf_counter() - t0, time.process_time() - c0
    final_mu = safe_load(Path(cfg.out) / "last.pt")["model"]["search.mu"]
    history = [
        {"iteration": h["epoch"] * args.eval_every, "val_top1": h["val_top1"]}
        | {k[len("train_") :]: v for k, v in h.items() if k.startswith("train_") and k != "train_time_s"}
        for h in summary["history"]
    ]
    best_val = summary["best_val_top1"]
    better = [h for h in history if h["val_top1"] >= best_val and h["val_top1"] > base_val]
    best_it = better[0]["iteration"] if better else 0
    net = trainer.model.eval()
    best = {"iteration": best_it, "val_top1": max(best_val, base_val), "mu": net.search.mu.clone()}
    return net, best, history, trainer.global_step, search_time, search_cpu, final_mu


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
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="Fashion-MNIST folder (default: where visattn.data finds it) or CIFAR-10 .npz",
    )
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
    if args.data is None and DEFAULT_DATA[args.dataset] is not None:
        args.data = Path(DEFAULT_DATA[args.dataset])
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

    x_train, y_train, x_test, y_test = load(args.dataset, args.data)
    perm = torch.from_numpy(np.random.default_rng(args.seed).permutation(len(x_train)))
    val_idx, tr_idx = perm[: args.val], perm[args.val :][: args.train_limit]
    xtr_u8, ytr = x_train[tr_idx], y_train[tr_idx].long()
    cmean = xtr_u8.float().mean(dim=(0, 2, 3)).view(1, -1, 1, 1) / 255.0
    cstd = xtr_u8.float().std(dim=(0, 2, 3)).view(1, -1, 1, 1) / 255.0

    def prep(a: torch.Tensor) -> torch.Tensor:
        return (a.float() / 255.0 - cmean) / cstd

    xva, yva = prep(x_train[val_idx]), y_train[val_idx].long()
    xte, yte = prep(x_test), y_test.long()
    xtr = (
        xtr_u8 if args.dataset == "cifar10" else prep(xtr_u8)
    )  # CIFAR stays uint8 (60k float images: 700 MB)

    def fetch(i):
        return prep(xtr_u8[i]) if args.dataset == "cifar10" else xtr[i]

    if args.base is not None:
        base, base_time = make_base(args).eval(), 0.0
        base.load_state_dict(torch.load(args.base, weights_only=True))
    else:
        base, base_time = train_base(xtr_u8, ytr, args)
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
        print(json.dumps(write_result(args.out / "base.json", res), indent=1))
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
        print(json.dumps(write_result(args.out / "speed.json", res), indent=1))
        return
    xv, yv = xva[: args.val_eval], yva[: args.val_eval]  # the validation images the search selects on
    base_val = accuracy(base, xv, yv)
    print(
        f"base trained in {base_time:.0f}s: val top1 {base_val:.2f}% (on {len(xv)}), policy d={net.policy_dim}, "
        f"p={net.search.population}",
        flush=True,
    )

    if args.search_iterations is not None:  # through the engine
        net, best, history, it, search_time, search_cpu, final_mu = engine_search(
            args, (xtr_u8, ytr), (x_train[val_idx][: args.val_eval], yv), (x_test, yte), base_val
        )
    else:  # --search-seconds: a wall-clock budget, which the engine (epochs of steps) does not express
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
                    json.dumps(
                        {k: round(v, 4) if isinstance(v, float) else v for k, v in history[-1].items()}
                    ),
                    flush=True,
                )
                if val > best["val_top1"]:
                    best = {"iteration": it, "val_top1": val, "mu": net.search.mu.clone()}
        search_time, search_cpu = time.perf_counter() - t0, time.process_time() - c0

        final_mu = net.search.mu.clone()
        net.search.mu.copy_(best["mu"])
    torch.save({"final_mu": final_mu, "best_mu": best["mu"]}, args.out / "mu.pt")
    unchanged = all(torch.equal(base_state[k], v) for k, v in net.base.state_dict().items())
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
    write_result(args.out / "results.json", res)
    print(json.dumps({k: v for k, v in res.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
