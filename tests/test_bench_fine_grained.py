"""benchmarks/bench_fine_grained.py: every leaderboard row has an arm, dasNet steers real Lite0 layers, the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import visattn
from conftest import load_benchmark
from visattn.models.efficientnet_lite import mbconv_filters


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_fine_grained")


def test_every_leaderboard_row_has_an_arm(bench):
    rows = {
        "plain",
        "se",
        "residual",
        "residual_slim",
        "st_cnn2",
        "dvan",
        "dvan_nodiv",
        "dasnet",
        "eca",
        "cbam",
    }
    assert rows <= set(bench.ARMS) and "two_level" in bench.ELSEWHERE
    args = bench.build_parser().parse_args(["--size", "96", "--out", "runs/x"])
    for arm in rows:
        cfg = bench.arm_config(arm, 2, args)
        assert cfg.seed == 2 and cfg.data == "flowers102" and cfg.data_kwargs == {"size": 96}
        retrofits = {
            "se": "se",
            "residual": "residual",
            "residual_slim": "residual",
            "eca": "eca",
            "cbam": "cbam",
        }
        assert cfg.retrofit == retrofits.get(arm)
    assert bench.arm_config("residual_slim", 0, args).retrofit_kwargs == {"identity_init": True, "width": 8}
    das = bench.arm_config("dasnet", 2, args)
    assert das.model_kwargs["base"] == str(Path("runs/x/plain_s2/best.pt"))
    assert das.select_initial is True and das.batch_size == 32
    resumed = bench.build_parser().parse_args(["--resume", "--out", "runs/x"])
    assert bench.arm_config("plain", 1, resumed).resume is True and cfg.resume is False
    assert bench._resumed_note(12.5, resumed) == {
        "resumed": True,
        "process_cpu_s": None,
        "resumed_process_cpu_s": 12.5,
    }
    assert bench._resumed_note(12.5, args) == {}
    hist = [{"epoch": 1, "val_top1": 85.2}, {"epoch": 2, "val_top1": 85.5}]
    assert bench._best_epoch(hist, 85.5) == 2 and bench._best_epoch(hist, 87.55) == 0  # the base was kept
    assert bench._best_epoch([], 80.0) is None


def test_dasnet_steers_layers_that_exist_in_lite0(bench):
    net = visattn.create_model("efficientnet_lite0", num_classes=3, pretrained=False, image_size=32)
    for argv, blocks, part in (
        ([], [15], "project"),
        (["--dasnet-blocks", "-2", "15", "--dasnet-part", "depthwise"], [14, 15], "depthwise"),
    ):
        args = bench.build_parser().parse_args(argv)
        assert bench.dasnet_steer(args) == mbconv_filters(net, blocks, part)


def test_plot_from_the_json_rows(bench, tmp_path, capsys):
    saved = {
        "latency": [
            {"arm": a, "params": 1, "cpu_ms_per_image_b1": b1, "cpu_ms_per_image_b32": b1 / 2}
            for a, b1 in (("plain", 15.0), ("cbam", 20.0))
        ],
        "runs": [{"arm": "plain", "seed": 0, "best_val_top1": 79.8, "test_top1": None}],
    }
    (tmp_path / "b.json").write_text(json.dumps(saved))
    bench.main(["--plot", str(tmp_path / "p.png"), "--plot-from", str(tmp_path / "b.json")])
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
    assert "from 2 arms" in capsys.readouterr().out


def test_table_pairs_each_arm_with_plain_over_common_seeds(bench, capsys, tmp_path):
    runs = [
        {"arm": arm, "seed": seed, "best_val_top1": 70.0, "test_top1": acc, "process_cpu_s": 3600.0}
        for arm, accs in (("plain", (80.0, 81.0, 82.0)), ("se", (81.0, 83.0, 83.5)))
        for seed, acc in enumerate(accs)
    ]
    saved = {
        "runs": runs,
        "latency": [
            {"arm": "plain", "params": 3_500_000, "cpu_ms_per_image_b1": 12.4, "cpu_ms_per_image_b32": 9.7}
        ],
    }
    (tmp_path / "b.json").write_text(json.dumps(saved))
    bench.main(["--table", "--plot-from", str(tmp_path / "b.json")])
    lines = capsys.readouterr().out.splitlines()
    plain = next(line for line in lines if line.startswith("| `plain`"))
    se = next(line for line in lines if line.startswith("| `se`"))
    assert "| 3.50 | 81.00 ± 1.00 | 3 | – |" in plain and "| 12.4 | 9.7 |" in plain
    # se - plain per seed: +1, +2, +1.5 -> mean +1.50, sd 0.5, t = 5.196 on 2 df -> p = 0.0351
    assert "| 82.50 ± 1.32 | 3 | +1.50 (3 seeds) | 0.035 |" in se and se.endswith("| 1.00 |")
