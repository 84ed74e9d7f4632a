#!/usr/bin/env bash
# The CUDA paths that the project's CPU machines and CI cannot run, checked in one go on every GPU of the machine
# (about 8 minutes on one H100-class GPU, a little more with several):
#   1. the default `python train.py` for 300 steps on one GPU, precision auto (bf16-mixed, or 16-mixed without bf16)
#   2. the same in 16-mixed: fp16 autocast, a GradScaler and gradient clipping with fused AdamW
#   3. experiment=gpt2_gpu (GPT-2 small, bf16, torch.compile) for 50 steps; eval.py and generate.py on it
#   4. DDP on all N GPUs (NCCL): the final full-split validation on N ranks against eval.py's on one
#   5. the time budget on N ranks: rank 0's plan broadcast, every rank stopping at the same step
#   6. FSDP on all N GPUs with full checkpoints, then with sharded ones: eval.py and a resume=true on those
# Each run prints its summary (steps, precision, tokens/s, MFU against the datasheet peak, or the bf16 matmul peak
# measured first when gptlab has none for the GPU).
#   bash scripts/gpu_check.sh [OUT_DIR]      (default outputs/gpu_check/<time>, a new one per run; logs in OUT_DIR/*.log)
# Data: GPTLAB_DATA_DIR when set, else ../shared/data when it is there, else downloaded as the README says.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "gpu_check: $OUT is not empty: give a new OUT_DIR (runs never write into an earlier run's folders)" >&2
  exit 2
fi
mkdir -p "$OUT"
if [ -z "${GPTLAB_DATA_DIR:-}" ] && [ -d ../shared/data/wikitext-2 ]; then
  export GPTLAB_DATA_DIR=$PWD/../shared/data
  export TIKTOKEN_CACHE_DIR=${TIKTOKEN_CACHE_DIR:-$PWD/../shared/data/tiktoken-cache}
fi
export WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
read -r N PEAK < <("$PY" - <<'PY'
import time, torch
from gptlab.training.flops import peak_flops
assert torch.cuda.is_available(), "no CUDA GPU"
bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
print(f"# torch {torch.__version__}, {torch.cuda.device_count()} × {torch.cuda.get_device_name()}, bf16 {bf16}",
      flush=True, file=__import__("sys").stderr)
dtype = torch.bfloat16 if bf16 else torch.float16
a, b = (torch.randn(8192, 8192, device="cuda", dtype=dtype) for _ in range(2))
for _ in range(3):
    a @ b
torch.cuda.synchronize(); t = time.perf_counter(); n = 20
for _ in range(n):
    a @ b
torch.cuda.synchronize()
measured = 2 * 8192**3 * n / (time.perf_counter() - t)
sheet, source = peak_flops(torch.device("cuda"), "bf16-mixed" if bf16 else "16-mixed")
print(f"# matmul measured {measured:.4g} FLOP/s; {source}: {sheet or 0:.4g}", flush=True,
      file=__import__("sys").stderr)
print(torch.cuda.device_count(), "auto" if sheet else f"{measured:.4g}")
PY
)
[ -n "${N:-}" ] || { echo "gpu_check: no CUDA GPU"; exit 1; }
echo "# $N GPU(s); MFU peak: $PEAK"
failed=0
step() {  # step NAME COMMAND...: run, keep the log, show the summary lines
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$OUT/$name.log" 2>&1; then status=ok; else status="FAILED ($?)"; failed=$((failed + 1)); fi
  echo "== $name: $status in $((SECONDS - t0)) s"
  grep -E "^  (training|val|test|model|MFU peak) |^  (valid|test) +[0-9]|error:|Error" "$OUT/$name.log" | head -12
  [ "$status" = ok ] || tail -25 "$OUT/$name.log"
}
same() {  # same WHAT A B: A and B within 0.5 % (bf16 noise of other batch shapes and reduction orders), else a failure
  if "$PY" -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 5e-3 * abs(b))" "$2" "$3"
  then echo "   $1: $2 vs $3: same"; else echo "   $1: $2 vs $3: DIFFER"; failed=$((failed + 1)); fi
}
ppl() {  # ppl LOG: the validation perplexity in train.py's summary ("val  ppl P ...") or eval.py's table
  awk '$1 == "val" && $2 == "ppl" {print $3; exit} $1 == "valid" && $2 ~ /^[0-9,]+$/ {print $4; exit}' "$1"
}
COMMON=(callbacks.progress_bar=null "callbacks.throughput.peak_flops=$PEAK")
ONE=(trainer.devices=1)
step default "$PY" train.py "hydra.run.dir=$OUT/default" "${ONE[@]}" trainer.max_steps=300 trainer.val_check_interval=100 "${COMMON[@]}"
step fp16 "$PY" train.py "hydra.run.dir=$OUT/fp16" "${ONE[@]}" trainer.precision=16-mixed optimizer=adamw trainer.max_steps=100 \
  trainer.val_check_interval=50 final_limit_batches=20 "${COMMON[@]}"
step gpt2_compile "$PY" train.py "hydra.run.dir=$OUT/gpt2" "${ONE[@]}" experiment=gpt2_gpu trainer.max_steps=50 \
  trainer.val_check_interval=25 trainer.limit_val_batches=5 final_limit_batches=20 "${COMMON[@]}"
CKPT=$(ls -d "$OUT"/gpt2/checkpoints/step*.ckpt 2>/dev/null | head -1)
step eval "$PY" eval.py "ckpt_path=$CKPT" limit_windows=100 "hydra.run.dir=$OUT/eval"
step generate "$PY" generate.py "ckpt_path=$CKPT" prompt="The history of" max_new_tokens=40 "hydra.run.dir=$OUT/generate"
tail -2 "$OUT/generate.log"

# Several GPUs: DDP's final validation scores every window once on N ranks, as eval.py does on one
step ddp "$PY" train.py "hydra.run.dir=$OUT/ddp" trainer.devices="$N" trainer.max_steps=200 trainer.val_check_interval=100 \
  "${COMMON[@]}"
BEST=$(ls -d "$OUT"/ddp/checkpoints/step*.ckpt 2>/dev/null | head -1)  # the one the final validation scored
step ddp_eval "$PY" eval.py "ckpt_path=$BEST" split=valid "hydra.run.dir=$OUT/ddp_eval"
same "val ppl, $N ranks vs 1 (eval.py)" "$(ppl "$OUT/ddp.log")" "$(ppl "$OUT/ddp_eval.log")"
step budget "$PY" train.py "hydra.run.dir=$OUT/budget" trainer.devices="$N" trainer.max_steps=100000 \
  trainer.max_time=00:00:01:30 run_time=null "${COMMON[@]}"
"$PY" - "$OUT/budget" <<'PY' || failed=$((failed + 1))
import sys, torch
ckpt = torch.load(f"{sys.argv[1]}/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
budget = ckpt["callbacks"].get("TimeBudget", {})
print(f"   budget: ended at step {ckpt['global_step']}, planned {budget.get('total_steps')}")
sys.exit(ckpt["global_step"] != budget.get("total_steps"))
PY

# FSDP on every GPU: full checkpoints, then sharded ones, which eval.py reads and resume=true continues
FSDP=(trainer=fsdp optimizer=adamw trainer.devices="$N" model=gpt_mini trainer.val_check_interval=20 final_limit_batches=10)
step fsdp "$PY" train.py "hydra.run.dir=$OUT/fsdp" "${FSDP[@]}" trainer.max_steps=40 "${COMMON[@]}"
tail -4 "$OUT/fsdp/samples.txt" 2>/dev/null
step fsdp_sharded "$PY" train.py "hydra.run.dir=$OUT/fsdp_sharded" "${FSDP[@]}" trainer.max_steps=40 \
  trainer.strategy.state_dict_type=sharded "${COMMON[@]}"
same "FSDP val ppl, sharded vs full checkpoints" "$(ppl "$OUT/fsdp_sharded.log")" "$(ppl "$OUT/fsdp.log")"
step fsdp_sharded_eval "$PY" eval.py "ckpt_path=$OUT/fsdp_sharded/checkpoints/last.ckpt" limit_windows=100 \
  "hydra.run.dir=$OUT/fsdp_sharded_eval"
step fsdp_sharded_resume "$PY" train.py "hydra.run.dir=$OUT/fsdp_sharded" "${FSDP[@]}" trainer.max_steps=60 \
  trainer.strategy.state_dict_type=sharded resume=true "${COMMON[@]}"
grep -E "Resuming|from step" "$OUT/fsdp_sharded_resume.log" | head -2
echo "gpu_check: $failed failed ($OUT)"
exit $((failed > 0))
