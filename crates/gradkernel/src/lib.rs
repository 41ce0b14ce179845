//! Exact per-example gradient Gram matrices (factorised, bounded memory), CPU and CUDA
