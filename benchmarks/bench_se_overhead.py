"""Cost of Squeeze-and-Excitation on this CPU: ``se_resnet50`` vs ``resnet50`` (visattn and timm).

One interleaved run: every round times each model once per task (inference at batch 1 and 8,
224x224, and one SGD training step at batch 8), rotating the order of the models each round, so
slow drifts of a shared machine hit all models alike. Reports the median time per task and the
median over rounds of the paired ratio ``se / plain`` (with its min and max), in eager mode, with
``torch.set_num_threads(threads)``. Two clocks: the calling thread's CPU time (``time.thread_time``;
with one thread all of PyTorch's CPU work, backward included, runs on it, so time lost to other
processes on a shared machine is not counted) and wall-clock time. torchvision's ``resnet50`` (which adds the shortcut in place)
is timed as a reference for visattn's plain block.

Usage::

    nice python benchmarks/bench_se_overhead.py --rounds 12 --json path/to/se_overhead.json
    nice python benchmarks/bench_se_overhead.py --tasks "infer b1" --rounds 40 --reps-b1 5   # one task only
    nice python benchmarks/bench_se_overhead.py --rounds 12 --fused-plain   # + plain net, same BN folding as SE
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import visattn

__all__ = ["main"]

TASKS = ("infer b1", "infer b8", "train b8")
PAIRS = (("visattn se_resnet50", "visattn resnet50"), ("timm seresnet50", "timm resnet50"))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

FUSED_PLAIN = "visattn resnet50 fused BN"


class _FusedBNBottleneck(nn.Module):
    """A plain ``Bottleneck`` whose ``relu(bn3(c) + shortcut)`` folds the batch norm exactly where
    ``se_resnet50``'s SE tail folds it, without the gate: the like-for-like reference that separates SE's own
    cost from the speed of the fused batch norm, in every column.

    - training mode (batch statistics): ``_se_fused.BNResidualReLU``, the fused tail of ``se_resnet50``
      without the gate;
    - eval mode, no autograd, a map of at least ``_se_fused.EVAL_FUSE_MIN_NUMEL`` elements (batch-8 stages
      1-3): the running-statistics batch norm folded into one scale-and-shift, written into ``c``, as SE's
      ``bn_eval_se_residual_relu`` does (its squeeze and gate left out);
    - otherwise (smaller maps, e.g. all of batch-1 inference, where SE also takes the unfused tail): the
      plain block's ``relu(bn3(c) + shortcut)``.

    Both sides fuse only for NCHW-contiguous maps without autocast (``visattn.models._se_fused.se_norm_residual_relu``'s
    conditions); the fused training backward is ``once_differentiable`` (no double backward).
    Before 2026-12-06 this reference folded the batch norm only in training, so its batch-8 inference
    column compared SE's folded eval tail with an unfolded plain one (see docs/results/se.md).
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from visattn.models import _se_fused
        from visattn.models._se_fused import BNResidualReLU, bn_train_stats

        b = self.block
        identity = x if b.downsample is None else b.downsample(x)
        out = b.relu(b.bn1(b.conv1(x)))
        out = b.relu(b.bn2(b.conv2(out)))
        c, bn = b.conv3(out), b.bn3
        fusable = _se_fused.can_fuse(c) and not torch.is_autocast_enabled(c.device.type)
        if fusable and bn.training and torch.is_grad_enabled():
            return BNResidualReLU.apply(c, identity, bn_train_stats(bn), bn.weight, bn.bias)
        if (
            fusable
            and not bn.training
            and not torch.is_grad_enabled()
            and c.numel() >= _se_fused.EVAL_FUSE_MIN_NUMEL
        ):
            a = torch.rsqrt(bn.running_var + bn.eps).mul_(bn.weight)
            shift = torch.addcmul(bn.bias, bn.running_mean, a, value=-1.0)
            n = c.shape[0]
            return _se_fused._scale_shift_add_relu(c, a.expand(n, -1), shift.expand(n, -1), identity, c)
        return b.relu(bn(c).add_(identity))


def _fused_plain_resnet50() -> nn.Module:
    model = visattn.create_model("resnet50", num_classes=1000)
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for i in range(len(stage)):
            stage[i] = _FusedBNBottleneck(stage[i])
    return model


def build_models(fused_plain: bool = False) -> dict[str, nn.Module]:
    import timm
    import torchvision

    torch.manual_seed(0)
    models = {
        "visattn resnet50": visattn.create_model("resnet50", num_classes=1000),
        "visattn se_resnet50": visattn.create_model("se_resnet50", num_classes=1000),
        "timm resnet50": timm.create_model("resnet50", pretrained=False),
        "timm seresnet50": timm.create_model("seresnet50", pretrained=False),
        "torchvision resnet50": torchvision.models.resnet50(),
    }
    if fused_plain:
        models[FUSED_PLAIN] = _fused_plain_resnet50()
    return models


def make_tasks(model: nn.Module, reps_b1: int) -> dict[str, Callable[[], tuple[float, float]]]:
    """Closures returning (thread CPU seconds, wall seconds) per call for each task."""
    x1, x8 = torch.randn(1, 3, 224, 224), torch.randn(8, 3, 224, 224)
    y8 = torch.randint(0, 1000, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def infer(x: torch.Tensor, reps: int) -> tuple[float, float]:
        model.eval()
        with torch.inference_mode():
            c0, t0 = time.thread_time(), time.perf_counter()
            for _ in range(reps):
                model(x)
            return (time.thread_time() - c0) / reps, (time.perf_counter() - t0) / reps

    def train_step() -> tuple[float, float]:
        model.train()
        c0, t0 = time.thread_time(), time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x8), y8).backward()
        opt.step()
        return time.thread_time() - c0, time.perf_counter() - t0

    return {
        "infer b1": lambda: infer(x1, reps_b1),
        "infer b8": lambda: infer(x8, 1),
        "train b8": train_step,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--reps-b1", type=int, default=3, help="batch-1 forwards averaged per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the raw times and summary here")
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=list(TASKS),
        choices=TASKS,
        help="which tasks to time (all three by default)",
    )
    ap.add_argument(
        "--fused-plain",
        action="store_true",
        help=f"also time {FUSED_PLAIN!r}: resnet50 whose batch norm is folded wherever se_resnet50's is (training"
        " and large eval maps), no gate: SE's own cost is se_resnet50 against it",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = build_models(args.fused_plain)
    tasks = {name: make_tasks(m, args.reps_b1) for name, m in models.items()}
    names = list(models)
    tasks = {n: {t: fn for t, fn in per.items() if t in args.tasks} for n, per in tasks.items()}
    for name in names:  # warm-up: allocator, oneDNN primitive caches
        for fn in [*tasks[name].values(), *tasks[name].values()]:  # 2nd train step: momentum buffers exist
            fn()
    load_start = os.getloadavg()
    clocks = ("cpu", "wall")
    times = {c: {n: {t: [] for t in tasks[n]} for n in names} for c in clocks}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for task in args.tasks:
            for name in order:
                for clock, value in zip(clocks, tasks[name][task]()):
                    times[clock][name][task].append(value)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    refs = (
        *PAIRS,
        ("visattn se_resnet50", "torchvision resnet50"),
        ("visattn resnet50", "torchvision resnet50"),
        *(
            [("visattn se_resnet50", FUSED_PLAIN), (FUSED_PLAIN, "visattn resnet50")]
            if args.fused_plain
            else []
        ),
    )
    summary: dict = {"load_average_1_5_15min": {"start": load_start, "end": os.getloadavg()}}
    print(f"load average (1, 5, 15 min) at start {load_start}, at end {os.getloadavg()}")
    for clock in clocks:
        tc = times[clock]
        med = {n: {t: 1e3 * statistics.median(v) for t, v in tc[n].items()} for n in names}
        over: dict = {}
        for a, b in refs:
            over[f"{a} / {b}"] = {}
            for task in tc[a]:
                ratios = [100 * (x / y - 1) for x, y in zip(tc[a][task], tc[b][task])]
                over[f"{a} / {b}"][task] = {
                    "median": statistics.median(ratios),
                    "min": min(ratios),
                    "max": max(ratios),
                }
        summary[clock] = {"median_ms": med, "overhead_pct": over}
        print(
            f"\n[{clock} time] median ms over {args.rounds} rounds, torch {torch.__version__}, threads={args.threads}"
        )
        for name in names:
            print(f"{name:22s} " + "  ".join(f"{t} {v:8.1f}" for t, v in med[name].items()))
        print(f"[{clock} time] paired overhead per round, median [min, max] %")
        for key, per_task in over.items():
            row = "  ".join(
                f"{t} {s['median']:+5.2f} [{s['min']:+.1f}, {s['max']:+.1f}]" for t, s in per_task.items()
            )
            print(f"{key:45s} {row}")
    write_result(args.json, {"args": vars(args), "summary": summary, "times_s": times})
    return summary


if __name__ == "__main__":
    main()
