#!/usr/bin/env bash
# Side-by-side: cnn5 per-example-gradient Gram at N = 500 (CIFAR-shaped inputs, half of every
# image flat so max-pool windows tie), f32, 2 threads: our conv CPU kernel, the general engine (tapped layers, autograd deltas)
# (crates/gradkernel/examples/conv_bench.rs, release) and JAX jit(vmap(grad)) then G @ G.T on the
# SAME weights and inputs (conv_bench --dump -> jax_conv_gram.py, which also checks that the two
# Grams agree). Also prints the measured gemm throughput (gemm_peak) and the machine load.
# Usage: bash benches/peers/run-conv-gram.sh [N] [reps]   (from the repo root; default 500 3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${1:-500}
reps=${2:-3}
PY=$(bash "$here/setup-venv.sh")
cd "$root"
cargo build --release -p stiff-gradkernel --example conv_bench >/dev/null 2>&1
cargo build --release -p stiff-gemm --example gemm_peak >/dev/null 2>&1
export RAYON_NUM_THREADS=2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "load before: $(uptime | sed 's/.*load average: //')"
target/release/examples/gemm_peak square 2048 5 | sed 's/^/  /'
fast=$(target/release/examples/conv_bench --n "$n" --reps "$reps" --route fast --dump "$tmp/in.safetensors")
printf '%s\n' "$fast" | sed 's/^/  /'
old=$(target/release/examples/conv_bench --n "$n" --reps 1 --route old)
jax=$("$PY" "$here/jax_conv_gram.py" --inputs "$tmp/in.safetensors" --reps "$reps")
field() { printf '%s\n' "$1" | grep '^conv_bench' | sed -E "s/.*$2=([0-9.]+).*/\1/"; }
f=$(field "$fast" best_s)
o=$(field "$old" best_s)
j=$(printf '%s\n' "$jax" | awk '/^jax vmap/ {print $3}')
printf '%s\n' "$jax" | grep agreement | sed 's/^/  jax vs ours: /'
fc=$(field "$fast" best_rep_cpu_s)
oc=$(field "$old" best_rep_cpu_s)
jc=$(printf '%s\n' "$jax" | awk '/^jax vmap_cpu_s/ {print $3}')
# CPU seconds (all threads, user + system) of the fastest rep: less sensitive to other load.
printf '%-34s %10s %10s %8s %10s %12s\n' implementation seconds "vs ours" "CPU s" "CPU vs" "peak RSS MiB"
awk -v f="$f" -v c="$fc" -v r="$(field "$fast" peak_rss_mib)" -v reps="$reps" \
  'BEGIN{printf "%-34s %10.3f %10s %8.2f %10s %12s\n", "stiff conv CPU kernel (best of " reps ")", f, "1", c, "1", r}'
awk -v o="$o" -v f="$f" -v c="$oc" -v fc="$fc" -v r="$(field "$old" peak_rss_mib)" \
  'BEGIN{printf "%-34s %10.3f %9.2fx %8.2f %9.2fx %12s\n", "stiff general engine (1 run)", o, o/f, c, c/fc, r}'
awk -v j="$j" -v f="$f" -v c="$jc" -v fc="$fc" \
  'BEGIN{printf "%-34s %10.3f %9.2fx %8.2f %9.2fx %12s\n", "jax jit(vmap(grad)) + G@G.T", j, j/f, c, c/fc, "-"}'
echo "load after: $(uptime | sed 's/.*load average: //')"
