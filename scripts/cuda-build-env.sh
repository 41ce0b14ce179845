#!/usr/bin/env bash
# Source me (bash) to build with `--features cuda` where no CUDA toolkit is installed.
#
#   source scripts/cuda-build-env.sh && cargo build --release --features cuda -p stiff-cli
#   (or simply: cargo xtask build-cuda)
#
# What it does: puts nvcc and the CUDA 13.0 runtime/cuBLAS/cuRAND/NVRTC from PyPI wheels into a
# venv under the user cache, builds a tiny libcuda link stub (the real libcuda ships with the
# NVIDIA driver and is found at run time), and exports what candle's build scripts read.
# The component versions must agree with each other (ptxas 13.0 rejects PTX from a newer nvvm).
# CUDA_COMPUTE_CAP defaults to 90 (Hopper, e.g. H100/H200); override it for other GPUs.
# The build goes to target/cuda so the CPU build is left alone.
#
# On the GPU machine, let the loader find the same libraries:
#   export LD_LIBRARY_PATH="$(ls -d "$STIFF_CUDA_VENV"/lib/python3*/site-packages/nvidia/cu13/lib):$LD_LIBRARY_PATH"

STIFF_CUDA_VENV=${STIFF_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stiffness/cuda-13.0}
export STIFF_CUDA_VENV
if [ ! -x "$STIFF_CUDA_VENV/bin/pip" ]; then
  python3 -m venv "$STIFF_CUDA_VENV" || return 1
fi
if ! ls "$STIFF_CUDA_VENV"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1; then
  echo "installing the CUDA 13.0 compiler and libraries from PyPI into $STIFF_CUDA_VENV ..." >&2
  "$STIFF_CUDA_VENV/bin/pip" install -q \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 || return 1
fi
_stiff_cu=$(ls -d "$STIFF_CUDA_VENV"/lib/python3*/site-packages/nvidia/cu13 | head -n 1)
_stiff_stub="$STIFF_CUDA_VENV/link-stubs"
if [ ! -f "$_stiff_stub/libcuda.so" ] || [ ! -e "$_stiff_stub/libcudart.so" ]; then
  mkdir -p "$_stiff_stub"
  # The wheels ship versioned sonames only; the linker looks for the bare names
  # (cudart is linked by candle-kernels' mixture-of-experts kernels).
  for lib in cublas cublasLt nvrtc cudart; do ln -sf "$_stiff_cu/lib/lib$lib.so.13" "$_stiff_stub/lib$lib.so"; done
  ln -sf "$_stiff_cu/lib/libcurand.so.10" "$_stiff_stub/libcurand.so"
  printf 'void cuInit(void) {}\n' > "$_stiff_stub/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$_stiff_stub/libcuda.so" "$_stiff_stub/stub.c" || return 1
fi
export PATH="$_stiff_cu/bin:$PATH"
export CUDA_ROOT="$_stiff_cu" CUDA_PATH="$_stiff_cu" CUDA_HOME="$_stiff_cu"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH="$_stiff_cu/lib:$_stiff_stub${LIBRARY_PATH:+:$LIBRARY_PATH}"
# The stub defines almost nothing: driver symbols are bound at run time by the real libcuda.
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C link-arg=-Wl,--unresolved-symbols=ignore-all"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
echo "CUDA build environment: $("$_stiff_cu/bin/nvcc" --version | tail -n 1); compute cap $CUDA_COMPUTE_CAP; target dir $CARGO_TARGET_DIR" >&2
