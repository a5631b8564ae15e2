"""CUDA checks (``pytest -m gpu`` on a machine with a GPU; CI has none and deselects them).

Each test fails, rather than skips, when selected without CUDA: a GPU check that silently does
nothing would read as a pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import small_train_config
from visattn.train import TrainConfig, Trainer

pytestmark = pytest.mark.gpu


def _need_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.fail("this test needs a CUDA device: run `pytest -m gpu` on a GPU machine")


def _cfg(tmp_path: Path, data: Path, name: str, **kw) -> TrainConfig:
    opts = {"model_kwargs": {"norm": "group", "attn_layer": "se"}, "seed": 2, "device": "cuda", **kw}
    return small_train_config(tmp_path / name, data, **opts)


def test_resume_on_cuda_continues_the_run(tmp_path, fmnist_small):
    """A checkpoint loaded onto the GPU restores its RNG states (they must go back to the CPU)."""
    _need_cuda()
    whole = Trainer(_cfg(tmp_path, fmnist_small, "whole"))
    whole.run()
    first = Trainer(_cfg(tmp_path, fmnist_small, "cut"))
    first.run(stop_after=1)
    resumed = Trainer(_cfg(tmp_path, fmnist_small, "cut", resume=True))
    assert resumed.start_epoch == 1
    resumed.run()
    for k, v in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_amp_channels_last_training_on_cuda(tmp_path, fmnist_small):
    _need_cuda()
    tr = Trainer(_cfg(tmp_path, fmnist_small, "amp", amp=True, channels_last=True, epochs=1))
    summary = tr.run()
    assert next(tr.model.parameters()).is_cuda
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())
    assert summary["history"][0]["train_loss"] > 0
