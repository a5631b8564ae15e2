"""Where the time of an ST-CNN / CNN training step on RTS MNIST goes, and what the faster step saves.

One training step = forward, cross-entropy, backward and an AdamW step on a batch of ``--batch-size``
42x42 RTS digits (real MNIST digits distorted by ``visattn.data.distorted.rotate_translate_scale``
when ``--data-dir`` is given, else random images). Variants of each model, timed interleaved (every
round runs one step of every variant, in a rotating order) at one thread, medians over ``--rounds``:

- ``reference``: the models as before issue 20 (plain ``nn.Conv2d`` first convolutions, NCHW);
- ``channels_last``: the reference with model and input in ``channels_last``;
- ``grey``: the first convolutions as ``GreyConv2d`` (``visattn.models._grey_conv``: same weights and
  outputs, a 3-4x faster input gradient for one input channel), NCHW;
- ``grey_channels_last``: both (what ``bench_stn.py --channels-last`` now trains);
- ``compiled`` (``--compile``): the reference under ``torch.compile`` (its compile time reported apart).

Also timed, as parts of the step: drawing the RTS distortions of one batch of digits (batched, one
``grid_sample``), which ``bench_stn.py --fresh-train`` does for the whole training set once per epoch,
i.e. once per training image. ``--profile N`` adds a ``torch.profiler`` table (self CPU ms per step by
operator) of the ST-CNN reference and fast steps over ``N`` steps each. The fast path's outputs and
gradients are compared with the reference's on the same batch and weights and written to the JSON.

Example (docs/results/stn_step.json):

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_stn_step.py --data-dir ../shared/data/mnist.npz \\
        --rounds 25 --profile 5 --compile --out docs/results/stn_step.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import visattn
from visattn.data import load_dataset
from visattn.data.distorted import rotate_translate_scale
from visattn.models._grey_conv import to_plain_conv2d

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

MODELS = ("cnn_mnist", "st_cnn_mnist")
VARIANTS = ("reference", "channels_last", "grey", "grey_channels_last")
SIZE = 42


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-dir", default=None, help="MNIST source (../shared/data/mnist.npz); random if absent"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--profile", type=int, default=0, help="profile N steps of the ST-CNN reference and fast step"
    )
    p.add_argument("--compile", action="store_true", help="also time the reference under torch.compile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def make_batch(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(x, y, digits)``: normalised RTS inputs ``(B, 1, 42, 42)``, labels, and the undistorted digits."""
    g = torch.Generator().manual_seed(args.seed)
    if args.data_dir is None:
        return (
            torch.randn(args.batch_size, 1, SIZE, SIZE, generator=g),
            torch.randint(0, 10, (args.batch_size,), generator=g),
            None,
        )
    mnist = load_dataset("mnist", data_dir=args.data_dir).train
    digits, labels = mnist.images[: args.batch_size], mnist.labels[: args.batch_size]
    x, _ = rotate_translate_scale(digits, generator=g)
    x = x.float() / 255
    return (x - x.mean()) / x.std(), torch.as_tensor(labels), digits


def build(name: str, variant: str, seed: int) -> nn.Module:
    """Model ``name`` in ``variant`` (same initial weights for every variant of one model)."""
    torch.manual_seed(seed)
    model = visattn.create_model(name, image_size=SIZE)
    if variant in ("reference", "channels_last", "compiled"):
        to_plain_conv2d(model)
    if variant.endswith("channels_last"):
        model.to(memory_format=torch.channels_last)
    return model


class Stepper:
    """One model variant with its optimiser; ``step(x, y)`` is one timed training step."""

    def __init__(self, name: str, variant: str, seed: int) -> None:
        self.model = build(name, variant, seed).train()
        self.cl = variant.endswith("channels_last")
        self.runner: Any = torch.compile(self.model) if variant == "compiled" else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.0)
        self.times: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        t0 = time.perf_counter()
        if self.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(self.runner(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0


def compare(name: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, float | bool]:
    """The fast model against the reference on one batch: logits, and gradients relative to their max."""
    ref, fast = build(name, "reference", seed), build(name, "grey", seed)
    x_ref, x_fast = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_ref, out_fast = ref(x_ref), fast(x_fast)
    F.cross_entropy(out_ref, y).backward()
    F.cross_entropy(out_fast, y).backward()
    rel = [
        ((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-30)).item()
        for p, q in zip([x_ref, *ref.parameters()], [x_fast, *fast.parameters()])
    ]
    return {
        "logits_identical": bool(torch.equal(out_ref, out_fast)),
        "max_rel_grad_diff": max(rel),
        "input_rel_grad_diff": rel[0],
    }


def profile(steppers: dict[str, Stepper], x: torch.Tensor, y: torch.Tensor, steps: int) -> dict[str, Any]:
    """Self CPU ms per step by operator (ops over 1 % of the step), per stepper."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    out: dict[str, Any] = {}
    for key, s in steppers.items():
        for _ in range(2):
            s.step(x, y)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                s.step(x, y)
        totals: dict[str, float] = defaultdict(float)
        for ev in prof.key_averages():
            totals[ev.key] += ev.self_cpu_time_total / 1000 / steps
        total = sum(totals.values())
        top = {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v > 0.01 * total}
        out[key] = {"total_ms": round(total, 1), "ops_ms": top}
        print(
            f"profile {key}: {total:.1f} ms/step; " + ", ".join(f"{k} {v}" for k, v in list(top.items())[:6])
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    x, y, digits = make_batch(args)
    variants = VARIANTS + (("compiled",) if args.compile else ())
    steppers = {f"{n}/{v}": Stepper(n, v, args.seed) for n in MODELS for v in variants}
    compile_s = {}
    for key, s in steppers.items():
        if key.endswith("/compiled"):
            t0 = time.perf_counter()
            s.step(x, y)  # the first call compiles forward and backward
            compile_s[key] = round(time.perf_counter() - t0, 1)
    gen = torch.Generator().manual_seed(args.seed + 1)
    distort_t: list[float] = []
    keys = list(steppers)
    for r in range(args.warmup + args.rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]  # rotate who goes first
        for key in order:
            dt = steppers[key].step(x, y)
            if r >= args.warmup:
                steppers[key].times.append(dt)
        if digits is not None:
            t0 = time.perf_counter()
            rotate_translate_scale(digits, generator=gen)
            if r >= args.warmup:
                distort_t.append(time.perf_counter() - t0)
    ms = {k: round(1000 * statistics.median(s.times), 1) for k, s in steppers.items()}
    for k, v in ms.items():
        print(f"{k}: {v} ms/step")
    speedup = {
        n: {v: round(ms[f"{n}/reference"] / ms[f"{n}/{v}"], 3) for v in variants if v != "reference"}
        for n in MODELS
    }
    result: dict[str, Any] = {
        "what": "ms per training step (forward, CE, backward, AdamW), median over interleaved rounds, 1 thread",
        "batch_size": args.batch_size,
        "input": f"(B, 1, {SIZE}, {SIZE}) " + ("RTS digits" if digits is not None else "random"),
        "rounds": args.rounds,
        "ms_per_step": ms,
        "speedup_vs_reference": speedup,
        "step_times_ms": {k: [round(1000 * t, 2) for t in s.times] for k, s in steppers.items()},
        "compile_s": compile_s,
        "fast_vs_reference": {n: compare(n, x, y, args.seed) for n in MODELS},
        "torch": torch.__version__,
    }
    if distort_t:
        result["rts_distortion_ms_per_batch"] = round(1000 * statistics.median(distort_t), 2)
        print(f"RTS distortion of {args.batch_size} digits: {result['rts_distortion_ms_per_batch']} ms")
    if args.profile:
        prof = {
            k: copy.copy(steppers[k]) for k in ("st_cnn_mnist/reference", "st_cnn_mnist/grey_channels_last")
        }
        result["profile_self_cpu_ms_per_step"] = profile(prof, x, y, args.profile)
    return write_result(args.out, result, argv=argv)


if __name__ == "__main__":
    main()
