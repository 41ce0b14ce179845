//! Host matrices assembled blockwise: `K` and the per-layer Grams on the CPU in the output
//! dtype, written block by block (upper blocks mirrored) and turned into tensors at the end.

use candle::{DType, Device, Tensor};

use crate::error::Result;

/// A row-major host matrix in the output dtype.
pub(crate) enum HostMat {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl HostMat {
    pub(crate) fn zeros(dtype: DType, len: usize) -> Self {
        match dtype {
            DType::F64 => HostMat::F64(vec![0.0; len]),
            _ => HostMat::F32(vec![0.0; len]),
        }
    }

    /// Writes `block: (nr, nc)` at `(r0, c0)` of a matrix with `cols` columns; with `mirror`, also
    /// its transpose at `(c0, r0)`; with `upper_only` (a diagonal block) only entries `c >= r` are
    /// taken and mirrored, so the result is exactly symmetric.
    pub(crate) fn put(
        &mut self,
        block: &Tensor,
        r0: usize,
        c0: usize,
        cols: usize,
        mirror: bool,
        upper_only: bool,
    ) -> Result<()> {
        let (nr, nc) = block.dims2()?;
        let b = block.to_device(&Device::Cpu)?;
        #[allow(clippy::too_many_arguments)]
        fn put_t<T: Copy>(
            dst: &mut [T],
            src: &[T],
            nr: usize,
            nc: usize,
            r0: usize,
            c0: usize,
            cols: usize,
            mirror: bool,
            upper: bool,
        ) {
            for r in 0..nr {
                let from = if upper { r } else { 0 };
                for c in from..nc {
                    let v = src[r * nc + c];
                    dst[(r0 + r) * cols + c0 + c] = v;
                    if mirror {
                        dst[(c0 + c) * cols + r0 + r] = v;
                    }
                }
            }
        }
        match self {
            HostMat::F32(dst) => {
                let src = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                put_t(dst, &src, nr, nc, r0, c0, cols, mirror, upper_only);
            }
            HostMat::F64(dst) => {
                let src = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                put_t(dst, &src, nr, nc, r0, c0, cols, mirror, upper_only);
            }
        }
        Ok(())
    }

    pub(crate) fn into_tensor(self, rows: usize, cols: usize) -> Result<Tensor> {
        Ok(match self {
            HostMat::F32(v) => Tensor::from_vec(v, (rows, cols), &Device::Cpu)?,
            HostMat::F64(v) => Tensor::from_vec(v, (rows, cols), &Device::Cpu)?,
        })
    }

    pub(crate) fn diag(&self, n: usize) -> Vec<f64> {
        match self {
            HostMat::F32(v) => (0..n).map(|i| v[i * n + i] as f64).collect(),
            HostMat::F64(v) => (0..n).map(|i| v[i * n + i]).collect(),
        }
    }
}

/// A kernel's row-major output as a [`HostMat`].
pub(crate) trait IntoHost: Sized {
    fn host(v: Vec<Self>) -> HostMat;
}

impl IntoHost for f32 {
    fn host(v: Vec<Self>) -> HostMat {
        HostMat::F32(v)
    }
}

impl IntoHost for f64 {
    fn host(v: Vec<Self>) -> HostMat {
        HostMat::F64(v)
    }
}
