"""Cost (and a small end-to-end run) of the two-level attention pipeline on Flowers-102 (issue 17).

Xiao et al., "The Application of Two-level Attention Models in Deep Convolutional Neural Network for
Fine-grained Image Classification", CVPR 2015; implementation ``visattn.pipelines.two_level``.

``--measure`` times, on one thread:

* selective search (OpenCV contrib, fast mode) per image at each ``--image-sizes`` (shorter side),
  on ``--ss-images`` Flowers-102 images, plus the per-image proposal cache file size;
* decode + resize + ``roi_align`` crops per image (``--cap`` boxes);
* EfficientNet-Lite0 (ImageNet weights) inference on patches (patches scored per second) and
  training steps (patches per second) at each ``--patch-sizes``.

From these it extrapolates CPU-hours per stage for the whole data set (1,020 train + 1,020 val +
6,149 test images) for a grid of proposal caps and patch sizes, with the epochs of ``--epochs-*``
(an *estimate*: measured rates times counts; kept-patch fraction ``--keep-frac`` assumed).

``--e2e`` runs the pipeline itself on a Flowers-102 subset (``--classes``, ``--per-class``) with the
chosen cap and patch size, and records each stage's measured time and the *validation* accuracies
(the test split is not read).

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_two_level.py --root ../shared/data/flowers-102 \\
        --measure --json docs/results/two_level.json
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_two_level.py --root ../shared/data/flowers-102 \\
        --e2e --classes 102 --per-class 10 --cap 24 --patch 64 --json docs/results/two_level.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from visattn.pipelines.two_level import TwoLevelConfig, build_backbone, run_two_level
from visattn.pipelines.two_level.crops import crop_boxes
from visattn.pipelines.two_level.images import list_images, load_rgb, resize_short, to_chw
from visattn.pipelines.two_level.proposals import image_proposals

__all__ = ["main"]

FULL = {"train": 1020, "val": 1020, "test": 6149}
PUBLIC_ROOT = "../shared/data/flowers-102"  # how the JSON names the data folder, whatever --root was


def measure(args: argparse.Namespace) -> dict[str, Any]:
    images = list_images(args.root)
    paths = images.paths[:: max(1, len(images.paths) // args.ss_images)][: args.ss_images]
    out: dict[str, Any] = {"ss_images": len(paths)}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.image_sizes:
            opts = {
                "image_size": size,
                "ss_mode": "fast",
                "max_proposals": args.cap,
                "min_box": max(8, size // 8),
            }
            secs, counts, t_all, c_all = [], [], time.perf_counter(), time.process_time()
            for p in paths:
                r = image_proposals(p, opts, tmp)
                secs.append(r["seconds"])
                counts.append(len(r["boxes"]))
            wall = time.perf_counter() - t_all
            cpu = time.process_time() - c_all
            files = list(Path(tmp).glob("*.npz"))
            out[f"ss_{size}"] = {
                "wall_seconds_per_image_search": statistics.mean(secs),
                "wall_seconds_per_image_total": wall / len(paths),  # with decode, resize and cache write
                "cpu_seconds_per_image_total": cpu / len(paths),
                "proposals_per_image_after_cap": statistics.mean(counts),
                "proposals_per_cpu_second_after_cap": sum(counts) / cpu,
                "images_per_cpu_second": len(paths) / cpu,
                "cache_bytes_per_image": statistics.mean(f.stat().st_size for f in files),
            }
            for f in files:
                f.unlink()
    # decode + resize + crop
    t0 = time.process_time()
    for p in paths[:40]:
        img = to_chw(resize_short(load_rgb(p), args.image_sizes[0]))
        h, w = img.shape[1:]
        boxes = torch.tensor([[0, 0, w // 2, h // 2], [w // 4, h // 4, w, h]] * (args.cap // 2))
        crop_boxes(img, boxes, args.patch_sizes[0])
    out["decode_crop_cpu_seconds_per_image"] = (time.process_time() - t0) / min(40, len(paths))
    net = build_backbone("efficientnet_lite0", "_blocks.10", num_classes=102).to(
        memory_format=torch.channels_last
    )
    for ps in args.patch_sizes:
        x = torch.rand(64, 3, ps, ps).contiguous(memory_format=torch.channels_last)
        net.eval()
        with torch.no_grad():
            net.forward_all(x[:8])
            t0, w0 = time.process_time(), time.perf_counter()
            for _ in range(3):
                net.forward_all(x)
            infer, infer_wall = 3 * 64 / (time.process_time() - t0), 3 * 64 / (time.perf_counter() - w0)
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        y = torch.randint(0, 102, (32,))
        xb = x[:32]
        for i in range(4):
            if i == 1:
                t0, w0 = time.process_time(), time.perf_counter()
            loss = torch.nn.functional.cross_entropy(net(xb), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train, train_wall = 3 * 32 / (time.process_time() - t0), 3 * 32 / (time.perf_counter() - w0)
        out[f"lite0_{ps}"] = {
            "patches_scored_per_cpu_second": infer,
            "train_patches_per_cpu_second": train,
            "patches_scored_per_wall_second": infer_wall,
            "train_patches_per_wall_second": train_wall,
        }
    return out


def extrapolate(m: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """CPU-hours per stage on the full data set, for each (image size, cap, patch size)."""
    n_all = sum(FULL.values())
    rows = []
    for size in args.image_sizes:
        ss = m[f"ss_{size}"]["cpu_seconds_per_image_total"]
        for cap in (16, 24, 32, 64):
            for ps in args.patch_sizes:
                r = m[f"lite0_{ps}"]
                dec = m["decode_crop_cpu_seconds_per_image"]
                per_img = min(cap, m[f"ss_{size}"]["proposals_per_image_after_cap"] * cap / args.cap)
                kept = per_img * args.keep_frac
                s = {
                    "proposals": n_all * ss,
                    "filter": args.epochs_filter * FULL["train"] / r["train_patches_per_cpu_second"]
                    + n_all * (per_img / r["patches_scored_per_cpu_second"] + dec)
                    + n_all / r["patches_scored_per_cpu_second"],
                    "domain": args.epochs_domain
                    * FULL["train"]
                    * min(kept, args.max_patches)
                    / r["train_patches_per_cpu_second"]
                    + n_all * (kept / r["patches_scored_per_cpu_second"] + dec),
                    "part": n_all * (args.parts / r["patches_scored_per_cpu_second"] + dec),
                }
                rows.append({
                    "image_size": size, "cap": cap, "patch_size": ps,
                    "cpu_hours": {k: v / 3600 for k, v in s.items()},
                    "cpu_hours_total": sum(s.values()) / 3600,
                })  # fmt: skip
    return rows


def e2e(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    cfg = TwoLevelConfig(
        data_dir=args.root, out=str(out), classes=args.classes, limit_per_class=args.per_class,
        image_size=args.image_sizes[0], max_proposals=args.cap, min_box=max(8, args.image_sizes[0] // 8),
        patch_size=args.patch, filter_epochs=args.epochs_filter, domain_epochs=args.epochs_domain,
        max_patches_per_image=args.max_patches, parts=args.parts, filter_threshold=args.threshold,
        lr=args.lr, batch_size=32, seed=args.seed,
    )  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    report = run_two_level(cfg, "all", workers=1, progress=False, figures=4)
    cpu = time.process_time() - c0
    sizes = {p.name: p.stat().st_size for p in out.glob("*.pt")}
    cache = sum(f.stat().st_size for f in (out / "proposals_cache").glob("*.npz"))
    return {
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "report": report,
        "wall_seconds": time.perf_counter() - t0,
        "cpu_seconds": cpu,  # this process, 1 thread: what the run cost in CPU time
        "stage_file_bytes": sizes,
        "proposal_cache_bytes": cache,
    }


def baseline(args: argparse.Namespace) -> dict[str, Any]:
    """The whole-image arm alone, ``--baseline-epochs`` epochs: same backbone, patch size and recipe as the
    FilterNet, to compare the two-level model with a whole-image model given as many training steps."""
    from visattn.pipelines.two_level.crops import finetune, predict
    from visattn.pipelines.two_level.object import whole_images

    images = list_images(args.root, limit_per_class=args.per_class, classes=args.classes)
    tr, val = images.index("train"), images.index("val")
    y = torch.tensor(images.labels)
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(args.seed)
    net = build_backbone("efficientnet_lite0", "_blocks.10", num_classes=images.num_classes)
    net = net.to(memory_format=torch.channels_last)
    x_tr = whole_images(images, tr, image_size=args.image_sizes[0], patch_size=args.patch)
    x_val = whole_images(images, val, image_size=args.image_sizes[0], patch_size=args.patch)
    # one cosine schedule over all epochs, scored once on validation at the end (nothing is selected on it)
    losses = finetune(net, x_tr, y[tr], epochs=args.baseline_epochs, lr=args.lr, weight_decay=0.01, batch=32,
                      seed=args.seed, head=net.head)  # fmt: skip
    probs = predict(net, x_val)
    top1 = 100.0 * int((probs.argmax(1) == y[val]).sum()) / len(val)
    res: dict[str, Any] = {}
    if args.score_test:  # once, after training; the recipe was frozen on validation
        te = images.index("test")
        probs_te = predict(
            net, whole_images(images, te, image_size=args.image_sizes[0], patch_size=args.patch)
        )
        res = {
            "test_top1_whole_image": 100.0 * int((probs_te.argmax(1) == y[te]).sum()) / len(te),
            "n_test": len(te),
        }
    return {**res, "epochs": args.baseline_epochs, "val_top1_whole_image": top1, "train_losses": losses,
            "wall_seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "image_size": args.image_sizes[0], "patch_size": args.patch, "n_train": len(tr), "n_val": len(val)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="../shared/data/flowers-102")
    p.add_argument("--measure", action="store_true")
    p.add_argument("--e2e", action="store_true")
    p.add_argument("--estimate-only", action="store_true", help="extrapolate the stored measurements again")
    p.add_argument("--baseline-epochs", type=int, default=0, help="also run the whole-image arm alone")
    p.add_argument("--ss-images", type=int, default=60)
    p.add_argument("--image-sizes", type=int, nargs="+", default=[128, 192])
    p.add_argument("--patch-sizes", type=int, nargs="+", default=[64, 96])
    p.add_argument("--cap", type=int, default=64)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--keep-frac", type=float, default=0.5)
    p.add_argument("--epochs-filter", type=int, default=6)
    p.add_argument("--epochs-domain", type=int, default=3)
    p.add_argument("--max-patches", type=int, default=8)
    p.add_argument("--parts", type=int, default=3)
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--classes", type=int, default=None)
    p.add_argument("--per-class", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score-test", action="store_true", help="baseline: also score the test split once")
    p.add_argument("--out", default="runs/two_level_bench")
    p.add_argument("--json", default="docs/results/two_level.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    path = Path(args.json)
    data = json.loads(path.read_text()) if path.is_file() else {}
    meta = {
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": "shared 2-core CPU VM, no GPU",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "command": "python benchmarks/bench_two_level.py "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    if args.measure:
        m = measure(args)
        data["measure"] = {"meta": meta, "measured": m, "estimated_full_dataset": extrapolate(m, args),
                           "assumptions": {"keep_frac": args.keep_frac, "epochs_filter": args.epochs_filter,
                                           "epochs_domain": args.epochs_domain, "max_patches": args.max_patches,
                                           "parts": args.parts, "images": FULL}}  # fmt: skip
        print(json.dumps(data["measure"]["measured"], indent=1))
    if args.estimate_only:  # re-extrapolate the stored measurements with other epochs / caps (no timing)
        m = data["measure"]["measured"]
        key = f"estimate_ef{args.epochs_filter}_ed{args.epochs_domain}_mp{args.max_patches}_k{args.parts}"
        data[key] = {"meta": meta, "from": "measure.measured", "estimated_full_dataset": extrapolate(m, args),
                     "assumptions": {"keep_frac": args.keep_frac, "epochs_filter": args.epochs_filter,
                                     "epochs_domain": args.epochs_domain, "max_patches": args.max_patches,
                                     "parts": args.parts, "images": FULL}}  # fmt: skip
    if args.e2e:
        key = f"e2e_c{args.classes}_n{args.per_class}_cap{args.cap}_p{args.patch}_s{args.seed}"
        data[key] = {"meta": meta, **e2e(args)}
        print(json.dumps(data[key]["report"].get("fuse", {}), indent=1, default=str))
    if args.baseline_epochs:
        key = f"baseline_c{args.classes}_n{args.per_class}_p{args.patch}_e{args.baseline_epochs}_s{args.seed}"
        data[key] = {"meta": meta, **baseline(args)}
        print(json.dumps({k: v for k, v in data[key].items() if k != "train_losses"}, default=str))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, default=str)
    path.write_text(text.replace(str(Path(args.root).resolve()), PUBLIC_ROOT).replace(args.root, PUBLIC_ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
