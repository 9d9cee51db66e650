#!/usr/bin/env bash
# One prepared GPU benchmark run for microCLIP (about 4-6 minutes on an H100/H200, capped at 8).
#
#   bash bench/gpu.sh            # results in $OUT if set, else ./bench-out
#
# 1. nvidia-smi, versions; installs requirements.txt only if torch/open_clip do not import.
# 2. bench/speed.py --device cuda: explain vs encode_image (batch 1, 32) and train step vs its
#    passes (batch 64, K=8), fp32 and bf16 (autocast), with peak memory  -> speed.json
# 3. one epoch of 64 steps at batch 64 (random images, ViT-B-32 random weights, K=8, microclip
#    mode), fp32 (the reference's setting), then bf16 autocast, next to the reference's
#    72 s / 5.35 GB Flowers epoch                                       -> speed.json (epoch_*)
# 4. if time is left: explain with bf16 weights (.to(bfloat16)) instead of autocast.
# 5. NCut with the eigensolver on CUDA: the canonical mask equals the CPU's (tests/test_soap.py) and
#    how often the reference's literal rule differs between CPU and CUDA (bench/ncut.py) -> ncut.json
# 6. the toy world on CUDA: the shipped adapted checkpoint evaluated there (the CPU record's accuracies,
#    checkpoints/toybirds-microclip.json, within 0.3 points?), then the shipped adaptation itself
#    (train.py --train_config toybirds, seed 0, fp32) timed, next to the CPU's train_seconds -> toy_cuda.json
# Every step runs under `timeout`, so the whole script stays within BUDGET_S seconds.
#
# Smoke test without a GPU (tiny sizes):
#   DEVICE=cpu SPEED_ARGS="--explain-batches 1 --repeats 1 --batch 2 --crops 2" \
#     EPOCH_ARGS="--steps 2 --batch 2 --crops 2" TOY_ARGS="--max_steps 2" bash bench/gpu.sh
set -euo pipefail

BUDGET_S=${BUDGET_S:-480}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}  # the GPU images name their interpreter python3
# shellcheck disable=SC2206  # word splitting of the override strings is wanted
SPEED_ARGS=(${SPEED_ARGS:-})
# shellcheck disable=SC2206
EPOCH_ARGS=(${EPOCH_ARGS:---steps 64 --batch 64 --crops 8})
# shellcheck disable=SC2206
TOY_ARGS=(${TOY_ARGS:-})

cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-./bench-out}
mkdir -p "$OUT_DIR"
JSON="$OUT_DIR/speed.json"
LOG="$OUT_DIR/gpu.log"
rm -f "$JSON" "$OUT_DIR/speed_explain_cast.json" "$OUT_DIR/toy_cuda.json"
TOY_RUN=$(mktemp -d)
exec > >(tee -a "$LOG") 2>&1

left() { echo $(( BUDGET_S - SECONDS )); }

# run LIMIT_S CMD...: CMD under timeout min(LIMIT_S, time left - 5 s); skipped when < 20 s are left.
run() {
    local limit=$1
    shift
    local budget=$(( $(left) - 5 ))
    if (( budget < 20 )); then
        echo "## skipped (only $(left) s left): $*"
        return 0
    fi
    if (( limit > budget )); then
        limit=$budget
    fi
    echo "## [$SECONDS s] $* (limit ${limit} s)"
    local status=0
    timeout --signal=INT --kill-after=10 "$limit" "$@" || status=$?
    if (( status != 0 )); then
        echo "## exit $status (124: timed out): $*"
    fi
}

echo "## nvidia-smi"
nvidia-smi || echo "(nvidia-smi failed)"
"$PY" --version

if ! "$PY" -c "import torch, open_clip, safetensors, numpy" 2>/dev/null; then
    echo "## installing requirements.txt"
    "$PY" -m pip install -q -r requirements.txt
fi
"$PY" -c "
import torch, open_clip
print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), open_clip {open_clip.__version__}, '
      f'cuda available: {torch.cuda.is_available()}')
if torch.cuda.is_available():
    print(f'GPU: {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}')
"

# 5 first (cheap, and the one check only a GPU can make): NCut's mask on CUDA vs CPU
run 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_soap.py -k cuda
run 90 "$PY" bench/ncut.py --json "$OUT_DIR/ncut.json"

# 6. the toy world: the shipped checkpoint, then its adaptation, on the device
run 90 "$PY" evaluate.py --dataset toybirds --ckpt-path checkpoints/toybirds-microclip.safetensors \
    --device "$DEVICE" --data_root data --output_dir "$TOY_RUN/eval"
run 240 "$PY" train.py --dataset toybirds --train_config toybirds --device "$DEVICE" --data_root data \
    --output_dir "$TOY_RUN/train" --no_progress "${TOY_ARGS[@]}"
"$PY" - "$TOY_RUN" "$OUT_DIR/toy_cuda.json" "$DEVICE" <<'PY' || echo "(toy-world summary failed)"
import json, sys
from pathlib import Path
run, out, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
record = json.loads(Path("checkpoints/toybirds-microclip.json").read_text())["metrics"]
found = {"device": device, "cpu_record": {k: record[k] for k in ("acc_fused", "acc_cls", "acc_fg", "train_seconds")}}
for name in ("eval", "train"):
    files = sorted((run / name).rglob("*.json"))
    found[name] = {str(f.relative_to(run)): json.loads(f.read_text()) for f in files}
out.write_text(json.dumps(found, indent=1))
def row(metrics: dict) -> str:
    return " / ".join(f"{metrics[k]:.2f}" for k in ("acc_fused", "acc_cls", "acc_fg"))
print(f"## toy world, fused / CLS / FG: CPU record {row(record)} (adapted in {record['train_seconds']:.0f} s)")
for name in ("eval", "train"):
    metrics = found[name].get(f"{name}/metrics.json")
    if metrics:
        took = f" (adapted in {metrics['train_seconds']:.0f} s, {metrics['steps']} steps)" if name == "train" else ""
        print(f"## toy world on {device}, {name}: {row(metrics)}{took}")
PY

# 2. ratios, fp32 and bf16 (autocast on both sides)
run 150 "$PY" bench/speed.py --device "$DEVICE" "${SPEED_ARGS[@]}" --json "$JSON"

# 3. the epoch: fp32 (the reference's precision) first, bf16 autocast second
run 90 "$PY" bench/speed.py --device "$DEVICE" --epoch "${EPOCH_ARGS[@]}" --amp none --json "$JSON"
run 60 "$PY" bench/speed.py --device "$DEVICE" --epoch "${EPOCH_ARGS[@]}" --amp bf16 --json "$JSON"

# 4. explain with bf16 weights (.to(bfloat16)) on both sides instead of autocast
run 45 "$PY" bench/speed.py --device "$DEVICE" --only explain --precisions bf16 --bf16-method cast \
    "${SPEED_ARGS[@]}" --json "$OUT_DIR/speed_explain_cast.json"

# summary: both tables, the epochs next to the reference
if [[ -f "$JSON" ]]; then
    "$PY" -c "
import json, sys
data = json.load(open(sys.argv[1]))
print()
print('## summary')
if 'speed' in data:
    print(data['speed']['table'])
print()
print('| epoch (random views, K=8) | time | peak memory |')
print('|---|---|---|')
for key in ('epoch_none', 'epoch_bf16'):
    if key in data:
        r = data[key]
        peak = f\"{r['peak_gb']:.2f} GB\" if 'peak_gb' in r else 'n/a'
        name = 'fp32' if r['amp'] == 'none' else 'bf16 autocast'
        print(f\"| this run, {name}, {r['steps']} steps x {r['batch']} | {r['epoch_s']:.1f} s | {peak} |\")
print('| reference, one Flowers epoch (64 x 64) | 72 s | 5.35 GB |')
" "$JSON"
fi

echo "## done in $SECONDS s; results in $OUT_DIR"
ls -l "$OUT_DIR"
