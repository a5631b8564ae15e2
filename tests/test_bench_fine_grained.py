"""benchmarks/bench_fine_grained.py: every leaderboard row has an arm, dasNet steers real Lite0 layers, the plot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import visattn
from visattn.models.efficientnet_lite import mbconv_filters

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("_bench_fine_grained_t", BENCH / "bench_fine_grained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_leaderboard_row_has_an_arm(bench):
    rows = {"plain", "se", "residual", "st_cnn2", "dvan", "dvan_nodiv", "dasnet", "eca", "cbam"}
    assert rows <= set(bench.ARMS) and "two_level" in bench.ELSEWHERE
    args = bench.build_parser().parse_args(["--size", "96", "--out", "runs/x"])
    for arm in rows:
        cfg = bench.arm_config(arm, 2, args)
        assert cfg.seed == 2 and cfg.data == "flowers102" and cfg.data_kwargs == {"size": 96}
        assert cfg.retrofit == {"se": "se", "residual": "residual", "eca": "eca", "cbam": "cbam"}.get(arm)
    das = bench.arm_config("dasnet", 2, args)
    assert das.model_kwargs["base"] == str(Path("runs/x/plain_s2/best.pt"))
    assert das.select_initial is True and das.batch_size == 32


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
