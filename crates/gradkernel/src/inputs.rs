//! A validated input set for the CPU kernels: inputs prepared by the network (device, dtype,
//! shape) and u32 labels checked against the class count.

use candle::{DType, Device, Tensor};

use crate::error::{GradKernelError, Result};
use crate::network::Network;
use crate::options::GramOptions;

/// Prepared inputs and u32 labels on the network's device.
pub(crate) struct Set {
    pub x: Tensor,
    pub y: Tensor,
    pub n: usize,
}

/// Checks shapes and labels and brings `(x, y)` to the network's device and dtype.
/// x: `(N, ...)` (see [`Network::prepare`]); y: integer `(N)` with values in `0..classes`
/// (`None`: zeros, for passes without labels).
pub(crate) fn validate<N: Network + ?Sized>(
    net: &N,
    classes: usize,
    x: &Tensor,
    y: Option<&Tensor>,
    what: &'static str,
) -> Result<Set> {
    if x.rank() < 2 {
        return Err(GradKernelError::Shape { what, expected: "(N, ...) inputs".into(), got: x.dims().to_vec() });
    }
    let n = x.dim(0)?;
    if n == 0 {
        return Err(GradKernelError::Empty(what));
    }
    let xp = net.prepare(x)?;
    let dev = xp.device().clone();
    let y = match y {
        None => Tensor::zeros(n, DType::U32, &dev)?,
        Some(y) => {
            if y.dims() != [n] {
                return Err(GradKernelError::Shape { what, expected: format!("labels ({n})"), got: y.dims().to_vec() });
            }
            if !matches!(y.dtype(), DType::U8 | DType::U32 | DType::I64) {
                return Err(GradKernelError::Unsupported(format!(
                    "{what}: labels must be an integer tensor (u8, u32 or i64), got {:?}",
                    y.dtype()
                )));
            }
            let host = y.to_dtype(DType::I64)?.to_device(&Device::Cpu)?.to_vec1::<i64>()?;
            if let Some((index, &label)) = host.iter().enumerate().find(|(_, &l)| l < 0 || l as usize >= classes) {
                return Err(GradKernelError::LabelOutOfRange { what, index, label, classes });
            }
            let v: Vec<u32> = host.iter().map(|&l| l as u32).collect();
            Tensor::from_vec(v, n, &dev)?
        }
    };
    Ok(Set { x: xp, y, n })
}

/// The dtype Gram entries are accumulated in: f64 for an f64 network or `accumulate_f64`,
/// else the network's.
pub(crate) fn acc_dtype(dtype: DType, opts: &GramOptions) -> DType {
    if opts.accumulate_f64 || dtype == DType::F64 {
        DType::F64
    } else {
        dtype
    }
}
