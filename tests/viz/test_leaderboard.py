"""The fine-grained leaderboard's rows, paired test, plot and report section, from synthetic benchmark JSON."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from visattn.cli import main
from visattn.report import write_report
from visattn.viz.leaderboard import leaderboard_rows, paired_t_test, plot_accuracy_vs_cost, student_t_sf2

PLAIN = [79.0, 80.5, 78.2]
SE = [80.1, 80.9, 79.9]


def _saved() -> dict:
    runs = [
        {"arm": arm, "seed": s, "params": n, "best_val_top1": v + 1, "test_top1": v, "process_cpu_s": 1800.0}
        for arm, vals, n in (("plain", PLAIN, 100), ("se", SE, 120))
        for s, v in enumerate(vals)
    ]
    runs.append({"arm": "dvan", "seed": 0, "params": 300, "best_val_top1": 70.0, "test_top1": None})
    latency = [
        {"arm": a, "params": n, "cpu_ms_per_image_b1": b1, "cpu_ms_per_image_b32": b32}
        for a, n, b1, b32 in (("plain", 100, 15.0, 11.0), ("se", 120, 19.0, 12.0), ("eca", 101, 16.0, 11.5))
    ]
    latency.append({"arm": "dvan", "params": 300, "cpu_ms_per_image_b1": 40.0, "cpu_ms_per_image_b32": 44.0})
    return {"runs": runs, "latency": latency}


def test_t_tail_and_paired_test_match_scipy():
    for t, df in [(2.0, 2), (0.3, 1), (5.0, 7), (-1.5, 3), (12.0, 2), (0.01, 30)]:
        assert student_t_sf2(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9, abs=1e-12)
    d, p = paired_t_test(SE, PLAIN)
    ref = stats.ttest_rel(SE, PLAIN)
    assert d == pytest.approx(sum(SE) / 3 - sum(PLAIN) / 3) and p == pytest.approx(ref.pvalue, rel=1e-9)
    assert paired_t_test([1.0], [0.0]) == (1.0, None)
    assert paired_t_test([2.0, 3.0], [1.0, 2.0]) == (1.0, 0.0)  # no spread: a sure difference
    with pytest.raises(ValueError, match="pair"):
        paired_t_test([1.0, 2.0], [1.0])


def test_rows_merge_runs_and_latency_per_arm():
    rows = {r["arm"]: r for r in leaderboard_rows(_saved())}
    assert list(rows) == ["plain", "se", "eca", "dvan"]
    se = rows["se"]
    assert se["seeds"] == 3 and se["paired"] == 3 and se["params"] == 120
    assert se["test_mean"] == pytest.approx(sum(SE) / 3)
    assert se["test_std"] == pytest.approx(stats.tstd(SE))
    assert se["p"] == pytest.approx(stats.ttest_rel(SE, PLAIN).pvalue)
    assert se["train_cpu_h"] == pytest.approx(0.5) and se["ms_b32"] == 12.0
    assert rows["plain"]["diff"] is None  # the baseline is not compared with itself
    assert rows["eca"]["seeds"] == 0 and rows["eca"]["test_mean"] is None and rows["eca"]["val_mean"] is None
    assert rows["dvan"]["test_mean"] is None and rows["dvan"]["val_mean"] == 70.0
    # a later file's row of the same arm and seed replaces the earlier one
    newer = {"runs": [{"arm": "se", "seed": 0, "best_val_top1": 1.0, "test_top1": 50.0}]}
    assert {r["arm"]: r for r in leaderboard_rows([_saved(), newer])}["se"]["test_mean"] == pytest.approx(
        (50.0 + SE[1] + SE[2]) / 3
    )


def test_plot_marks_each_arm_as_tested_validated_or_not_trained():
    fig = plot_accuracy_vs_cost(leaderboard_rows(_saved()))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["plain (3 seeds)", "se (3 seeds)", "eca: not trained", "dvan (val)"]
    assert fig.axes[1].get_xscale() == "log"
    with pytest.raises(ValueError, match="latency"):
        plot_accuracy_vs_cost([{"arm": "plain", "ms_b1": None, "ms_b32": None}])


def test_report_and_cli_show_the_leaderboard(tmp_path, capsys):
    path = tmp_path / "board.json"
    path.write_text(json.dumps(_saved()))
    page = write_report([], tmp_path / "r.html", leaderboards=[path]).read_text()
    assert "<h2>Leaderboard</h2>" in page and 'alt="accuracy vs CPU cost" src="data:image/png;base64,' in page
    assert '<td class="l">eca</td>' in page
    assert main(["report", "--leaderboard", str(path), "--out", str(tmp_path / "c.html")]) == 0
    assert "Leaderboard" in (tmp_path / "c.html").read_text()
    with pytest.raises(FileNotFoundError, match="leaderboards"):
        write_report([], tmp_path / "r.html", leaderboards=[tmp_path / "missing.json"])
    with pytest.raises(ValueError, match="run_dirs"):
        write_report([], tmp_path / "r.html")
