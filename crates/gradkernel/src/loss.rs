//! The per-example loss `L_i` whose gradients are compared, and the checks of its targets.

use std::fmt;
use std::sync::Arc;

use candle::{DType, Device, Tensor};

use crate::error::{GradKernelError, Result};

/// A per-example loss closure: `(outputs (n, ...), targets (n, ...)) -> (n)`.
pub type LossFn = Arc<dyn Fn(&Tensor, &Tensor) -> candle::Result<Tensor> + Send + Sync>;

/// The per-example loss `L_i` whose gradients are compared.
#[derive(Clone, Default)]
pub enum Loss {
    /// Cross-entropy of logits `(n, C)` against integer labels `(n)` (default).
    #[default]
    CrossEntropy,
    /// `mean_c (f_c - onehot(y)_c)^2` of outputs `(n, C)`, integer labels `(n)`.
    MseOneHot,
    /// `mean (f - t)^2` over each example's outputs; float targets shaped like the outputs.
    Mse,
    /// Any per-example loss; it must depend on example `i`'s output and target only.
    PerExample(LossFn),
}

impl fmt::Debug for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Loss::CrossEntropy => "CrossEntropy",
            Loss::MseOneHot => "MseOneHot",
            Loss::Mse => "Mse",
            Loss::PerExample(_) => "PerExample(..)",
        })
    }
}

impl std::str::FromStr for Loss {
    type Err = GradKernelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ce" | "cross-entropy" | "cross_entropy" => Ok(Loss::CrossEntropy),
            "mse-onehot" | "mse_onehot" => Ok(Loss::MseOneHot),
            "mse" => Ok(Loss::Mse),
            _ => Err(GradKernelError::Unsupported(format!(
                "unknown loss `{s}` (expected cross-entropy, mse-onehot or mse)"
            ))),
        }
    }
}

impl Loss {
    pub(crate) fn labels(&self) -> bool {
        matches!(self, Loss::CrossEntropy | Loss::MseOneHot)
    }

    /// `(n)` per-example losses.
    pub fn per_example(&self, out: &Tensor, t: &Tensor) -> Result<Tensor> {
        let n = out.dim(0)?;
        let l = match self {
            Loss::CrossEntropy => stiff_models::loss::cross_entropy_per_example(out, t)?,
            Loss::MseOneHot => {
                let c = out.dim(1)?;
                let oh = candle_nn::encoding::one_hot(t.clone(), c, 1f32, 0f32)?.to_dtype(out.dtype())?;
                (out - oh)?.sqr()?.mean(1)?
            }
            Loss::Mse => (out - t.to_dtype(out.dtype())?)?.sqr()?.reshape((n, ()))?.mean(1)?,
            Loss::PerExample(f) => f(out, t)?,
        };
        if l.dims() != [n] {
            return Err(GradKernelError::Shape {
                what: "per-example loss",
                expected: format!("({n})"),
                got: l.dims().to_vec(),
            });
        }
        Ok(l)
    }

    /// Validates targets against `n` examples and outputs `(n, out...)`; moves them to `dev`.
    pub(crate) fn targets(
        &self,
        t: &Tensor,
        n: usize,
        out_dims: &[usize],
        dev: &Device,
        what: &'static str,
    ) -> Result<Tensor> {
        if t.dim(0).ok() != Some(n) {
            return Err(GradKernelError::Shape {
                what,
                expected: format!("targets with {n} rows"),
                got: t.dims().to_vec(),
            });
        }
        if self.labels() {
            if out_dims.len() != 2 {
                return Err(GradKernelError::Shape {
                    what: "network outputs",
                    expected: "(N, classes)".into(),
                    got: out_dims.to_vec(),
                });
            }
            if t.dims() != [n] || !matches!(t.dtype(), DType::U8 | DType::U32 | DType::I64) {
                return Err(GradKernelError::Unsupported(format!(
                    "{what}: {self:?} needs integer labels (n) (u8, u32 or i64), got {:?} {:?}",
                    t.dtype(),
                    t.dims()
                )));
            }
            let classes = out_dims[1];
            let host = t.to_dtype(DType::I64)?.to_device(&Device::Cpu)?.to_vec1::<i64>()?;
            if let Some((index, &label)) = host.iter().enumerate().find(|(_, &l)| l < 0 || l as usize >= classes) {
                return Err(GradKernelError::LabelOutOfRange { what, index, label, classes });
            }
            let v: Vec<u32> = host.iter().map(|&l| l as u32).collect();
            return Ok(Tensor::from_vec(v, n, dev)?);
        }
        if let Loss::Mse = self {
            if t.dims() != out_dims || !t.dtype().is_float() {
                return Err(GradKernelError::Shape {
                    what,
                    expected: format!("float targets shaped like the outputs {out_dims:?}"),
                    got: t.dims().to_vec(),
                });
            }
        }
        Ok(t.to_device(dev)?)
    }
}
