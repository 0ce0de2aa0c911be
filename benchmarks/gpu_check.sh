#!/usr/bin/env bash
# GPU check, under 10 minutes on one GPU:
#   1. the tests marked `cuda` (tests/test_cuda.py: the real mamba_ssm kernels when installed, the MoE grouped
#      matmul in bf16, a split model stepping with NCCL collectives, a short bf16 training run);
#   2. a 200-step bf16 training run of benchmarks/gpu_check.yaml (Zamba2-style, 20M parameters), reporting
#      the final loss, tokens/s and MFU.
#
#   benchmarks/gpu_check.sh [OUT]            on a machine with a GPU (OUT: default gpu_check_out)
#   DRY_RUN=1 benchmarks/gpu_check.sh [OUT]  the same steps on the CPU with a tiny model and 3 steps (the cuda
#                                            tests are collected and skipped): checks the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check_out}
mkdir -p "$OUT"

if [ "${DRY_RUN:-0}" = "1" ]; then
  RUN=(--train.device cpu --train.dtype fp32 --train.steps 3 --data.seq_len 32 --train.batch_size 4
       --model.preset zamba2-tiny)
else
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device; use DRY_RUN=1 to check the script on a CPU')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  RUN=()
fi

echo "== 1. cuda tests"
python -m pytest -q -m cuda tests/test_cuda.py -rs -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.txt"

echo "== 2. bf16 training run"
hybridlm train benchmarks/gpu_check.yaml -o "$OUT/run" --json "${RUN[@]}" > "$OUT/summary.json"
python - "$OUT/summary.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
tps = "n/a" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:,.0f}"
print(f"steps {r['steps']}, tokens {r['tokens']:,}, final loss {r['final_loss']:.4f}, tokens/s {tps}, MFU {mfu}")
PY
