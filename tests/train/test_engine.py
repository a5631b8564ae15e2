"""The engine trains, checkpoints, resumes exactly, and matches itself under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import small_train_config
from visattn.train import TrainConfig, Trainer, fit, safe_load


def _cfg(tmp_path: Path, data: Path, **kw) -> TrainConfig:
    return small_train_config(
        tmp_path / "run", data, **{"limit_train": 256, "seed": 3, "test_at_end": True, **kw}
    )


def test_a_few_steps_lower_the_loss_on_real_images(tmp_path, fmnist_small):
    cfg = _cfg(tmp_path, fmnist_small, epochs=1, limit_train=None, max_steps_per_epoch=30, val_fraction=0.1)
    tr = Trainer(cfg)
    x, y = next(iter(tr.val_loader))
    tr.model.eval()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(tr.model(x), y).item()
    tr.train_epoch()
    tr.model.eval()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(tr.model(x), y).item()
    assert after < 0.8 * before, (before, after)


def test_checkpoint_config_and_logs_are_written(tmp_path, fmnist_small):
    summary = fit(_cfg(tmp_path, fmnist_small))
    run = tmp_path / "run"
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "metrics.csv", "summary.json"):
        assert (run / name).is_file(), name
    ck = safe_load(run / "last.pt")
    assert ck["epoch"] == 2 and len(ck["history"]) == 2
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert 0 <= summary["test_top1"] <= 100 and summary["test_n"] == 300
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_resumed_run_ends_with_the_same_weights(tmp_path, fmnist_small):
    Trainer(_cfg(tmp_path / "a", fmnist_small, epochs=3, augment="default")).run()
    Trainer(_cfg(tmp_path / "b", fmnist_small, epochs=3, augment="default")).run(stop_after=1)
    resumed = Trainer(_cfg(tmp_path / "b", fmnist_small, epochs=3, augment="default", resume=True))
    assert resumed.start_epoch == 1
    resumed.run()
    a = safe_load(tmp_path / "a" / "run" / "last.pt")
    b = safe_load(tmp_path / "b" / "run" / "last.pt")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3]
    assert [h["train_loss"] for h in b["history"]] == [h["train_loss"] for h in a["history"]]


def test_extra_losses_are_added_and_logged(tmp_path, fmnist_small):
    from visattn.models import mnist_cnn

    class WithAux(mnist_cnn.MnistCNN):
        def extra_losses(self, output, target):
            return {"aux": 0.5 * output.pow(2).mean()}

    tr = Trainer(_cfg(tmp_path, fmnist_small, epochs=1, max_steps_per_epoch=3))
    aux = WithAux(num_classes=10, in_chans=1)
    aux.load_state_dict(tr.model.state_dict())
    tr.model = tr.runner = aux
    tr.extra_losses = aux.extra_losses
    tr.optimizer = torch.optim.SGD(aux.parameters(), lr=0.01)
    tr.scheduler = torch.optim.lr_scheduler.LambdaLR(tr.optimizer, lambda s: 1.0)
    x, y = next(iter(tr.train_loader))
    terms = tr.train_step(x, y)
    assert set(terms) >= {"ce", "aux", "loss"}
    torch.testing.assert_close(terms["loss"], terms["ce"] + terms["aux"])


def test_nonfinite_loss_stops_with_a_clear_error(tmp_path, fmnist_small):
    tr = Trainer(_cfg(tmp_path, fmnist_small, epochs=1))
    x, y = next(iter(tr.train_loader))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        tr.train_step(x * float("nan"), y)


def test_bad_image_size_is_refused_before_training(tmp_path, fmnist_small):
    with pytest.raises(ValueError, match="at least 32x32"):
        Trainer(_cfg(tmp_path, fmnist_small, model="resnet18"))


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path, fmnist_small):
    common = [
        "--model",
        "mnist_cnn",
        "--data",
        "npz",
        "--data-dir",
        str(fmnist_small),
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--seed",
        "1",
        "--set",
        "model_kwargs.norm=group",
        "--set",
        "augment=none",
        "--set",
        "limit_train=256",
        "--set",
        "progress=false",
        "--set",
        "deterministic=true",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = [sys.executable, "-m", "visattn", "train", "--out", str(tmp_path / "one"), *common]
    subprocess.run(one, check=True, env=env, capture_output=True, timeout=300)
    two = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        # --standalone: torchrun's own store on a port the OS picks, so concurrent tests cannot race
        # for a port chosen in advance
        "--standalone",
        "-m",
        "visattn",
        "train",
        "--out",
        str(tmp_path / "two"),
        *common,
    ]
    res = subprocess.run(two, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    a = safe_load(tmp_path / "one" / "last.pt")["model"]
    b = safe_load(tmp_path / "two" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_retrofit_fine_tuning_trains_only_the_inserted_attention_first(tmp_path, fmnist_small):
    fit(_cfg(tmp_path / "base", fmnist_small, epochs=1))
    base_w = tmp_path / "base" / "run" / "best.pt"
    base = safe_load(base_w)["model"]
    cfg = _cfg(tmp_path, fmnist_small, epochs=2, weights=str(base_w), retrofit="se", retrofit_warmup_epochs=1)
    tr = Trainer(cfg)
    inserted = set(tr.model.visattn_inserted)
    assert inserted, "retrofit inserted nothing"
    tr.run(stop_after=1)
    after1 = tr.model.state_dict()
    for k, v in base.items():  # epoch 1: the pretrained weights (and BN statistics) stay as they were
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        torch.testing.assert_close(after1[k], v, rtol=0, atol=0, msg=k)
    new_keys = [k for k in after1 if k not in base]
    assert new_keys and all(any(k.startswith(n) for n in inserted) for k in new_keys)
    tr.run()
    final = safe_load(tmp_path / "run" / "last.pt")["model"]
    assert not torch.equal(final["stage1.conv.weight"], base["stage1.conv.weight"])


def test_starting_weights_compete_for_best_when_fine_tuning(tmp_path, fmnist_small):
    fit(_cfg(tmp_path / "base", fmnist_small, epochs=1, val_fraction=0.2))
    base_w = tmp_path / "base" / "run" / "best.pt"
    base_val = safe_load(base_w)["val_top1"]
    # a learning rate that wrecks the network: the starting weights must stay the selected ones
    cfg = _cfg(
        tmp_path, fmnist_small, epochs=1, weights=str(base_w), lr=50.0, val_fraction=0.2, nonfinite="skip"
    )
    tr = Trainer(cfg)
    summary = tr.run()
    assert summary["initial_val_top1"] == pytest.approx(base_val)
    best = safe_load(tmp_path / "run" / "best.pt")
    assert best["epoch"] == 0 and best["val_top1"] == pytest.approx(base_val)
    assert summary["history"][0]["val_top1"] < base_val
    for k, v in safe_load(base_w)["model"].items():
        torch.testing.assert_close(best["model"][k], v, rtol=0, atol=0, msg=k)
    # off by choice: the first epoch is the best by definition
    off = Trainer(_cfg(tmp_path / "off", fmnist_small, epochs=1, weights=str(base_w), select_initial=False))
    assert off.run()["initial_val_top1"] is None
    assert safe_load(tmp_path / "off" / "run" / "best.pt")["epoch"] == 1


def test_scoring_the_start_does_not_change_the_training(tmp_path, fmnist_small):
    fit(_cfg(tmp_path / "base", fmnist_small, epochs=1))
    base_w = str(tmp_path / "base" / "run" / "best.pt")
    on = Trainer(_cfg(tmp_path / "on", fmnist_small, epochs=1, weights=base_w, augment="default"))
    on.run()
    off = Trainer(
        _cfg(
            tmp_path / "off", fmnist_small, epochs=1, weights=base_w, augment="default", select_initial=False
        )
    )
    off.run()
    for k, v in off.model.state_dict().items():
        torch.testing.assert_close(on.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
