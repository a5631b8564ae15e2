"""Why SE costs ~4 % at batch-1 inference on this CPU: small operations run slower right after convolutions.

Two measurements, eval mode, batch 1, ``torch.set_num_threads(threads)``, thread CPU time, medians:

1. per block: forward hooks time every ResNet-50 block of visattn's ``resnet50`` and of ``se_resnet50`` with
   ``reduction=1024`` (SE weights almost nil, so memory traffic for them is not the cause), interleaved;
2. per operation: the eval-mode SE tail of the last block (2048 x 7 x 7), operation by operation, (a) right
   after the block's three convolutions, (b) in a loop on a copy of the same tensor with no convolution between.

Usage::

    nice python benchmarks/bench_se_cold_ops.py --rounds 20 --json se_cold_ops.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import visattn
from visattn.models.se_resnet import SEBottleneck

__all__ = ["main"]

STEPS = ("rsqrt+mul", "shift", "sum", "squeeze", "gate (4 ops)", "a*g, b*g", "addcmul", "add_relu")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def per_block(rounds: int) -> dict[str, list[float]]:
    """Median thread CPU µs per block: ``{block: [plain, se]}``."""
    torch.manual_seed(0)
    models = {
        "plain": visattn.create_model("resnet50", num_classes=1000).eval(),
        "se": visattn.create_model("se_resnet50", num_classes=1000, attn_kwargs={"reduction": 1024}).eval(),
    }
    rec: dict[str, dict[str, list[float]]] = {k: {} for k in models}
    for key, model in models.items():
        for name, mod in model.named_modules():
            if name.startswith("layer") and name.count(".") == 1:
                mod.register_forward_pre_hook(lambda m, i: setattr(m, "_t0", time.thread_time()))
                mod.register_forward_hook(
                    lambda m, i, o, n=name, k=key: rec[k].setdefault(n, []).append(time.thread_time() - m._t0)
                )
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        for r in range(rounds + 2):
            for model in models.values() if r % 2 else list(models.values())[::-1]:
                model(x)
    return {n: [1e6 * statistics.median(rec[k][n][2:]) for k in models] for n in rec["plain"]}


def per_op(rounds: int) -> dict[str, list[float]]:
    """Median thread CPU µs per step of the eval SE tail: ``{step: [after convolutions, in a loop]}``."""
    torch.manual_seed(0)
    blk = SEBottleneck(2048, 512).eval()
    se, bn, x = blk.attn, blk.bn3, torch.randn(1, 2048, 7, 7)

    def steps(c: torch.Tensor) -> list[float]:
        t = [time.thread_time()]
        a = torch.rsqrt(bn.running_var + bn.eps).mul_(bn.weight)
        t.append(time.thread_time())
        shift = torch.addcmul(bn.bias, bn.running_mean, a, value=-1.0)
        t.append(time.thread_time())
        m = c.sum((2, 3))
        t.append(time.thread_time())
        s = torch.addcmul(shift, m, a, value=1.0 / 49)
        t.append(time.thread_time())
        g = se._gate(s, 1.0)
        t.append(time.thread_time())
        ag, bg = a * g, shift * g
        t.append(time.thread_time())
        y = torch.addcmul(x, c, ag.reshape(1, -1, 1, 1), out=c)
        t.append(time.thread_time())
        torch.ops.aten._add_relu_(y, bg.reshape(1, -1, 1, 1))
        t.append(time.thread_time())
        return [1e6 * (b - a) for a, b in zip(t, t[1:])]

    cold, warm = [], []
    with torch.inference_mode():
        for _ in range(rounds * 10):
            out = blk.relu(blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(x))))))
            c = blk.conv3(out)
            c0 = c.clone()
            cold.append(steps(c))
        for _ in range(rounds * 10):
            warm.append(steps(c0.clone()))
    return {
        name: [statistics.median(r[i] for r in cold), statistics.median(r[i] for r in warm)]
        for i, name in enumerate(STEPS)
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    blocks = per_block(args.rounds)
    print("block        plain µs    SE(r=1024) µs   extra µs")
    for n, (p, s) in blocks.items():
        print(f"{n:12s} {p:10.1f} {s:12.1f} {s - p:+10.1f}")
    print(f"sum of extra: {sum(s - p for p, s in blocks.values()) / 1e3:.2f} ms per image")
    ops = per_op(args.rounds)
    print("\nSE tail step (2048x7x7)   after convs µs   in a loop µs")
    for n, (cold, warm) in ops.items():
        print(f"{n:24s} {cold:12.1f} {warm:14.1f}")
    result = {"per_block_us": blocks, "per_op_us": ops, "torch": torch.__version__, "threads": args.threads}
    write_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
