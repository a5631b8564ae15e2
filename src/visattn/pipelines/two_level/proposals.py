"""Bottom-up attention: selective-search proposals (Xiao et al., CVPR 2015, Sec. 3; Uijlings et al., IJCV 2013).

Proposals come from OpenCV's ``cv2.ximgproc.segmentation.createSelectiveSearchSegmentation``
(``opencv-contrib-python-headless``, the ``finegrained`` extra), run on the image resized to shorter
side ``image_size``, with C's ``rand()`` seeded (``srand(0)``) before each image: OpenCV ranks the
hierarchy's boxes with ``rand()`` weights (``cv2.setRNGSeed`` does not reach it), so seeded, the
proposals and the cap's choice are the same in any process and any order. Boxes are ``int32 (N, 4)`` as ``(x0, y0, x1, y1)`` in pixels of that resized image
(``x1``/``y1`` exclusive). Boxes with a side below ``min_box`` are dropped, duplicates removed, and the
first ``max_proposals`` kept in OpenCV's order.

Fallback (documented, counted, never silent): when an image has no usable proposal (one colour,
smaller than ``min_box``, or OpenCV fails on it) its only proposal is the whole image and the reason is
recorded. Each image's result is cached in ``OUT/proposals_cache/<key>.npz``, the key hashing the
file's path, size and modification time and the options, so a second run (or a re-run after a
crash) reads it back instead of segmenting again.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visattn.pipelines.two_level.images import ImageList, load_rgb, resize_short

__all__ = ["selective_search", "image_proposals", "compute_proposals"]


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "proposals need OpenCV contrib: pip install opencv-contrib-python-headless "
            "(the visattn[finegrained] extra)"
        ) from err
    if not hasattr(cv2, "ximgproc"):
        raise ImportError(
            "cv2 has no ximgproc module: install opencv-contrib-python-headless "
            "(plain opencv-python lacks selective search)"
        )
    return cv2


def _seed_c_rand() -> None:
    """``srand(0)`` in the C library OpenCV's selective search draws its ranking weights from."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(None) if os.name != "nt" else ctypes.cdll.msvcrt
        except OSError:  # pragma: no cover - no C library to seed: proposals stay valid, order may vary
            _LIBC = False
    if _LIBC:
        _LIBC.srand(0)


_LIBC: Any = None


def selective_search(
    img: np.ndarray, *, mode: str = "fast", max_proposals: int = 64, min_box: int = 8
) -> tuple[np.ndarray, str | None]:
    """Selective-search boxes of one RGB image.

    Args:
        img: ``uint8 (H, W, 3)`` RGB.
        mode: ``"fast"``, ``"quality"`` or ``"single"`` (OpenCV's three strategies).
        max_proposals: at most this many boxes are returned.
        min_box: boxes with width or height below this are dropped.

    Returns:
        ``(boxes, fallback)``: ``int32 (N, 4)`` boxes ``(x0, y0, x1, y1)``, and ``None`` or the reason
        the whole image ``[[0, 0, W, H]]`` was returned instead.

    >>> rng = np.random.default_rng(0)
    >>> img = np.zeros((48, 48, 3), np.uint8); img[8:30, 10:40] = (200, 30, 30)
    >>> boxes, why = selective_search(img, max_proposals=5, min_box=4)
    >>> boxes.shape[1], boxes.shape[0] <= 5, why
    (4, True, None)
    """
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"img must be uint8 (H, W, 3) RGB, got {got}")
    h, w = img.shape[:2]
    whole = np.array([[0, 0, w, h]], dtype=np.int32)
    if h < max(min_box, 2) or w < max(min_box, 2):
        return whole, f"image {w}x{h} is smaller than min_box {min_box}"
    if int(img.max()) == int(img.min()):
        return whole, "one colour"
    cv2 = _import_cv2()
    cv2.setNumThreads(1)
    try:
        ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        ss.setBaseImage(np.ascontiguousarray(img[:, :, ::-1]))  # OpenCV wants BGR
        {"fast": ss.switchToSelectiveSearchFast, "quality": ss.switchToSelectiveSearchQuality,
         "single": ss.switchToSingleStrategy}[mode]()  # fmt: skip
        _seed_c_rand()
        rects = np.asarray(ss.process(), dtype=np.int64).reshape(-1, 4)
    except cv2.error as err:
        return whole, f"opencv failed: {str(err).strip().splitlines()[-1][:120]}"
    keep = (rects[:, 2] >= min_box) & (rects[:, 3] >= min_box)
    rects = rects[keep]
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], 1)
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)][:max_proposals].astype(np.int32)
    if len(boxes) == 0:
        return whole, f"no proposal of side >= {min_box}"
    return boxes, None


def _cache_key(path: str, options: dict[str, Any]) -> str:
    st = Path(path).stat()
    raw = json.dumps([os.path.abspath(path), st.st_size, st.st_mtime_ns, options], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def image_proposals(path: str, options: dict[str, Any], cache_dir: str | None) -> dict[str, Any]:
    """Proposals of one image file (read from / written to ``cache_dir`` when given).

    ``options``: ``image_size``, ``ss_mode``, ``max_proposals``, ``min_box``. Returns ``{"boxes": int32
    (N, 4), "size": (H, W) of the resized image, "fallback": str | None, "seconds": float, "cached": bool}``.
    """
    cache = Path(cache_dir) / f"{_cache_key(path, options)}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            fb = str(z["fallback"])
            return {"boxes": z["boxes"], "size": tuple(int(v) for v in z["size"]),
                    "fallback": fb or None, "seconds": 0.0, "cached": True}  # fmt: skip
    img = resize_short(load_rgb(path), options["image_size"])
    t0 = time.perf_counter()
    boxes, fallback = selective_search(
        img, mode=options["ss_mode"], max_proposals=options["max_proposals"], min_box=options["min_box"]
    )
    seconds = time.perf_counter() - t0
    if cache is not None:
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, boxes=boxes, size=np.array(img.shape[:2]), fallback=np.array(fallback or ""))
        os.replace(tmp, cache)
    return {"boxes": boxes, "size": img.shape[:2], "fallback": fallback, "seconds": seconds, "cached": False}


def _work(args: tuple[str, dict[str, Any], str | None]) -> dict[str, Any]:
    return image_proposals(*args)


def compute_proposals(
    images: ImageList,
    options: dict[str, Any],
    *,
    cache_dir: str | Path | None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Proposals of every image, in parallel over ``workers`` processes, with a progress bar.

    Returns the stage payload: ``boxes`` ``int32 (sum N_i, 4)``, ``offsets`` ``int64 (n + 1,)`` (image
    ``i`` owns ``boxes[offsets[i]:offsets[i + 1]]``), ``sizes`` ``int64 (n, 2)`` resized ``(H, W)``,
    ``fallback`` (one reason string per image, ``""`` when selective search worked), and timings.
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cdir = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cdir = str(cache_dir)
    jobs = [(p, options, cdir) for p in images.paths]
    t0 = time.perf_counter()
    if workers == 1:
        results = [_work(j) for j in tqdm(jobs, desc="proposals", disable=not progress)]
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            it = pool.imap(_work, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers) or 1)))
            results = list(
                tqdm(it, total=len(jobs), desc=f"proposals ({workers} workers)", disable=not progress)
            )
    wall = time.perf_counter() - t0
    counts = [len(r["boxes"]) for r in results]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    computed = [r for r in results if not r["cached"]]
    return {
        "boxes": torch.from_numpy(np.concatenate([r["boxes"] for r in results]).astype(np.int32)),
        "offsets": torch.from_numpy(offsets),
        "sizes": torch.tensor([list(r["size"]) for r in results], dtype=torch.int64),
        "fallback": [r["fallback"] or "" for r in results],
        "stats": {
            "images": len(results),
            "proposals": int(offsets[-1]),
            "from_cache": len(results) - len(computed),
            "fallback_images": sum(1 for r in results if r["fallback"]),
            "search_seconds": float(sum(r["seconds"] for r in computed)),
            "wall_seconds": wall,
        },
    }
