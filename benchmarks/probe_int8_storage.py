"""Would int8 storage make room in the 25 MB weights budget? Validation accuracy of a run's ``best.pt``
with its weight matrices and convolution kernels rounded to int8 (symmetric, one scale per output
channel: ``round(w / s)`` with ``s = max|w_row| / 127``, weight-only, activations float32), next to the
shipped ``mixed`` rounding (float16 convolution kernels) and float32.

Validation split only (the run's own, carved from train or official): this probe never reads a test set.
``make_weights.py``'s rule allows a lossy precision only when it moves test top-1 by < 0.05 points; a
validation change far above that rules int8 out without a test look.

    python benchmarks/probe_int8_storage.py --run path/to/runs/fine_grained_board/plain_s0 \\
        --out docs/results/weights_int8_probe.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from visattn.checkpoint import extract_state_dict
from visattn.data import load_dataset, make_loaders
from visattn.train import build_model, evaluate, safe_load
from visattn.train.config import config_from_dict, load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def int8_round(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded through int8 with one symmetric scale per output channel (dim 0); tensors with
    fewer than 2 dims (biases, BatchNorm) and integer tensors are returned unchanged.

    >>> w = torch.tensor([[1.0, -0.5], [0.02, 0.01]])
    >>> torch.allclose(int8_round(w), w, atol=1 / 127)
    True
    >>> int8_round(torch.tensor([0.3, 0.1])).tolist()
    [0.30000001192092896, 0.10000000149011612]
    """
    if not t.is_floating_point() or t.ndim < 2:
        return t
    scale = (t.abs().flatten(1).amax(1).clamp(min=1e-12) / 127).view(-1, *([1] * (t.ndim - 1)))
    return (torch.round(t / scale).clamp(-127, 127) * scale).to(t.dtype)


def mixed_round(t: torch.Tensor) -> torch.Tensor:
    """The shipped ``mixed`` precision: convolution kernels (>= 4 dims) through float16."""
    return t.half().to(t.dtype) if t.is_floating_point() and t.ndim >= 4 else t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder written by the engine (config.yaml, best.pt)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON file to write")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = config_from_dict(load_config(run / "config.yaml"))
    sd = extract_state_dict(safe_load(run / "best.pt"), source=str(run / "best.pt"))
    splits = load_dataset(cfg.data, data_dir=cfg.data_dir, seed=cfg.seed, **cfg.data_kwargs)
    loaders = make_loaders(
        splits, batch_size=128, val_fraction=cfg.val_fraction, seed=cfg.seed, augment="none"
    )
    if loaders.val is None:
        raise ValueError(f"--run {run}: its config has no validation split")
    size = (int(splits.image_size[0]), int(splits.image_size[1]))
    scores: dict[str, float] = {}
    for name, fn in (("float32", lambda t: t), ("mixed", mixed_round), ("int8", int8_round)):
        net = build_model(cfg, num_classes=splits.num_classes, in_chans=splits.in_chans, image_size=size)
        net.load_state_dict({k: fn(v) for k, v in sd.items()})
        scores[name] = evaluate(net, loaders.val, torch.device("cpu"))["top1"]
        print(name, round(scores[name], 4), flush=True)
    n_int8 = sum(v.numel() for v in sd.values() if v.is_floating_point() and v.ndim >= 2)
    n_float = sum(v.numel() for v in sd.values() if v.is_floating_point())
    payload = {
        "run": str(run),
        "model": cfg.model,
        "retrofit": cfg.retrofit,
        "data": cfg.data,
        "val_images": loaders.n_val,
        "val_top1": scores,
        "int8_minus_float32_points": scores["int8"] - scores["float32"],
        "params_rounded_to_int8": n_int8,
        "params_float": n_float,
        "bytes_int8_estimate": n_int8 + 4 * (n_float - n_int8),
    }
    write_result(args.out, payload, argv=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
