"""Engine callbacks: every hook is called in order with the trainer's state, and they do not change training."""

from __future__ import annotations

import torch

from conftest import small_train_config
from visattn.train import Callback, Trainer


class _Log(Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.global_step, trainer.tb))

    def on_step_end(self, trainer):
        self.events.append(("step", trainer.global_step))

    def on_epoch_end(self, trainer, row):
        self.events.append(("epoch", row["epoch"], "val_top1" in row))

    def on_train_end(self, trainer, summary):
        self.events.append(("end", "test_top1" in summary))


def test_hooks_are_called_in_order_and_leave_training_unchanged(tmp_path, fmnist_small):
    log = _Log()
    cfg = small_train_config(tmp_path / "cb", fmnist_small, limit_train=64, test_at_end=True)
    with_cb = Trainer(cfg, callbacks=[log])
    with_cb.run()
    assert log.events == [
        ("start", 0, None),
        ("step", 1),
        ("step", 2),
        ("epoch", 1, True),
        ("step", 3),
        ("step", 4),
        ("epoch", 2, True),
        ("end", True),
    ]
    plain = Trainer(small_train_config(tmp_path / "plain", fmnist_small, limit_train=64, test_at_end=True))
    plain.run()
    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(with_cb.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    x, y = with_cb.fixed_batch(5)
    assert x.shape == (5, 1, 28, 28) and y.shape == (5,)
