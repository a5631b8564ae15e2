"""SE's batch-1 inference overhead with fused kernels: ``torch.compile`` (inductor) vs eager, one interleaved run.

visattn ``se_resnet50`` vs ``resnet50``, eval mode, 224x224, batch 1 (and 8 with ``--batch 1 8``), each model
eager and compiled (``torch.compile``, default mode, compiled once before timing); every round times all four
once per batch size in rotating order. Reports median thread CPU ms and the median paired overhead. This only
shows what fusion buys at batch 1; the issue's target is for eager mode (``bench_se_overhead.py``).

Usage::

    nice python benchmarks/bench_se_compiled.py --rounds 15 --json se_compiled.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import visattn

__all__ = ["main"]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=3, help="forwards averaged per round")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    eager = {n: visattn.create_model(n, num_classes=1000).eval() for n in ("resnet50", "se_resnet50")}
    models = {**{f"eager {n}": m for n, m in eager.items()}}
    models.update({f"compiled {n}": torch.compile(m) for n, m in eager.items()})
    inputs = {b: torch.randn(b, 3, 224, 224) for b in args.batch}
    times: dict[str, dict[int, list[float]]] = {n: {b: [] for b in args.batch} for n in models}
    with torch.inference_mode():
        t0 = time.perf_counter()
        for m in models.values():  # compile and warm up
            for x in inputs.values():
                m(x), m(x)
        print(f"compile + warm-up: {time.perf_counter() - t0:.0f} s", flush=True)
        names = list(models)
        for r in range(args.rounds):
            for b, x in inputs.items():
                for n in names[r % len(names) :] + names[: r % len(names)]:
                    c0 = time.thread_time()
                    for _ in range(args.reps):
                        models[n](x)
                    times[n][b].append((time.thread_time() - c0) / args.reps)
    summary: dict = {"median_ms": {}, "overhead_pct": {}}
    for b in args.batch:
        for kind in ("eager", "compiled"):
            se, plain = times[f"{kind} se_resnet50"][b], times[f"{kind} resnet50"][b]
            ratios = [100 * (s / p - 1) for s, p in zip(se, plain)]
            key = f"{kind} b{b}"
            summary["median_ms"][key] = [1e3 * statistics.median(plain), 1e3 * statistics.median(se)]
            summary["overhead_pct"][key] = [statistics.median(ratios), min(ratios), max(ratios)]
            med, lo, hi = summary["overhead_pct"][key]
            print(
                f"{key:12s} resnet50 {summary['median_ms'][key][0]:7.1f} ms  se_resnet50 "
                f"{summary['median_ms'][key][1]:7.1f} ms  overhead {med:+.2f} % [{lo:+.1f}, {hi:+.1f}]"
            )
    write_result(args.json, {"args": vars(args), "summary": summary})
    return summary


if __name__ == "__main__":
    main()
