"""SE's exported form (issue 22): ``AveragePool (or MaxPool) -> Conv 1x1 -> Relu -> Conv 1x1 -> gate ->
Resize (nearest) -> Mul``, equal to PyTorch's SE, and onnxruntime keeps it in its blocked NCHWc layout (no
layout reorders beyond those of the same network without SE; the earlier ``ReduceSum -> Gemm -> Unsqueeze
-> Mul`` form cost two reorders per block). Measured effect: docs/results/export.md.
"""

from __future__ import annotations

import collections

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from visattn.attention.se import SqueezeExcite
from visattn.export import export_onnx, run_onnx

GATE_OP = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize(
    "pool, gate, identity_init",
    [("avg", "sigmoid", False), ("max", "tanh", True), ("avg", "relu", False), ("avg", "sigmoid", True)],
)
def test_se_exports_as_pool_conv_resize_mul_and_matches_pytorch(pool, gate, identity_init, tmp_path):
    torch.manual_seed(0)
    se = SqueezeExcite(32, reduction=4, pool=pool, gate=gate, identity_init=identity_init).eval()
    if identity_init:  # a trained gate, not the identity
        nn.init.normal_(se.fc2.weight, std=0.3)
    path = export_onnx(se, tmp_path / "se.onnx", (2, 32, 6, 5))
    ops = _ops(path)
    pool_op = "AveragePool" if pool == "avg" else "MaxPool"
    core = [pool_op, "Conv", "Relu", "Conv", GATE_OP[gate]]
    assert [o for o in ops if o in {*core, "Resize", "Mul"}][: len(core)] == core, ops
    assert ops[-2:] == ["Resize", "Mul"], ops
    assert not {"Gemm", "MatMul", "ReduceSum", "ReduceMean", "ReduceMax"} & set(ops), ops
    resize = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Resize")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute}
    assert (attrs["mode"], attrs["coordinate_transformation_mode"], attrs["nearest_mode"]) == (
        b"nearest",
        b"asymmetric",
        b"floor",
    )
    for batch in (1, 3):
        x = torch.randn(batch, 32, 6, 5)
        with torch.no_grad():
            want = se(x)
        assert (run_onnx(path, x) - want).abs().max().item() <= 1e-5


def _optimized_ops(path, tmp_path) -> collections.Counter:
    """onnxruntime's graph after all its optimisations (CPU), as ``(domain, op)`` counts."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / f"{path.stem}.opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(opts.optimized_model_filepath).graph
    return collections.Counter((n.domain, n.op_type) for n in graph.node)


class _Block(nn.Module):
    """``relu(se(conv(relu(conv(x)))) + x)``: an SE-ResNet-like block tail, 64 channels."""

    def __init__(self, se: bool) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 64, 1)
        self.se = SqueezeExcite(64, reduction=4) if se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.se(self.conv2(torch.relu(self.conv1(x)))) + x)


def test_se_adds_no_layout_reorders_under_onnxruntime(tmp_path):
    torch.manual_seed(0)
    counts = {}
    for se in (False, True):
        net = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), _Block(se), _Block(se), nn.Conv2d(64, 16, 1)
        ).eval()
        path = export_onnx(net, tmp_path / f"se{int(se)}.onnx", (2, 3, 12, 12))
        counts[se] = _optimized_ops(path, tmp_path)
        x = torch.randn(3, 3, 12, 12)
        with torch.no_grad():
            want = net(x)
        assert (run_onnx(path, x) - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())
    reorders = {
        se: {op: n for (_, op), n in c.items() if op.startswith("Reorder")} for se, c in counts.items()
    }
    assert reorders[True] == reorders[False], (reorders, counts[True])
    blocked = [op for (domain, op) in counts[True] if domain.endswith("nchwc")]
    if blocked:  # x86 CPUs with NCHWc kernels: the SE's pool and 1x1 convolutions run blocked too
        assert (
            counts[True][("com.microsoft.nchwc", "Conv")]
            == counts[False][("com.microsoft.nchwc", "Conv")] + 4
        )
