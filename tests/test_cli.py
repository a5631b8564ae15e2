"""The ``visattn`` command: train writes a checkpoint and its config, eval reads it, bad input exits 2."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import train_argv
from visattn.cli import main


def _train_args(fmnist_small, out, *extra):
    return train_argv(fmnist_small, out, *extra, batch_size=64, limit_train=256)


def test_train_then_eval(tmp_path, fmnist_small, capsys):
    out = tmp_path / "run"
    assert main(_train_args(fmnist_small, out, "--set", "lr=0.02")) == 0
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"] == "mnist_cnn" and cfg["lr"] == 0.02 and cfg["epochs"] == 1
    capsys.readouterr()
    assert main(["eval", "--weights", str(out / "best.pt")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 300 and res["split"] == "test"
    summary = json.loads((out / "summary.json").read_text())
    assert res["top1"] == pytest.approx(summary["test_top1"])


def test_list_names_models_attention_and_datasets(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "resnet20" in text and "fashion_mnist" in text and "attention:" in text


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--model", "resnet_nope"], "resnet_nope"),
        (["--set", "no_such_key=1"], "no_such_key"),
        (["--set", "epochs=many"], "epochs"),
        (["--set", "lr=-1"], "lr"),
        (["--data", "imagenet_nope"], "imagenet_nope"),
        (["--retrofit", "nope_attn"], "nope_attn"),
    ],
)
def test_bad_options_exit_2_naming_the_argument(tmp_path, fmnist_small, capsys, extra, needle):
    assert main(_train_args(fmnist_small, tmp_path / "r", *extra)) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert not (tmp_path / "r" / "last.pt").exists()


def test_missing_data_path_exits_2(tmp_path, capsys):
    rc = main(
        [
            "train",
            "--model",
            "mnist_cnn",
            "--data",
            "npz",
            "--data-dir",
            str(tmp_path / "none.npz"),
            "--out",
            str(tmp_path / "r"),
            "--set",
            "progress=false",
        ]
    )
    assert rc == 2
    assert "none.npz" in capsys.readouterr().err


def test_help_is_available(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    assert "--set" in capsys.readouterr().out


def test_eval_of_dasnet_reports_its_base_on_the_same_images(tmp_path, fmnist_small, capsys):
    base = tmp_path / "base"
    assert main(_train_args(fmnist_small, base)) == 0
    das = tmp_path / "das"
    args = _train_args(fmnist_small, das, "--set", "limit_train=64")
    args[args.index("mnist_cnn")] = "dasnet"
    assert main([*args, "--base", str(base / "best.pt")]) == 0
    capsys.readouterr()
    assert main(["eval", "--weights", str(das / "best.pt")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    base_summary = json.loads((base / "summary.json").read_text())
    assert res["model"] == "dasnet" and res["n"] == 300
    assert res["base_top1"] == pytest.approx(base_summary["test_top1"])  # the frozen base, same test images
    assert res["top1_minus_base"] == pytest.approx(res["top1"] - res["base_top1"])
