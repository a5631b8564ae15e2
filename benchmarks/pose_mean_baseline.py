"""A trained-nothing reference for pose PCK: every joint predicted at its mean crop position over training
people (un-augmented person-centred crops), scored like the models (PCK@0.2, visattn.train.pose).

    python benchmarks/pose_mean_baseline.py --data-dir ../shared/data/lspet --out docs/results/pose_mean_baseline.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from visattn.data.pose import load_pose_splits
from visattn.train.pose import PoseTask, pck, to_image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default="../shared/data/lspet")
    p.add_argument("--n-train", type=int, default=2000, help="training people averaged")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sp = load_pose_splits(args.data_dir)
    train = sp.train.with_augment(False)
    tot, cnt = torch.zeros(14, 2), torch.zeros(14, 1)
    for _, y in DataLoader(Subset(train, range(min(args.n_train, len(train)))), batch_size=64):
        v = y["visible"][..., None]
        heat_xy = y["heatmaps"].flatten(-2).argmax(-1)  # (B, J) target peaks, heatmap pixels
        c = torch.stack([heat_xy % 32, heat_xy // 32], -1).float()
        tot += (c * v).sum(0)
        cnt += v.sum(0)
    mean = tot / cnt.clamp(min=1)  # (J, 2) heatmap coordinates
    task, result = PoseTask(), {}
    for name, ds in (("val", sp.val), ("test", sp.test)):
        correct, counted = torch.zeros(14, dtype=torch.float64), torch.zeros(14, dtype=torch.float64)
        for _, y in DataLoader(ds, batch_size=64):
            pred = to_image(mean.expand(y["joints"].shape[0], -1, -1), y["crop_to_image"], 4.0)
            c, n, _ = pck(pred, y["joints"], y["joints_visible"])
            correct += c
            counted += n
        per = 100 * correct / counted.clamp(min=1)
        result[name] = {
            "pck": per.mean().item(),
            **{f"pck_{j}": per[i].item() for i, j in enumerate(task.joint_names)},
        }
        print(name, round(result[name]["pck"], 2))
    out = {
        "command": " ".join(
            ["python benchmarks/pose_mean_baseline.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": "shared 2-core CPU VM, no GPU",
        "mean_heatmap_xy": mean.tolist(),
        **result,
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
