#!/usr/bin/env bash
# Creates a throwaway venv with CPU JAX and PyTorch (torch.func; the PyPI wheel, which also runs on
# the CPU), plus onnx/onnxscript/torchvision for the side-by-side peer benchmarks (benches/peers/*.py).
# Usage: bash benches/peers/setup-venv.sh   (prints the python to use)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="${PEERS_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
"$venv/bin/python" -c 'import jax' 2>/dev/null || "$venv/bin/pip" install -q "jax[cpu]" numpy >&2
"$venv/bin/python" -c 'import torch, safetensors' 2>/dev/null || "$venv/bin/pip" install -q torch safetensors >&2
# ONNX export (dynamo exporter: onnx + onnxscript) and torchvision's ResNets for the ONNX fixtures and
# benchmark (onnx_fixtures.py, torch_onnx_gram.py); torch pinned to the installed one so that pip
# does not swap it for whatever the newest torchvision asks for.
if ! "$venv/bin/python" -c 'import onnx, onnxscript, torchvision' 2>/dev/null; then
  tv=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
  "$venv/bin/pip" install -q onnx onnxscript torchvision "torch==$tv" >&2
fi
echo "$venv/bin/python"
