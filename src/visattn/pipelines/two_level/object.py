"""Object-level top-down attention (Xiao et al., CVPR 2015, Sec. 4.1).

* FilterNet: the pretrained backbone fine-tuned on whole images (each resized to ``patch_size``
  square, the scale its patches are scored at). It scores every bottom-up proposal; a patch is kept
  when its best class probability ``max_k p(k | patch) >= filter_threshold``.
* DomainNet: fine-tuned on the kept patches of the training images, each with its image's label (at
  most ``max_patches_per_image`` per image, the most confident first). Deviation from the paper,
  for the CPU budget: it starts from the FilterNet's weights, not from the ImageNet ones.
* Object-level prediction of an image: the mean of the DomainNet's softmax over its kept patches,
  ``p_obj(k | I) = 1/|P_I| sum_{p in P_I} p(k | p)``.

Fallback: an image with no kept patch keeps its whole image as its only patch; the number of such
images is in the stage's ``stats["whole_image_fallback"]`` (and the final report).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from visattn.pipelines.two_level.backbone import HookedClassifier
from visattn.pipelines.two_level.config import TwoLevelConfig
from visattn.pipelines.two_level.crops import crop_boxes, finetune, iter_image_boxes, predict
from visattn.pipelines.two_level.images import ImageList, load_rgb, resize_short, to_chw

__all__ = ["whole_images", "split_boxes", "run_filter", "run_domain", "patch_pass"]


def whole_images(images: ImageList, idx: list[int], *, image_size: int, patch_size: int) -> torch.Tensor:
    """Whole images (resized to ``patch_size`` square) of positions ``idx``: ``uint8 (n, 3, P, P)``."""
    out = torch.empty(len(idx), 3, patch_size, patch_size, dtype=torch.uint8)
    for j, i in enumerate(idx):
        img = to_chw(resize_short(load_rgb(images.paths[i]), image_size))
        out[j] = crop_boxes(img, torch.tensor([[0, 0, img.shape[2], img.shape[1]]]), patch_size)[0]
    return out


def split_boxes(boxes: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    """Per-image views ``boxes[offsets[i]:offsets[i + 1]]``."""
    return [boxes[int(a) : int(b)] for a, b in zip(offsets[:-1], offsets[1:])]


def _top1(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * int((probs.argmax(1) == labels).sum()) / len(labels) if len(labels) else float("nan")


def patch_pass(
    net: HookedClassifier,
    cfg: TwoLevelConfig,
    images: ImageList,
    boxes: list[torch.Tensor],
    *,
    mid: bool = False,
    desc: str = "patches",
) -> dict[str, Any]:
    """Run ``net`` over every box of every image in batches: softmax ``(M, K)``, and (``mid``) per-filter
    spatial maxima of the hooked layer ``(M, C)`` (float16). Rows follow the order of ``boxes``."""
    from tqdm.auto import tqdm

    net.eval()
    probs, resp = [], []
    total = sum(len(b) for b in boxes)
    t0 = time.perf_counter()
    with torch.no_grad(), tqdm(total=total, desc=desc, disable=total < 2000) as bar:
        for x, _ in iter_image_boxes(
            images.paths, boxes, image_size=cfg.image_size, patch_size=cfg.patch_size, batch=cfg.batch_size
        ):
            out = net.forward_all((x.float() / 255.0).contiguous(memory_format=torch.channels_last))
            probs.append(out["logits"].softmax(1))
            if mid:
                resp.append(out["mid"].amax((2, 3)).half())
            bar.update(len(x))
    res: dict[str, Any] = {"probs": torch.cat(probs), "seconds": time.perf_counter() - t0, "patches": total}
    if mid:
        res["responses"] = torch.cat(resp)
    return res


def run_filter(
    cfg: TwoLevelConfig, images: ImageList, proposals: dict[str, Any], net: HookedClassifier
) -> dict[str, Any]:
    """Fine-tune the FilterNet on whole images, score every proposal, keep the confident ones."""
    torch.manual_seed(cfg.seed)
    labels = torch.tensor(images.labels)
    tr = images.index("train")
    t0 = time.perf_counter()
    x_tr = whole_images(images, tr, image_size=cfg.image_size, patch_size=cfg.patch_size)
    losses = finetune(net, x_tr, labels[tr], epochs=cfg.filter_epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                      batch=cfg.batch_size, seed=cfg.seed, head=net.head)  # fmt: skip
    train_s = time.perf_counter() - t0
    all_idx = list(range(len(images.paths)))
    whole = predict(net, whole_images(images, all_idx, image_size=cfg.image_size, patch_size=cfg.patch_size))
    boxes = split_boxes(proposals["boxes"], proposals["offsets"])
    scored = patch_pass(net, cfg, images, boxes, desc="filter: scoring proposals")
    conf = scored["probs"].max(1).values
    keep = conf >= cfg.filter_threshold
    kept, fallback = [], 0
    for i, (a, b) in enumerate(zip(proposals["offsets"][:-1], proposals["offsets"][1:])):
        k = keep[int(a) : int(b)]
        if k.any():
            order = conf[int(a) : int(b)][k].argsort(descending=True)  # most confident first
            kept.append(boxes[i][k][order])
        else:
            h, w = proposals["sizes"][i].tolist()
            kept.append(torch.tensor([[0, 0, w, h]], dtype=torch.int32))
            fallback += 1
    counts = torch.tensor([len(k) for k in kept])
    val = images.index("val")
    return {
        "state_dict": {k: v.clone() for k, v in net.state_dict().items()},
        "whole_probs": whole,
        "confidence": conf,
        "kept_boxes": torch.cat(kept),
        "kept_offsets": torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]),
        "stats": {
            "train_losses": losses,
            "train_seconds": train_s,
            "scored_patches": scored["patches"],
            "score_seconds": scored["seconds"],
            "patches_per_second": scored["patches"] / max(scored["seconds"], 1e-9),
            "kept_patches": int(keep.sum()),
            "whole_image_fallback": fallback,
            "val_top1_whole_image": _top1(whole[val], labels[val]),
        },
    }


def run_domain(
    cfg: TwoLevelConfig, images: ImageList, filt: dict[str, Any], net: HookedClassifier
) -> dict[str, Any]:
    """Fine-tune the DomainNet on training images' kept patches; object-level probabilities of every image."""
    torch.manual_seed(cfg.seed)
    net.load_state_dict(filt["state_dict"])
    labels = torch.tensor(images.labels)
    kept = split_boxes(filt["kept_boxes"], filt["kept_offsets"])
    tr = images.index("train")
    t0 = time.perf_counter()
    xs, ys = [], []
    for i in tr:
        img = to_chw(resize_short(load_rgb(images.paths[i]), cfg.image_size))
        b = kept[i][: cfg.max_patches_per_image]
        xs.append(crop_boxes(img, b, cfg.patch_size))
        ys.append(torch.full((len(b),), images.labels[i], dtype=torch.int64))
    x_tr, y_tr = torch.cat(xs), torch.cat(ys)
    losses = finetune(net, x_tr, y_tr, epochs=cfg.domain_epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                      batch=cfg.batch_size, seed=cfg.seed + 1, head=net.head)  # fmt: skip
    train_s = time.perf_counter() - t0
    out = patch_pass(net, cfg, images, kept, mid=True, desc="domain: kept patches")
    offs = filt["kept_offsets"]
    probs = torch.stack([out["probs"][int(a) : int(b)].mean(0) for a, b in zip(offs[:-1], offs[1:])])
    val = images.index("val")
    return {
        "state_dict": {k: v.clone() for k, v in net.state_dict().items()},
        "object_probs": probs,
        "responses": out["responses"],
        "stats": {
            "train_patches": len(x_tr),
            "train_losses": losses,
            "train_seconds": train_s,
            "pass_seconds": out["seconds"],
            "patches_per_second": out["patches"] / max(out["seconds"], 1e-9),
            "val_top1_object": _top1(probs[val], labels[val]),
        },
    }
