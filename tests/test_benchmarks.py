"""The benchmark scripts and the published results stay in working order.

- every ``benchmarks/*.py`` imports and exposes ``main`` (so a renamed import fails here, not months later);
- the shared helpers of ``benchmarks/_common.py`` do what the raw JSON relies on (metadata, portable paths,
  the engine's evaluation, in-memory datasets through ``visattn.data`` and the engine);
- the recipe hooks the converted benchmarks add to the engine's ``Trainer`` do what they say;
- ``docs/RESULTS.md`` links an existing raw JSON from every results row, every linked JSON exists and carries
  commit, date, machine and command, and no machine path is written into ``docs/`` or ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
DOCS = ROOT / "docs"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "_common.py")


def _load(path: Path) -> ModuleType:
    return load_benchmark(path.stem)


@pytest.fixture(scope="module")
def common() -> ModuleType:
    return _load(BENCH / "_common.py")


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_every_benchmark_imports_and_has_main(path):
    module = _load(path)
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"


def test_portable_path_rewrites_machine_paths(common):
    text = "--data-dir /work/shared/data/mnist.npz --data /usr/share/datasets/fashion-mnist --json /tmp/a/se.json"
    assert common.portable_path(text) == (
        "--data-dir ../shared/data/mnist.npz --data path/to/fashion-mnist --json path/to/se.json"
    )
    assert common.portable_path(".venv/bin/python runs/x.json") == ".venv/bin/python runs/x.json"
    assert common.portable_path(str(ROOT / "docs" / "x.json")) == "docs/x.json"


def test_write_result_records_metadata_without_machine_paths(common, tmp_path):
    out = tmp_path / "r.json"
    record = common.write_result(
        out, {"runs": [{"out": "/tmp/run1"}]}, argv=["--data-dir", "/work/shared/data/m.npz"]
    )
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(record, default=str))
    meta = saved["meta"]
    assert set(meta) >= {"commit", "date", "machine", "command", "torch", "threads"}
    assert meta["machine"] == common.MACHINE
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["date"])
    assert meta["command"].endswith("--data-dir ../shared/data/m.npz")
    assert saved["runs"] == [{"out": "path/to/run1"}]
    assert common.write_result(None, {}, machine="1x GPU")["meta"]["machine"] == "1x GPU"


def test_evaluate_is_the_engines_accuracy(common):
    from visattn.train import evaluate as engine_evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.randn(37, 1, 2, 2), torch.randint(0, 3, (37,))
    got = common.evaluate(model, (x, y), batch_size=8)
    with torch.no_grad():
        expected = 100 * (model(x).argmax(1) == y).float().mean().item()
    assert got["top1"] == pytest.approx(expected) and got["n"] == 37
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    assert got == pytest.approx(engine_evaluate(model, loader, torch.device("cpu")))
    assert common.error_rate(model, (x, y)) == pytest.approx(100 - expected)


def _toy(n: int, seed: int, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes a linear model separates: bright top half vs bright bottom half."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randint(0, 60, (n, 1, side, side), generator=g, dtype=torch.uint8)
    half = side // 2
    x[y == 0, :, :half] += 150
    x[y == 1, :, half:] += 150
    return x, y


def test_memory_dataset_trains_through_the_engine(common, tmp_path):
    from visattn.data import load_dataset
    from visattn.train import fit

    name = common.memory_dataset("_bench_test_toy", _toy(256, 0), _toy(64, 1))
    splits = load_dataset(name)
    assert splits.image_size == (8, 8) and splits.num_classes == 2 and len(splits.test) == 64
    cfg = common.train_config(
        model="mnist_cnn",
        data=name,
        epochs=2,
        batch_size=32,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=0.0,
        val_fraction=0.25,
        out=str(tmp_path / "run"),
    )
    summary = fit(cfg)
    assert summary["test_top1"] > 90.0  # the engine trained and tested on exactly these images
    assert summary["test_n"] == 64
    common.memory_dataset("_bench_test_toy", _toy(128, 2), _toy(16, 3))  # re-registering replaces it
    assert len(load_dataset(name).test) == 16


def test_stn_trainer_hooks(common, tmp_path):
    stn = _load(BENCH / "bench_stn.py")
    name = common.memory_dataset("_bench_test_stn", _toy(96, 0, side=28), _toy(32, 1, side=28))
    calls: list[int] = []

    def regenerate(epoch: int) -> torch.Tensor:
        calls.append(epoch)
        return torch.full((96, 1, 28, 28), 7, dtype=torch.uint8)

    cfg = common.train_config(
        model="st_cnn_mnist",
        model_kwargs={"image_size": 28},
        data=name,
        val_fraction=0.25,
        epochs=2,
        max_steps_per_epoch=1,
        batch_size=16,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.0,
        out=str(tmp_path / "stn"),
    )
    trainer = stn.STNTrainer(cfg, loc_lr_mult=0.1, regenerate=regenerate)
    lrs = sorted(g["lr"] for g in trainer.optimizer.param_groups)
    assert lrs == pytest.approx([1e-4, 1e-3])
    trainer.run()
    assert calls == [1]  # new distortions before every epoch after the first
    images = trainer.splits.train.images
    train_idx = trainer.loaders.train.dataset.indices
    val_idx = trainer.val_loader.dataset.indices
    assert bool((images[train_idx] == 7).all())  # the training digits were redrawn ...
    assert not bool((images[val_idx] == 7).all())  # ... the validation digits were not


def test_residual_attention_trainer_reestimates_batch_norm(common, tmp_path):
    ra = _load(BENCH / "bench_residual_attention.py")
    name = common.memory_dataset("_bench_test_bn", _toy(64, 0), _toy(16, 1))
    cfg = common.train_config(
        model="mnist_cnn", data=name, val_fraction=0.25, epochs=1, batch_size=16, out=str(tmp_path / "bn")
    )
    trainer = ra.RecalibratingTrainer(cfg)
    trainer.recal_batches = 2
    trainer.run()
    bns = [m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.1 for m in bns)  # momentum restored after the cumulative average
    assert all(
        int(m.num_batches_tracked) == 2 for m in bns
    )  # statistics from exactly the 2 re-estimation batches


# ------------------------------------------------------------------------------------------ docs checks
_LINK = re.compile(r"\]\(([^)#\s]+\.json)\)")


def test_every_json_linked_from_the_results_docs_exists():
    pages = [DOCS / "RESULTS.md", *sorted((DOCS / "results").glob("*.md"))]
    missing = []
    for page in pages:
        for target in _LINK.findall(page.read_text()):
            if not (page.parent / target).is_file():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, f"links to JSON files that do not exist: {missing}"


def test_every_results_row_links_raw_json():
    text = (DOCS / "RESULTS.md").read_text()
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("|") and not re.fullmatch(r"\|[-:| ]+\|", line) and re.search(r"\d", line)
    ]
    headers = {line for line in rows if line.startswith(("| what |", "| model | method |"))}
    rows = [r for r in rows if r not in headers]
    assert len(rows) >= 20
    unlinked = [r[:80] for r in rows if not _LINK.search(r) and "no raw output kept" not in r]
    assert not unlinked, f"results rows without a raw JSON link: {unlinked}"


def _every_record_has_metadata(data: dict) -> bool:
    """True when every top-level value is a record (or a list of records) carrying commit, date, machine
    and command itself or in its ``meta``."""
    keys = ("commit", "date", "machine", "command")
    records = []
    for value in data.values():
        records.extend(value if isinstance(value, list) else [value])
    if not records or not all(isinstance(r, dict) for r in records):
        return False
    return all(all(k in r.get("meta", r) for k in keys) for r in records)


def test_raw_json_carries_commit_date_machine_and_command():
    files = sorted((DOCS / "results").glob("*.json")) + [DOCS / "results" / "gpu" / "META.json"]
    bad = []
    for path in files:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and _every_record_has_metadata(data):
            continue  # one record per run or measurement, each with its own metadata
        meta = data.get("meta", data) if isinstance(data, dict) else {}
        if "source" not in meta and "commit" not in meta:
            bad.append(path.name)
            continue
        for key in ("date", "machine", "command"):
            if key not in meta and not any(
                key in run for run in data.get("runs", {}).values() if isinstance(run, dict)
            ):
                bad.append(f"{path.name}: {key}")
    assert not bad, f"raw JSON without its run metadata: {bad}"


def test_no_machine_paths_in_docs_or_benchmarks():
    pattern = re.compile(r"(?<![\w.])/(?:work|usr/share|home|tmp)/")
    offenders = []
    for folder in (DOCS, BENCH):
        for path in folder.rglob("*"):
            if path.suffix in {".md", ".json", ".py", ".sh", ".yaml", ".log"} and path.name != "_common.py":
                for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if pattern.search(line):
                        offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert not offenders, f"machine paths (write ../shared/data/... or path/to/...): {offenders[:10]}"


def _rows(name: str, *path: str) -> list[dict]:
    data = json.loads((DOCS / "results" / name).read_text())
    for key in path:
        data = data[key]
    return data


def _board_arm(arm: str) -> list[float]:
    """Test top-1 of one fine-grained board arm, per seed (fine_grained_test.json)."""
    return [r["test_top1"] for r in _rows("fine_grained_test.json", "runs") if r["arm"] == arm]


def _mean_std(values: list[float]) -> str:
    import statistics

    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


# (figure as RESULTS.md prints it, the per-seed values of its raw JSON)
_FIGURES = {
    "stn 700 cnn": (
        "11.16 ± 0.14",
        lambda: [
            r["test_error"] for r in _rows("stn_700_transcribed.json", "results") if r["model"] == "cnn_mnist"
        ],
    ),
    "stn 700 st-cnn": (
        "4.62 ± 0.08",
        lambda: [
            r["test_error"]
            for r in _rows("stn_700_transcribed.json", "results")
            if r["model"] == "st_cnn_mnist" and "transform" not in r
        ],
    ),
    "stn 20k rts st-fcn": (
        "2.84 ± 0.15",
        lambda: [
            r["test_error"]
            for r in _rows("stn_20k_transcribed.json", "results")
            if r["dataset"] == "mnist_rts" and r["model"] == "st_fcn_mnist"
        ],
    ),
    "stn 16k st-cnn": (
        "1.19 ± 0.31",
        lambda: [
            json.loads((DOCS / "results" / f"stn_fresh16k_st_s{s}.json").read_text())["results"][0][
                "test_error"
            ]
            for s in range(3)
        ],
    ),
    "ram 28 mc": (
        "1.54 ± 0.21",
        lambda: [
            r["test_error_mc10"]
            for r in _rows("ram_transcribed.json", "runs", "mnist28_e20", "results")
            if r["model"] == "ram"
        ],
    ),
    "ram lstm mc": (
        "3.73 ± 0.15",
        lambda: [
            r["test_error_mc10"]
            for r in _rows("ram_transcribed.json", "runs", "cluttered60_lstm_e100", "results")
        ],
    ),
    "dasnet fashion": (
        "85.95 ± 0.73",
        lambda: [
            r["dasnet_test_top1"]
            for r in _rows("dasnet_transcribed.json", "runs", "fashion_setup2_recalibrated_base", "results")
        ],
    ),
    "se retrofit (b)": (
        "86.08 ± 0.57",
        lambda: [
            r["test_top1"] for r in _rows("se_retrofit_transcribed.json", "rows") if r["run"] == "retrofit"
        ],
    ),
    "two-level fused": (
        "54.43 ± 0.47",
        lambda: _rows("two_level_test.json", "arms", "object + part fused", "test"),
    ),
    "two-level whole image": (
        "40.99 ± 0.84",
        lambda: _rows("two_level_test.json", "arms", "whole image, 14 epochs", "test"),
    ),
    "pose pair b hourglass": (
        "4.40 ± 0.40",
        lambda: [_rows(f"pose_b_hourglass{sfx}.json", "summary")["test_pck"] for sfx in ("", "_s1", "_s2")],
    ),
    "pose pair b mca": (
        "10.95 ± 0.14",
        lambda: [
            _rows(f"pose_b_mca_hourglass{sfx}.json", "summary")["test_pck"] for sfx in ("", "_s1", "_s2")
        ],
    ),
    "stn frozen recipe st_cnn_mnist": (
        "0.90 ± 0.04",
        lambda: _rows("stn_frozen_summary.json", "st", "test_error"),
    ),
    "stn frozen recipe cnn_mnist": (
        "1.84 ± 0.05",
        lambda: _rows("stn_frozen_summary.json", "cnn", "test_error"),
    ),
    "fine-grained board plain": ("85.14 ± 0.50", lambda a="plain": _board_arm(a)),
    "fine-grained board se": ("84.46 ± 0.32", lambda a="se": _board_arm(a)),
    "fine-grained board eca": ("84.97 ± 0.31", lambda a="eca": _board_arm(a)),
    "fine-grained board cbam": ("85.33 ± 0.54", lambda a="cbam": _board_arm(a)),
    "fine-grained board residual_slim": ("83.81 ± 0.79", lambda a="residual_slim": _board_arm(a)),
    "fine-grained board st_cnn2": ("84.94 ± 0.54", lambda a="st_cnn2": _board_arm(a)),
    "fine-grained board dvan": ("82.08 ± 0.39", lambda a="dvan": _board_arm(a)),
    "fine-grained board dvan_nodiv": ("84.71 ± 0.05", lambda a="dvan_nodiv": _board_arm(a)),
    "fine-grained board dasnet": ("85.14 ± 0.50", lambda a="dasnet": _board_arm(a)),
    "se flowers se arm": (
        "79.11 ± 0.40",
        lambda: [r["test_top1"] for r in _rows("se_flowers.json", "runs") if r["arm"] == "se"],
    ),
}


@pytest.mark.parametrize("key", sorted(_FIGURES))
def test_published_figure_is_regenerated_from_its_raw_json(key):
    printed, values = _FIGURES[key]
    assert printed in (DOCS / "RESULTS.md").read_text()
    assert _mean_std(values()) == printed


def test_fused_plain_reference_equals_the_plain_block_in_train_and_eval():
    """``bench_se_overhead --fused-plain`` times a plain block whose batch norm is folded where SE's is; it must
    compute what the plain block computes (eval: a map above the folding threshold; train: batch statistics)."""
    import copy

    import visattn
    from visattn.models import _se_fused

    overhead = _load(BENCH / "bench_se_overhead.py")
    torch.manual_seed(0)
    block = visattn.create_model("resnet50", num_classes=10).layer1[1]
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    fused = overhead._FusedBNBottleneck(copy.deepcopy(block))
    x = torch.randn(1, 256, 64, 64)
    assert x.numel() >= _se_fused.EVAL_FUSE_MIN_NUMEL  # the eval folding applies
    block.eval(), fused.eval()
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), block(x), rtol=1e-4, atol=1e-4)
    block.train(), fused.train()
    xs = torch.randn(2, 256, 8, 8)
    torch.testing.assert_close(fused(xs), block(xs), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused.block.bn3.running_mean, block.bn3.running_mean)


def test_stn_rotation_metric_and_config(tmp_path):
    """bench_stn.py: the residual rotation of an identity warp is the distortion's; undoing it gives 0."""
    import visattn
    from visattn.data.distorted import rotate_translate_scale
    from visattn.functional import affine_rotation

    stn = _load(BENCH / "bench_stn.py")
    digits = torch.zeros(40, 1, 28, 28, dtype=torch.uint8)
    digits[:, :, 6:22, 12:16] = 255
    images, params = rotate_translate_scale(digits, generator=torch.Generator().manual_seed(0))
    loader = [(images[i : i + 16].float() / 255, None) for i in range(0, 40, 16)]
    model = visattn.create_model("st_cnn_mnist", image_size=42)  # starts at the identity warp
    r = stn.rotation_metrics(model, loader, params["theta"])
    assert r["residual_rotation_deg"] == pytest.approx(params["angle"].abs().mean().item(), abs=1e-3)
    assert r["rotation_slope"] == pytest.approx(1.0, abs=1e-4) and r["transformer_rotation_deg"] < 1e-4
    last = model.st.localization[-1]
    with torch.no_grad():  # a transformer that turns everything by -20 degrees
        a = torch.deg2rad(torch.tensor(-20.0))
        last.bias.copy_(torch.stack([a.cos(), -a.sin(), a * 0, a.sin(), a.cos(), a * 0]))
    r = stn.rotation_metrics(model, loader, params["theta"])
    assert r["transformer_rotation_deg"] == pytest.approx(20.0, abs=1e-3)
    want = (affine_rotation(params["theta"]) - 20.0).abs().mean().item()
    assert r["residual_rotation_deg"] == pytest.approx(want, abs=1e-3)
    assert (
        stn.rotation_metrics(visattn.create_model("cnn_mnist", image_size=42), loader, params["theta"])
        is None
    )
    with pytest.raises(ValueError, match="theta_d"):
        stn.rotation_metrics(model, loader, params["theta"][:10])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: some/mnist.npz\nloc_lr_mult: 0.3\nsteps: 10\n")
    args = stn.parse_args(["--config", str(cfg), "--steps", "20"])
    assert (args.data_dir, args.loc_lr_mult, args.steps) == (
        "some/mnist.npz",
        0.3,
        20,
    )  # the command line wins
    cfg.write_text("loc_lr_mul: 0.3\n")
    with pytest.raises(ValueError, match="loc_lr_mult"):
        stn.parse_args(["--config", str(cfg)])
    shipped = stn.parse_args(["--config", str(BENCH / "configs" / "st_cnn_mnist_rts.yaml")])
    assert shipped.models == ["st_cnn_mnist"] and shipped.fresh_train and shipped.steps == 16000
    assert shipped.loc_lr_mult == 3.0  # frozen on validation (stn.md, recipe ledger)
    stn.check_period(906, shipped)  # 58,000 training digits, batch 64: 906 steps per pass, 800 per period
    with pytest.raises(ValueError, match="eval-every.*906 steps of 64.*7248 steps"):
        stn.check_period(906, argparse.Namespace(eval_every=2000, batch_size=64, steps=16000))


def test_summarize_stn_table_and_targets():
    """summarize_stn.py: per-model means, ST minus CNN paired by seed and Welch's p, the issue's two checks."""
    s = _load(BENCH / "summarize_stn.py")

    def row(test: float, rot: float | None = None) -> dict:
        vr = None if rot is None else {"residual_rotation_deg": rot}
        return {
            "test_error": test,
            "val_error": test - 0.1,
            "selected_step": 16000,
            "steps": 16000,
            "ms_per_step": 150.0,
            "val_rotation": vr,
        }

    runs = {
        "st": {0: row(1.0, 10.0), 1: row(1.2, 12.0), 2: row(0.9, 11.0)},
        "cnn": {0: row(1.9), 1: row(2.0), 2: row(1.8)},
    }
    out = s.summarize(runs)
    assert out["st"]["test_mean"] == pytest.approx(31 / 30) and out["cnn"]["test_std"] == pytest.approx(0.1)
    assert (
        out["st"]["residual_rotation_mean"] == pytest.approx(11.0)
        and out["cnn"]["residual_rotation_deg"] == []
    )
    d = out["st_minus_cnn"]
    assert d["mean_diff"] == pytest.approx(31 / 30 - 1.9) and d["paired_seeds"] == [0, 1, 2]
    assert d["welch_p"] == pytest.approx(0.0022050790, rel=1e-6)  # scipy.stats.ttest_ind(equal_var=False)
    assert out["targets"] == {"st_mean_below_1pct": False, "st_below_cnn": True}
    runs["st"][1] = row(0.5)
    assert s.summarize(runs)["targets"]["st_mean_below_1pct"]
    assert "| `st_cnn_mnist` | 0, 1, 2 |" in s.table(out)
    with pytest.raises(ValueError, match="'cnn'"):
        s.summarize({"st": runs["st"]})
