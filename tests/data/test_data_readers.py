"""Readers and registered datasets, on files each test writes itself."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visattn.data import (
    ImageTensorDataset,
    list_datasets,
    load_dataset,
    load_idx_pair,
    load_npz_arrays,
    make_loaders,
    read_idx,
)
from visattn.data.mnist import DEBIAN_FASHION_MNIST


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return header + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, *, gz: bool) -> Path:
    raw = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)
    return path


def write_mnist_folder(root: Path, *, n_train: int = 12, n_test: int = 6, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte", x, gz=gz)
        write_idx(root / f"{split}-labels-idx1-ubyte", y, gz=gz)
        arrays[split] = (x, y)
    return arrays


# ---------------------------------------------------------------- idx


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    x = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = write_idx(tmp_path / "imgs-idx3-ubyte", x, gz=gz)
    np.testing.assert_array_equal(read_idx(path, ndim=3), x)
    wide = (np.arange(6).reshape(2, 3) * 100000).astype(">i4")
    path = write_idx(tmp_path / "wide", wide, gz=gz)
    out = read_idx(path)
    assert out.dtype.isnative and out.tolist() == wide.tolist()


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_truncated_names_file_and_sizes(tmp_path, gz):
    x = np.zeros((4, 28, 28), dtype=np.uint8)
    raw = idx_bytes(x)[:-100]
    path = tmp_path / ("cut-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(ValueError, match="truncated") as err:
        read_idx(path)
    msg = str(err.value)
    assert (
        str(path) in msg
        and "(4, 28, 28)" in msg
        and str(4 * 28 * 28) in msg
        and str(4 * 28 * 28 - 100) in msg
    )


def test_read_idx_bad_magic_trailing_and_ndim(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad magic number") as err:
        read_idx(bad)
    assert str(bad) in str(err.value)
    extra = tmp_path / "extra"
    extra.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(extra)
    one_dim = write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(3, np.uint8), gz=False)
    with pytest.raises(ValueError, match="expected 3 dimensions, header says 1"):
        read_idx(one_dim, ndim=3)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 4, 4), np.uint8)))[:-12])
    with pytest.raises(ValueError, match="broken.gz"):
        read_idx(broken_gz)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_idx(tmp_path / "nowhere")


def test_load_idx_pair_mismatched_counts(tmp_path):
    xi = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8), gz=True)
    yi = write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8), gz=False)
    with pytest.raises(ValueError) as err:
        load_idx_pair(xi, yi)
    msg = str(err.value)
    assert str(xi) in msg and str(yi) in msg and "5 images" in msg and "4 labels" in msg


def test_mnist_builder_reads_idx_folder_and_torchvision_layout(tmp_path):
    arrays = write_mnist_folder(tmp_path / "plain", gz=False)
    sp = load_dataset("mnist", data_dir=str(tmp_path / "plain"))
    assert isinstance(sp.train, ImageTensorDataset) and isinstance(sp.test, ImageTensorDataset)
    assert sp.train.images.dtype == torch.uint8 and tuple(sp.train.images.shape) == (12, 1, 28, 28)
    np.testing.assert_array_equal(sp.train.images[:, 0].numpy(), arrays["train"][0])
    np.testing.assert_array_equal(sp.test.labels.numpy(), arrays["t10k"][1])
    assert (sp.num_classes, sp.in_chans, sp.image_size, len(sp.class_names)) == (10, 1, (28, 28), 10)
    assert sp.mean == (0.1307,) and sp.default_augment == "none"
    # torchvision's layout: root/FashionMNIST/raw/*.gz
    arrays = write_mnist_folder(tmp_path / "tv" / "FashionMNIST" / "raw", gz=True, seed=3)
    sp = load_dataset("fashion_mnist", data_dir=str(tmp_path / "tv"))
    np.testing.assert_array_equal(sp.test.images[:, 0].numpy(), arrays["t10k"][0])
    assert sp.class_names[0] == "T-shirt/top"


def test_truncated_file_in_dataset_names_file(tmp_path):
    write_mnist_folder(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=str(tmp_path))


# ---------------------------------------------------------------- npz


def test_npz_layouts_and_float_scaling(tmp_path):
    rng = np.random.default_rng(0)
    chw = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    cases = {
        "hw": (chw[:, 0], chw[:, :1]),
        "hwc": (chw.transpose(0, 2, 3, 1), chw),
        "chw": (chw, chw),
        "float01": (chw.astype(np.float32) / 255.0, chw),
        "float255": (chw.astype(np.float64), chw),
    }
    for name, (x, expect) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, x_train=x, y_train=np.arange(6) % 3, x_test=x[:2], y_test=np.array([0, 2]))
        out = load_npz_arrays(path)
        assert out["x_train"].dtype == torch.uint8, name
        np.testing.assert_array_equal(out["x_train"].numpy(), expect, err_msg=name)
        assert out["y_train"].dtype == torch.int64 and out["y_test"].tolist() == [0, 2]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full((2, 4, 4), np.nan, np.float32), "NaN or Inf"),
        (np.full((2, 4, 4), np.inf, np.float32), "NaN or Inf"),
        (np.full((2, 4, 4), 300.0, np.float32), r"\[0, 1\] or \[0, 255\]"),
        (np.full((2, 4, 4), -1, np.int16), r"\[0, 255\]"),
        (np.zeros((2, 5, 4, 4), np.uint8), "channel axis"),
    ],
)
def test_npz_bad_values_name_file_and_key(tmp_path, bad, message):
    path = tmp_path / "bad.npz"
    good = np.zeros((2, 4, 4), np.uint8)
    np.savez(path, x_train=good, y_train=np.zeros(2), x_test=bad, y_test=np.zeros(2))
    with pytest.raises(ValueError, match=message) as err:
        load_npz_arrays(path)
    assert str(path) in str(err.value) and "'x_test'" in str(err.value)


def test_npz_missing_key_and_label_mismatch(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(
        path, x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.zeros(2), x_test=np.zeros((1, 4, 4), np.uint8)
    )
    with pytest.raises(ValueError, match="'y_test'") as err:
        load_npz_arrays(path)
    assert str(path) in str(err.value)
    np.savez(
        path,
        x_train=np.zeros((3, 4, 4), np.uint8),
        y_train=np.zeros(2),
        x_test=np.zeros((1, 4, 4)),
        y_test=[0],
    )
    with pytest.raises(ValueError, match=r"'y_train'.*\(3,\)"):
        load_npz_arrays(path)


def test_npz_dataset_and_mnist_from_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    path = tmp_path / "digits.npz"
    np.savez(path, x_train=x, y_train=np.arange(20) % 10, x_test=x[:5], y_test=np.arange(5))
    sp = load_dataset("npz", data_dir=str(path))
    assert sp.num_classes == 10 and sp.in_chans == 1 and sp.image_size == (28, 28)
    expect = x.astype(np.float64) / 255.0
    assert sp.mean[0] == pytest.approx(expect.mean(), abs=1e-4)
    assert sp.std[0] == pytest.approx(expect.std(), abs=1e-4)
    sp = load_dataset("mnist", data_dir=str(path))
    assert isinstance(sp.train, ImageTensorDataset) and sp.mean == (0.1307,)
    np.testing.assert_array_equal(sp.train.images[:, 0].numpy(), x)


def test_cifar_from_npz_checks_channels(tmp_path):
    path = tmp_path / "gray.npz"
    np.savez(
        path,
        x_train=np.zeros((2, 32, 32), np.uint8),
        y_train=[0, 1],
        x_test=np.zeros((1, 32, 32)),
        y_test=[0],
    )
    with pytest.raises(ValueError, match="3-channel"):
        load_dataset("cifar10", data_dir=str(path))


# ---------------------------------------------------------------- CIFAR python layout


def test_cifar10_torchvision_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train_x = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": list(range(4))}, fh)
        if name != "test_batch":
            train_x.append(data)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    sp = load_dataset("cifar10", data_dir=str(tmp_path))
    assert isinstance(sp.train, ImageTensorDataset) and tuple(sp.train.images.shape) == (20, 3, 32, 32)
    np.testing.assert_array_equal(sp.train.images.reshape(20, -1).numpy(), np.concatenate(train_x))
    assert len(sp.test) == 4 and sp.class_names[3] == "c3" and sp.default_augment == "pad_crop_flip"
    assert sp.std == (0.2470, 0.2435, 0.2616)


# ---------------------------------------------------------------- errors


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnistt'") as err:
        load_dataset("mnistt")
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "flowers102", "npz"):
        assert name in list_datasets() and name in str(err.value)


@pytest.mark.parametrize(
    "name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "flowers102", "imagefolder"]
)
def test_missing_data_path_names_path(tmp_path, name):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, data_dir=str(missing))
    assert str(missing) in str(err.value)
    assert "--data-dir" in str(err.value)


def test_missing_fashion_hint_names_apt_package(tmp_path, monkeypatch):
    monkeypatch.setattr("visattn.data.mnist.DEBIAN_FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setenv("VISATTN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion_mnist")
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg
    assert str(tmp_path / "absent") in msg and str(tmp_path / "cache") in msg
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_dataset("npz", data_dir=str(tmp_path / "missing.npz"))


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(),
    reason="needs Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_debian_folder():
    sp = load_dataset("fashion_mnist")
    assert isinstance(sp.train, ImageTensorDataset)
    assert tuple(sp.train.images.shape) == (60000, 1, 28, 28) and len(sp.test) == 10000
    assert sp.train.labels.bincount().tolist() == [6000] * 10


# ---------------------------------------------------------------- image folders


def write_png_folder(root: Path, splits=("train", "test"), classes=("cat", "dog"), n=3) -> None:
    rng = np.random.default_rng(0)
    for split in splits:
        for k, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                arr = np.full((20 + 2 * i, 30, 3), 60 + 120 * k, np.uint8)
                arr += rng.integers(0, 10, arr.shape, dtype=np.uint8)
                Image.fromarray(arr).save(root / split / cls / f"{i}.png")


def test_imagefolder_loads_pngs_and_loaders_batch_them(tmp_path):
    write_png_folder(tmp_path, splits=("train", "val"))
    sp = load_dataset("imagefolder", data_dir=str(tmp_path), size=16)
    assert sp.class_names == ["cat", "dog"] and sp.num_classes == 2 and sp.image_size == (16, 16)
    img, label = sp.train[4]
    assert isinstance(img, Image.Image) and label == 1
    ld = make_loaders(sp, batch_size=2, val_fraction=0.34, seed=0)
    assert (ld.n_train, ld.n_val, ld.n_test, ld.augment) == (4, 2, 6, "resized_crop_flip")
    x, y = next(iter(ld.train))
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    xt, yt = next(iter(ld.test))
    assert xt.shape == (2, 3, 16, 16) and yt.tolist() == [0, 0]
    # eval transform: plain resize + centre crop of a flat grey-ish image, ImageNet-normalised
    expect = (torch.tensor([60 / 255.0] * 3) - torch.tensor(sp.mean)) / torch.tensor(sp.std)
    assert torch.allclose(xt[0].mean((1, 2)), expect, atol=0.1)


def test_imagefolder_class_mismatch(tmp_path):
    write_png_folder(tmp_path / "a", splits=("train",), classes=("x", "y"))
    write_png_folder(tmp_path / "b", splits=("test",), classes=("x", "z"))
    (tmp_path / "a" / "test").symlink_to(tmp_path / "b" / "test")
    with pytest.raises(ValueError, match="classes differ"):
        load_dataset("imagefolder", data_dir=str(tmp_path / "a"))


def test_flowers102_official_split(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    for i in range(1, 13):
        Image.new("RGB", (24, 20), (i * 10, 0, 0)).save(folder / "jpg" / f"image_{i:05d}.jpg")
    labels = np.array([(i % 3) + 1 for i in range(12)])
    savemat(folder / "imagelabels.mat", {"labels": labels[None]})
    savemat(
        folder / "setid.mat", {"trnid": [[1, 2, 3, 4]], "valid": [[5, 6, 7]], "tstid": [[8, 9, 10, 11, 12]]}
    )
    (folder / "cat_to_name.json").write_text(json.dumps({"1": "rose", "2": "tulip"}))
    sp = load_dataset("flowers102", data_dir=str(tmp_path), size=16)
    assert (len(sp.train), len(sp.extras["val"]), len(sp.test)) == (4, 3, 5)
    assert sp.num_classes == 102 and sp.class_names[:2] == ["rose", "tulip"]
    assert [sp.train[i][1] for i in range(4)] == [0, 1, 2, 0]
    ld = make_loaders(sp, batch_size=2, seed=0)
    assert (ld.n_train, ld.n_val, ld.n_test) == (4, 3, 5)
    x, _ = next(iter(ld.val))
    assert x.shape == (2, 3, 16, 16)
    sp = load_dataset("flowers102", data_dir=str(folder), size=16, trainval=True)
    assert len(sp.train) == 7 and "val" not in sp.extras
