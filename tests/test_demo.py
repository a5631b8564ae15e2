"""`visattn demo`: every entry trains, the table and the HTML report are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visattn.demo import DEMO_ENTRIES, run_demo


@pytest.mark.slow
def test_tiny_demo_trains_every_entry_and_writes_the_report(tmp_path, fmnist_small, capsys):
    rows = run_demo(out=str(tmp_path / "demo"), data_dir=str(fmnist_small), budget="tiny")
    assert [r["label"] for r in rows] == [e.label for e in DEMO_ENTRIES]
    for r in rows:
        assert 0.0 <= r["test_top1"] <= 100.0 and r["params"] > 0, r
        summary = json.loads((Path(r["out"]) / "summary.json").read_text())
        assert summary["test_n"] == 256, r  # limit_eval: 256 of the 300 test images
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["model"] for r in saved] == [e.model for e in DEMO_ENTRIES]
    table = (tmp_path / "demo" / "results.md").read_text()
    assert all(e.label in table for e in DEMO_ENTRIES)
    report = tmp_path / "demo" / "report.html"
    assert report.is_file() and report.stat().st_size > 10_000
    assert f"report: {report}" in capsys.readouterr().out


def test_demo_refuses_an_unknown_budget(tmp_path, fmnist_small):
    with pytest.raises(ValueError, match="budget"):
        run_demo(out=str(tmp_path), data_dir=str(fmnist_small), budget="huge")
