"""Checkpoint safety: no code runs from a checkpoint, foreign weights load with a key report, and a
numerical fault never overwrites the last good checkpoint.

The malicious files below hold a pickle whose unpickling would create a file (``open(path, "w")``).
Each test first proves the payload is live (a plain ``pickle.load`` creates the file), then shows
that every visattn entry point refuses it and the file is not created.
"""

from __future__ import annotations

import builtins
import json
import pickle
from pathlib import Path

import pytest
import torch

import visattn
from conftest import small_train_config, train_argv
from visattn.cli import main
from visattn.train import TrainConfig, Trainer, export_safetensors, load_weights, safe_load


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _write_malicious(path: Path, marker: Path, form: str) -> Path:
    """A checkpoint that runs code when unpickled, in one of several disguises."""
    payload = _Payload(marker)
    if form == "torch_zip":  # torch.save's zip format, payload inside a normal-looking checkpoint
        torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1, "extra": payload}, path)
    elif form == "torch_zip_state_dict":  # the payload as the state dict itself
        torch.save(payload, path)
    elif form == "legacy_pickle":  # a raw pickle stream, as old torch.save and pickle.dump write
        with open(path, "wb") as f:
            pickle.dump({"state_dict": payload}, f, protocol=2)
    else:
        raise AssertionError(form)
    return path


FORMS = ["torch_zip", "torch_zip_state_dict", "legacy_pickle"]


def _prove_payload_is_live(path: Path, marker: Path, form: str) -> None:
    """Outside visattn, loading the file would create ``marker``; undo that."""
    if form == "legacy_pickle":
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        torch.load(path, weights_only=False)
    assert marker.exists(), "the payload did not run under an unsafe load: the test proves nothing"
    marker.unlink()


@pytest.mark.parametrize("form", FORMS)
def test_safe_load_refuses_a_pickle_that_would_run_code(tmp_path, form):
    marker = tmp_path / "pwned.txt"
    path = _write_malicious(tmp_path / "evil.pt", marker, form)
    _prove_payload_is_live(path, marker, form)
    with pytest.raises(ValueError, match="evil.pt"):
        safe_load(path)
    assert not marker.exists()
    with pytest.raises(ValueError):
        load_weights(visattn.create_model("mnist_cnn"), path)
    assert not marker.exists()


def test_a_pickle_named_safetensors_is_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = _write_malicious(tmp_path / "evil.safetensors", marker, "torch_zip")
    with pytest.raises(ValueError, match="evil.safetensors"):
        safe_load(path)
    assert not marker.exists()


def _train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return train_argv(data, out, *extra, sets=("test_at_end=false",))


@pytest.mark.parametrize("form", FORMS)
def test_cli_eval_and_train_refuse_malicious_weights(tmp_path, fmnist_small, capsys, form):
    marker = tmp_path / "pwned.txt"
    path = _write_malicious(tmp_path / "evil.pt", marker, form)
    rc = main(
        [
            "eval",
            "--weights",
            str(path),
            "--model",
            "mnist_cnn",
            "--data",
            "npz",
            "--data-dir",
            str(fmnist_small),
        ]
    )
    assert rc == 2 and "evil.pt" in capsys.readouterr().err
    assert not marker.exists()
    rc = main(_train_argv(fmnist_small, tmp_path / "run", "--weights", str(path)))
    assert rc == 2 and "evil.pt" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_refuses_a_malicious_last_checkpoint(tmp_path, fmnist_small, capsys):
    """A run folder someone else wrote to: ``--resume`` must not execute its ``last.pt``."""
    marker = tmp_path / "pwned.txt"
    run = tmp_path / "run"
    run.mkdir()
    _write_malicious(run / "last.pt", marker, "torch_zip")
    assert main(_train_argv(fmnist_small, run, "--resume")) == 2
    assert "last.pt" in capsys.readouterr().err
    assert not marker.exists()


def test_checkpoints_written_by_the_engine_load_weights_only(tmp_path, fmnist_small):
    """Everything the engine saves (RNG states, history, config) survives ``weights_only=True``."""
    assert main(_train_argv(fmnist_small, tmp_path / "run")) == 0
    for name in ("last.pt", "best.pt"):
        ck = torch.load(tmp_path / "run" / name, weights_only=True)
        assert ck["epoch"] == 1


# --------------------------------------------------------------------------- safetensors export


def test_export_subcommand_writes_safetensors_that_evaluate_identically(tmp_path, fmnist_small, capsys):
    run = tmp_path / "run"
    assert main(_train_argv(fmnist_small, run)) == 0
    st = tmp_path / "model.safetensors"
    assert main(["export", "--weights", str(run / "best.pt"), "--out", str(st)]) == 0
    from safetensors.torch import load_file

    exported = load_file(str(st))
    saved = safe_load(run / "best.pt")["model"]
    assert exported.keys() == saved.keys()
    for k in saved:
        torch.testing.assert_close(exported[k], saved[k], rtol=0, atol=0)
    capsys.readouterr()
    common = ["--model", "mnist_cnn", "--data", "npz", "--data-dir", str(fmnist_small)]
    assert main(["eval", "--weights", str(run / "best.pt"), *common]) == 0
    a = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", "--weights", str(st), *common]) == 0
    b = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert a["top1"] == b["top1"] and a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_export_refuses_malicious_input_and_bad_output_suffix(tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    path = _write_malicious(tmp_path / "evil.pt", marker, "torch_zip")
    assert main(["export", "--weights", str(path), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert not marker.exists() and not (tmp_path / "m.safetensors").exists()
    good = tmp_path / "good.pt"
    torch.save(visattn.create_model("mnist_cnn").state_dict(), good)
    assert main(["export", "--weights", str(good), "--out", str(tmp_path / "m.pt")]) == 2
    assert "--out" in capsys.readouterr().err
    assert (
        main(["export", "--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.safetensors")])
        == 2
    )


# ------------------------------------------------------------------ foreign state dicts (no download)


def _foreign(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "torchvision":
        import torchvision

        return torchvision.models.resnet18(weights=None)
    import timm

    return timm.create_model("resnet18", pretrained=False)


@pytest.mark.parametrize("kind", ["torchvision", "timm"])
def test_torchvision_and_timm_resnet18_state_dicts_load_into_visattn(tmp_path, kind):
    src = _foreign(kind).eval()
    path = tmp_path / f"{kind}_resnet18.pt"
    torch.save(src.state_dict(), path)
    net = visattn.create_model("resnet18", num_classes=1000, in_chans=3).eval()
    report = load_weights(net, path, strict=True)
    assert report == {"missing": [], "unexpected": []}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), src(x), rtol=1e-4, atol=1e-4)
    # into a retrofitted network: only the inserted attention's own keys are missing
    se_net = visattn.retrofit(visattn.create_model("resnet18", num_classes=1000), "se")
    report = load_weights(se_net, path, strict=False)
    assert report["unexpected"] == []
    assert report["missing"] and all(".attn." in k for k in report["missing"]), report["missing"][:4]
    with pytest.raises(ValueError, match="missing keys"):
        load_weights(se_net, path, strict=True)
    # a head of the wrong size is named, with both shapes
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(1000, 512\).*\(10, 512\)"):
        load_weights(visattn.create_model("resnet18", num_classes=10), path)


def test_load_weights_reports_unexpected_keys(tmp_path):
    sd = visattn.create_model("mnist_cnn").state_dict()
    sd["head.extra"] = torch.zeros(3)
    del sd["fc.bias"]
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "w.pt")
    report = load_weights(visattn.create_model("mnist_cnn"), tmp_path / "w.pt", strict=False)
    assert report == {"missing": ["fc.bias"], "unexpected": ["head.extra"]}


def test_export_safetensors_round_trip(tmp_path):
    net = visattn.create_model("resnet20")
    export_safetensors(net, tmp_path / "r.safetensors")
    other = visattn.create_model("resnet20")
    assert load_weights(other, tmp_path / "r.safetensors") == {"missing": [], "unexpected": []}
    for k, v in net.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v, rtol=0, atol=0)


# ----------------------------------------------------------------------------- numerical faults


def _cfg(out: Path, data: Path, **kw) -> TrainConfig:
    return small_train_config(out, data, **{"epochs": 3, "seed": 2, **kw})


def _inject_nan_loss(tr: Trainer, *, epoch: int, steps: set[int] | None = None) -> list[bytes]:
    """From epoch index ``epoch`` on (0-based), make the loss NaN at step-in-epoch ``steps`` (all if
    None). Returns a list that receives ``last.pt``'s bytes as they were when the fault began."""
    snapshot: list[bytes] = []
    spe = tr.steps_per_epoch

    def nan_loss(output, target):
        if tr.start_epoch >= epoch and (steps is None or tr.global_step % spe in steps):
            if not snapshot:
                snapshot.append((tr.out / "last.pt").read_bytes())
            return {"fault": torch.tensor(float("nan"))}
        return {}

    tr.extra_losses = nan_loss
    return snapshot


def test_nan_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path, fmnist_small):
    tr = Trainer(_cfg(tmp_path, fmnist_small))
    before = _inject_nan_loss(tr, epoch=1)
    with pytest.raises(FloatingPointError, match="non-finite loss nan at epoch 1"):
        tr.run()
    assert (tmp_path / "last.pt").read_bytes() == before[0]
    ck = safe_load(tmp_path / "last.pt")
    assert ck["epoch"] == 1 and len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_nan_loss_with_skip_skips_only_those_steps(tmp_path, fmnist_small):
    tr = Trainer(_cfg(tmp_path, fmnist_small, nonfinite="skip"))
    _inject_nan_loss(tr, epoch=1, steps={0, 2})
    tr.run()
    spe = tr.steps_per_epoch
    assert [h["epoch"] for h in tr.history] == [1, 2, 3]
    assert "train_skipped" not in tr.history[0]
    assert tr.history[1]["train_skipped"] == pytest.approx(2 / spe)
    ck = safe_load(tmp_path / "last.pt")
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_weights_that_become_nonfinite_are_never_saved(tmp_path, fmnist_small, nonfinite):
    """A finite loss with an infinite gradient (the last step of an epoch) poisons the weights
    before any NaN loss is seen: the end-of-epoch checkpoint must not overwrite the good one."""
    tr = Trainer(_cfg(tmp_path, fmnist_small, nonfinite=nonfinite))
    spe = tr.steps_per_epoch
    bad_step = 2 * spe - 1  # last step of the second epoch
    tr.model.fc.weight.register_hook(lambda g: g * float("inf") if tr.global_step == bad_step else g)
    good: list[bytes] = []
    real_train_epoch = tr.train_epoch

    def train_epoch(*a, **k):
        if tr.start_epoch == 1:
            good.append((tmp_path / "last.pt").read_bytes())
        return real_train_epoch(*a, **k)

    tr.train_epoch = train_epoch  # type: ignore[method-assign]
    with pytest.raises(FloatingPointError, match="non-finite"):
        tr.run()
    assert (tmp_path / "last.pt").read_bytes() == good[0]
    ck = safe_load(tmp_path / "last.pt")
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
