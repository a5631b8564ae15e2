"""Training writes attention images to TensorBoard every N steps, without changing the training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import small_train_config
from visattn.callbacks import AttentionImages, default_callbacks
from visattn.train import TrainConfig, Trainer


def _cfg(tmp_path: Path, data: Path, name: str, **kw) -> TrainConfig:
    opts = {"model_kwargs": {"attn_layer": "se"}, "epochs": 1, "seed": 5, **kw}
    return small_train_config(tmp_path / name, data, **opts)


def _image_tags(run: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Images(tag)] for tag in acc.Tags()["images"]}


def test_attention_images_are_logged_every_n_steps_and_leave_training_unchanged(tmp_path, fmnist_small):
    torch.set_num_threads(1)
    cfg = _cfg(tmp_path, fmnist_small, "tb", tensorboard=True, tb_images_every=2)
    logged = Trainer(cfg, callbacks=default_callbacks(cfg))
    logged.run()
    plain = Trainer(_cfg(tmp_path, fmnist_small, "plain"))
    plain.run()

    tags = _image_tags(tmp_path / "tb")
    assert tags, "no attention image was written"
    assert all(t.startswith("attention/") for t in tags), tags
    steps = logged.global_step
    assert steps == 4  # 128 images / 32
    for tag, at in tags.items():
        assert at == list(range(2, steps + 1, 2)), (tag, at)
    # SE's channel weights are among the views
    assert any("channel" in t.lower() or "excitation" in t.lower() for t in tags), sorted(tags)

    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(logged.model.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_images_need_tensorboard(tmp_path, fmnist_small):
    with pytest.raises(ValueError, match="tb_images_every=3 needs tensorboard"):
        _cfg(tmp_path, fmnist_small, "x", tb_images_every=3)
    with pytest.raises(ValueError, match="tb_images_every"):
        _cfg(tmp_path, fmnist_small, "x", tensorboard=True, tb_images_every=-1)


def test_tb_images_without_the_callback_warns_and_the_callback_takes_its_own_period(tmp_path, fmnist_small):
    cfg = _cfg(tmp_path, fmnist_small, "warn", tensorboard=True, tb_images_every=2, limit_train=64)
    with pytest.warns(UserWarning, match="needs an attention-image callback"):
        Trainer(cfg).run()
    assert not _image_tags(tmp_path / "warn")
    cfg = _cfg(tmp_path, fmnist_small, "own", tensorboard=True, limit_train=64)
    Trainer(cfg, callbacks=[AttentionImages(every=1, show=2)]).run()
    tags = _image_tags(tmp_path / "own")
    assert tags and all(at == [1, 2] for at in tags.values()), tags
