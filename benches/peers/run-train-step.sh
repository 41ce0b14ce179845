#!/usr/bin/env bash
# Side-by-side: one fc6 training step at batch 32 (SGD and Adam), our fast path and candle
# autograd (criterion, crates/train/benches/step.rs) vs a jit-compiled JAX step
# (jax_train_step.py), with 1 thread (pinned to one core) and 2 threads. Prints a table of
# milliseconds per step. Usage: bash benches/peers/run-train-step.sh   (from the repo root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PY=$(bash "$here/setup-venv.sh")
cd "$root"
cargo bench -p stiff-train --bench step --no-run >/dev/null 2>&1
declare -A ms
for threads in 1 2; do
  if [ "$threads" = 1 ]; then pin="taskset -c 0"; else pin=""; fi
  # criterion's middle estimate, converted to ms.
  out=$(RAYON_NUM_THREADS=$threads $pin cargo bench -p stiff-train --bench step -- --noplot --warm-up-time 1 --measurement-time 3 2>/dev/null)
  while read -r name; do
    line=$(printf '%s\n' "$out" | grep -A2 "^$name" | grep -m1 'time:')
    val=$(printf '%s\n' "$line" | sed -E 's/.*\[[^ ]+ [^ ]+ ([0-9.]+) ([a-zµ]+) .*/\1 \2/')
    num=${val% *}; unit=${val#* }
    case "$unit" in ns) f=0.000001;; µs|us) f=0.001;; ms) f=1;; s) f=1000;; esac
    key=${name#fc6_step/}; key=${key%/threads=*}
    ms["$key/$threads"]=$(awk -v n="$num" -v f="$f" 'BEGIN{printf "%.4f", n*f}')
  done < <(printf '%s\n' "$out" | grep -oE '^fc6_step/[a-z]+/[a-z]+/threads=[0-9]+' | sort -u)
  for opt in sgd adam; do
    ms["jax/$opt/$threads"]=$($pin "$PY" "$here/jax_train_step.py" --opt "$opt" | awk '{print $3}')
  done
done
printf '%-10s %-6s %8s %8s %8s %8s %10s %10s\n' impl opt "1 thr ms" "2 thr ms" "steps/s1" "steps/s2" "vs JAX 1" "vs JAX 2"
for impl in fast autograd jax; do
  for opt in sgd adam; do
    a=${ms["$impl/$opt/1"]:-nan}; b=${ms["$impl/$opt/2"]:-nan}
    ja=${ms["jax/$opt/1"]:-nan}; jb=${ms["jax/$opt/2"]:-nan}
    awk -v i="$impl" -v o="$opt" -v a="$a" -v b="$b" -v ja="$ja" -v jb="$jb" \
      'BEGIN{printf "%-10s %-6s %8.3f %8.3f %8.0f %8.0f %9.2fx %9.2fx\n", i, o, a, b, 1000/a, 1000/b, a/ja, b/jb}'
  done
done
