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
