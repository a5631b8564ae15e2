"""Reliability figures: kill points survived, bad inputs rejected, malicious checkpoints refused,
peak memory of a standard training run.

    nice .venv/bin/python benchmarks/bench_reliability.py --kills 10 --out docs/results/reliability.json

* Kill points: ``python -m visattn train`` (mnist_cnn on the shipped Fashion-MNIST subset, CPU,
  deterministic) is SIGKILLed ``--kills`` times, alternately at a random moment of training and as
  soon as a checkpoint temp file appears (inside ``atomic_save``), and resumed each time. A kill
  point is *survived* when the checkpoint on disk then loads weights-only with a contiguous history
  and, at the end, the resumed run's weights equal those of an uninterrupted run bit for bit and
  the logs list every epoch once.
* Bad inputs: runs ``tests/reliability/test_bad_input.py`` and counts its cases.
* Malicious checkpoints: pickles whose unpickling would create a file, in 4 disguises, fed to 6
  entry points; refused = a clean error (exception / exit 2) and no file created.
* Peak memory: maximum resident set size of one ``visattn train`` process (mnist_cnn, full
  Fashion-MNIST from the Debian package folder, ``--steps`` steps of batch 128).
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import datetime
import io
import json
import os
import pickle
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "tests" / "assets" / "fashion_mnist_small.npz"
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def _train_cmd(out: Path, epochs: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "visattn",
        "train",
        "--model",
        "mnist_cnn",
        "--data",
        "npz",
        "--data-dir",
        str(ASSET),
        "--epochs",
        str(epochs),
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--seed",
        "7",
        "--out",
        str(out),
        "--resume",
        "--set",
        "limit_train=192",
        "--set",
        "augment=none",
        "--set",
        "deterministic=true",
        "--set",
        "progress=false",
        "--set",
        "test_at_end=false",
    ]


def _tmp_files(run: Path) -> list[str]:
    try:
        return [n for n in os.listdir(run) if n.endswith(".tmp") and ".pt." in n]
    except FileNotFoundError:
        return []


def _consistent(run: Path) -> tuple[bool, int]:
    from visattn.train import safe_load

    last = run / "last.pt"
    if not last.is_file():
        return True, 0
    try:
        ck = safe_load(last)
    except ValueError:
        return False, -1
    epoch = ck["epoch"]
    ok = [h["epoch"] for h in ck["history"]] == list(range(1, epoch + 1))
    logged = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    ok &= logged in (list(range(1, epoch + 1)), list(range(1, epoch)))
    return ok, epoch


def kill_points(kills: int, seed: int, work: Path) -> dict:
    from visattn.train import safe_load

    rng = random.Random(seed)
    epochs = kills + 3
    run, ref = work / "killed", work / "ref"
    subprocess.run(_train_cmd(ref, epochs), env=ENV, check=True, capture_output=True, timeout=600)
    tried = survived = in_write = 0
    last_epoch = 0
    for i in range(kills):
        since = time.time_ns() - 10_000_000
        proc = subprocess.Popen(
            _train_cmd(run, epochs), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        started = False
        end = time.monotonic() + 120
        while time.monotonic() < end and proc.poll() is None:
            try:
                if (run / "config.yaml").stat().st_mtime_ns >= since:
                    started = True
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.002)
        if not started:
            proc.communicate()
            break
        if i % 2 == 0:
            time.sleep(rng.uniform(0.0, 0.8))
        else:
            end = time.monotonic() + 30
            while time.monotonic() < end and proc.poll() is None and not _tmp_files(run):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        if proc.returncode != -signal.SIGKILL:
            break  # finished first
        tried += 1
        in_write += bool(_tmp_files(run))
        ok, epoch = _consistent(run)
        survived += ok and epoch >= last_epoch
        last_epoch = max(last_epoch, epoch)
    res = subprocess.run(_train_cmd(run, epochs), env=ENV, capture_output=True, timeout=600)
    a, b = safe_load(run / "last.pt"), safe_load(ref / "last.pt")
    same = res.returncode == 0 and all(torch.equal(a["model"][k], v) for k, v in b["model"].items())
    logged = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    final_ok = same and logged == list(range(1, epochs + 1)) and not _tmp_files(run)
    return {
        "kills_tried": tried,
        "kills_inside_checkpoint_write": in_write,
        "kill_points_survived": survived if final_ok else 0,
        "final_weights_bitwise_equal": same,
        "logs_every_epoch_once": logged == list(range(1, epochs + 1)),
        "epochs": epochs,
    }


def bad_inputs() -> dict:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests/reliability/test_bad_input.py"),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    tail = res.stdout.strip().splitlines()[-1]
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
    failures = [ln.split("::", 1)[1] for ln in res.stdout.splitlines() if ln.startswith("FAILED")]
    return {"bad_input_cases_tried": passed + failed, "rejected_cleanly": passed, "not_rejected": failures}


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def malicious(work: Path) -> dict:
    from visattn import create_model
    from visattn.cli import main
    from visattn.train import load_weights, safe_load

    marker = work / "pwned.txt"
    forms = {
        "torch_zip": lambda p: torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload(str(marker))}, p),
        "torch_zip_bare": lambda p: torch.save(_Payload(str(marker)), p),
        "legacy_pickle": lambda p: p.write_bytes(
            pickle.dumps({"state_dict": _Payload(str(marker))}, protocol=2)
        ),
    }
    tried = refused = 0
    details = []
    common = ["--model", "mnist_cnn", "--data", "npz", "--data-dir", str(ASSET)]
    train = ["train", *common, "--epochs", "1", "--batch-size", "16"]
    train += ["--set", "progress=false", "--set", "limit_train=64", "--set", "test_at_end=false"]
    for form, write in forms.items():
        for suffix in (".pt", ".safetensors"):
            if suffix == ".safetensors" and form != "torch_zip":
                continue
            path = work / f"evil_{form}{suffix}"
            write(path)
            run = work / f"run_{form}"
            run.mkdir(exist_ok=True)
            shutil.copy(path, run / "last.pt")
            entries = {
                "safe_load": lambda path=path: safe_load(path),
                "load_weights": lambda path=path: load_weights(create_model("mnist_cnn"), path),
                "cli eval": lambda path=path: main(["eval", "--weights", str(path), *common]),
                "cli train --weights": lambda path=path: main(
                    [*train, "--out", str(work / "t"), "--weights", str(path)]
                ),
                "cli train --resume": lambda run=run: main([*train, "--out", str(run), "--resume"]),
                "cli export": lambda path=path: main(
                    ["export", "--weights", str(path), "--out", str(work / "o.safetensors")]
                ),
            }
            for name, call in entries.items():
                tried += 1
                err = io.StringIO()
                try:
                    with contextlib.redirect_stderr(err):
                        rc = call()
                    named = "last.pt" if name.endswith("--resume") else path.name
                    clean = rc == 2 and named in err.getvalue()  # refused for the right reason
                except (ValueError, TypeError) as e:
                    clean = path.name in str(e)
                except Exception as e:  # noqa: BLE001  (anything else is not a clean refusal)
                    clean = False
                    details.append(f"{form}{suffix} {name}: {type(e).__name__}")
                created = marker.exists()
                if created:
                    marker.unlink()
                    details.append(f"{form}{suffix} {name}: PAYLOAD RAN")
                refused += clean and not created
    return {"malicious_loads_tried": tried, "refused": refused, "problems": details}


def peak_memory(steps: int, work: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "visattn",
        "train",
        "--model",
        "mnist_cnn",
        "--data",
        "fashion_mnist",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--out",
        str(work / "mem"),
        "--set",
        f"max_steps_per_epoch={steps}",
        "--set",
        "progress=false",
    ]
    probe = [sys.executable, "-c", "import visattn.cli, visattn.train, visattn.data"]
    subprocess.run(probe, env=ENV, check=True, timeout=300)
    import_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        return {"peak_rss_mb": None, "error": res.stderr[-500:]}
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far: this one
    return {
        "peak_rss_mb": round(rss_kb / 1024, 1),
        "import_only_rss_mb": round(import_kb / 1024, 1),
        "steps": steps,
        "batch": 128,
        "wall_s": round(wall, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200, help="training steps of the peak-memory run")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    results: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": "2-core CPU, no GPU",
    }
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        results["memory"] = peak_memory(args.steps, work)  # first: ru_maxrss is a max over children
        print(json.dumps({"memory": results["memory"]}), flush=True)
        results["malicious"] = malicious(work)
        print(json.dumps({"malicious": results["malicious"]}), flush=True)
        results["bad_input"] = bad_inputs()
        print(json.dumps({"bad_input": results["bad_input"]}), flush=True)
        results["kills"] = kill_points(args.kills, args.seed, work)
        print(json.dumps({"kills": results["kills"]}), flush=True)
    if args.out:
        write_result(args.out, results)


if __name__ == "__main__":
    main()
