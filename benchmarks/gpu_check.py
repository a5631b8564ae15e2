"""GPU checks in one go: every registered model on CUDA (fp32 and bf16 autocast, forward and backward),
``torch.compile`` against eager, retrofit's identity on the GPU, and (``--ddp``, under ``torchrun``)
an NCCL process group with a DDP step.

Run on a machine with a CUDA GPU::

    PYTHONPATH=src python benchmarks/gpu_check.py --out gpu_checks.json
    PYTHONPATH=src torchrun --nproc-per-node 1 benchmarks/gpu_check.py --ddp --out ddp_check.json

Every check is recorded (``ok``, the measured numbers, or the error); the script never stops at a
failing check. Timings are medians of CUDA-synchronised steps; when other jobs share the GPU (as in
``benchmarks/gpu_session.sh``) they are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

IMAGENET = {"resnet18", "resnet50", "se_resnet18", "se_resnet50", "attention56", "attention92", "st_cnn"}
DEV = "cuda"  # --dry-run-cpu switches to "cpu" to check the script itself
COMPILE = ["se_resnet20", "attention56_cifar"]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def _sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def _timed(step: Callable[[], Any], rounds: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    _sync()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _build(name: str) -> nn.Module:
    from visattn import create_model

    if name == "dasnet":
        base = create_model("mnist_cnn", num_classes=10, in_chans=1)
        return create_model("dasnet", base=base, num_classes=10, in_chans=1)
    return create_model(name, num_classes=10)


def _input(name: str, model: nn.Module, batch: int) -> torch.Tensor:
    spec = getattr(model, "input_spec", None)
    c = spec.in_chans if spec is not None else 3
    if spec is not None and spec.size is not None:
        h, w = spec.size
    elif name in IMAGENET:
        h = w = 224
    else:
        floor = 28 if c == 1 else 32
        h = max(floor, spec.min_size[0] if spec is not None else floor)
        w = max(floor, spec.min_size[1] if spec is not None else floor)
    return torch.randn(batch, c, h, w, device=DEV)


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, dict):  # the recurrent attention model returns its episode
        return out["logits"]
    return out[0] if isinstance(out, (tuple, list)) else out


def check_model(name: str) -> dict[str, Any]:
    rec: dict[str, Any] = {"model": name}
    torch.manual_seed(0)
    model = _build(name).to(DEV)
    batch = 8 if name in IMAGENET else 32
    x = _input(name, model, batch)
    y = torch.randint(0, 10, (batch,), device=DEV)
    rec["input"] = list(x.shape)
    trainable = any(p.requires_grad for p in model.parameters()) and getattr(model, "uses_optimizer", True)

    def step(amp: bool) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=amp):
            logits = _logits(model(x))
            loss = nn.functional.cross_entropy(logits.float(), y)
        if trainable:
            loss.backward()
        return loss

    model.train()
    loss = step(False)
    rec["fp32_loss_finite"] = bool(torch.isfinite(loss).item())
    if trainable:
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        rec["grads_present"] = sum(g is not None for g in grads)
        rec["grads_total"] = len(grads)
        rec["grads_finite"] = all(bool(torch.isfinite(g).all()) for g in grads if g is not None)
    loss_bf = step(True)
    rec["bf16_loss_finite"] = bool(torch.isfinite(loss_bf).item())
    model.eval()
    with torch.no_grad():
        ref = _logits(model(x)).float()
        with torch.autocast(DEV, dtype=torch.bfloat16):
            low = _logits(model(x)).float()
    rec["bf16_vs_fp32_max_abs"] = (low - ref).abs().max().item()
    rec["bf16_vs_fp32_top1_agree"] = (low.argmax(1) == ref.argmax(1)).float().mean().item()
    model.train()
    rec["fp32_train_step_ms"] = _timed(lambda: step(False))
    rec["bf16_train_step_ms"] = _timed(lambda: step(True))
    rec["ok"] = rec["fp32_loss_finite"] and rec["bf16_loss_finite"] and rec.get("grads_finite", True)
    return rec


def check_compile(name: str) -> dict[str, Any]:
    rec: dict[str, Any] = {"model": name}
    torch.manual_seed(0)
    model = _build(name).to(DEV).eval()
    batch = 8 if name in IMAGENET else 32
    x = _input(name, model, batch)
    y = torch.randint(0, 10, (batch,), device=DEV)
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = _logits(model(x))
        got = _logits(compiled(x))
    _sync()
    rec["eval_compile_s"] = time.perf_counter() - t0
    rec["eval_max_abs_diff"] = (got - ref).abs().max().item()
    model.train()

    def step(m: nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(_logits(m(x)), y).backward()

    t0 = time.perf_counter()
    step(compiled)
    _sync()
    rec["train_compile_s"] = time.perf_counter() - t0
    rec["eager_train_step_ms"] = _timed(lambda: step(model))
    rec["compiled_train_step_ms"] = _timed(lambda: step(compiled))
    rec["ok"] = rec["eval_max_abs_diff"] < 1e-2
    return rec


def check_retrofit() -> list[dict[str, Any]]:
    import torchvision

    from visattn import retrofit

    out = []
    for attention in ("se", "residual"):
        torch.manual_seed(0)
        net = torchvision.models.resnet50(num_classes=10).to(DEV).eval()
        x = torch.randn(4, 3, 224, 224, device=DEV)
        with torch.no_grad():
            before = net(x)
            retrofit(net, attention)
            net.to(DEV).eval()
            after = net(x)
        diff = (after - before).abs().max().item()
        out.append(
            {"attention": attention, "torchvision": "resnet50", "max_abs_diff": diff, "ok": diff <= 1e-4}
        )
    return out


def check_ddp() -> dict[str, Any]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from visattn import create_model
    from visattn.train.distributed import cleanup_distributed, init_distributed

    info = init_distributed("auto")
    rec: dict[str, Any] = {"rank": info.rank, "world_size": info.world_size, "device": str(info.device)}
    rec["backend"] = dist.get_backend() if dist.is_initialized() else None
    t = torch.ones(4, device=info.device) * (info.rank + 1)
    dist.all_reduce(t)
    rec["all_reduce"] = t.tolist()
    model = create_model("se_resnet20", num_classes=10)
    if info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(info.device)
    ddp = DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x = torch.randn(16, 3, 32, 32, device=info.device)
    y = torch.randint(0, 10, (16,), device=info.device)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        with torch.autocast(DEV, dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(ddp(x).float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    rec["losses"] = losses
    rec["ok"] = rec["backend"] == ("nccl" if DEV == "cuda" else "gloo") and losses[-1] < losses[0]
    cleanup_distributed()
    return rec


def _guard(fn: Callable[[], Any], label: str) -> Any:
    try:
        return fn()
    except Exception as err:  # a check script records failures and goes on
        return {
            "check": label,
            "ok": False,
            "error": f"{type(err).__name__}: {err}",
            "trace": traceback.format_exc()[-1500:],
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--ddp", action="store_true", help="only the NCCL/DDP check (run under torchrun)")
    ap.add_argument("--dry-run-cpu", action="store_true", help="run the checks on the CPU (tests the script)")
    ap.add_argument("--models", nargs="*", help="only these models (default: all registered)")
    args = ap.parse_args()
    global DEV
    if args.dry_run_cpu:
        DEV = "cpu"
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.ddp:  # under torchrun
        if DEV == "cpu":
            os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
        result: dict[str, Any] = _guard(check_ddp, "ddp")
    else:
        from visattn import list_models

        result = {
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if DEV == "cuda" else "cpu (dry run)",
            "models": [_guard(lambda n=n: check_model(n), n) for n in (args.models or list_models())],
            "retrofit": _guard(check_retrofit, "retrofit"),
            "compile": [
                _guard(lambda n=n: check_compile(n), f"compile {n}")
                for n in (COMPILE if not args.dry_run_cpu else COMPILE[:1])
            ],
        }
    machine = f"1x {torch.cuda.get_device_name()}" if torch.cuda.is_available() else None
    write_result(args.out, result, machine=machine)
    print(json.dumps(result)[:3000])


if __name__ == "__main__":
    main()
