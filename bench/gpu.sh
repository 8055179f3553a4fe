#!/usr/bin/env bash
# The GPU check (bench/gpu.py): encode img/s per GPU (ViT-B-32, ViT-B-16, fp16), CPU vs GPU JPEG
# decode, tagging. Needs only what scripts/setup.sh installs; no network. About 5-8 minutes.
#   bench/gpu.sh                       results in $OUT (default ./gpu-out): gpu.json, gpu.log
#   bench/gpu.sh --device cpu --n 16 --unique 16 --decode-n 32 --tag-n 32    dry run on a CPU
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/nvidia-smi.txt"
# faiss-gpu is not installed by setup.sh and there is no network: the FAISS build in use is recorded
"$PY" -c "import faiss; print('faiss', faiss.__version__, 'gpus', getattr(faiss, 'get_num_gpus', lambda: 0)())" \
  > "$OUT/faiss.txt" 2>&1
timeout "${GPU_BENCH_TIMEOUT:-480}" "$PY" bench/gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 124 ] && echo "bench/gpu.py ran past ${GPU_BENCH_TIMEOUT:-480} s; the parts done are in $OUT/gpu.json"
exit "$status"
