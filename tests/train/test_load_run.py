"""``load_run`` rebuilds a run from a folder, a checkpoint or an exported .safetensors (CLI ``eval``).

Issue 21 cases 3 (an eval batch larger than the training set), 4 (an exported .safetensors scored at
the trained image size and normalisation) and 5 (``--data npz`` on an image-folder run).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from visattn.checkpoint import export_safetensors, read_metadata
from visattn.cli import main
from visattn.train import TrainConfig, fit, load_run


def _folder(root, n_train=6, n_test=3, side=20):
    """A 2-class image folder: bright vs dark 20x20 RGB squares with noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(("dark", "light")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                px = np.clip(60 + 120 * c + rng.normal(0, 30, (side, side, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(d / f"{i}.png")
    return root


def _npz(path, n_train, n_test, shape=(1, 28, 28), k=10):
    rng = np.random.default_rng(1)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        y_train=np.arange(n_train) % k,
        x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        y_test=np.arange(n_test) % k,
    )
    return path


def _fit(tmp_path, name, **kw):
    base = dict(
        model="resnet20",
        epochs=1,
        batch_size=4,
        lr=0.01,
        out=str(tmp_path / name),
        progress=False,
        augment="none",
        val_fraction=0.2,
    )
    base.update(kw)
    fit(TrainConfig(**base))
    return tmp_path / name


def _eval(capsys, *argv):
    capsys.readouterr()
    rc = main(["eval", *argv])
    out, err = capsys.readouterr()
    return rc, (json.loads(out.strip().splitlines()[-1]) if rc == 0 else None), err


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A resnet20 trained one epoch on a 2-class image folder at 16 px (not the default 224)."""
    tmp = tmp_path_factory.mktemp("folder_run")
    data = _folder(tmp / "images")
    torch.manual_seed(0)
    run = _fit(tmp, "run", data="imagefolder", data_dir=str(data), data_kwargs={"size": 16})
    return run, data


def test_run_folder_checkpoint_and_summary_agree(folder_run):
    run, data = folder_run
    loaded = load_run(run)
    assert loaded.weights.name == "best.pt"
    assert loaded.config.data_kwargs == {"size": 16} and not loaded.model.training
    assert loaded.data_info["image_size"] == [16, 16] and loaded.data_info["class_names"] == ["dark", "light"]
    from visattn.train import evaluate

    res = evaluate(loaded.model, loaded.loader("test"))
    summary = json.loads((run / "summary.json").read_text())
    assert res["n"] == 6 and res["top1"] == pytest.approx(summary["test_top1"])
    assert res["loss"] == pytest.approx(summary["test_loss"])


def test_eval_batch_may_exceed_the_training_set(tmp_path, capsys):
    """Issue 21 case 3: a batch of 256 over 54 training images is an eval batch, not a training one."""
    data = _npz(tmp_path / "tiny.npz", 60, 20)
    run = _fit(tmp_path, "tiny", model="mnist_cnn", data="npz", data_dir=str(data), val_fraction=0.1)
    rc, res, err = _eval(capsys, "--weights", str(run / "best.pt"), "--batch-size", "256")
    assert rc == 0, err
    assert res["n"] == 20
    rc, res, err = _eval(capsys, "--weights", str(run), "--split", "val", "--batch-size", "256")
    assert rc == 0, err
    assert res["n"] == 6  # the run's own validation split: 10 % of 60


def test_exported_safetensors_carry_metadata_and_score_as_the_checkpoint(folder_run, tmp_path, capsys):
    """Issue 21 case 4: the export records model, options, classes, size and normalisation."""
    run, data = folder_run
    st = tmp_path / "model.safetensors"
    assert main(["export", "--weights", str(run / "best.pt"), "--out", str(st)]) == 0
    meta = read_metadata(st)
    assert meta["config"]["model"] == "resnet20" and meta["config"]["data_kwargs"] == {"size": 16}
    assert meta["data_info"]["image_size"] == [16, 16]
    assert meta["data_info"]["class_names"] == ["dark", "light"]
    assert len(meta["data_info"]["mean"]) == 3 and "out" not in meta["config"]
    rc, ref, err = _eval(capsys, "--weights", str(run / "best.pt"))
    assert rc == 0, err
    rc, res, err = _eval(capsys, "--weights", str(st), "--data-dir", str(data))
    assert rc == 0, err
    assert (res["model"], res["n"]) == ("resnet20", 6)
    assert res["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    # another size than the trained one is refused, naming both and the option to set
    rc, _, err = _eval(capsys, "--weights", str(st), "--data-dir", str(data), "--data-arg", "size=24")
    assert rc == 2 and "16x16" in err and "24x24" in err and "data_kwargs.size=16" in err


def test_safetensors_without_metadata_takes_data_options(folder_run, tmp_path, capsys):
    """A bare .safetensors: --data-arg / --set data_kwargs.* give the size the model was trained at."""
    run, data = folder_run
    bare = tmp_path / "bare.safetensors"
    export_safetensors(load_run(run, load_data=False).model, bare)
    assert read_metadata(bare) == {}
    rc, ref, err = _eval(capsys, "--weights", str(run))
    assert rc == 0, err
    common = ["--weights", str(bare), "--model", "resnet20", "--data", "imagefolder", "--data-dir", str(data)]
    rc, res, err = _eval(capsys, *common, "--data-arg", "size=16")
    assert rc == 0, err
    assert res["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    rc, res2, err = _eval(capsys, *common, "--set", "data_kwargs.size=16")
    assert rc == 0, err
    assert res2["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    rc, _, err = _eval(capsys, "--weights", str(bare))
    assert rc == 2 and "--model and --data" in err


def test_eval_on_npz_drops_the_folder_runs_data_options(folder_run, tmp_path, capsys):
    """Issue 21 case 5: --data npz on an image-folder run must not pass size=16 to the npz reader."""
    run, _ = folder_run
    data = _npz(tmp_path / "rgb.npz", 10, 8, shape=(3, 16, 16), k=2)
    with pytest.warns(UserWarning, match=r"data_kwargs \{'size': 16\} were dropped"):
        rc, res, err = _eval(
            capsys, "--weights", str(run / "best.pt"), "--data", "npz", "--data-dir", str(data)
        )
    assert rc == 0, err
    assert (res["data"], res["n"]) == ("npz", 8)
    with pytest.warns(UserWarning, match="were dropped"):
        loaded = load_run(run, overrides={"data": "npz", "data_dir": str(data)})
    assert loaded.config.data_kwargs == {}
    assert loaded.splits.mean == tuple(loaded.data_info["mean"])  # the trained normalisation


def test_load_run_errors_name_the_problem(tmp_path, folder_run):
    with pytest.raises(FileNotFoundError, match="neither a run folder nor a weights file"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no best.pt or last.pt"):
        load_run(tmp_path / "empty")
    run, _ = folder_run
    with pytest.raises(ValueError, match="unknown config key"):
        load_run(run, overrides={"no_such_key": 1})
