#!/usr/bin/env bash
# `pip install visattn` works without the repository: build the wheel, install it with its dependencies
# into a fresh virtual environment (no --system-site-packages, nothing from the repository on the path),
# then, from a folder outside the repository, run `visattn list` and one tiny training step.
#
#   bash .ci/wheel_check.sh            # or: make wheel-check
#   PYTHON=python3.11 KEEP=1 bash .ci/wheel_check.sh   # KEEP=1 leaves the temporary folder for a look
#
# The dependencies (torch, torchvision, ...) come from whatever index pip is configured with, like a
# user's `pip install`; the slow part is unpacking torch. Prints the seconds each stage took.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/visattn-wheel.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "wheel-check: keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
start=$SECONDS
stage() { echo "wheel-check: $1 ($((SECONDS - start)) s so far)"; }

# 1. Build the wheel (a copy of the sources, so no build/ or egg-info lands in the repository).
stage "building the wheel"
mkdir "$WORK/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | (cd "$ROOT" && xargs -0 cp --parents -t "$WORK/src" 2>/dev/null || true)
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src" 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; }
WHEEL=$(ls "$WORK"/dist/visattn-*.whl)
"$PYTHON" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
top = sorted({n.split("/")[0] for n in names})
bad = [t for t in top if not (t == "visattn" or t.startswith("visattn-"))]
assert not bad, f"the wheel holds more than the package: {bad}"
assert "visattn/cli.py" in names and "visattn/attention/se.py" in names, "package files missing"
print(f"wheel-check: {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, top level {top}")
EOF

# 2. A fresh virtual environment, and the wheel with its dependencies, as a user would install it.
stage "installing the wheel and its dependencies into a fresh venv"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
# (pip's notes about index folders that lack a package are noise here; errors still fail the script)
"$VPY" -m pip install --quiet "$WHEEL" 2>&1 | { grep -v "is neither a file nor a directory" || true; }

# 3. Outside the repository: the CLI, and one training step on a tiny generated .npz.
stage "running visattn from the installed wheel"
mkdir "$WORK/user" && cd "$WORK/user"
env -u PYTHONPATH "$VPY" - "$ROOT" <<'EOF'
import sys
from pathlib import Path

import visattn

root = Path(sys.argv[1]).resolve()
where = Path(visattn.__file__).resolve()
assert root not in where.parents, f"visattn was imported from the repository: {where}"
print(f"wheel-check: visattn {visattn.__version__} from {where.parent}")
EOF
env -u PYTHONPATH "$WORK/venv/bin/visattn" list > list.txt
grep -q "resnet20" list.txt && grep -q "se" list.txt
echo "wheel-check: visattn list: $(wc -l < list.txt) lines"
env -u PYTHONPATH "$VPY" -c "
import numpy as np
g = np.random.default_rng(0)
np.savez('tiny.npz', x_train=g.integers(0, 256, (32, 28, 28), dtype=np.uint8), y_train=np.arange(32) % 10,
         x_test=g.integers(0, 256, (16, 28, 28), dtype=np.uint8), y_test=np.arange(16) % 10)
"
OMP_NUM_THREADS=1 env -u PYTHONPATH "$WORK/venv/bin/visattn" train --model mnist_cnn --data npz \
    --data-dir tiny.npz --epochs 1 --batch-size 8 --set max_steps_per_epoch=1 --set progress=false \
    --set val_fraction=0.25 --out run
env -u PYTHONPATH "$VPY" -c "
import json
s = json.load(open('run/summary.json'))
assert 'test_top1' in s, s
print('wheel-check: one training step ran; test_top1', s['test_top1'])
"
stage "done"
