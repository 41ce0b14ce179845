#!/usr/bin/env bash
# Side-by-side for issue 22: our exact per-example gradient Gram of an ONNX graph
# (`onnx_gram --onnx model.onnx`, f32) against torch.func vmap(grad) + G @ G.T on the same weights
# and inputs, 2 threads each, each in its own process (peak RSS is its own); then the agreement of
# the two Grams (and, for N <= 32, of ours with a float64 torch.func reference) in cosine units.
# Usage: bash benches/peers/run-onnx-gram.sh resnet18|transformer N [reps]   (from the repo root;
#        default reps 2). The model folder is $ONNX_GRAM_DIR if set (kept), else a temporary one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
model=${1:?usage: run-onnx-gram.sh resnet18|transformer N [reps]}
n=${2:?usage: run-onnx-gram.sh resnet18|transformer N [reps]}
reps=${3:-2}
PY=$(bash "$here/setup-venv.sh")
cd "$root"
cargo build --release --locked -p stiff-onnx --example onnx_gram >/dev/null
if [ -n "${ONNX_GRAM_DIR:-}" ]; then
  dir=$ONNX_GRAM_DIR
  mkdir -p "$dir"
else
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
fi
export RAYON_NUM_THREADS=2
echo "load before: $(uptime | sed 's/.*load average: //')"
"$PY" "$here/torch_onnx_gram.py" export --model "$model" --n "$n" --out "$dir" 2>&1 | { grep -v '^\[torch.onnx\]' || true; }
target/release/examples/onnx_gram --onnx "$dir/model.onnx" --inputs "$dir/inputs.safetensors" \
  --reps "$reps" --dump "$dir"
"$PY" "$here/torch_onnx_gram.py" time "$dir" --reps "$reps" --threads 2
if [ "$n" -le 32 ]; then
  "$PY" "$here/torch_onnx_gram.py" reference "$dir" --threads 2
fi
"$PY" "$here/torch_onnx_gram.py" compare "$dir"
echo "load after: $(uptime | sed 's/.*load average: //')"
