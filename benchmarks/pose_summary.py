"""Seed statistics of the pose runs (docs/results/pose.md): mean ± sample std of test and best validation
PCK@0.2 per arm, and each arm's paired difference to a reference arm over their common seeds (two-sided
paired t-test).

Arms are given as ``NAME=GLOB`` over ``bench_pose.py`` JSON files; a file's seed is read from its command.
``--ref previous`` compares each arm with the one before it (an ablation ladder). Example (the pair B table):

    python benchmarks/pose_summary.py --ref hourglass \\
        hourglass='docs/results/pose_b_hourglass*.json' mca='docs/results/pose_b_mca_hourglass*.json'
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
from pathlib import Path

from visattn.viz.leaderboard import paired_t_test


def _seed(result: dict) -> int:
    words = result["command"].split()
    return int(words[words.index("--seed") + 1]) if "--seed" in words else 0


def load_arm(pattern: str) -> dict[int, dict]:
    """``{seed: result}`` of the JSON files matching ``pattern``; ``ValueError`` when none or a seed repeats."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise ValueError(f"no JSON file matches {pattern!r}")
    out: dict[int, dict] = {}
    for f in files:
        r = json.loads(Path(f).read_text())
        s = _seed(r)
        if s in out:
            raise ValueError(f"seed {s} appears twice among {files}")
        out[s] = r
    return out


def _ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arms", nargs="+", metavar="NAME=GLOB")
    p.add_argument(
        "--ref",
        default=None,
        help="arm the paired differences are taken to (default: the first); 'previous': each arm's predecessor "
        "in the list (an ablation ladder)",
    )
    args = p.parse_args(argv)
    arms = {}
    for a in args.arms:
        name, sep, pattern = a.partition("=")
        if not sep:
            raise ValueError(f"arms: expected NAME=GLOB, got {a!r}")
        arms[name] = load_arm(pattern)
    names = list(arms)
    if args.ref not in (None, "previous", *names):
        raise ValueError(f"--ref must be 'previous' or one of {names}, got {args.ref!r}")
    print(
        "| arm | params | seeds | test PCK@0.2 (%) | per seed | best val PCK (%) | diff to ref (test) | p |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for i, (name, runs) in enumerate(arms.items()):
        ref = names[max(i - 1, 0)] if args.ref == "previous" else args.ref or names[0]
        seeds = sorted(runs)
        test = [runs[s]["summary"]["test_pck"] for s in seeds]
        val = [runs[s]["summary"]["best_val_pck"] for s in seeds]
        common = [s for s in seeds if s in arms[ref]]
        diff, pval = "", ""
        if name != ref and len(common) > 1:
            a = [runs[s]["summary"]["test_pck"] for s in common]
            b = [arms[ref][s]["summary"]["test_pck"] for s in common]
            d = [x - y for x, y in zip(a, b, strict=True)]
            diff = f"{_ms(d)} ({len(common)} seeds)"
            pval = f"{paired_t_test(a, b)[1]:.3g}"
        per = " / ".join(f"{t:.2f}" for t in test)
        params = runs[seeds[0]]["params"]
        print(f"| {name} | {params:,} | {len(seeds)} | {_ms(test)} | {per} | {_ms(val)} | {diff} | {pval} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
