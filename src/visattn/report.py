"""``write_report``: one self-contained HTML page comparing training runs and showing their attention.

The page holds, for the run folders given (what ``visattn train`` writes: ``config.yaml``,
``metrics.jsonl``, ``summary.json``, ``best.pt``):

1. a metrics table (model, data, parameters, epochs, best validation top-1, test top-1, time);
2. learning curves from ``metrics.jsonl`` (matplotlib);
3. per run, the attention views of ``visattn.viz.render.attention_views`` on a fixed set of test
   images (spread over the classes, evenly spaced within each, the same for every run on the same
   data: :func:`fixed_test_batch`);
4. the localisation table (``visattn.viz.localization``) for runs whose dataset carries object boxes
   (``DatasetSplits.extras["test_boxes"]``: translated and cluttered MNIST);
5. for two-level pipeline folders (what ``visattn pipeline two-level`` writes under ``out``): each
   level's validation (and test, when scored) top-1 and, for ``images`` test images (validation when
   the test split was not scored), the proposals, the kept patches and each part detector's patch
   (``visattn.pipelines.two_level.figures``, drawn by ``visattn.viz.patches``; images come from the
   run's own ``data_dir``, since its stage caches are keyed on it);
6. with ``leaderboards=[...]`` (``visattn report --leaderboard FILE.json``): the leaderboard table and
   the accuracy-vs-CPU-cost plot of ``visattn.viz.leaderboard`` from a benchmark's raw JSON
   (``benchmarks/bench_fine_grained.py``); the page may then hold no run at all.

An app beside the CLI (formerly ``visattn.viz.report``, still importable): runs are rebuilt with
``visattn.train.load_run`` (weights-only loading); ``visattn.viz`` draws the pictures.

Every image is embedded as a base64 ``data:`` URI and the page has no script, link or external
reference, so it opens offline and makes no network request. A run whose weights or data cannot
be loaded still gets its metrics and curves; its section says what was missing.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from visattn._validate import check_positive, check_type

__all__ = ["RunRecord", "read_run", "load_run_model", "fixed_test_batch", "spread_indices", "write_report"]

_CSS = """
body{font-family:system-ui,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.8em}h3{font-size:1.02em}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f2f2f2}
td.l,th.l{text-align:left}img{max-width:100%;display:block;margin:.3em 0}
.note{color:#8a4b00}.cap{color:#555;font-size:.85em;margin:0 0 1em}
"""


@dataclass
class RunRecord:
    """What a run folder holds: its config, summary and per-epoch history."""

    path: Path
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def weights(self) -> Path | None:
        """``best.pt`` (else ``last.pt``) of the run, if present."""
        for f in ("best.pt", "last.pt"):
            if (self.path / f).is_file():
                return self.path / f
        return None


def read_run(run_dir: str | Path) -> RunRecord:
    """Read a run folder; ``ValueError`` when it holds none of ``config.yaml``/``metrics.jsonl``/``summary.json``."""
    import yaml

    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run_dirs: {str(path)!r} is not a folder")
    files = {f: path / f for f in ("config.yaml", "summary.json", "metrics.jsonl")}
    if not any(p.is_file() for p in files.values()):
        raise ValueError(
            f"run_dirs: {str(path)!r} holds no config.yaml, summary.json or metrics.jsonl; is it a run folder?"
        )
    rec = RunRecord(path=path, name=path.name)
    if files["config.yaml"].is_file():
        rec.config = yaml.safe_load(files["config.yaml"].read_text()) or {}
    if files["summary.json"].is_file():
        rec.summary = json.loads(files["summary.json"].read_text())
    if files["metrics.jsonl"].is_file():
        rec.history = [
            json.loads(line) for line in files["metrics.jsonl"].read_text().splitlines() if line.strip()
        ]
    elif rec.summary.get("history"):
        rec.history = list(rec.summary["history"])
    return rec


def _img(png: bytes, alt: str) -> str:
    return (
        f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
    )


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{_fmt(c)}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _metrics_rows(runs: Sequence[RunRecord]) -> list[list[Any]]:
    rows = []
    for r in runs:
        c, s = r.config, r.summary
        last = r.history[-1] if r.history else {}
        rows.append(
            [
                r.name,
                s.get("model", c.get("model")),
                s.get("data", c.get("data")),
                c.get("retrofit") or "",
                s.get("params"),
                last.get("epoch", len(r.history)),
                s.get("best_val_top1", s.get("best_val_pck", _best(r.history))),
                s.get("test_top1", s.get("test_pck")),
                s.get("train_time_s"),
            ]
        )
    return rows


def _best(history: Sequence[dict[str, Any]]) -> float | None:
    """The best validation top-1 (classification) or PCK (pose) of a history, if it has any."""
    key = "val_top1" if any("val_top1" in h for h in history) else "val_pck"
    return max((h[key] for h in history if key in h), default=None)


def _curves_png(runs: Sequence[RunRecord]) -> bytes | None:
    from matplotlib.figure import Figure

    from visattn.viz.render import figure_png

    panels = [
        ("training loss", ("train_loss", "train_ce")),
        ("validation loss", ("val_loss",)),
        ("validation top-1 / PCK@0.2 (%)", ("val_top1", "val_pck")),
    ]
    if not any(r.history for r in runs):
        return None
    fig = Figure(figsize=(11, 3.0), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (title, keys) in zip(axes, panels):
        for r in runs:
            key = next((k for k in keys if any(k in h for h in r.history)), None)
            if key is None:
                continue
            pts = [(h.get("epoch", i + 1), h[key]) for i, h in enumerate(r.history) if key in h]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=r.name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[-1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7)
    return figure_png(fig)


class _DataCache:
    """Loads each dataset (by name, folder, seed, options) once for all runs."""

    def __init__(self, data_dir: str | None) -> None:
        self.data_dir = data_dir
        self._splits: dict[str, Any] = {}

    def splits(self, cfg: dict[str, Any]) -> Any:
        from visattn.data import load_dataset

        data_dir = self.data_dir or cfg.get("data_dir")
        key = json.dumps(
            [cfg.get("data"), data_dir, cfg.get("seed", 0), cfg.get("data_kwargs") or {}], default=str
        )
        if key not in self._splits:
            self._splits[key] = load_dataset(
                cfg["data"], data_dir=data_dir, seed=int(cfg.get("seed", 0)), **(cfg.get("data_kwargs") or {})
            )
        return self._splits[key]


def _labels_of(ds: Any) -> torch.Tensor | None:
    """The labels of a dataset without decoding its images (in-memory tensors, torchvision folders)."""
    for attr in ("labels", "targets"):
        value = getattr(ds, attr, None)
        if value is not None and len(value) == len(ds):
            return torch.as_tensor(value).long()
    return None


def spread_indices(labels: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` indices spread over the classes of ``labels (N,)``, evenly spaced within each class.

    Classes take turns (the first ``K`` indices are one image of each of ``K`` classes, in class
    order), so the first few shown images differ in class even in a class-sorted folder; a class
    with fewer images than its share gives its remainder to the others.

    >>> spread_indices(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2]), 6).tolist()
    [0, 4, 8, 3, 7, 9]
    """
    check_positive(n, "n", integer=True)
    labels = labels.long().flatten()
    members = [(labels == c).nonzero().flatten() for c in labels.unique(sorted=True)]
    quota = [0] * len(members)
    left = min(n, labels.numel())
    while left > 0:
        for i, m in enumerate(members):
            if left > 0 and quota[i] < len(m):
                quota[i] += 1
                left -= 1
    picks = [m[torch.linspace(0, len(m) - 1, q).round().long()] for m, q in zip(members, quota)]
    order = [int(p[r]) for r in range(max(quota, default=0)) for p in picks if r < len(p)]
    return torch.tensor(order, dtype=torch.long)


def fixed_test_batch(
    splits: Any, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A fixed test batch: ``n`` test images of a ``DatasetSplits``, spread over the classes.

    Indices come from :func:`spread_indices` over the test labels (evenly spaced over the whole
    test split when the labels cannot be read without decoding every image). Returns
    ``x (n, C, H, W)`` normalised with the dataset's mean/std (the evaluation transform), labels
    ``(n,)``, the test indices ``(n,)`` and the boxes ``(n, 4)`` when the dataset has
    ``extras["test_boxes"]`` (else ``None``). The same indices for every run on the same data.
    """
    from visattn.data import BatchTransform
    from visattn.data.transforms import pil_transform

    ds = splits.test
    labels = _labels_of(ds)
    if labels is not None:
        idx = spread_indices(labels, n)
    else:
        idx = torch.linspace(0, len(ds) - 1, min(n, len(ds))).round().long().unique()
    items = [ds[int(i)] for i in idx]
    imgs = [
        im if isinstance(im, torch.Tensor) else pil_transform(splits.image_size, train=False)(im)
        for im, _ in items
    ]
    x = BatchTransform(splits.mean, splits.std, preset="none")(torch.stack(imgs))
    y = torch.tensor([int(lbl) for _, lbl in items])
    boxes = splits.extras.get("test_boxes")
    return x, y, idx, None if boxes is None else torch.as_tensor(boxes)[idx]


def load_run_model(run: RunRecord, splits: Any) -> torch.nn.Module:
    """The run's model with its weights (``visattn.train.load_run``: weights-only), in ``eval()`` mode.

    ``splits`` gives ``num_classes`` and ``in_chans`` (and is not reloaded).
    """
    from visattn.train import load_run

    if not run.config.get("model"):
        raise ValueError("config.yaml names no model")
    return load_run(run.path, splits=splits).model


def _run_section(
    run: RunRecord, cache: _DataCache, *, images: int, class_images: int, loc_images: int
) -> tuple[str, list[list[Any]]]:
    from visattn.viz.localization import localization_scores
    from visattn.viz.render import attention_views

    head = (
        f"<h3>{html.escape(run.name)} <small>({html.escape(str(run.config.get('model', '?')))})</small></h3>"
    )
    try:
        from visattn.train import load_run

        if not run.config.get("model"):
            raise ValueError("config.yaml names no model")
        loaded = load_run(run.path, splits=cache.splits(run.config))  # the run's own normalisation
        model, splits = loaded.model, loaded.splits
        if splits.extras.get("task") == "pose":
            return head + _pose_section(model, splits, images), []
        x, y, idx, boxes = fixed_test_batch(splits, max(images, class_images))
        views = attention_views(model, x, labels=y, class_names=splits.class_names, boxes=boxes, show=images)
    except (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError, ImportError) as e:
        msg = f"attention views unavailable: {type(e).__name__}: {e}"
        return head + f'<p class="note">{html.escape(msg)}</p>', []
    shown = ", ".join(str(int(i)) for i in idx[:images])
    parts = [
        head,
        f'<p class="cap">Test images {shown} (spread over the classes, evenly spaced within each).</p>',
    ]
    for v in views:
        parts.append(
            _img(v.png, v.title)
            + f'<p class="cap"><b>{html.escape(v.title)}</b>: {html.escape(v.caption)}</p>'
        )
    loc_rows: list[list[Any]] = []
    if boxes is not None:
        xl, yl, _, bl = fixed_test_batch(splits, loc_images)
        scores = localization_scores(model, xl, bl, labels=yl) if bl is not None else []
        loc_rows += [[run.name, r["method"], r["pointing"], r["mass"], r["n"]] for r in scores]
    return "".join(parts), loc_rows


def _map_label(model: torch.nn.Module, tap: str) -> str:
    """``"Owner (tap name)"``: the closest module above the tap that is not a generic map-maker (the CRF maps
    of ``visattn.attention.multi_context`` serve holistic, part and multi-resolution attention alike)."""
    modules = dict(model.named_modules())
    parts = tap.split(".")
    for k in range(len(parts) - 1, 0, -1):
        owner = modules.get(".".join(parts[:k]))
        if owner is not None and type(owner).__name__ not in ("CRFAttention", "AttentionTap"):
            return f"{type(owner).__name__} ({tap})"
    return tap


def _pose_section(model: torch.nn.Module, splits: Any, images: int) -> str:
    """Predicted skeletons over ``images`` test crops (evenly spaced over the test split) beside every
    recorded attention map (``visattn.viz.pose.pose_attention_panel``: multi-resolution, holistic and
    part maps of ``mca_hourglass``; none for the plain hourglass)."""
    import io

    from visattn.viz.pose import pose_attention_panel

    ds = splits.test
    idx = torch.linspace(0, len(ds) - 1, min(images, len(ds))).round().long().unique()
    x = torch.stack([ds[int(i)][0] for i in idx])  # un-augmented crops, normalised as in training
    panel, info = pose_attention_panel(model, x, mean=splits.mean, std=splits.std)
    buf = io.BytesIO()
    panel.save(buf, format="PNG")
    maps = (
        ", ".join(_map_label(model, n) for n in info["maps"]) or "none (the model records no attention map)"
    )
    shown = ", ".join(str(int(i)) for i in idx)
    return _img(buf.getvalue(), "predicted skeletons and attention maps") + (
        f'<p class="cap"><b>Pose</b>: test people {shown} (evenly spaced over the test split), one row '
        "each: the crop with the predicted skeleton (arg-max of the last stack's heatmaps; right limbs red, "
        f"left blue), then each attention map (mean over its channels, red = high), columns: {html.escape(maps)}."
        "</p>"
    )


def write_report(
    run_dirs: Sequence[str | Path],
    out_html: str | Path,
    *,
    title: str = "visattn report",
    images: int = 6,
    class_images: int = 256,
    localization_images: int = 256,
    data_dir: str | None = None,
    leaderboards: Sequence[str | Path] = (),
) -> Path:
    """Write one self-contained HTML page comparing ``run_dirs``; return its path.

    Args:
        run_dirs: run folders written by ``visattn train`` / ``fit`` (``config.yaml``, ``metrics.jsonl``,
            ``summary.json``, ``best.pt``), or two-level pipeline folders (``visattn pipeline two-level``).
        out_html: the page to write (folders are created).
        title: the page's title.
        images: test images shown per run (overlays, warps, glimpse paths).
        class_images: test images behind the per-class plots (channel weights, gains).
        localization_images: test images scored for localisation (datasets with boxes only).
        data_dir: dataset folder overriding the runs' own ``data_dir``.
        leaderboards: raw JSON files of ``benchmarks/bench_fine_grained.py`` (merged) for a
            leaderboard section (table and accuracy-vs-cost plot).
    """
    check_type(run_dirs, "run_dirs", (list, tuple))
    check_type(leaderboards, "leaderboards", (list, tuple))
    if not run_dirs and not leaderboards:
        raise ValueError("run_dirs must name at least one run folder (or pass leaderboards), got none")
    for name, v in (
        ("images", images),
        ("class_images", class_images),
        ("localization_images", localization_images),
    ):
        check_positive(v, name, integer=True)
    from visattn.pipelines.two_level.figures import is_two_level_run

    is_two_level = [is_two_level_run(d) for d in run_dirs]
    two_level = [Path(d) for d, t in zip(run_dirs, is_two_level) if t]
    runs = [read_run(d) for d, t in zip(run_dirs, is_two_level) if not t]
    cache = _DataCache(data_dir)
    head = [
        "run",
        "model",
        "data",
        "retrofit",
        "params",
        "epochs",
        "best val top-1 / PCK (%)",
        "test top-1 / PCK (%)",
        "train time (s)",
    ]
    body = [f"<h1>{html.escape(title)}</h1>"]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    n_runs = len(runs) + len(two_level)
    body.append(f'<p class="cap">{n_runs} run(s); written {stamp}; one page, images embedded.</p>')
    if leaderboards:
        body.append(_leaderboard_section(leaderboards))
    if two_level:
        body.append(
            "<h2>Two-level attention</h2>" + "".join(_two_level_section(p, images) for p in two_level)
        )
    if not runs:
        return _write_page(title, body, out_html)
    body.append("<h2>Metrics</h2>" + _table(head, _metrics_rows(runs), left=4))
    curves = _curves_png(runs)
    body.append("<h2>Learning curves</h2>")
    body.append(_img(curves, "learning curves") if curves else '<p class="note">no metrics.jsonl found</p>')
    body.append("<h2>Attention</h2>")
    loc_rows: list[list[Any]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for run in runs:
            section, rows = _run_section(
                run, cache, images=images, class_images=class_images, loc_images=localization_images
            )
            body.append(section)
            loc_rows += rows
    body.append("<h2>Localisation</h2>")
    if loc_rows:
        body.append(
            '<p class="cap">Pointing game: share of images whose heat-map maximum lies in the object box. '
            "Mass: mean share of the heat map inside the box (uniform = the box's share of the image). "
            "Grad-CAM explains the true class; the centre prior is a Gaussian at the image centre.</p>"
        )
        body.append(_table(["run", "method", "pointing game", "mass in box", "images"], loc_rows, left=2))
    else:
        body.append(
            '<p class="note">No run\'s test set carries object boxes (translated and cluttered MNIST do), '
            "so there is nothing to score.</p>"
        )
    return _write_page(title, body, out_html)


def _write_page(title: str, body: list[str], out_html: str | Path) -> Path:
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _two_level_section(path: Path, images: int) -> str:
    """Accuracies per level and patch pictures of one two-level run folder."""
    from visattn.pipelines.two_level.figures import patch_views, run_summary

    parts = [f"<h3>{html.escape(path.name)} <small>(two-level attention pipeline)</small></h3>"]
    summary = run_summary(path)
    if summary:
        levels = ("whole_image", "object", "part", "fused")
        val, test = summary.get("val_top1", {}), summary.get("test_top1", {})
        rows = [[lv.replace("_", " "), val.get(lv), test.get(lv)] for lv in levels]
        parts.append(_table(["level", "val top-1 (%)", "test top-1 (%)"], rows))
        parts.append(
            f'<p class="cap">Fused = {_fmt(summary.get("object_weight"))} x object + the rest x part (weight '
            f"chosen on validation); images with no kept patch (whole image used): "
            f"{_fmt(summary.get('whole_image_fallback'))}.</p>"
        )
    else:
        parts.append('<p class="note">no report.json (the fuse stage has not run)</p>')
    try:
        views = patch_views(path, count=images)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:  # StageCacheError is a ValueError
        msg = f"patch pictures unavailable: {type(e).__name__}: {e}"
        return "".join(parts) + f'<p class="note">{html.escape(msg)}</p>'
    for v in views:
        parts.append(_img(v["png"], v["title"]) + f'<p class="cap"><b>{html.escape(v["title"])}</b>: '
                     f"{html.escape(v['caption'])}</p>")  # fmt: skip
    return "".join(parts)


def _leaderboard_section(paths: Sequence[str | Path]) -> str:
    """The leaderboard table and plot (``visattn.viz.leaderboard``) from benchmark JSON files."""
    from visattn.viz.leaderboard import leaderboard_rows, plot_accuracy_vs_cost
    from visattn.viz.views import figure_png

    saved = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"leaderboards: {str(p)!r} is not a file")
        saved.append(json.loads(Path(p).read_text()))
    rows = leaderboard_rows(saved)
    head = ["arm", "params", "seeds", "test top-1 (%)", "± std", "Δ plain", "p", "val top-1 (%)"]
    head += ["ms/img b1", "ms/img b32", "train CPU-h"]
    table = [
        [r["arm"], r["params"], r["seeds"], r["test_mean"], r["test_std"], r["diff"], r["p"], r["val_mean"]]
        + [r["ms_b1"], r["ms_b32"], r["train_cpu_h"]]
        for r in rows
    ]
    parts = ["<h2>Leaderboard</h2>", _table(head, table)]
    parts.append(
        '<p class="cap">From ' + html.escape(", ".join(Path(p).name for p in paths)) + ": test top-1 mean "
        "± std over seeds; Δ plain: paired difference to the plain arm over their common seeds, p: two-sided "
        "paired t-test; CPU ms per image: one thread, process CPU time. – : not measured.</p>"
    )
    try:
        parts.append(_img(figure_png(plot_accuracy_vs_cost(rows)), "accuracy vs CPU cost"))
    except ValueError as e:  # no latency rows: nothing to put on the x axis
        parts.append(f'<p class="note">{html.escape(str(e))}</p>')
    return "".join(parts)
