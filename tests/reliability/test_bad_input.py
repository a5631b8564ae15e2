"""Bad input fails fast and says what to fix: a table-driven test over every public entry point.

Registries, every attention module and every model registered *at run time*, ``visattn.retrofit``,
the data readers and loaders, and the ``visattn`` command. Each bad input must raise ``ValueError``
or ``TypeError`` (``FileNotFoundError`` for a missing path; exit status 2 from the CLI) whose
message names the argument and the value or shape received. Module ``forward``s are checked only
for what is free (rank, channels, size, dtype, empty batch), never for values.
"""

from __future__ import annotations

import functools
import gzip
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import visattn
from conftest import create_module, module_class, train_argv
from visattn.attention import list_sensors
from visattn.cli import main
from visattn.data import load_dataset, make_loaders, read_idx
from visattn.data.npz import load_npz_arrays


def _shape_strs(shape: tuple[int, ...]) -> tuple[str, ...]:
    """The ways a message may quote a shape."""
    inner = ", ".join(map(str, shape))
    return (f"({inner})", f"[{inner}]", f"torch.Size([{inner}])", "x".join(map(str, shape[-2:])))


def _raises(exc: type[BaseException] | tuple, fn: Callable[[], Any], *needles: str | tuple[str, ...]) -> str:
    """Call ``fn``; it must raise ``exc`` with each needle (or one of a tuple of them) in the message."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for needle in needles:
        options = needle if isinstance(needle, tuple) else (needle,)
        assert any(o in msg for o in options), f"message {msg!r} does not name any of {options}"
    return msg


# ----------------------------------------------------------------------------------- registries

REGISTRY_CASES: list[tuple[str, Callable[[], Any], type, tuple]] = [
    (
        "create_model unknown",
        lambda: visattn.create_model("resnet_nope"),
        ValueError,
        ("resnet_nope", "resnet20"),
    ),
    ("create_model not str", lambda: visattn.create_model(3), TypeError, ("int",)),
    (
        "create_attention unknown",
        lambda: visattn.create_attention("se_nope", 8),
        ValueError,
        ("se_nope", "se"),
    ),
    ("create_attention not str", lambda: visattn.create_attention(None, 8), TypeError, ("None",)),
    ("load_dataset unknown", lambda: load_dataset("imagenet_nope"), ValueError, ("imagenet_nope", "npz")),
    (
        "register_model duplicate",
        lambda: visattn.register_model("mnist_cnn")(lambda **k: None),
        ValueError,
        ("mnist_cnn",),
    ),
    ("register_attention duplicate", lambda: visattn.register_attention("se")(object), ValueError, ("'se'",)),
]


@pytest.mark.parametrize("case", REGISTRY_CASES, ids=[c[0] for c in REGISTRY_CASES])
def test_registries_reject_bad_names(case):
    _, fn, exc, needles = case
    _raises(exc, fn, *needles)
    assert "mnist_cnn" in visattn.list_models() and "se" in visattn.list_attention()  # nothing replaced


# ------------------------------------------------------------------------------ attention modules

C, H, W = 16, 16, 12
# forwards that take more than ``x``: how to build the other inputs for a batch of B
EXTRA_INPUTS: dict[str, Callable[[int], tuple]] = {"glimpse": lambda b: (torch.zeros(b, 2),)}


def _forward_arity(name: str) -> int:
    sig = inspect.signature(module_class(name).forward)
    return sum(
        1
        for p in list(sig.parameters.values())[1:]
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


ATTENTION = visattn.list_attention() + list_sensors()


def test_every_multi_input_attention_has_an_input_maker():
    """New mechanisms whose ``forward`` needs more than ``x`` must be added to EXTRA_INPUTS."""
    assert [n for n in ATTENTION if _forward_arity(n) > 1 and n not in EXTRA_INPUTS] == []


@pytest.mark.parametrize("name", ATTENTION)
@pytest.mark.parametrize(
    "channels, exc, needle",
    [(0, ValueError, "0"), (-4, ValueError, "-4"), (True, TypeError, "bool"), (2.5, TypeError, "2.5")],
)
def test_attention_constructor_rejects_bad_channels(name, channels, exc, needle):
    _raises(exc, lambda: create_module(name, channels), "channels", needle)


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_constructor_rejects_unknown_options(name):
    _raises(TypeError, lambda: create_module(name, C, bogus_option=1), "bogus_option")


def _bad_x_cases() -> list[tuple[str, torch.Tensor | Any, type, tuple]]:
    return [
        ("rank 3", torch.zeros(C, H, W), ValueError, _shape_strs((C, H, W))),
        ("rank 5", torch.zeros(2, C, 1, H, W), ValueError, _shape_strs((2, C, 1, H, W))),
        ("wrong channels", torch.zeros(2, C + 1, H, W), ValueError, _shape_strs((2, C + 1, H, W))),
        ("integer dtype", torch.zeros(2, C, H, W, dtype=torch.int64), TypeError, ("int64",)),
        ("uint8 image", torch.zeros(2, C, H, W, dtype=torch.uint8), TypeError, ("uint8",)),
        ("empty batch", torch.zeros(0, C, H, W), ValueError, _shape_strs((0, C, H, W))),
        ("numpy array", np.zeros((2, C, H, W), np.float32), TypeError, ("ndarray",)),
    ]


@functools.cache
def _attention(name: str) -> torch.nn.Module:
    return create_module(name, C).eval()


FORWARD_ATTENTION = [n for n in ATTENTION if _forward_arity(n) == 1 or n in EXTRA_INPUTS]


@pytest.mark.parametrize("name", FORWARD_ATTENTION)
@pytest.mark.parametrize("case", _bad_x_cases(), ids=[c[0] for c in _bad_x_cases()])
def test_attention_forward_rejects_bad_x(name, case):
    _, x, exc, needles = case
    m = _attention(name)
    b = x.shape[0] if hasattr(x, "shape") and len(x.shape) == 4 else 2
    extra = EXTRA_INPUTS[name](b) if name in EXTRA_INPUTS else ()
    with torch.no_grad():
        m(
            torch.randn(2, C, H, W), *(EXTRA_INPUTS[name](2) if name in EXTRA_INPUTS else ())
        )  # valid input works
        _raises(exc, lambda: m(x, *extra), "x", needles)


# --------------------------------------------------------------------------------------- models

MODELS = visattn.list_models()
# builders with a required option: what to pass (everything else is built with its defaults)
MODEL_KWARGS: dict[str, Callable[[], dict[str, Any]]] = {
    "dasnet": lambda: {"base": visattn.create_model("mnist_cnn")}
}


@functools.cache
def _model(name: str) -> torch.nn.Module:
    return visattn.create_model(name, **MODEL_KWARGS.get(name, dict)()).eval()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    "kwargs, exc, needles",
    [
        ({"num_classes": 0}, ValueError, ("num_classes", "0")),
        ({"num_classes": -1}, ValueError, ("num_classes", "-1")),
        ({"num_classes": True}, TypeError, ("num_classes", "bool")),
        ({"in_chans": 0}, ValueError, ("in_chans", "0")),
        ({"bogus_option": 1}, TypeError, ("bogus_option",)),
    ],
    ids=["num_classes=0", "num_classes=-1", "num_classes=True", "in_chans=0", "unknown option"],
)
def test_model_builders_reject_bad_options(name, kwargs, exc, needles):
    _raises(exc, lambda: visattn.create_model(name, **MODEL_KWARGS.get(name, dict)(), **kwargs), *needles)


def _model_x_cases(spec) -> list[tuple[str, Any, type, tuple]]:
    c = spec.in_chans
    h, w = spec.size or (max(spec.min_size[0], 32), max(spec.min_size[1], 32))
    cases = [
        ("rank 3", torch.zeros(c, h, w), ValueError, _shape_strs((c, h, w))),
        ("wrong channels", torch.zeros(1, c + 2, h, w), ValueError, _shape_strs((1, c + 2, h, w))),
        ("uint8 image", torch.zeros(1, c, h, w, dtype=torch.uint8), TypeError, ("uint8",)),
        ("empty batch", torch.zeros(0, c, h, w), ValueError, _shape_strs((0, c, h, w))),
        ("numpy array", np.zeros((1, c, h, w), np.float32), TypeError, ("ndarray",)),
    ]
    if spec.min_size[0] > 1:
        small = (1, c, spec.min_size[0] - 1, w)
        cases.append(("too small", torch.zeros(small), ValueError, _shape_strs(small)))
    if spec.size is not None:
        off = (1, c, h + 4, w)
        cases.append(("not the fixed size", torch.zeros(off), ValueError, _shape_strs(off)))
    return cases


@pytest.mark.parametrize("name", MODELS)
def test_model_forward_rejects_bad_x_before_computing(name):
    m = _model(name)
    spec = m.input_spec
    for label, x, exc, needles in _model_x_cases(spec):
        with torch.no_grad():
            msg = _raises(exc, lambda x=x: m(x), needles)
        assert re.search(r"\bx\b", msg), f"{name}, {label}: message {msg!r} does not name x"


# --------------------------------------------------------------------------------------- retrofit


def _net() -> torch.nn.Module:
    return visattn.create_model("resnet20")


RETROFIT_CASES = [
    ("unknown attention", lambda: visattn.retrofit(_net(), "se_nope"), ValueError, ("se_nope",)),
    ("not a module", lambda: visattn.retrofit("resnet20", "se"), TypeError, ("model", "str")),
    (
        "unknown target",
        lambda: visattn.retrofit(_net(), "se", targets=["layer9.0"]),
        ValueError,
        ("layer9.0",),
    ),
    (
        "bad attention option",
        lambda: visattn.retrofit(_net(), "se", reduction=0),
        ValueError,
        ("reduction", "0"),
    ),
    (
        "identity_init not bool",
        lambda: visattn.retrofit(_net(), "se", identity_init="yes"),
        TypeError,
        ("identity_init",),
    ),
]


@pytest.mark.parametrize("case", RETROFIT_CASES, ids=[c[0] for c in RETROFIT_CASES])
def test_retrofit_rejects_bad_input(case):
    _, fn, exc, needles = case
    _raises(exc, fn, *needles)


def test_retrofit_refuses_attention_without_identity_init():
    names = [n for n in ATTENTION if not getattr(module_class(n), "supports_identity_init", False)]
    assert names, "every attention supports identity init: this check has nothing to test"
    for n in names:
        _raises(ValueError, lambda n=n: visattn.retrofit(_net(), n), n)


# ------------------------------------------------------------------------------------- data files


def _npz(path: Path, **override: Any) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 40),
        "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 10),
    }
    for k, v in override.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez(path, **arrays)
    return path


def _nan_images() -> np.ndarray:
    x = np.random.default_rng(0).random((40, 28, 28)).astype(np.float32)
    x[3, 4, 5] = np.nan
    return x


def _truncated(path: Path) -> Path:
    good = _npz(path)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    return good


def _corrupt_member(path: Path) -> Path:
    """A whole zip whose first member's bytes were changed: its CRC no longer matches."""
    good = _npz(path)
    data = bytearray(good.read_bytes())
    start = data.index(b"\x93NUMPY") + 200  # inside x_train's pixel bytes (stored uncompressed)
    data[start : start + 50] = bytes(255 - b for b in data[start : start + 50])
    good.write_bytes(bytes(data))
    return good


DATA_FILE_CASES: list[tuple[str, Callable[[Path], Path], type, tuple]] = [
    ("missing file", lambda d: d / "nope.npz", FileNotFoundError, ("nope.npz",)),
    ("truncated file", lambda d: _truncated(d / "t.npz"), ValueError, ("t.npz",)),
    ("corrupt member (bad CRC)", lambda d: _corrupt_member(d / "c.npz"), ValueError, ("c.npz", "corrupt")),
    (
        "not an npz",
        lambda d: (d / "r.npz").write_bytes(b"\x00garbage" * 50) and d / "r.npz",
        ValueError,
        ("r.npz",),
    ),
    ("missing key", lambda d: _npz(d / "k.npz", y_test=None), ValueError, ("y_test",)),
    ("NaN images", lambda d: _npz(d / "n.npz", x_train=_nan_images()), ValueError, ("NaN",)),
    (
        "Inf images",
        lambda d: _npz(d / "i.npz", x_train=np.full((40, 28, 28), np.inf, np.float32)),
        ValueError,
        ("Inf",),
    ),
    (
        "out-of-range integers",
        lambda d: _npz(d / "o.npz", x_train=np.full((40, 28, 28), 300, np.int16)),
        ValueError,
        ("300",),
    ),
    (
        "out-of-range floats",
        lambda d: _npz(d / "f.npz", x_train=np.full((40, 28, 28), -2.0, np.float32)),
        ValueError,
        ("-2.0",),
    ),
    ("negative label", lambda d: _npz(d / "l.npz", y_train=np.full(40, -1)), ValueError, ("-1",)),
    ("fractional label", lambda d: _npz(d / "fl.npz", y_train=np.full(40, 0.5)), ValueError, ("y_train",)),
    ("label count", lambda d: _npz(d / "c.npz", y_train=np.zeros(39, np.int64)), ValueError, ("(40,)", "39")),
    ("image rank", lambda d: _npz(d / "rk.npz", x_train=np.zeros(40, np.uint8)), ValueError, ("(40,)",)),
    (
        "train/test shapes differ",
        lambda d: _npz(d / "s.npz", x_test=np.zeros((10, 32, 32), np.uint8)),
        ValueError,
        ("x_test",),
    ),
]


@pytest.mark.parametrize("case", DATA_FILE_CASES, ids=[c[0] for c in DATA_FILE_CASES])
def test_npz_reader_rejects_bad_files(tmp_path, case):
    _, make, exc, needles = case
    path = make(tmp_path)
    _raises(exc, lambda: load_npz_arrays(path), *needles)
    _raises(exc, lambda: load_dataset("npz", data_dir=str(path)), *needles)


def _idx_images(path: Path, n: int = 4) -> Path:
    header = bytes([0, 0, 0x08, 3]) + b"".join(v.to_bytes(4, "big") for v in (n, 28, 28))
    pixels = np.random.default_rng(0).integers(0, 256, n * 28 * 28, dtype=np.uint8).tobytes()
    with gzip.open(path, "wb") as f:  # random pixels: the gzip stream is as long as the data
        f.write(header + pixels)
    return path


IDX_CASES: list[tuple[str, Callable[[Path], Path], type, tuple]] = [
    ("missing", lambda d: d / "none-idx3-ubyte.gz", FileNotFoundError, ("none-idx3-ubyte.gz",)),
    (
        "truncated gzip",
        lambda d: (d / "t.gz").write_bytes(_idx_images(d / "g.gz").read_bytes()[:1000]) and d / "t.gz",
        ValueError,
        ("t.gz",),
    ),
    (
        "short payload",
        lambda d: _write_gz(d / "s.gz", bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") * 3 + bytes(10)),
        ValueError,
        ("s.gz",),
    ),
    ("bad magic", lambda d: _write_gz(d / "m.gz", b"\x01\x02\x03\x04" + bytes(16)), ValueError, ("m.gz",)),
    ("empty", lambda d: _write_gz(d / "e.gz", b""), ValueError, ("e.gz",)),
]


def _write_gz(path: Path, raw: bytes) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(raw)
    return path


@pytest.mark.parametrize("case", IDX_CASES, ids=[c[0] for c in IDX_CASES])
def test_idx_reader_rejects_bad_files(tmp_path, case):
    _, make, exc, needles = case
    path = make(tmp_path)
    _raises(exc, lambda: read_idx(path), *needles)


def test_missing_dataset_folder_names_the_path(tmp_path):
    _raises(
        FileNotFoundError,
        lambda: load_dataset("fashion_mnist", data_dir=str(tmp_path / "nowhere")),
        "nowhere",
    )
    _raises(FileNotFoundError, lambda: load_dataset("npz", data_dir=None), "data-dir")


@pytest.fixture(scope="module")
def _splits(tmp_path_factory):
    return load_dataset("npz", data_dir=str(_npz(tmp_path_factory.mktemp("d") / "ok.npz")))


LOADER_CASES = [
    ("batch_size=0", {"batch_size": 0}, ValueError, ("batch_size", "0")),
    ("batch_size=-2", {"batch_size": -2}, ValueError, ("batch_size", "-2")),
    ("batch_size float", {"batch_size": 2.5}, TypeError, ("batch_size", "2.5")),
    ("batch bigger than data", {"batch_size": 1000}, ValueError, ("batch_size", "1000")),
    ("val_fraction=1", {"batch_size": 4, "val_fraction": 1.0}, ValueError, ("val_fraction", "1.0")),
    ("val_fraction<0", {"batch_size": 4, "val_fraction": -0.1}, ValueError, ("val_fraction", "-0.1")),
    ("unknown augment", {"batch_size": 4, "augment": "nope"}, ValueError, ("augment", "nope")),
    ("num_workers<0", {"batch_size": 4, "num_workers": -1}, ValueError, ("num_workers", "-1")),
    ("limit_train=0", {"batch_size": 4, "limit_train": 0}, ValueError, ("limit_train", "0")),
]


@pytest.mark.parametrize("case", LOADER_CASES, ids=[c[0] for c in LOADER_CASES])
def test_make_loaders_rejects_bad_options(_splits, case):
    _, kwargs, exc, needles = case
    _raises(exc, lambda: make_loaders(_splits, **kwargs), *needles)


# -------------------------------------------------------------------------------------------- CLI


def _run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return int(e.code or 0)


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    return train_argv(data, out, *extra, batch_size=16)


CLI_CASES: list[tuple[str, Callable[[Path, Path], list[str]], tuple]] = [
    ("unknown command", lambda d, t: ["fly"], ("fly",)),
    ("epochs=0", lambda d, t: _train(d, t / "r", "--epochs", "0"), ("epochs", "0")),
    ("epochs not int", lambda d, t: _train(d, t / "r", "--epochs", "two"), ("--epochs", "two")),
    ("batch-size<0", lambda d, t: _train(d, t / "r", "--batch-size", "-4"), ("batch_size", "-4")),
    ("lr=0", lambda d, t: _train(d, t / "r", "--lr", "0"), ("lr", "0")),
    ("unknown model", lambda d, t: _train(d, t / "r", "--model", "vgg_nope"), ("--model", "vgg_nope")),
    ("unknown data", lambda d, t: _train(d, t / "r", "--data", "imagenet_nope"), ("--data", "imagenet_nope")),
    (
        "unknown retrofit",
        lambda d, t: _train(d, t / "r", "--retrofit", "nope_attn"),
        ("--retrofit", "nope_attn"),
    ),
    ("missing data file", lambda d, t: _train(t / "nope.npz", t / "r"), ("nope.npz",)),
    ("NaN data file", lambda d, t: _train(_npz(t / "nan.npz", x_train=_nan_images()), t / "r"), ("NaN",)),
    ("unknown --set key", lambda d, t: _train(d, t / "r", "--set", "lrr=0.1"), ("lrr",)),
    ("--set without =", lambda d, t: _train(d, t / "r", "--set", "lr"), ("--set", "'lr'")),
    ("--set wrong type", lambda d, t: _train(d, t / "r", "--set", "lr=fast"), ("lr", "fast")),
    ("--set out of range", lambda d, t: _train(d, t / "r", "--set", "val_fraction=2"), ("val_fraction", "2")),
    ("--set bad choice", lambda d, t: _train(d, t / "r", "--set", "optimizer=adam"), ("optimizer", "adam")),
    (
        "--set nonfinite",
        lambda d, t: _train(d, t / "r", "--set", "nonfinite=ignore"),
        ("nonfinite", "ignore"),
    ),
    ("--model-arg no =", lambda d, t: _train(d, t / "r", "--model-arg", "norm"), ("--model-arg", "'norm'")),
    ("bad model option", lambda d, t: _train(d, t / "r", "--model-arg", "norm=weird"), ("norm", "weird")),
    (
        "image too small",
        lambda d, t: _train(d, t / "r", "--model", "resnet18"),
        ("resnet18", "32x32", "28x28"),
    ),
    ("batch > data", lambda d, t: _train(d, t / "r", "--batch-size", "512"), ("batch_size", "512")),
    ("missing weights", lambda d, t: _train(d, t / "r", "--weights", str(t / "w.pt")), ("w.pt",)),
    ("missing config", lambda d, t: _train(d, t / "r", "--config", str(t / "c.yaml")), ("c.yaml",)),
    ("eval missing weights", lambda d, t: ["eval", "--weights", str(t / "w.pt")], ("w.pt",)),
    ("eval no --weights", lambda d, t: ["eval"], ("--weights",)),
    ("eval bad split", lambda d, t: ["eval", "--weights", "x.pt", "--split", "train"], ("--split", "train")),
    (
        "export bad suffix",
        lambda d, t: ["export", "--weights", "x.pt", "--out", str(t / "m.bin")],
        ("--out", "m.bin"),
    ),
    ("list bad group", lambda d, t: ["list", "everything"], ("everything",)),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_exits_2_naming_the_bad_option(tmp_path, fmnist_small, capsys, case):
    _, argv, needles = case
    assert _run_cli(argv(fmnist_small, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"stderr {err[-600:]!r} does not name {needle!r}"
    assert not (tmp_path / "r" / "last.pt").exists()


def test_cli_eval_with_weights_of_another_model_exits_2(tmp_path, fmnist_small, capsys):
    torch.save(visattn.create_model("cnn_mnist").state_dict(), tmp_path / "cnn.pt")
    argv = ["eval", "--weights", str(tmp_path / "cnn.pt"), "--model", "mnist_cnn", "--data", "npz"]
    assert _run_cli([*argv, "--data-dir", str(fmnist_small)]) == 2
    assert "cnn.pt" in capsys.readouterr().err
