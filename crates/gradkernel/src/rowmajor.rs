//! The one row-major gemm helper of the hand-written CPU kernels (`cpu_fast`, `conv_fast`).

use stiff_gemm::{MatMut, MatRef, Parallelism, Scalar};

/// `dst (m x n, row stride ldd) [+]= lhs (m x k, row stride lda) * op(rhs)`, where `op(rhs)` is
/// `rhs^T` for `rhs: (n x k)` (`rhs_t = true`) or `rhs: (k x n)` itself, row stride `ldb`.
/// Shapes come from the model and the chunking, never from user input, so a mismatch is a bug
/// (hence `expect`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul<T: Scalar>(
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    lda: usize,
    rhs: &[T],
    ldb: usize,
    rhs_t: bool,
    dst: &mut [T],
    ldd: usize,
    accumulate: bool,
    par: Parallelism,
) {
    let rhs = if rhs_t { MatRef::row_major_ld(rhs, n, k, ldb).t() } else { MatRef::row_major_ld(rhs, k, n, ldb) };
    stiff_gemm::matmul(
        MatMut::row_major_ld(dst, m, n, ldd),
        accumulate.then_some(T::ONE),
        MatRef::row_major_ld(lhs, m, k, lda),
        rhs,
        T::ONE,
        par,
    )
    .expect("internal shape invariant of the CPU Gram kernels");
}
