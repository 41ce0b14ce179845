//! # stiff-gemm
//!
//! `gemm::gemm` is the fastest CPU matrix multiply available to the workspace, but it is an
//! `unsafe fn` over raw pointers and strides. This crate is the one place that calls it: views
//! carry their slice, shape and strides, every element the multiply can touch is bounds-checked
//! with overflow-checked arithmetic, and a bad shape is an error, not undefined behaviour.
//!
//! ```
//! use stiff_gemm::{matmul, MatMut, MatRef, Parallelism};
//! let a = [1.0f32, 2.0, 3.0, 4.0];            // (2, 2) row-major
//! let b = [1.0f32, 0.0, 0.0, 1.0];            // identity
//! let mut c = [0.0f32; 4];
//! matmul(
//!     MatMut::row_major(&mut c, 2, 2),
//!     None,
//!     MatRef::row_major(&a, 2, 2),
//!     MatRef::row_major(&b, 2, 2),
//!     1.0,
//!     Parallelism::None,
//! )?;
//! assert_eq!(c, a);
//! # Ok::<(), stiff_gemm::ShapeError>(())
//! ```
#![deny(missing_docs)]

pub use gemm::Parallelism;

/// Element types the multiply supports.
pub trait Scalar: Copy + 'static + sealed::Sealed {
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
}
impl Scalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
impl Scalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A matrix view that does not fit its slice, or operands whose shapes do not chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("matmul: {0}")]
#[non_exhaustive]
pub struct ShapeError(pub String);

/// A read-only strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A writable strided matrix view.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A view with explicit strides.
    pub fn new(data: &'a [T], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
        Self { data, rows, cols, row_stride, col_stride }
    }
    /// A dense row-major `(rows, cols)` view.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }
    /// Row-major with a leading dimension (row stride) `ld >= cols`.
    pub fn row_major_ld(data: &'a [T], rows: usize, cols: usize, ld: usize) -> Self {
        Self::new(data, rows, cols, ld, 1)
    }
    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self::new(self.data, self.cols, self.rows, self.col_stride, self.row_stride)
    }
}

impl<'a, T> MatMut<'a, T> {
    /// A view with explicit strides.
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
        Self { data, rows, cols, row_stride, col_stride }
    }
    /// A dense row-major `(rows, cols)` view.
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }
    /// Row-major with a leading dimension (row stride) `ld >= cols`.
    pub fn row_major_ld(data: &'a mut [T], rows: usize, cols: usize, ld: usize) -> Self {
        Self::new(data, rows, cols, ld, 1)
    }
}

/// Index one past the last element a `(rows, cols)` view with these strides can touch, or
/// `None` on overflow. An empty view touches nothing.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(rs)?.checked_add((cols - 1).checked_mul(cs)?)?.checked_add(1)
}

fn check(what: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Result<(), ShapeError> {
    match span(rows, cols, rs, cs) {
        Some(s) if s <= len => Ok(()),
        Some(s) => Err(ShapeError(format!("{what} ({rows}x{cols}, strides {rs},{cs}) needs {s} elements, has {len}"))),
        None => Err(ShapeError(format!("{what} ({rows}x{cols}, strides {rs},{cs}) overflows usize"))),
    }
}

/// `dst = alpha * dst + beta * lhs . rhs`, or `dst = beta * lhs . rhs` when `alpha` is `None`.
///
/// `lhs: (m, k)`, `rhs: (k, n)`, `dst: (m, n)`. The destination must not overlap itself
/// (a zero stride on a non-trivial dimension is rejected).
pub fn matmul<T: Scalar>(
    dst: MatMut<'_, T>,
    alpha: Option<T>,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    beta: T,
    par: Parallelism,
) -> Result<(), ShapeError> {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if lhs.rows != m || rhs.rows != k || rhs.cols != n {
        return Err(ShapeError(format!(
            "shapes do not chain: ({}x{}) . ({}x{}) into ({m}x{n})",
            lhs.rows, lhs.cols, rhs.rows, rhs.cols
        )));
    }
    check("lhs", lhs.data.len(), m, k, lhs.row_stride, lhs.col_stride)?;
    check("rhs", rhs.data.len(), k, n, rhs.row_stride, rhs.col_stride)?;
    check("dst", dst.data.len(), m, n, dst.row_stride, dst.col_stride)?;
    if (m > 1 && dst.row_stride == 0) || (n > 1 && dst.col_stride == 0) {
        return Err(ShapeError("dst has a zero stride: its elements would alias".into()));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let isz = |s: usize| isize::try_from(s).map_err(|_| ShapeError(format!("stride {s} exceeds isize")));
    let (dcs, drs) = (isz(dst.col_stride)?, isz(dst.row_stride)?);
    let (lcs, lrs) = (isz(lhs.col_stride)?, isz(lhs.row_stride)?);
    let (rcs, rrs) = (isz(rhs.col_stride)?, isz(rhs.row_stride)?);
    // SAFETY: the checks above guarantee that every element gemm reads, lhs[i*lrs + p*lcs] and
    // rhs[p*rrs + j*rcs], and every element it writes, dst[i*drs + j*dcs], for i < m, j < n, p < k,
    // lies inside its slice; `dst` is a unique borrow, so it aliases neither input, and its strides
    // are non-zero on every dimension longer than one.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dcs,
            drs,
            alpha.is_some(),
            lhs.data.as_ptr(),
            lcs,
            lrs,
            rhs.data.as_ptr(),
            rcs,
            rrs,
            alpha.unwrap_or(T::ZERO),
            beta,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive triple loop in f64: the independent oracle.
    fn naive(m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_with_transposed_views_and_accumulation() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f64> = (0..m * k).map(|i| ((i * 37 % 11) as f64) - 5.0).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| ((i * 13 % 7) as f64) * 0.5 - 1.0).collect(); // (n, k)
        let b: Vec<f64> = (0..k * n).map(|idx| bt[(idx % n) * k + idx / n]).collect(); // (k, n)
        let want = naive(m, n, k, &a, &b);
        let mut c = vec![1.0; m * n];
        matmul(
            MatMut::row_major(&mut c, m, n),
            Some(2.0),
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&bt, n, k).t(),
            3.0,
            Parallelism::None,
        )
        .unwrap();
        for (got, w) in c.iter().zip(&want) {
            assert!((got - (2.0 + 3.0 * w)).abs() < 1e-9, "{got} vs {}", 2.0 + 3.0 * w);
        }
    }

    #[test]
    fn f32_overwrite_ignores_old_destination() {
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // (2, 3)
        let b = [1.0f32, 1.0, 1.0]; // (3, 1)
        let mut c = [f32::NAN; 2];
        matmul(
            MatMut::row_major(&mut c, 2, 1),
            None,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 1),
            1.0,
            Parallelism::None,
        )
        .unwrap();
        assert_eq!(c, [6.0, 15.0]);
    }

    #[test]
    fn out_of_bounds_views_are_errors_not_ub() {
        let a = [0.0f64; 5];
        let mut c = [0.0f64; 4];
        let err = matmul(
            MatMut::row_major(&mut c, 2, 2),
            None,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&a, 3, 2),
            1.0,
            Parallelism::None,
        )
        .unwrap_err();
        assert!(err.0.contains("needs 6 elements, has 5"), "{err}");
        let huge = MatRef::new(&a, 2, 2, usize::MAX, 1);
        assert!(matmul(MatMut::row_major(&mut c, 2, 2), None, huge, huge, 1.0, Parallelism::None).is_err());
        let err = matmul(
            MatMut::row_major(&mut c, 2, 2),
            None,
            MatRef::row_major(&a, 2, 2),
            MatRef::row_major(&a, 1, 2),
            1.0,
            Parallelism::None,
        )
        .unwrap_err();
        assert!(err.0.contains("do not chain"), "{err}");
    }

    #[test]
    fn aliasing_destination_is_rejected() {
        let a = [1.0f64; 4];
        let mut c = [0.0f64; 4];
        let err = matmul(
            MatMut::new(&mut c, 2, 2, 0, 1),
            None,
            MatRef::row_major(&a, 2, 2),
            MatRef::row_major(&a, 2, 2),
            1.0,
            Parallelism::None,
        )
        .unwrap_err();
        assert!(err.0.contains("zero stride"), "{err}");
    }
}
