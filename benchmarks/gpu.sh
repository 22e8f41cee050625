#!/usr/bin/env bash
# GPU figures in one call, on a machine with torch (CUDA) and no network:
#   bash benchmarks/gpu.sh [--repeat 3] [--out docs]
# spandrel and diffusers come as wheels in ./wheels (or $WHEELS) when the python lacks them, e.g.
#   pip download --no-deps -d wheels spandrel diffusers safetensors huggingface_hub einops
# (on a machine with network, for the target's Python). Writes the "gpu" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if ! "$python" -c "import spandrel, diffusers" 2>/dev/null; then
  "$python" -m pip install --quiet --no-index --find-links "${WHEELS:-wheels}" spandrel diffusers
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m benchmarks.gpu "$@"
