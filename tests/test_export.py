"""Export (``visattn.export``, ``visattn export``): every registered model exports to ONNX with a dynamic
batch, and onnxruntime's logits equal PyTorch's within ``TOL = 1e-4`` (max abs difference, scaled by the
logits' magnitude when it exceeds 1) at batch 1 and 3 (exported at batch 2); models that cannot be
exported say why.

Random networks are first given batch-norm running statistics from one training-mode pass (cumulative
average), so their logits are O(1) and an absolute tolerance means something; deep random ResNets
otherwise produce logits of 1e3 and more.
"""

from __future__ import annotations

import re
import time

import onnx
import onnxruntime  # noqa: F401  (the `export` extra; part of the `test` extra)
import pytest
import torch
from torch import nn

import visattn
from visattn.cli import main
from visattn.export import (
    NotExportableError,
    _BinnedAdaptiveMaxPool2d,
    default_input_shape,
    export_onnx,
    export_program,
    not_exportable_reason,
    run_onnx,
)

#: Largest |onnxruntime - PyTorch| allowed on the logits (float32), times max(1, max |logit|): deep random
#: networks give logits up to ~10 (resnet50 at 32 px: 6e-4 difference at |logit| 10).
TOL = 1e-4


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, what
    bound = TOL * max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() <= bound, what


# Exports that take more than a few seconds on one busy core (torch.export + ONNX translation).
SLOW = {
    "attention56",
    "attention92",
    "attention56_cifar",
    "attention92_cifar",
    "resnet18",
    "resnet50",
    "resnet44",
    "resnet56",
    "resnet110",
    "se_resnet18",
    "se_resnet50",
    "se_resnet32",
    "se_resnet56",
    "se_resnet110",
    "st_cnn",
}


def size_for(model: nn.Module) -> int:
    """32 px, or 64 for ImageNet-style networks (at 32 px their last maps are 1x1 and the calibrated
    batch norms amplify rounding: attention92 reached 1.5e-4 x its logit scale there, 4e-5 at 64 px)."""
    return 64 if model.input_spec.min_size[0] >= 32 else 32


def build(name: str) -> nn.Module:
    """A small random instance of ``name`` with calibrated batch norms, in eval mode."""
    torch.manual_seed(0)
    if name == "dasnet":
        base = build("mnist_cnn")
        return visattn.create_model("dasnet", base=base, passes=2).eval()
    model = visattn.create_model(name)
    shape = default_input_shape(model, batch=16, size=size_for(model))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass sets the statistics of that batch
    if norms:
        model.train()
        with torch.no_grad():
            model(torch.randn(shape))
    return model.eval()


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    if isinstance(out, dict):  # classification logits, or a pose model's last-stack heatmaps
        return out["logits"] if "logits" in out else out["heatmaps"]
    return out


def test_every_registered_model_is_covered():
    assert SLOW < set(visattn.list_models())


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in visattn.list_models()],
)
def test_onnx_matches_pytorch_with_dynamic_batch(name, tmp_path):
    model = build(name)
    shape = default_input_shape(model, batch=2, size=size_for(model))
    reason = not_exportable_reason(model)
    if reason is not None:  # a model that says why it cannot be exported gets that clear error
        with pytest.raises(NotExportableError, match=f"not exportable: {re.escape(reason[:30])}"):
            export_onnx(model, tmp_path / f"{name}.onnx", shape)
        return
    path = export_onnx(model, tmp_path / f"{name}.onnx", shape)
    onnx.checker.check_model(str(path))
    graph_input = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert graph_input[0].dim_param and [d.dim_value for d in graph_input[1:]] == list(shape[1:])
    for batch in (1, 3):
        x = torch.randn(batch, *shape[1:])
        want = logits(model, x)
        assert_close(run_onnx(path, x, threads=1), want, name)


@pytest.mark.parametrize("name", ["se_resnet20", "st_cnn_mnist", "ram", "dasnet", "mnist_cnn"])
def test_torch_export_program_matches(name, tmp_path):
    model = build(name)
    shape = default_input_shape(model, batch=2)
    ep = export_program(model, shape, path=tmp_path / "m.pt2")
    loaded = torch.export.load(str(tmp_path / "m.pt2")).module()
    for batch in (1, 3):
        x = torch.randn(batch, *shape[1:])
        want = logits(model, x)
        assert_close(ep.module()(x), want, name)
        assert_close(loaded(x), want, name)


def test_se_exports_through_the_legacy_exporter_too(tmp_path):
    """Issue 22: the fused SE tail failed there ("Expected node type 'onnx::Constant' for argument
    'alpha' of node 'addmm'"); while exporting it takes the plain path, same values."""
    model = build("se_resnet20")
    path = export_onnx(model, tmp_path / "se.onnx", (2, 3, 16, 16), dynamo=False)
    x = torch.randn(3, 3, 16, 16)
    assert_close(run_onnx(path, x), logits(model, x), "se_resnet20 (legacy exporter)")


def test_export_leaves_the_model_and_its_caches_alone():
    model = build("ram")
    x = torch.randn(3, 1, 28, 28)
    before = logits(model, x)
    export_program(model, (2, 1, 28, 28))  # the glimpse offsets' cache must not keep traced tensors
    assert torch.equal(logits(model, x), before)
    assert not model.training


def test_ram_sampling_at_evaluation_is_not_exportable(tmp_path):
    model = visattn.create_model("ram", mc_samples=4)
    with pytest.raises(NotExportableError, match="not exportable: ram with mc_samples=4"):
        export_onnx(model, tmp_path / "ram.onnx", (2, 1, 28, 28))
    with pytest.raises(NotExportableError, match="mc_samples=1"):
        export_program(model, (2, 1, 28, 28))
    assert not (tmp_path / "ram.onnx").exists()


@pytest.mark.parametrize("size", [(7, 7, 4), (9, 6, 4), (8, 8, 4), (5, 11, 3)])
def test_binned_adaptive_max_pool_equals_pytorch(size):
    h, w, o = size
    x = torch.randn(2, 3, h, w)
    assert torch.equal(_BinnedAdaptiveMaxPool2d(o)(x), nn.AdaptiveMaxPool2d(o)(x))


def test_bad_input_shape_is_a_clear_error(tmp_path):
    model = visattn.create_model("mnist_cnn")
    with pytest.raises(ValueError, match=r"input_shape must be 4 positive ints"):
        export_onnx(model, tmp_path / "m.onnx", (2, 28, 28))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dynamic batch needs an example batch of at least 2"):
        export_program(model, (1, 1, 28, 28))


def test_cli_export_onnx_and_torch_export(tmp_path, capsys):
    t = time.perf_counter()
    onnx_out = str(tmp_path / "m.onnx")
    assert (
        main(
            [
                "export",
                "--model",
                "mnist_cnn",
                "--format",
                "onnx",
                "--input-size",
                "28",
                "28",
                "--out",
                onnx_out,
            ]
        )
        == 0
    )
    assert '"format": "onnx"' in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # self-contained: no external-data file
    x = torch.randn(3, 1, 28, 28)
    assert run_onnx(tmp_path / "m.onnx", x).shape == (3, 10)
    out = tmp_path / "s.pt2"
    assert main(["export", "--model", "st_cnn_mnist", "--format", "torch_export", "--out", str(out)]) == 0
    assert torch.export.load(str(out)).module()(x).shape == (3, 10)
    assert time.perf_counter() - t < 60


def test_cli_export_errors(tmp_path, capsys):
    assert main(["export", "--model", "ram", "--model-arg", "mc_samples=2", "--format", "onnx",
                 "--out", str(tmp_path / "r.onnx")]) == 2  # fmt: skip
    assert "not exportable: ram with mc_samples=2" in capsys.readouterr().err
    assert main(["export", "--model", "mnist_cnn", "--format", "onnx", "--out", str(tmp_path / "m.pt2")]) == 2
    assert "--out must end in .onnx" in capsys.readouterr().err
    assert main(["export", "--model", "nope", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
