"""Engine overhead: visattn's training step vs a minimal hand-written PyTorch loop.

Same model (``resnet20``), same 32x32x3 batches of 128, same optimiser settings. Rounds interleave
A (bare loop) and B (engine, ``Trainer.train_epoch`` over the same batches, with its progress bar,
metrics and non-finite check); the ratio of medians is reported. Peak resident memory of each is
measured in a separate child process (one mode per process).

    python benchmarks/bench_engine.py --rounds 9 --steps 8 --threads 1 --json engine.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def _make_trainer(tmp: Path, batch: int):
    from visattn.train import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    npz = tmp / "rand32.npz"
    np.savez(
        npz,
        x_train=rng.integers(0, 256, (batch * 4, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, batch * 4),
        x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, 16),
    )
    cfg = TrainConfig(
        model="resnet20",
        data="npz",
        data_dir=str(npz),
        batch_size=batch,
        epochs=1000,
        out=str(tmp / "run"),
        progress=True,
        val_fraction=0.0,
        augment="none",
        lr=0.05,
    )
    return Trainer(cfg)


def _batches(steps: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))
        for _ in range(steps)
    ]


def _bare(model, opt, batches) -> None:
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _time(fn) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds): with one thread all of PyTorch's CPU work, backward
    included, runs on the calling thread, so its CPU time leaves out time spent descheduled."""
    t0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - t0, time.thread_time() - c0


def _child(mode: str, steps: int, batch: int, threads: int) -> None:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as d:
        tr = _make_trainer(Path(d), batch)
        batches = _batches(steps, batch)
        if mode == "bare":
            from visattn import create_model

            model = create_model("resnet20")
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
            del tr
            _bare(model, opt, batches)
        else:
            tr.train_epoch(batches)
    print(
        json.dumps({"mode": mode, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", choices=["bare", "engine"])
    p.add_argument("--json", help="also write the result here")
    a = p.parse_args()
    if a.child:
        _child(a.child, a.steps, a.batch, a.threads)
        return
    torch.set_num_threads(a.threads)
    from visattn import create_model

    with tempfile.TemporaryDirectory() as d:
        tr = _make_trainer(Path(d), a.batch)
        tr.steps_per_epoch = a.steps
        model = create_model("resnet20")
        model.load_state_dict(tr.model.state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        batches = _batches(a.steps, a.batch)
        _bare(model, opt, batches[:2])
        tr.train_epoch(batches[:2])
        ta, tb = [], []
        for r in range(a.rounds):
            pair = [("A", lambda: _bare(model, opt, batches)), ("B", lambda: tr.train_epoch(batches))]
            if r % 2:
                pair.reverse()
            for name, fn in pair:
                (ta if name == "A" else tb).append(_time(fn))
    ma, mb = statistics.median(w for w, _ in ta), statistics.median(w for w, _ in tb)
    ca, cb = statistics.median(c for _, c in ta), statistics.median(c for _, c in tb)
    paired_cpu = [b[1] / a_[1] for a_, b in zip(ta, tb, strict=True)]
    paired_wall = [b[0] / a_[0] for a_, b in zip(ta, tb, strict=True)]
    imgs = a.steps * a.batch
    mem = {}
    for mode in ("bare", "engine"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--steps",
                "3",
                "--batch",
                str(a.batch),
                "--threads",
                str(a.threads),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        mem[mode] = json.loads(out.stdout.strip().splitlines()[-1])["max_rss_mib"]
    res = {
        "model": "resnet20",
        "batch": a.batch,
        "threads": a.threads,
        "rounds": a.rounds,
        "steps": a.steps,
        "bare_s_per_step": ma / a.steps,
        "engine_s_per_step": mb / a.steps,
        "bare_img_s": imgs / ma,
        "engine_img_s": imgs / mb,
        "overhead_pct_wall_ratio_of_medians": 100 * (mb / ma - 1),
        "overhead_pct_cpu_ratio_of_medians": 100 * (cb / ca - 1),
        "overhead_pct_cpu_paired_median": 100 * (statistics.median(paired_cpu) - 1),
        "overhead_pct_cpu_paired_min_max": [100 * (min(paired_cpu) - 1), 100 * (max(paired_cpu) - 1)],
        "overhead_pct_wall_paired_median": 100 * (statistics.median(paired_wall) - 1),
        "bare_cpu_s_per_step": ca / a.steps,
        "engine_cpu_s_per_step": cb / a.steps,
        "peak_rss_mib_bare": round(mem["bare"]),
        "peak_rss_mib_engine": round(mem["engine"]),
        "torch": torch.__version__,
    }
    print(json.dumps(res, indent=1))
    write_result(a.json, res)


if __name__ == "__main__":
    main()
