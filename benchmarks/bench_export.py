"""onnxruntime vs eager PyTorch on CPU, one thread, batch 1 and 32 (issue 22's export measurement).

For each model: export to ONNX through ``visattn.export.export_onnx`` (dynamic batch), check
onnxruntime's logits against PyTorch's (max abs difference), then time both runtimes. One thread each
(``torch.set_num_threads(1)``; onnxruntime ``intra_op_num_threads=1``, ``inter_op_num_threads=1``,
sequential execution, all graph optimisations). Every round times every (model, batch, runtime) once, in a
rotating order (batch, then model, then runtime: the pairs compared run back to back), so load changes
on a shared machine hit all of them alike; the report gives medians over rounds and, for the ratios,
the median of the per-round ratios.

SE's overhead: ``se_resnet50`` vs ``resnet50`` and ``se_resnet20`` vs ``resnet20`` at the same input size,
per runtime and batch size. ``--previous-se-form`` also times, under onnxruntime, each SE model exported in
the form ``visattn.export`` used before (``ReduceSum -> Gemm -> Relu -> Gemm -> Sigmoid -> Unsqueeze ->``
broadcast ``Mul``; runtime ``onnxruntime_previous_se``), in the same rounds. ``--profile N`` adds
onnxruntime's own per-operator profile (``SessionOptions.enable_profiling``), microseconds per run summed
by operator type over N runs, for every onnxruntime session.

Examples (what docs/results/export.md reports):

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_export.py --rounds 7 --out docs/results/export.json
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_export.py --models resnet20 se_resnet20 resnet50 \
        se_resnet50 --previous-se-form --profile 5 --rounds 9 --out docs/results/export_se.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

import visattn
from visattn.attention.se import SqueezeExcite
from visattn.export import export_onnx

# name -> (create_model kwargs, input (C, H, W), pretrained tag or None)
MODELS: dict[str, tuple[dict[str, Any], tuple[int, int, int], str | None]] = {
    "resnet20": ({}, (3, 32, 32), None),
    "se_resnet20": ({}, (3, 32, 32), None),  # keep after resnet20 (SE overhead pairs)
    "st_cnn_mnist": ({"image_size": 42}, (1, 42, 42), "mnist_rts"),
    "attention56": ({}, (3, 112, 112), None),
    "resnet50": ({}, (3, 112, 112), None),
    "se_resnet50": ({}, (3, 112, 112), None),  # keep next to resnet50 (SE overhead pairs)
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per timing (repeats small calls)")
    p.add_argument("--previous-se-form", action="store_true", help="also time SE's previous export form")
    p.add_argument("--profile", type=int, default=0, help="runs of onnxruntime's per-operator profile")
    p.add_argument("--out", required=True, help="raw JSON results")
    return p.parse_args()


def build(name: str) -> nn.Module:
    kwargs, shape, tag = MODELS[name]
    if tag is not None and tag in [s.split(".", 1)[1] for s in visattn.models.list_pretrained(name)]:
        return visattn.create_model(name, pretrained=tag)
    torch.manual_seed(0)
    model = visattn.create_model(name, **kwargs)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:  # O(1) logits so the max abs difference is meaningful
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(8, *shape))
    return model.eval()


SE_PAIRS = {"se_resnet20": "resnet20", "se_resnet50": "resnet50"}


@contextlib.contextmanager
def previous_se_form() -> Iterator[None]:
    """While active, ``SqueezeExcite`` exports as it did before: ``x * excitation(x)[:, :, None, None]``
    (ONNX ``ReduceSum/ReduceMax -> Mul -> Gemm -> Relu -> Gemm -> Sigmoid -> Unsqueeze -> Mul``)."""

    def forward(self: SqueezeExcite, x: torch.Tensor) -> torch.Tensor:
        return x * self.excitation(x)[:, :, None, None]

    saved = SqueezeExcite.forward
    SqueezeExcite.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        SqueezeExcite.forward = saved  # type: ignore[method-assign]


def session(path: Path, profile: bool = False) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = profile
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def op_profile(path: Path, x: Any, runs: int) -> dict[str, Any]:
    """onnxruntime's profile of ``runs`` calls (after 2 warm-up calls): microseconds per run by operator type,
    and the optimised graph's node counts (``domain:op``)."""
    sess = session(path, profile=True)
    for _ in range(2 + runs):
        sess.run(None, {"x": x})
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    total: collections.Counter[str] = collections.Counter()
    nodes: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
            nodes[e["args"]["op_name"]] += 1
    calls = 2 + runs
    return {
        "us_per_run": {k: round(v / calls, 1) for k, v in total.most_common()},
        "nodes": {k: v // calls for k, v in nodes.items()},
        "runs": calls,
    }


def per_call(fn: Any, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench_export_"))
    runners: dict[tuple[str, int, str], Any] = {}
    checks: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    for name in args.models:
        model = build(name)
        shape = MODELS[name][1]
        t = time.perf_counter()
        path = export_onnx(model, tmp / f"{name}.onnx", (2, *shape))
        export_s = time.perf_counter() - t
        sess = session(path)
        sessions = {"onnxruntime": (sess, path)}
        if args.previous_se_form and name in SE_PAIRS:
            with previous_se_form():
                prev = export_onnx(model, tmp / f"{name}_previous_se.onnx", (2, *shape))
            sessions["onnxruntime_previous_se"] = (session(prev), prev)
        x32 = torch.randn(32, *shape)
        with torch.inference_mode():
            ref = model(x32)
        diff = float((torch.from_numpy(sess.run(None, {"x": x32.numpy()})[0]) - ref).abs().max())
        checks[name] = {
            "input": list(shape),
            "weights": "pretrained " + MODELS[name][2]
            if getattr(model, "pretrained_card", None)
            else "random",
            "export_s": round(export_s, 2),
            "max_abs_diff_b32": diff,
            "logit_scale": float(ref.abs().max()),
            "onnx_bytes": path.stat().st_size,
        }
        print(json.dumps({name: checks[name]}), flush=True)
        for b in args.batches:
            x = torch.randn(b, *shape)
            xn = x.numpy()

            def eager(model: nn.Module = model, x: torch.Tensor = x) -> None:
                with torch.inference_mode():
                    model(x)

            fns: list[tuple[str, Any]] = [("torch", eager)]
            for rt, (sess_rt, path_rt) in sessions.items():

                def onnxrt(sess: Any = sess_rt, xn: Any = xn) -> None:
                    sess.run(None, {"x": xn})

                fns.append((rt, onnxrt))
                if args.profile:
                    profiles[f"{name}|b{b}|{rt}"] = op_profile(path_rt, xn, args.profile)
            for rt, fn in fns:
                fn()  # warm-up (allocations, first-call planning)
                one = per_call(fn, 1)
                reps = max(1, int(args.min_time / max(one, 1e-6)))
                runners[(name, b, rt)] = (fn, reps)
    # batch, then model, then runtime: the two runtimes of a model, and resnet50 / se_resnet50, run
    # back to back, so each ratio compares timings taken under the same load
    order = {n: i for i, n in enumerate(args.models)}
    keys = sorted(runners, key=lambda k: (k[1], order[k[0]], k[2] != "torch", k[2]))
    times: dict[str, list[float]] = {f"{n}|b{b}|{rt}": [] for n, b, rt in keys}
    for r in range(args.rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for n, b, rt in order:
            fn, reps = runners[(n, b, rt)]
            times[f"{n}|b{b}|{rt}"].append(per_call(fn, reps))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    speedup = {
        f"{n}|b{b}": ratio(f"{n}|b{b}|torch", f"{n}|b{b}|onnxruntime")
        for n in args.models
        for b in args.batches
    }
    se = {}
    for se_name, base in SE_PAIRS.items():
        if {se_name, base} <= set(args.models):
            for b in args.batches:
                for rt in ("torch", "onnxruntime", "onnxruntime_previous_se"):
                    if f"{se_name}|b{b}|{rt}" in times:
                        base_rt = "torch" if rt == "torch" else "onnxruntime"
                        key = f"{se_name}_vs_{base}|b{b}|{rt}"
                        se[key] = ratio(f"{se_name}|b{b}|{rt}", f"{base}|b{b}|{base_rt}") - 1.0
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    import onnxruntime

    result = {
        "what": "onnxruntime vs eager PyTorch, CPU, 1 thread each, interleaved rounds; seconds per call",
        "command": "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_export.py "
        + " ".join(
            f"--{k.replace('_', '-')}"
            if v is True
            else f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if v is not False
        ),  # fmt: skip
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": "shared 2-core CPU VM, no GPU (other jobs running: see loadavg)",
        "loadavg_start_end": [list(load0), list(os.getloadavg())],
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
        "checks": checks,
        "median_s": med,
        "speedup_onnxruntime_over_torch": speedup,
        "se_overhead": se,
        "onnxruntime_profile": profiles,
        "rounds_s": times,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"speedup": speedup, "se_overhead": se}, indent=1))


if __name__ == "__main__":
    main()
