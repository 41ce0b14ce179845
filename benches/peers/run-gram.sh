#!/usr/bin/env bash
# Side-by-side: fc6 per-example-gradient Gram at N = 500 (MNIST-shaped random inputs):
# our CPU kernel, our device-generic tensor path and the one-backward-per-example reference
# (crates/gradkernel/examples/gram_bench.rs, release) vs JAX vmap(grad)+G@G.T and the factorised
# algorithm in jit-compiled JAX (jax_gram.py). Prints best-of-reps seconds.
# Usage: bash benches/peers/run-gram.sh   (from the repo root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PY=$(bash "$here/setup-venv.sh")
cd "$root"
cargo build --release -p stiff-gradkernel --example gram_bench >/dev/null 2>&1
bench=target/release/examples/gram_bench
best() { "$bench" fc6 500 "$1" "$2" | sed -nE '1s/.*best_s=([0-9.]+).*/\1/p'; }
# The CPU kernel's run also prints its per-phase breakdown (second line), shown after the table.
ours=$("$bench" fc6 500 21 auto)
printf '%-28s %10s\n' implementation seconds
printf '%-28s %10s\n' "stiff cpu kernel" "$(printf '%s\n' "$ours" | sed -nE '1s/.*best_s=([0-9.]+).*/\1/p')"
printf '%-28s %10s\n' "stiff general engine" "$(best 5 tensor)"
printf '%-28s %10s\n' "stiff reference (per-ex)" "$(best 1 reference)"
"$PY" "$here/jax_gram.py" --n 500 --reps 21 | while read -r _ algo secs; do
  printf '%-28s %10s\n' "jax $algo" "$secs"
done
printf '%s\n' "$ours" | sed -n 2p
