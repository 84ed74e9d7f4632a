#!/usr/bin/env bash
# The CUDA paths that the project's CPU machines and CI cannot run, checked in one go on one GPU (≤ 8 minutes):
#   1. the default `python train.py` for 300 steps with precision auto (bf16-mixed, or 16-mixed on GPUs without bf16)
#   2. the same in 16-mixed: fp16 autocast, a GradScaler and gradient clipping with fused AdamW
#   3. experiment=gpt2_gpu (GPT-2 small, bf16, torch.compile) for 50 steps
#   4. eval.py and generate.py on that checkpoint
#   5. trainer=fsdp trainer.devices=1: FSDP's own gradient clipping and text samples from the sharded model
# Each run prints its summary (steps, precision, tokens/s, MFU against the bf16 matmul peak measured first).
#   bash scripts/gpu_check.sh [OUT_DIR]      (default outputs/gpu_check; logs in OUT_DIR/*.log)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/gpu_check}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
export GPTLAB_DATA_DIR=${GPTLAB_DATA_DIR:-$PWD/../shared/data} TIKTOKEN_CACHE_DIR=${TIKTOKEN_CACHE_DIR:-$PWD/../shared/data/tiktoken-cache}
export WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PEAK=$("$PY" - <<'PY'
import time, torch
assert torch.cuda.is_available(), "no CUDA GPU"
print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}",
      flush=True, file=__import__("sys").stderr)
dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
a, b = (torch.randn(8192, 8192, device="cuda", dtype=dtype) for _ in range(2))
for _ in range(3):
    a @ b
torch.cuda.synchronize(); t = time.perf_counter(); n = 20
for _ in range(n):
    a @ b
torch.cuda.synchronize()
print(f"{2 * 8192**3 * n / (time.perf_counter() - t):.4g}")
PY
)
echo "# measured matmul peak: $PEAK FLOP/s"
failed=0
step() {  # step NAME COMMAND...: run, keep the log, show the summary lines
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$OUT/$name.log" 2>&1; then status=ok; else status="FAILED ($?)"; failed=$((failed + 1)); fi
  echo "== $name: $status in $((SECONDS - t0)) s"
  grep -E "^  (training|val|test|model) |^  (valid|test) +[0-9]|error:|Error" "$OUT/$name.log" | head -12
  [ "$status" = ok ] || tail -25 "$OUT/$name.log"
}
COMMON=(callbacks.progress_bar=null "callbacks.throughput.peak_flops=$PEAK")
step default "$PY" train.py "hydra.run.dir=$OUT/default" trainer.max_steps=300 trainer.val_check_interval=100 "${COMMON[@]}"
step fp16 "$PY" train.py "hydra.run.dir=$OUT/fp16" trainer.precision=16-mixed optimizer=adamw trainer.max_steps=100 \
  trainer.val_check_interval=50 final_limit_batches=20 "${COMMON[@]}"
step gpt2_compile "$PY" train.py "hydra.run.dir=$OUT/gpt2" experiment=gpt2_gpu trainer.max_steps=50 \
  trainer.val_check_interval=25 trainer.limit_val_batches=5 final_limit_batches=20 "${COMMON[@]}"
CKPT=$(ls "$OUT"/gpt2/checkpoints/step*.ckpt 2>/dev/null | head -1)
step eval "$PY" eval.py "ckpt_path=$CKPT" limit_windows=100 "hydra.run.dir=$OUT/eval"
step generate "$PY" generate.py "ckpt_path=$CKPT" prompt="The history of" max_new_tokens=40 "hydra.run.dir=$OUT/generate"
tail -2 "$OUT/generate.log"
step fsdp "$PY" train.py "hydra.run.dir=$OUT/fsdp" trainer=fsdp optimizer=adamw trainer.devices=1 model=gpt_mini trainer.max_steps=40 \
  trainer.val_check_interval=20 final_limit_batches=10 "${COMMON[@]}"
tail -4 "$OUT/fsdp/samples.txt" 2>/dev/null
echo "gpu_check: $failed failed"
exit $((failed > 0))
