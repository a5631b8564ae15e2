"""Pose benchmark: a stacked hourglass or the multi-context attention network on LSPET, trained through the
engine (``visattn.train.fit``, task ``pose``), selected on validation PCK@0.2, tested once.

Writes one JSON file (the engine's summary with the per-epoch history, plus the command, commit, date,
machine, parameters and inference ms per image). Example (the runs in docs/results/pose.md):

    nice -n 10 python benchmarks/bench_pose.py --model hourglass --data-dir ../shared/data/lspet \\
        --width 64 --depth 4 --stacks 2 --epochs 3 --steps-per-epoch 125 --out docs/results/pose_hourglass.json

Recipe probes add ``--no-test`` (validation only: the test split is never evaluated); the MCA ablation is a set of
``--model-arg`` flags of ``mca_hourglass`` (``use_hru``, ``multires``, ``holistic``, ``part``, ``crf_iters``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from visattn.models import create_model
from visattn.train import TrainConfig, fit


def _commit() -> str:
    try:
        repo = Path(__file__).resolve().parent  # git in the repository, whatever the working directory
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ms_per_image(model: torch.nn.Module, *, batch: int = 16, size: int = 128, reps: int = 5) -> float:
    """Median eval-mode forward time per image (ms) on this process's threads."""
    model.eval()
    x = torch.randn(batch, 3, size, size)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(reps):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1000 / batch)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hourglass", choices=["hourglass", "mca_hourglass"])
    p.add_argument("--data-dir", default="../shared/data/lspet")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--stacks", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=125)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sigma", type=float, default=1.0, help="target Gaussian std in heatmap pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="e.g. crf_iters=0")
    p.add_argument("--run-dir", default=None, help="engine run folder (default: runs/pose_<model>_s<seed>)")
    p.add_argument(
        "--no-test",
        action="store_true",
        help="validation only: skip the final test evaluation (recipe probes; the test split stays unseen)",
    )
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    kwargs: dict = {"width": args.width, "depth": args.depth, "n_stacks": args.stacks}
    for item in args.model_arg:
        k, _, v = item.partition("=")
        kwargs[k] = json.loads(v) if v not in ("True", "False") else v == "True"
    cfg = TrainConfig(
        task="pose",
        model=args.model,
        model_kwargs=kwargs,
        data="lspet",
        data_dir=args.data_dir,
        data_kwargs={"sigma": args.sigma},
        epochs=args.epochs,
        max_steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        eval_batch_size=64,
        optimizer="adamw",
        lr=args.lr,
        weight_decay=0.0,
        schedule="cosine",
        seed=args.seed,
        out=args.run_dir or f"runs/pose_{args.model}_s{args.seed}",
        progress=False,
        test_at_end=not args.no_test,
    )
    commit = _commit()  # the code that runs (read before training: later commits do not change it)
    t0 = time.perf_counter()
    summary = fit(cfg)
    wall = time.perf_counter() - t0
    model = create_model(args.model, num_joints=14, **kwargs)
    result = {
        "command": " ".join(
            ["python benchmarks/bench_pose.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "commit": commit,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"shared 2-core CPU VM, no GPU ({args.threads} thread(s), nice {os.nice(0)}, other jobs running)",
        "torch": torch.__version__,
        "model": args.model,
        "model_kwargs": kwargs,
        "params": sum(q.numel() for q in model.parameters()),
        "infer_ms_per_image": ms_per_image(model),
        "train_images": args.epochs * args.steps_per_epoch * args.batch_size,
        "wall_s": wall,
        "cpu_s": time.process_time(),  # this process's CPU time (training, evaluation, the timing above)
        "summary": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    keys = ("best_val_pck", "test_pck", "test_pck_all", "train_time_s")
    print(json.dumps({"model": args.model, **{k: summary.get(k) for k in keys}, "params": result["params"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
