"""The fine-grained leaderboard's table and plot (issue 19), from the raw JSON that
``benchmarks/bench_fine_grained.py`` writes: a renderer over plain dicts, no data, no training.

The JSON holds up to three lists of rows, each row with an ``"arm"``:

* ``"runs"``: one per trained arm and seed (``seed``, ``params``, ``best_val_top1``, ``test_top1`` or
  ``None``, ``process_cpu_s``);
* ``"latency"``: one per arm (``params``, ``cpu_ms_per_image_b1``, ``cpu_ms_per_image_b32``);
* ``"step_times"``: one per arm (``cpu_ms_per_step_train``).

:func:`leaderboard_rows` merges them into one row per arm: test top-1 mean and std over seeds, the
paired difference to the baseline arm over the seeds both have, with a two-sided paired t-test's
``p`` (:func:`paired_t_test`; ``None`` with fewer than two pairs), validation top-1, parameters, CPU
ms per image and training CPU-hours. :func:`plot_accuracy_vs_cost` draws top-1 against CPU ms per
image. The report (``visattn report --leaderboard FILE.json``) shows both; the plot holds no image
pixels, so it may be committed.

>>> saved = {"latency": [{"arm": "plain", "params": 10, "cpu_ms_per_image_b1": 2.0,
...                       "cpu_ms_per_image_b32": 1.0}],
...          "runs": [{"arm": "plain", "seed": s, "best_val_top1": 80.0, "test_top1": 78.0 + s,
...                    "process_cpu_s": 360.0} for s in range(3)]}
>>> row = leaderboard_rows(saved)[0]
>>> row["arm"], row["test_mean"], row["seeds"], row["train_cpu_h"]
('plain', 79.0, 3, 0.1)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["leaderboard_rows", "paired_t_test", "plot_accuracy_vs_cost", "student_t_sf2"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``, ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def student_t_sf2(t: float, df: float) -> float:
    """Two-sided tail ``P(|T| >= |t|)`` of Student's t with ``df`` degrees of freedom.

    >>> round(student_t_sf2(2.0, 2), 4), round(student_t_sf2(0.0, 5), 4)
    (0.1835, 1.0)
    """
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float | None]:
    """Mean of ``a - b`` and the two-sided paired t-test's ``p`` (``None`` for fewer than 2 pairs).

    Identical differences (zero spread) give ``p = 0`` when their mean is not 0, else ``1``.

    >>> d, p = paired_t_test([80.1, 81.0, 79.5], [79.0, 80.2, 79.1])
    >>> round(d, 3), round(p, 3)
    (0.767, 0.063)
    """
    if len(a) != len(b):
        raise ValueError(f"a and b must pair up, got {len(a)} and {len(b)} values")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    if not diffs:
        raise ValueError("a and b must hold at least one pair, got none")
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None
    sd = statistics.stdev(diffs)
    if sd == 0.0:
        return mean, 0.0 if mean != 0.0 else 1.0
    t = mean / (sd / math.sqrt(len(diffs)))
    return mean, student_t_sf2(t, len(diffs) - 1)


def _arms_in_order(saved: dict[str, Any]) -> list[str]:
    order: list[str] = []
    for key in ("latency", "step_times", "runs"):
        for r in saved.get(key, []):
            if r["arm"] not in order:
                order.append(r["arm"])
    return order


def leaderboard_rows(
    saved: dict[str, Any] | Iterable[dict[str, Any]], *, baseline: str = "plain"
) -> list[dict[str, Any]]:
    """One row per arm from the JSON (or several JSON dicts, merged; later rows of the same arm and
    seed win). Keys: ``arm``, ``params``, ``ms_b1``, ``ms_b32``, ``ms_step``, ``seeds``, ``test_mean``,
    ``test_std``, ``val_mean``, ``diff``, ``p``, ``paired``, ``train_cpu_h`` (``None`` where not
    measured). ``diff``/``p`` pair this arm's test top-1 with ``baseline``'s over their common seeds."""
    parts = [saved] if isinstance(saved, dict) else list(saved)
    merged: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        if not isinstance(part, dict):
            raise TypeError(
                f"saved must be a dict (the benchmark's JSON) or dicts, got {type(part).__name__}"
            )
        for key in ("runs", "latency", "step_times"):
            rows = merged.setdefault(key, [])
            for r in part.get(key, []):
                rows[:] = [s for s in rows if (s["arm"], s.get("seed")) != (r["arm"], r.get("seed"))] + [r]
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for r in merged["runs"]:
        runs.setdefault(r["arm"], {})[int(r.get("seed") or 0)] = r
    lat = {r["arm"]: r for r in merged["latency"]}
    steps = {r["arm"]: r for r in merged["step_times"]}

    def tests(arm: str) -> dict[int, float]:
        return {
            s: float(r["test_top1"]) for s, r in runs.get(arm, {}).items() if r.get("test_top1") is not None
        }

    base = tests(baseline)
    out = []
    for arm in _arms_in_order(merged):
        seeds = runs.get(arm, {})
        test = tests(arm)
        vals = [float(r["best_val_top1"]) for r in seeds.values() if r.get("best_val_top1") is not None]
        params = next(
            (d[arm]["params"] for d in (lat, steps) if arm in d and d[arm].get("params") is not None),
            next((r.get("params") for r in seeds.values()), None),
        )
        common = sorted(set(test) & set(base)) if arm != baseline else []
        diff, p = (
            paired_t_test([test[s] for s in common], [base[s] for s in common]) if common else (None, None)
        )
        cpu = [float(r["process_cpu_s"]) for r in seeds.values() if r.get("process_cpu_s") is not None]
        out.append(
            {
                "arm": arm,
                "params": params,
                "ms_b1": lat[arm]["cpu_ms_per_image_b1"] if arm in lat else None,
                "ms_b32": lat[arm]["cpu_ms_per_image_b32"] if arm in lat else None,
                "ms_step": steps[arm]["cpu_ms_per_step_train"] if arm in steps else None,
                "seeds": len(test),
                "test_mean": statistics.fmean(test.values()) if test else None,
                "test_std": statistics.stdev(test.values()) if len(test) > 1 else None,
                "val_mean": statistics.fmean(vals) if vals else None,
                "val_seeds": len(vals),
                "diff": diff,
                "p": p,
                "paired": len(common),
                "train_cpu_h": statistics.fmean(cpu) / 3600 if cpu else None,
            }
        )
    return out


def plot_accuracy_vs_cost(rows: Sequence[dict[str, Any]], *, title: str | None = None) -> Any:
    """A ``matplotlib`` ``Figure``: top-1 against CPU ms per image at batch 1 (left) and 32 (right).

    Each arm is a point at its ms per image: filled with an error bar (std over seeds) where it has
    test top-1, hollow where it has validation top-1 only (labelled "val"), and a cross in the bottom
    strip, labelled "not trained", where it has neither. Arms without a latency row are left out.

    >>> rows = [{"arm": "plain", "ms_b1": 15.0, "ms_b32": 11.0, "test_mean": 80.0, "test_std": 0.5,
    ...          "val_mean": None, "seeds": 3}, {"arm": "se", "ms_b1": 19.0, "ms_b32": 12.0,
    ...          "test_mean": None, "test_std": None, "val_mean": None, "seeds": 0}]
    >>> len(plot_accuracy_vs_cost(rows).axes)
    2
    """
    from matplotlib.figure import Figure

    shown = [r for r in rows if r.get("ms_b1") is not None and r.get("ms_b32") is not None]
    if not shown:
        raise ValueError(
            "rows: no arm has a latency row (cpu_ms_per_image_b1/_b32); run the benchmark with --latency"
        )
    accs = [r.get("test_mean") if r.get("test_mean") is not None else r.get("val_mean") for r in shown]
    known = [a for a in accs if a is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 100.0)
    pad = max(2.0, 0.15 * (hi - lo))
    floor = lo - 2.5 * pad  # the "not trained" strip
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colours = [f"C{i % 10}" for i in range(len(shown))]
    from matplotlib.ticker import FormatStrFormatter

    untrained = sorted((r[key], i) for key in ("ms_b1",) for i, r in enumerate(shown) if accs[i] is None)
    stagger = {i: k % 4 for k, (_, i) in enumerate(untrained)}  # labels of neighbours on separate lines
    for ax, key, batch in zip(axes, ("ms_b1", "ms_b32"), (1, 32)):
        for i, (r, acc, col) in enumerate(zip(shown, accs, colours)):
            x, dy = r[key], 4
            if r.get("test_mean") is not None:
                ax.errorbar(x, acc, yerr=r.get("test_std") or 0.0, fmt="o", color=col, capsize=3)
                label = f"{r['arm']} ({r.get('seeds', 0)} seeds)"
            elif acc is not None:
                ax.plot(x, acc, "o", mfc="none", color=col)
                label = f"{r['arm']} (val)"
            else:
                ax.plot(x, floor, "x", color=col)
                acc, label, dy = floor, f"{r['arm']}: not trained", 4 + 10 * stagger[i]
            ax.annotate(label, (x, acc), xytext=(4, dy), textcoords="offset points", fontsize=7, color=col)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=6)
        ax.set_xlabel(f"CPU ms per image, batch {batch} (one thread, log scale)")
        ax.axhline(floor + pad, color="0.8", lw=0.8)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("top-1 (%): test mean ± std; hollow: validation")
    axes[0].set_ylim(floor - pad, hi + 1.5 * pad)
    fig.suptitle(title or "Accuracy vs inference cost", fontsize=10)
    return fig
