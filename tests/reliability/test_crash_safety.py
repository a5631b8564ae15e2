"""Crash safety: a run killed at any moment resumes to exactly the result of an uninterrupted run.

The end-to-end test starts ``python -m visattn train`` in a subprocess and SIGKILLs it at several
moments: at random times during training steps, and right when a checkpoint's temporary file
appears (so the kill lands inside ``atomic_save``, between ``mkstemp`` and ``os.replace``). After
every kill the checkpoint on disk must load (weights-only) and hold a contiguous history; after the
final, uninterrupted resume the weights must equal, bit for bit, those of a run never killed, and
``metrics.jsonl``/``metrics.csv`` must list every epoch exactly once.

No test seam is used: kills are timed from outside by watching the run folder.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import visattn.train.engine as engine
from conftest import small_train_config, train_argv
from visattn.train import TrainConfig, Trainer, safe_load

EPOCHS = 8
SEED = 5


def _cli_args(data: Path, out: Path) -> list[str]:
    sets = ("augment=none", "deterministic=true", "test_at_end=false")
    extra = ("--lr", "0.05", "--seed", str(SEED), "--resume")
    return train_argv(data, out, *extra, epochs=EPOCHS, limit_train=192, sets=sets)


def _reference_weights(data: Path, out: Path) -> dict[str, torch.Tensor]:
    """The same run, in this process, never interrupted."""
    cfg = TrainConfig(
        model="mnist_cnn",
        data="npz",
        data_dir=str(data),
        epochs=EPOCHS,
        batch_size=32,
        lr=0.05,
        seed=SEED,
        out=str(out),
        limit_train=192,
        augment="none",
        deterministic=True,
        progress=False,
        test_at_end=False,
    )
    tr = Trainer(cfg)
    tr.run()
    return {k: v.clone() for k, v in tr.model.state_dict().items()}


def _tmp_files(run: Path) -> list[str]:
    try:
        return [n for n in os.listdir(run) if n.endswith(".tmp") and ".pt." in n]
    except FileNotFoundError:
        return []


def _wait_training_started(proc: subprocess.Popen, run: Path, since_ns: int, timeout: float = 60.0) -> bool:
    """True once this launch has rewritten ``config.yaml`` (the engine's first act in ``run()``)."""
    cfg = run / "config.yaml"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            if cfg.stat().st_mtime_ns >= since_ns:
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    return False


def _check_on_disk(run: Path, min_epoch: int) -> int:
    """The checkpoint loads and is consistent with the logs; return its epoch."""
    last = run / "last.pt"
    if not last.is_file():
        assert min_epoch == 0, "last.pt disappeared after a kill"
        return 0
    ck = safe_load(last)  # weights-only: a torn file would raise here
    epoch = ck["epoch"]
    assert epoch >= min_epoch, f"checkpoint went back from epoch {min_epoch} to {epoch}"
    assert [h["epoch"] for h in ck["history"]] == list(range(1, epoch + 1))
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    logged = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    # the logs are rewritten right after the checkpoint: at most the newest epoch can be missing
    assert logged in (list(range(1, epoch + 1)), list(range(1, epoch))), (logged, epoch)
    return epoch


def _kill_during_write(proc: subprocess.Popen, run: Path, timeout: float = 30.0) -> bool:
    """SIGKILL as soon as a checkpoint temp file appears; True if one was seen."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if _tmp_files(run):
            proc.send_signal(signal.SIGKILL)
            return True
    proc.send_signal(signal.SIGKILL)
    return False


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_matches_an_uninterrupted_run(tmp_path, fmnist_small):
    rng = random.Random(1234)
    run = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    cmd = [sys.executable, "-m", "visattn", *_cli_args(fmnist_small, run)]
    plan = ["step", "write", "step", "write", "step", "write"]
    epoch, interrupted_writes, kills = 0, 0, 0
    for mode in plan:
        since = time.time_ns() - 10_000_000  # mtime granularity margin
        time.sleep(0.02)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            if not _wait_training_started(proc, run, since):
                out, err = proc.communicate(timeout=60)
                if proc.returncode == 0:
                    break  # finished before we could kill it: nothing left to interrupt
                raise AssertionError(f"train failed (rc {proc.returncode}): {err.decode()[-2000:]}")
            if mode == "step":
                time.sleep(rng.uniform(0.0, 0.8))
                proc.send_signal(signal.SIGKILL)
            else:
                _kill_during_write(proc, run)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, proc.returncode
        kills += 1
        # a temp file left behind proves the kill landed inside atomic_save
        interrupted_writes += bool(_tmp_files(run))
        epoch = _check_on_disk(run, epoch)
    assert kills >= 5, f"only {kills} kills landed before the run finished"
    assert interrupted_writes >= 1, "no kill landed inside a checkpoint write"

    # resume to the end without interruption
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _check_on_disk(run, epoch) == EPOCHS
    assert not _tmp_files(run), "stale checkpoint temp files were left in the run folder"
    logged = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, EPOCHS + 1))
    with open(run / "metrics.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, EPOCHS + 1))
    ck = safe_load(run / "last.pt")
    _check_best_matches_history(run, ck["history"])

    torch.set_num_threads(1)
    ref = _reference_weights(fmnist_small, tmp_path / "reference")
    for k, v in ck["model"].items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)


def _check_best_matches_history(run: Path, history: list[dict]) -> None:
    """``best.pt`` holds the first epoch with the highest validation top-1."""
    best_epoch = max(history, key=lambda h: (h["val_top1"], -h["epoch"]))["epoch"]
    best = safe_load(run / "best.pt")
    assert best["epoch"] == best_epoch, (best["epoch"], best_epoch, [h["val_top1"] for h in history])
    assert best["val_top1"] == history[best_epoch - 1]["val_top1"]


def _small_cfg(out: Path, data: Path, **kw) -> TrainConfig:
    return small_train_config(out, data, **{"epochs": 4, "seed": 1, "limit_train": 96, **kw})


class _Crash(BaseException):
    """Stands in for SIGKILL inside the process (nothing after it runs)."""


@pytest.mark.parametrize("crash_after", [1, 2])
def test_a_crash_between_the_checkpoint_files_leaves_a_consistent_pair(
    tmp_path, fmnist_small, monkeypatch, crash_after
):
    """Kill right after the first / second file of an epoch's checkpoint is in place, then resume:
    ``best.pt`` must still be the best epoch's weights and ``last.pt`` must resume exactly."""
    ref = Trainer(_small_cfg(tmp_path / "ref", fmnist_small))
    ref.run()
    tops = [h["val_top1"] for h in ref.history]
    # the best epoch (first of the highest): its save writes last.pt and best.pt, and no later
    # epoch rewrites best.pt, so a best.pt missed by the crash would stay wrong to the end
    target = tops.index(max(tops)) + 1
    assert target >= 2, tops
    real_save = engine.atomic_save
    written: list[str] = []

    def crashing_save(obj, path):
        real_save(obj, path)
        if obj["epoch"] == target:
            written.append(Path(path).name)
            if len(written) == crash_after:
                raise _Crash

    monkeypatch.setattr(engine, "atomic_save", crashing_save)
    with pytest.raises(_Crash):
        Trainer(_small_cfg(tmp_path / "run", fmnist_small)).run()
    assert len(written) == crash_after
    monkeypatch.setattr(engine, "atomic_save", real_save)
    resumed = Trainer(_small_cfg(tmp_path / "run", fmnist_small, resume=True))
    resumed.run()
    for k, v in ref.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    _check_best_matches_history(tmp_path / "run", resumed.history)
    best = safe_load(tmp_path / "run" / "best.pt")["model"]
    want = safe_load(tmp_path / "ref" / "best.pt")["model"]
    for k, v in want.items():
        torch.testing.assert_close(best[k], v, rtol=0, atol=0, msg=k)


def test_stale_temp_files_from_a_killed_write_are_removed_on_resume(tmp_path, fmnist_small):
    run = tmp_path / "run"
    Trainer(_small_cfg(run, fmnist_small, epochs=1)).run()
    torn = run / ".last.pt.abc123.tmp"
    torn.write_bytes((run / "last.pt").read_bytes()[:1000])  # what a kill mid-write leaves
    resumed = Trainer(_small_cfg(run, fmnist_small, epochs=2, resume=True))
    assert resumed.start_epoch == 1
    resumed.run()
    assert not torn.exists()
    assert safe_load(run / "last.pt")["epoch"] == 2


def test_a_torn_last_checkpoint_is_refused_with_a_clear_error(tmp_path, fmnist_small):
    """If the checkpoint itself is damaged (disk error, copied half-way) resume says so."""
    run = tmp_path / "run"
    Trainer(_small_cfg(run, fmnist_small, epochs=1)).run()
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="last.pt"):
        Trainer(_small_cfg(run, fmnist_small, epochs=2, resume=True))
