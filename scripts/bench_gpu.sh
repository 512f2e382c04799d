#!/usr/bin/env bash
# The GPU benchmark, prepared as ONE command that finishes in under 10 minutes on one GPU
# (H200 class) and prints the ratio tables last:
#   bash scripts/bench_gpu.sh                 # on the GPU machine
#   bash scripts/bench_gpu.sh --dry-run       # anywhere (CPU): every case, tiny shape, 4 steps
# The GPU image lacks trl and datasets (../shared/STACK.md): their wheels travel in
# wheels/gpu/ (scripts/fetch_gpu_wheels.sh fills it) and install with --no-deps.
# Two sittings: fixed 2048-token rows (the STACK.md anchor's shape: every tool sees the same
# tokens, no padding) for full and LoRA against the HF Trainer + peft and trl, then the alpaca
# SFT rows, where length grouping and packing matter. Results land in ${OUT:-/tmp}/bench-gpu/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-/tmp}/bench-gpu"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! python -c "import trl, datasets" 2>/dev/null; then
  python -m pip install -q --no-deps --no-index wheels/gpu/*.whl
fi
python - <<'PY'
import torch, transformers, peft, trl, accelerate
print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
      f"trl {trl.__version__}, accelerate {accelerate.__version__}, cuda {torch.cuda.is_available()}")
PY
if [ "${1:-}" = "--dry-run" ]; then
  MODE=(--mode dry-run --threads 1)
  FIXED=(--cases hf-lora,llmtune-lora,trl-lora)
  SFT=(--cases hf-lora-gbl,llmtune-lora-packed,trl-lora-packed)
else
  MODE=(--mode gpu --repeats 1)
  # 10 cases x (start-up + 40 steps) on 2048-token rows, then 3 on alpaca rows.
  FIXED=(--data c4 --cases hf-full,llmtune-full,hf-lora,llmtune-lora,trl-full,trl-lora,trl-full-packed-gc,llmtune-full-packed-gc,trl-lora-packed-gc,llmtune-lora-packed-gc)
  SFT=(--max-length 1024 --cases hf-lora-gbl,llmtune-lora-packed,trl-lora-packed)
fi
start=$(date +%s)
python scripts/bench_sft.py "${MODE[@]}" "${FIXED[@]}" --out "$OUT_DIR/fixed" > "$OUT_DIR/fixed.log" 2> "$OUT_DIR/fixed.err" || true
python scripts/bench_sft.py "${MODE[@]}" "${SFT[@]}" --out "$OUT_DIR/sft" > "$OUT_DIR/sft.log" 2> "$OUT_DIR/sft.err" || true
echo "total $(( $(date +%s) - start )) s"
tail -n 3 "$OUT_DIR/fixed.err" "$OUT_DIR/sft.err"
echo; echo "== fixed 2048-token rows"; cat "$OUT_DIR/fixed.log"
echo; echo "== alpaca SFT rows"; cat "$OUT_DIR/sft.log"
