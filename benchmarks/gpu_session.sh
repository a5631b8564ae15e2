#!/usr/bin/env bash
# Every GPU check of visattn in one session, for a machine with one CUDA GPU (e.g. a borrowed H100):
#  1. CIFAR-10 accuracy: resnet20 vs se_resnet20, 3 seeds each, run concurrently in the background
#     (bf16 autocast, channels_last; checkpoint chosen on a validation split carved from train;
#     test accuracy read once at the end from the best-validation checkpoint);
#  2. benchmarks/gpu_check.py: every model forward/backward on CUDA in fp32 and bf16, torch.compile
#     against eager, retrofit identity on the GPU; then the NCCL/DDP check under torchrun;
#  3. the engine through the CLI on CUDA: AMP + channels_last + compile + TensorBoard images,
#     torchrun DDP (NCCL) with SyncBatchNorm and a resume, the RAM and dasNet trainers, `visattn eval`.
# Usage: OUT=dir CIFAR=path/to/cifar10.npz [EPOCHS=25] [ACC_EXTRA="--set key=value ..."] bash benchmarks/gpu_session.sh
# Results: $OUT/session.log, gpu_checks.json, ddp_check.json, accuracy.json, runs.tar.gz
set -u
OUT=${OUT:-gpu_out}
CIFAR=${CIFAR:-.gpu_data/cifar10_jpeg.npz}
EPOCHS=${EPOCHS:-25}
ACC_LIMIT=${ACC_LIMIT:-400}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
R=${VISATTN_GPU_OUT:-runs/visattn_gpu}
rm -rf "$R" && mkdir -p "$R/acc"
exec > >(tee -a "$OUT/session.log") 2>&1
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"

# 1. accuracy runs (background)
acc_pids=()
for seed in 0 1 2; do
  for m in resnet20 se_resnet20; do
    OMP_NUM_THREADS=2 timeout "$ACC_LIMIT" $PY -m visattn train --model $m --data cifar10 --data-dir "$CIFAR" --epochs "$EPOCHS" \
      --batch-size 128 --lr 0.1 --seed $seed --out "$R/acc/${m}_s$seed" --set amp=true --set channels_last=true \
      --set num_workers=2 --set progress=false --set warmup_epochs=1 ${ACC_EXTRA:-} > "$R/acc/${m}_s$seed.log" 2>&1 &
    acc_pids+=($!)
  done
done

# 2. checks
t0=$(date +%s)
$PY benchmarks/gpu_check.py --out "$OUT/gpu_checks.json" > "$R/checks.log" 2>&1; echo "gpu_check rc=$? in $(( $(date +%s) - t0 )) s"
$PY -m torch.distributed.run --nproc-per-node 1 --master-addr 127.0.0.1 --master-port 29611 \
  benchmarks/gpu_check.py --ddp --out "$OUT/ddp_check.json" > "$R/ddp_check.log" 2>&1; echo "ddp_check rc=$?"

# 3. the engine through the CLI
S=tests/assets/fashion_mnist_small.npz
C=(--data npz --data-dir $S --batch-size 64 --set progress=false)
run() { local name=$1; shift; t0=$(date +%s); "$@" > "$R/$name.log" 2>&1; echo "$name rc=$? in $(( $(date +%s) - t0 )) s: $(tail -c 400 "$R/$name.log" | tr '\n' ' ')"; }
run amp_cl_compile_tb $PY -m visattn train --model mnist_cnn --model-arg attn_layer=se "${C[@]}" --epochs 2 \
  --out "$R/amp_cl_compile_tb" --set amp=true --set channels_last=true --set compile=true --set tensorboard=true --set tb_images_every=10
run ddp_nccl $PY -m torch.distributed.run --nproc-per-node 1 --master-addr 127.0.0.1 --master-port 29612 -m visattn train \
  --model mnist_cnn "${C[@]}" --epochs 2 --out "$R/ddp_nccl" --set sync_bn=true --set amp=true
run ddp_nccl_resume $PY -m torch.distributed.run --nproc-per-node 1 --master-addr 127.0.0.1 --master-port 29613 -m visattn train \
  --model mnist_cnn "${C[@]}" --epochs 3 --resume --out "$R/ddp_nccl" --set sync_bn=true --set amp=true
run gpu_pytest $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
run ram $PY -m visattn train --model ram "${C[@]}" --epochs 2 --out "$R/ram"
run dasnet $PY -m visattn train --model dasnet --base "$R/ddp_nccl/best.pt" "${C[@]}" --epochs 1 --out "$R/dasnet"
run dasnet_eval $PY -m visattn eval --weights "$R/dasnet/best.pt" --data npz --data-dir $S
run attention56_cifar $PY -m visattn train --model attention56_cifar --data cifar10 --data-dir "$CIFAR" --epochs 1 \
  --out "$R/attention56_cifar" --set max_steps_per_epoch=60 --set amp=true --set channels_last=true \
  --set progress=false --set num_workers=4 --set test_at_end=false

# 4. wait for the accuracy runs (by pid: a bare `wait` would also wait for the `tee` above), collate
wait "${acc_pids[@]}"
$PY - "$R/acc" "$OUT/accuracy.json" <<'PYEOF'
import json, sys, pathlib
root, rows = pathlib.Path(sys.argv[1]), []
for d in sorted(p for p in root.iterdir() if p.is_dir()):
    summ = d / "summary.json"
    hist = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()] if (d / "metrics.jsonl").is_file() else []
    row = {"run": d.name, "epochs_done": len(hist), "finished": summ.is_file()}
    if summ.is_file():
        s = json.loads(summ.read_text())
        row.update({k: s.get(k) for k in ("model", "params", "best_val_top1", "test_top1", "test_top5", "train_time_s")})
    if hist:
        row["last_val_top1"] = hist[-1].get("val_top1")
        row["images_per_s_median"] = sorted(h.get("train_images_per_s", 0) for h in hist)[len(hist) // 2]
    rows.append(row)
json.dump(rows, open(sys.argv[2], "w"), indent=1)
print(json.dumps(rows, indent=1))
PYEOF
tar czf "$OUT/runs.tar.gz" --exclude='*.pt' -C "$R" .
date -u
