"""benchmarks/make_weights.py's precision rule: float16, else mixed (float16 kernels), else float32."""

from __future__ import annotations

import pytest
import torch

import visattn
from conftest import load_benchmark


@pytest.fixture(scope="module")
def mw():
    return load_benchmark("make_weights")


def _scores(f32: float, f16: float, mixed: float) -> dict[str, dict[str, float]]:
    return {"float32": {"test_top1": f32}, "float16": {"test_top1": f16}, "mixed": {"test_top1": mixed}}


def test_the_smallest_precision_within_005_points_is_chosen(mw):
    assert mw.choose_precision(_scores(84.58, 84.60, 84.58)) == (0.02, "float16")
    assert mw.choose_precision(_scores(84.58, 84.645, 84.60)) == (0.02, "mixed")
    assert mw.choose_precision(_scores(84.58, 84.645, 84.65)) == (0.0, "float32")
    # 5 of 10,000 images is exactly 0.05 points: not < 0.05 (the float difference is rounded first)
    assert mw.choose_precision(_scores(95.36, 95.41, 95.41))[1] == "float32"


def test_mixed_rounds_only_the_convolution_kernels_and_the_file_shrinks(mw, tmp_path):
    from safetensors.torch import load_file, save_file

    net = visattn.create_model("efficientnet_lite0", num_classes=10, image_size=64, pretrained=False)
    sd = net.state_dict()
    sizes = {}
    for precision in mw.PRECISIONS:
        stored = {k: v.to(mw.stored_dtype(v, precision)).contiguous() for k, v in sd.items()}
        save_file(stored, str(tmp_path / f"{precision}.safetensors"))
        sizes[precision] = (tmp_path / f"{precision}.safetensors").stat().st_size
    back = load_file(str(tmp_path / "mixed.safetensors"))
    assert all(back[k].dtype == torch.float16 for k, v in sd.items() if v.is_floating_point() and v.ndim == 4)
    assert all(back[k].dtype == v.dtype for k, v in sd.items() if not (v.is_floating_point() and v.ndim == 4))
    assert sizes["float16"] < sizes["mixed"] < 0.6 * sizes["float32"]
    with pytest.raises(ValueError, match="precision"):
        mw.stored_dtype(torch.zeros(1), "bfloat16")


def test_pose_cards_choose_by_pck(mw):
    scores = {"float32": {"test_pck": 26.5}, "float16": {"test_pck": 26.56}, "mixed": {"test_pck": 26.52}}
    assert mw.choose_precision(scores, "pck") == (0.02, "mixed")
    with pytest.raises(KeyError):  # a pose card's scores have no top-1
        mw.choose_precision(scores)


def test_int8_probe_rounds_each_output_channel_within_half_a_step():
    probe = load_benchmark("probe_int8_storage")
    w = torch.randn(16, 8, 3, 3) * torch.logspace(-3, 0, 16).view(
        -1, 1, 1, 1
    )  # channels of very different size
    q = probe.int8_round(w)
    step = w.abs().flatten(1).amax(1) / 127
    assert (
        (q - w).abs().flatten(1).amax(1) <= step / 2 + 1e-7
    ).all()  # per-channel scale: small rows stay fine
    assert (q.flatten(1) / step[:, None]).sub((q.flatten(1) / step[:, None]).round()).abs().max() < 1e-3
    assert len(torch.unique(q[0])) <= 255  # at most 255 levels per channel
    bias = torch.randn(16)
    assert torch.equal(probe.int8_round(bias), bias) and torch.equal(probe.mixed_round(bias), bias)
    assert probe.mixed_round(w).dtype == torch.float32 and not torch.equal(probe.mixed_round(w), w)
