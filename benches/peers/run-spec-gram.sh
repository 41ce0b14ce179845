#!/usr/bin/env bash
# Side-by-side: the Gram of a preset (cnn5 or fc6), of the same net written as a PyTorch-style
# spec (nn.Sequential JSON + state_dict keys: the path a user's own model takes), and of
# torch.func vmap(grad) + G @ G.T on the SAME weights and inputs, f32, 2 threads. Each of ours runs
# in its own process (peak RSS is its own). Also checks that all three Grams agree.
# Usage: bash benches/peers/run-spec-gram.sh [cnn5|fc6] [N] [reps]   (from the repo root; default cnn5 500 3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
net=${1:-cnn5}
n=${2:-500}
reps=${3:-3}
PY=$(bash "$here/setup-venv.sh")
cd "$root"
cargo build --release -p stiff-gradkernel --example preset_vs_spec >/dev/null 2>&1
export RAYON_NUM_THREADS=2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "load before: $(uptime | sed 's/.*load average: //')"
for which in preset spec; do
  target/release/examples/preset_vs_spec --preset "$net" --which "$which" --n "$n" --reps "$reps" --dump "$tmp"
done
"$PY" "$here/torch_spec_gram.py" "$tmp" --reps "$reps" --threads 2
echo "load after: $(uptime | sed 's/.*load average: //')"
