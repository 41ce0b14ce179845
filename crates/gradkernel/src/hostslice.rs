//! Borrowed row-major host slices of CPU tensors (no copy when contiguous) and the scans the
//! planner runs over gradients, for the general engine's CPU paths.

use std::ops::AddAssign;

use candle::{DType, Storage, Tensor, WithDType};
use stiff_gemm::Scalar;

use crate::error::{GradKernelError, Result};

/// The element types of the fast paths.
pub(crate) trait Num:
    Scalar + WithDType + AddAssign + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + Send + Sync
{
}
impl Num for f32 {}
impl Num for f64 {}

/// Runs `f` on the row-major host slice of `t` (copied only when `t` is not contiguous).
pub(crate) fn host<T: Num, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (st, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*st else {
        return Err(GradKernelError::Unsupported("the general engine's CPU path got a device tensor".into()));
    };
    let Some((lo, hi)) = layout.contiguous_offsets() else {
        return Err(GradKernelError::Unsupported("the general engine's CPU path got a strided tensor".into()));
    };
    Ok(f(&cpu.as_slice::<T>()?[lo..hi]))
}

/// A tensor's entries as host f64, row-major.
pub(crate) fn host_f64(t: &Tensor) -> Result<Vec<f64>> {
    let t = t.flatten_all()?.to_device(&candle::Device::Cpu)?;
    Ok(match t.dtype() {
        DType::F64 => t.to_vec1::<f64>()?,
        DType::F32 => t.to_vec1::<f32>()?.into_iter().map(f64::from).collect(),
        _ => t.to_dtype(DType::F64)?.to_vec1::<f64>()?,
    })
}

/// `max |x|` over the entries of `t` (0 for an empty tensor; NaN entries are skipped).
pub(crate) fn max_abs(t: &Tensor) -> Result<f64> {
    fn max<T: Num + Into<f64>>(v: &[T]) -> f64 {
        v.iter().fold(0f64, |m, &x| m.max(x.into().abs()))
    }
    match (t.device().is_cpu(), t.dtype()) {
        (true, DType::F32) => host(t, max::<f32>),
        (true, DType::F64) => host(t, max::<f64>),
        _ => Ok(max(&host_f64(t)?)),
    }
}

/// `(max |t_i|, max |b_i|, max |t_i - b_i|)` of `tapped` against the entries of `batch`, or
/// `None` when their sizes differ.
pub(crate) fn compare(tapped: &[f64], batch: &Tensor) -> Result<Option<(f64, f64, f64)>> {
    fn cmp<T: Num + Into<f64>>(tapped: &[f64], b: &[T]) -> (f64, f64, f64) {
        tapped.iter().zip(b).fold((0f64, 0f64, 0f64), |(mt, mb, md), (&t, &b)| {
            let b: f64 = b.into();
            (mt.max(t.abs()), mb.max(b.abs()), md.max((t - b).abs()))
        })
    }
    if batch.elem_count() != tapped.len() {
        return Ok(None);
    }
    Ok(Some(match (batch.device().is_cpu(), batch.dtype()) {
        (true, DType::F32) => host(batch, |b: &[f32]| cmp(tapped, b))?,
        (true, DType::F64) => host(batch, |b: &[f64]| cmp(tapped, b))?,
        _ => cmp(tapped, &host_f64(batch)?),
    }))
}
