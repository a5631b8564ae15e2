"""Localisation table per mechanism on cluttered (or translated) MNIST: does the attention find the digit?

For each model (``visattn.viz.localization``): the pointing game and the attention mass inside the
digit's box, for every spatial-attention tap (spatial masks, spatial-transformer sampling grids,
glimpse locations), Grad-CAM of the same model, a centre prior and the uniform reference.

Each model is trained briefly with ``visattn.train.fit`` (checkpoint chosen on a validation split
carved from the training set; the test set is used once, for accuracy and the scores), unless its
run folder already holds a ``best.pt`` (``--reuse``). Small CPU budget: see ``--limit-train`` and
``--epochs``. Writes ``OUT/localization.md``, ``OUT/localization.json`` and ``OUT/report.html``.

    nice python benchmarks/bench_localization.py --data-dir ../shared/data/mnist.npz \\
        --data mnist_cluttered60 --models cnn_mnist,st_cnn_mnist,ram --epochs 2 --limit-train 12000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import evaluate, write_result  # noqa: E402

# model -> (config overrides for a 60x60 canvas); the RAM uses the paper's 60x60 retina.
PRESETS: dict[str, dict[str, Any]] = {
    "cnn_mnist": {"model_kwargs": {"image_size": 60}, "lr": 0.02},
    "st_cnn_mnist": {"model_kwargs": {"image_size": 60, "st_out_size": 30}, "lr": 0.02},
    "mnist_cnn": {"lr": 0.05},
    "ram": {
        "model_kwargs": {"patch_size": 12, "num_scales": 3},
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.0,
    },
    "attention56_cifar": {"lr": 0.05},
}


def _train(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from visattn.train import TrainConfig, fit

    run = out / name
    if args.reuse and (run / "best.pt").is_file() and (run / "summary.json").is_file():
        print(f"{name}: reusing {run}", flush=True)
        return json.loads((run / "summary.json").read_text())
    preset = dict(PRESETS.get(name, {}))
    cfg = TrainConfig(
        model=name,
        data=args.data,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        limit_train=args.limit_train,
        seed=args.seed,
        out=str(run),
        progress=False,
        augment="none",
        val_fraction=args.val_fraction,
        test_at_end=False,  # accuracy is measured below, on the scored test images only
        **preset,
    )
    t0 = time.perf_counter()
    summary = fit(cfg)
    print(
        f"{name}: trained in {time.perf_counter() - t0:.0f} s, val top-1 {summary['best_val_top1']:.2f}",
        flush=True,
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="mnist_cluttered60", choices=["mnist_cluttered60", "mnist_translated60"])
    p.add_argument("--data-dir", default="../shared/data/mnist.npz", help="MNIST (.npz or idx folder)")
    p.add_argument("--models", default="cnn_mnist,st_cnn_mnist,ram")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit-train", type=int, default=12000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=1000, help="test images scored")
    p.add_argument("--val-fraction", type=float, default=0.05, help="validation share carved from train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse", action="store_true", help="reuse run folders that hold best.pt")
    p.add_argument("--out", default="runs/bench_localization")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import visattn
    from visattn.data import load_dataset
    from visattn.viz.localization import localization_scores
    from visattn.viz.report import fixed_test_batch, load_run, load_run_model, write_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [m for m in args.models.split(",") if m]
    missing = [m for m in names if m not in visattn.list_models()]
    if missing:
        print(f"not registered, left out: {missing}")
    names = [m for m in names if m not in missing]
    splits = load_dataset(args.data, data_dir=args.data_dir, seed=args.seed)
    x, y, _, boxes = fixed_test_batch(splits, args.images)
    rows: list[dict[str, Any]] = []
    for name in names:
        summary = _train(name, args, out)
        model = load_run_model(load_run(out / name), splits)
        top1 = evaluate(model, (x, y))["top1"]
        t0 = time.perf_counter()
        scores = localization_scores(model, x, boxes, labels=y)
        print(f"{name}: scored {len(x)} images in {time.perf_counter() - t0:.0f} s", flush=True)
        for r in scores:
            rows.append({"model": name, "val_top1": summary.get("best_val_top1"), "test_top1": top1, **r})
    head = (
        "| model | val top-1 (%) | top-1 on scored test images (%) | method | pointing game | mass in box |\n"
        "|---|---:|---:|---|---:|---:|\n"
    )
    body = "".join(
        f"| {r['model']} | {r['val_top1']:.2f} | {r['test_top1']:.2f} | {r['method']} | "
        + ("–" if r["pointing"] != r["pointing"] else f"{r['pointing']:.3f}")
        + f" | {r['mass']:.3f} |\n"
        for r in rows
    )
    text = (
        f"{args.data}, {len(x)} evenly spaced test images; training: {args.epochs} epoch(s) on "
        f"{args.limit_train} images (validation: {args.val_fraction} of train), seed {args.seed}, "
        f"{args.threads} thread(s)\n\n" + head + body
    )
    (out / "localization.md").write_text(text)
    write_result(out / "localization.json", {"args": vars(args), "rows": rows}, argv=argv)
    print("\n" + text)
    report = write_report([out / n for n in names], out / "report.html", title=f"localisation on {args.data}")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
