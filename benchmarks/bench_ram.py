"""RAM (Mnih et al., NIPS 2014) on CPU: glimpse-sensor and training-step throughput, and a small accuracy run.

``--part speed``: in one run, on the same random batch (60x60, 12x12 patches, 3 scales, 6 glimpses),
(a) the batched glimpse sensor (box-filter pyramid + one ``grid_sample`` over ``k g^2`` points; see
``visattn.functional.glimpse``) against a per-sample loop of the same crops (the public PyTorch RAM's
approach: slice each image's patch from a zero-padded copy, ``avg_pool2d`` it), per call (pyramid
built in the call) and per episode (``--glimpses`` reads of the same images: the batched sensor
builds its pyramid once, as ``RecurrentAttention`` does), and the previous batched sensor
(``extract_glimpses_direct``: every point of every patch, then ``avg_pool2d``); (b) a full RAM
training step (forward, hybrid loss, backward, Adam) with each sensor. A and B are interleaved in
every round; medians over ``--reps`` rounds.

``--part train``: trains ``--model`` (``ram`` or the ``mnist_cnn`` baseline) on a generated task
(``mnist_translated60`` by default) through the library's engine (``visattn.train.Trainer``) for
``--steps`` Adam steps in periods of ``--eval-every`` steps (the engine's epochs, each a fresh
shuffle), evaluates on a validation split carved from the training set after each period, keeps the
best-on-validation weights and reports their test error once (no selection on the test set), plus,
for RAM, the test error with 10 Monte-Carlo trajectories. (Until 2026-12-06 this part had its own
loop drawing batches with replacement; the RAM figures of docs/RESULTS.md come from ``visattn train``.)

Examples (what docs/results/ram.md reports):

    nice python benchmarks/bench_ram.py --part speed --reps 10
    nice python benchmarks/bench_ram.py --part train --model ram --data-dir ../shared/data/mnist.npz \\
        --steps 1500 --eval-every 500 --out ram.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import visattn
from visattn.attention.glimpse import GlimpseSensor
from visattn.functional.glimpse import (
    extract_glimpses,
    extract_glimpses_direct,
    glimpse_pyramid,
    location_to_pixels,
)
from visattn.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import error_rate, train_config, write_result  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["speed", "train"], default="speed")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data-dir", default=None, help="MNIST source, e.g. ../shared/data/mnist.npz")
    p.add_argument(
        "--dataset", default="mnist_translated60", choices=["mnist_translated60", "mnist_cluttered60"]
    )
    p.add_argument("--model", default="ram", choices=["ram", "mnist_cnn"])
    p.add_argument("--glimpses", type=int, default=6)
    p.add_argument("--location-std", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--runs", default="runs/bench_ram", help="the engine's run folder (--part train)")
    return p.parse_args(argv)


def loop_glimpses(images: torch.Tensor, locations: torch.Tensor, size: int, num_scales: int) -> torch.Tensor:
    """Per-sample reference: integer crops from a zero-padded copy, block-averaged; ``(B, k, C, g, g)``."""
    b, c, h, w = images.shape
    sides = [size * 2**i for i in range(num_scales)]
    pad = sides[-1]
    padded = F.pad(images, (pad, pad, pad, pad))
    centre = location_to_pixels(locations, (h, w)).round().long() + pad
    out = []
    for i in range(b):
        scales = []
        for k, s in enumerate(sides):
            x0, y0 = int(centre[i, 0]) - s // 2, int(centre[i, 1]) - s // 2
            patch = padded[i, :, y0 : y0 + s, x0 : x0 + s]
            scales.append(F.avg_pool2d(patch[None], 2**k)[0] if k else patch)
        out.append(torch.stack(scales))
    return torch.stack(out)


class LoopSensor(GlimpseSensor):
    """The same sensor with the per-sample loop (integer-rounded centres), for the speed comparison."""

    def pyramid(self, x: torch.Tensor) -> Any:
        return None  # the loop build has nothing to share across glimpses

    def forward(self, x: torch.Tensor, locations: torch.Tensor, pyramid: Any = None) -> torch.Tensor:
        return loop_glimpses(x, self.tap(locations), self.size, self.num_scales)


def _interleaved_ms(fns: dict[str, Any], reps: int) -> dict[str, float]:
    """Median ms of each function, the functions called in turn within every round (A B C, A B C, ...)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def speed(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    b, t = args.batch_size, args.glimpses
    x = torch.rand(b, 1, 60, 60)
    y = torch.randint(0, 10, (b,))
    # integer pixel centres, so both sensors read exactly the same pixels
    locs = [(torch.randint(0, 61, (b, 2)).float() * 2 / 60 - 1).clamp(-1, 1) for _ in range(t)]
    opts: dict[str, Any] = {"size": 12, "num_scales": 3}
    loc = locs[0]
    torch.testing.assert_close(extract_glimpses(x, loc, **opts), loop_glimpses(x, loc, 12, 3))
    torch.testing.assert_close(extract_glimpses_direct(x, loc, **opts), loop_glimpses(x, loc, 12, 3))
    res: dict[str, Any] = {"batch": b, "image": "60x60", "patch": 12, "scales": 3, "glimpses": t}

    def episode_batched() -> None:
        pyr = glimpse_pyramid(x, **opts)
        for lo in locs:
            extract_glimpses(x, lo, pyramid=pyr, **opts)

    def episode_loop() -> None:
        for lo in locs:
            loop_glimpses(x, lo, 12, 3)

    with torch.no_grad():
        ms = _interleaved_ms(
            {
                "sensor_batched_ms": lambda: extract_glimpses(x, loc, **opts),
                "sensor_direct_ms": lambda: extract_glimpses_direct(x, loc, **opts),
                "sensor_loop_ms": lambda: loop_glimpses(x, loc, 12, 3),
                "episode_sensor_batched_ms": episode_batched,
                "episode_sensor_loop_ms": episode_loop,
            },
            args.reps,
        )
    res.update(ms)
    steps = {}
    for name in ("batched", "loop"):
        torch.manual_seed(args.seed)
        model = visattn.create_model("ram", patch_size=12, num_scales=3, num_glimpses=t)
        if name == "loop":
            model.sensor = LoopSensor(1, size=12, num_scales=3)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            out = model(x)
            loss = F.cross_entropy(out["logits"], y) + sum(model.extra_losses(out, y).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[f"train_step_{name}_ms"] = step
    res.update(_interleaved_ms(steps, args.reps))
    for name in ("batched", "loop"):
        res[f"train_images_per_s_{name}"] = b / res[f"train_step_{name}_ms"] * 1e3
    res["sensor_speedup"] = res["sensor_loop_ms"] / res["sensor_batched_ms"]
    res["sensor_speedup_vs_direct"] = res["sensor_direct_ms"] / res["sensor_batched_ms"]
    res["episode_sensor_speedup"] = res["episode_sensor_loop_ms"] / res["episode_sensor_batched_ms"]
    res["train_step_speedup"] = res["train_step_loop_ms"] / res["train_step_batched_ms"]
    return res


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train ``--model`` through the engine: ``--steps`` Adam steps in periods of ``--eval-every`` steps."""
    if args.data_dir is None:
        raise SystemExit("--part train needs --data-dir (e.g. ../shared/data/mnist.npz)")
    if args.model == "ram":
        kwargs: dict[str, Any] = dict(
            patch_size=12, num_scales=3, num_glimpses=args.glimpses, location_std=args.location_std
        )
    else:
        kwargs = {}
    periods = -(-args.steps // args.eval_every)
    cfg = train_config(
        model=args.model,
        model_kwargs=kwargs,
        data=args.dataset,
        data_dir=args.data_dir,
        val_fraction=args.val_size / 60_000,
        augment="none",
        epochs=periods,
        max_steps_per_epoch=args.eval_every,
        batch_size=args.batch_size,
        optimizer="adamw",
        lr=args.lr,
        weight_decay=0.0,
        schedule="constant",
        seed=args.seed,
        out=args.runs,
    )
    t0 = time.time()
    trainer = Trainer(cfg)
    gen_s = time.time() - t0
    summary = trainer.run()  # ends with the best-on-validation weights loaded and tested once
    history = [
        {
            "step": h["epoch"] * args.eval_every,
            "val_error": 100.0 - h["val_top1"],
            "train_s": h["train_time_s"],
        }
        for h in summary["history"]
    ]
    best = min(history, key=lambda h: h["val_error"])
    res = {
        "model": args.model,
        "model_kwargs": kwargs,
        "dataset": args.dataset,
        "steps": trainer.global_step,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "best_val_error": best["val_error"],
        "best_step": best["step"],
        "test_error": 100.0 - summary["test_top1"],
        "train_s": summary["train_time_s"],
        "generate_s": gen_s,
        "history": history,
    }
    if args.model == "ram":
        trainer.model.mc_samples = 10
        res["test_error_mc10"] = error_rate(trainer.model, trainer.test_loader)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    res = speed(args) if args.part == "speed" else train(args)
    print(json.dumps(res, indent=1, default=str))
    return write_result(args.out, {"args": vars(args), **res}, argv=argv)


if __name__ == "__main__":
    main()
