"""Distributed fault tolerance: under ``torchrun --max-restarts``, a worker killed mid-run is
restarted by torchrun, resumes from the last checkpoint, and the run ends where an uninterrupted
run with the same number of processes ends.

Two CPU processes (gloo) train ``mnist_cnn`` with GroupNorm (batch-independent, so the result of
two processes equals one process on the same global batch up to the order of float sums). When
``last.pt`` shows two finished epochs, the test SIGKILLs the rank-1 worker from outside. torchrun
then stops the other worker and starts both again with the same command, whose ``--resume`` makes
them continue from ``last.pt``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import train_argv
from visattn.train import safe_load

EPOCHS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _worker_with_rank(agent: int, rank: int) -> int | None:
    """The pid of torchrun's worker process whose environment says ``RANK=rank``."""
    for pid in _children(agent):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return pid
    return None


def _epoch_on_disk(run: Path) -> int:
    try:
        return int(safe_load(run / "last.pt")["epoch"])
    except (FileNotFoundError, ValueError):
        return 0


@pytest.mark.slow
def test_torchrun_restarts_a_killed_worker_and_the_run_resumes(tmp_path, fmnist_small):
    run = tmp_path / "ddp"
    sets = ("model_kwargs.norm=group", "augment=none", "deterministic=true", "test_at_end=false")
    extra = ("--lr", "0.05", "--seed", "4", "--resume")
    train = train_argv(fmnist_small, run, *extra, epochs=EPOCHS, limit_train=256, sets=sets)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        # c10d rendezvous: each restart round gets a fresh store prefix. With the static one
        # (--master-addr/--master-port) the restarted workers found the first round's gloo
        # addresses and hung or failed to connect (torch 2.x, observed here).
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{_free_port()}",
        "--rdzv-id",
        "reliability",
        "-m",
        "visattn",
        *train,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    agent = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    killed_at = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and agent.poll() is None:
            epoch = _epoch_on_disk(run)
            if epoch >= 2:
                victim = _worker_with_rank(agent.pid, 1)
                if victim is not None:
                    os.kill(victim, signal.SIGKILL)
                    killed_at = epoch
                    break
            time.sleep(0.05)
        log, _ = agent.communicate(timeout=180)
    finally:
        if agent.poll() is None:  # never leave workers behind: the agent leads its own session
            os.killpg(agent.pid, signal.SIGKILL)
            agent.communicate()
    assert killed_at is not None, "the run ended before a worker could be killed; raise EPOCHS"
    assert killed_at < EPOCHS, killed_at
    assert agent.returncode == 0, log[-4000:]
    assert "resumed from" in log, log[-4000:]  # the restarted workers continued from last.pt
    ck = safe_load(run / "last.pt")
    assert ck["epoch"] == EPOCHS
    assert [h["epoch"] for h in ck["history"]] == list(range(1, EPOCHS + 1))
    logged = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, EPOCHS + 1))

    # the same two-process run, never interrupted: same world size, so the same order of float
    # sums (a one-process run drifts by ~1e-4 after several epochs of SGD from summation order
    # alone, which would hide nothing but also prove nothing about resuming)
    ref_run = tmp_path / "ref"
    ref_cmd = [a if a != str(run) else str(ref_run) for a in cmd]
    ref_cmd[ref_cmd.index("--rdzv-endpoint") + 1] = f"127.0.0.1:{_free_port()}"
    ref = subprocess.run(
        ref_cmd, env=env, capture_output=True, text=True, timeout=300, start_new_session=True
    )
    assert ref.returncode == 0, ref.stdout[-3000:]
    want = safe_load(ref_run / "last.pt")["model"]
    for k, v in want.items():
        torch.testing.assert_close(ck["model"][k], v, rtol=0, atol=1e-6, msg=k)
