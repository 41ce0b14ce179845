//! Where the dense CPU kernel's time goes: the same steps as [`crate::gram`] on a dense net
//! (host copies, forward, backward, Gram products, Hadamard accumulation, mirror, output tensor),
//! timed one by one. For benchmarks (`examples/gram_bench.rs`); the result is discarded.

use candle::{DType, Device, Tensor};
use stiff_models::Model;

use crate::cpu_fast::{dense_gram, Elem, Phases};
use crate::engine::dense_inputs;
use crate::error::{GradKernelError, Result};
use crate::inputs::{validate, Set};

/// Runs the hand-written dense kernel once on `(x, y)` in the model's dtype (f32 or f64) and
/// returns its phase timings. x: `(N, ...)`, y: `(N)` integer labels.
///
/// Errors: the model is not a dense net on the CPU in f32/f64, or the inputs are invalid.
pub fn dense_gram_phases(model: &Model, x: &Tensor, y: &Tensor, per_layer: bool) -> Result<Phases> {
    if !model.device().is_cpu() || !model.layers().iter().all(|l| l.kind == stiff_models::LayerKind::Dense) {
        return Err(GradKernelError::Unsupported("dense_gram_phases: a dense net on the CPU".into()));
    }
    let set = validate(model, model.config().num_classes, x, Some(y), "dense_gram_phases inputs")?;
    fn run<T: Elem + candle::WithDType>(model: &Model, set: &Set, per_layer: bool) -> Result<Phases> {
        let t = std::time::Instant::now();
        let (layers, x, y) = dense_inputs::<T>(model.layers(), set)?;
        let inputs = t.elapsed().as_secs_f64();
        let r = dense_gram(&layers, &x, &y, per_layer);
        let t = std::time::Instant::now();
        let n = y.len();
        let k = Tensor::from_vec(r.k, (n, n), &Device::Cpu)?;
        drop(k);
        Ok(Phases { inputs, output: t.elapsed().as_secs_f64(), ..r.phases })
    }
    match model.dtype() {
        DType::F64 => run::<f64>(model, &set, per_layer),
        DType::F32 => run::<f32>(model, &set, per_layer),
        d => Err(GradKernelError::Unsupported(format!("dense_gram_phases: dtype {d:?}"))),
    }
}
