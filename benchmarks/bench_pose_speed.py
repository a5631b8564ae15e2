"""CPU cost of the pose models: parameters and CPU-time (``time.process_time``, one thread) per image for a
training step (forward + backward of the summed stack losses) and an inference forward, at 128 px.

CPU time, unlike wall time, is little affected by other jobs on a shared machine. Example:

    python benchmarks/bench_pose_speed.py --out docs/results/pose_speed.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import visattn


def _commit() -> str:
    try:
        repo = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_ms(fn, batch: int, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        times.append((time.process_time() - t) * 1000 / batch)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--widths", default="16,32,64")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    x = torch.randn(args.batch, 3, 128, 128)
    for width in [int(w) for w in args.widths.split(",")]:
        for name in ("hourglass", "mca_hourglass"):
            torch.manual_seed(0)
            m = visattn.create_model(name, num_joints=14, n_stacks=2, depth=4, width=width)

            def train_step(m=m):
                m.train()
                m.zero_grad(set_to_none=True)
                sum(h.square().mean() for h in m(x)["stacks"]).backward()

            def infer(m=m):
                m.eval()
                with torch.no_grad():
                    m(x)

            row = {
                "model": name,
                "width": width,
                "n_stacks": 2,
                "depth": 4,
                "params": sum(q.numel() for q in m.parameters()),
                "train_cpu_ms_per_image": cpu_ms(train_step, args.batch, args.reps),
                "infer_cpu_ms_per_image": cpu_ms(infer, args.batch, args.reps),
            }
            rows.append(row)
            print(json.dumps(row))
    result = {
        "command": " ".join(
            ["python benchmarks/bench_pose_speed.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "commit": _commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": "shared 2-core CPU VM, no GPU (1 thread, nice 10)",
        "torch": torch.__version__,
        "batch": args.batch,
        "input": "128 x 128, heatmaps 32 x 32",
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
