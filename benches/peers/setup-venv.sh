#!/usr/bin/env bash
# Creates a throwaway venv with CPU JAX and PyTorch (torch.func; the PyPI wheel, which also runs on
# the CPU) for the side-by-side peer benchmarks (benches/peers/*.py).
# Usage: bash benches/peers/setup-venv.sh   (prints the python to use)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="${PEERS_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
"$venv/bin/python" -c 'import jax' 2>/dev/null || "$venv/bin/pip" install -q "jax[cpu]" numpy >&2
"$venv/bin/python" -c 'import torch, safetensors' 2>/dev/null || "$venv/bin/pip" install -q torch safetensors >&2
echo "$venv/bin/python"
