"""Issue 20's table: ST-CNN vs CNN on RTS MNIST, the frozen recipe, 3 seeds each, one test look per run.

Reads the ``bench_stn.py`` JSONs ``stn_frozen_{st,cnn}_s{SEED}.json`` (one model per file, trained with
``benchmarks/configs/st_cnn_mnist_rts.yaml``), prints a Markdown table and writes the summary JSON: per model
the seeds' test and validation errors, mean and sample std, the residual rotation on validation; ST-CNN minus
CNN paired by seed (same validation split and training distortions per seed) and Welch's unpaired test, both
two-sided; and the issue's two checks (ST-CNN mean test error < 1 %, and below the CNN's).

    python benchmarks/summarize_stn.py --dir docs/results --seeds 0 1 2 --out docs/results/stn_frozen_summary.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from visattn.viz.leaderboard import paired_t_test, student_t_sf2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_metadata  # noqa: E402

TAGS = {"st": "st_cnn_mnist", "cnn": "cnn_mnist"}


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p of Welch's t-test of ``mean(a) != mean(b)`` (``None`` with fewer than 2 values each).

    >>> round(welch_p([1.0, 1.2, 0.9], [1.9, 2.0, 1.8]), 4)
    0.0022
    """
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0.0:
        return 0.0 if statistics.fmean(a) != statistics.fmean(b) else 1.0
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return student_t_sf2(t, df)


def summarize(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """``runs[tag][seed]``: a ``bench_stn.py`` result row (``test_error``, ``val_error``, ...), tags ``st``, ``cnn``."""
    for tag in TAGS:
        if not runs.get(tag):
            raise ValueError(f"runs needs at least one {tag!r} run, got tags {sorted(runs)}")
    out: dict[str, Any] = {}
    for tag, rows in runs.items():
        seeds = sorted(rows)
        test = [float(rows[s]["test_error"]) for s in seeds]
        val = [float(rows[s]["val_error"]) for s in seeds]
        rot = [rows[s]["val_rotation"]["residual_rotation_deg"] for s in seeds if rows[s].get("val_rotation")]
        out[tag] = {
            "model": TAGS[tag],
            "seeds": seeds,
            "test_error": test,
            "test_mean": statistics.fmean(test),
            "test_std": statistics.stdev(test) if len(test) > 1 else None,
            "val_error": val,
            "selected_step": [rows[s]["selected_step"] for s in seeds],
            "steps": [rows[s].get("steps") for s in seeds],
            "ms_per_step": [round(rows[s]["ms_per_step"], 1) for s in seeds],
            "residual_rotation_deg": rot,
            "residual_rotation_mean": statistics.fmean(rot) if rot else None,
        }
    common = sorted(set(out["st"]["seeds"]) & set(out["cnn"]["seeds"]))
    diff, p = paired_t_test(
        [runs["st"][s]["test_error"] for s in common], [runs["cnn"][s]["test_error"] for s in common]
    )
    out["st_minus_cnn"] = {
        "paired_seeds": common,
        "mean_diff": diff,
        "paired_p": p,
        "welch_p": welch_p(out["st"]["test_error"], out["cnn"]["test_error"]),
    }
    out["targets"] = {
        "st_mean_below_1pct": out["st"]["test_mean"] < 1.0,
        "st_below_cnn": out["st"]["test_mean"] < out["cnn"]["test_mean"],
    }
    return out


def table(s: dict[str, Any]) -> str:
    """The Markdown table of :func:`summarize`'s result."""

    def f(x: float | None, nd: int = 2) -> str:
        return "-" if x is None else f"{x:.{nd}f}"

    def pf(x: float | None) -> str:
        return "-" if x is None else f"{x:.2g}"

    lines = [
        "| model | seeds | test error % per seed | mean ± std | validation error % | selected step | "
        "residual rotation (deg, val) | ms/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for tag in TAGS:
        r = s[tag]
        rot = ", ".join(f"{x:.1f}" for x in r["residual_rotation_deg"]) or "-"
        lines.append(
            f"| `{r['model']}` | {', '.join(map(str, r['seeds']))} | {', '.join(f(x) for x in r['test_error'])} | "
            f"**{f(r['test_mean'])} ± {f(r['test_std'])}** | {', '.join(f(x) for x in r['val_error'])} | "
            f"{', '.join(map(str, r['selected_step']))} | {rot} | {', '.join(f(x, 0) for x in r['ms_per_step'])} |"
        )
    d = s["st_minus_cnn"]
    lines.append("")
    lines.append(
        f"ST-CNN minus CNN: {d['mean_diff']:+.2f} points (paired by seed, p = {pf(d['paired_p'])}; "
        f"Welch p = {pf(d['welch_p'])})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="docs/results", help="folder of the stn_frozen_*.json files")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", help="write the summary JSON here")
    args = p.parse_args(argv)
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for tag in TAGS:
        for seed in args.seeds:
            path = Path(args.dir) / f"stn_frozen_{tag}_s{seed}.json"
            if path.exists():
                runs.setdefault(tag, {})[seed] = json.loads(path.read_text())["results"][0]
    s = summarize(runs)
    print(table(s))
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": run_metadata(), **s}, indent=1) + "\n")
    return s


if __name__ == "__main__":
    main()
