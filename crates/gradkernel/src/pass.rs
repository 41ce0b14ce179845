//! One recorded pass: a batched forward with the tape on, one backward of the **summed** loss
//! (so row `i` of a probe's gradient is example `i`'s own delta, no `1/N`), and the per-example
//! parameter gradients a record implies.

use candle::{DType, Device, Tensor, TensorId};
use stiff_models::ops::unfold;

use crate::error::Result;
use crate::loss::Loss;
use crate::network::Network;
use crate::tape::{NormLayout, RecKind, Record, Recording, Tape};

/// One recorded forward + summed backward over a chunk.
pub(crate) struct Pass {
    pub tape: Tape,
    pub deltas: Vec<Tensor>,
    pub loss: Vec<f64>,
    /// The backward's gradients (kept for the probe pass only: the planner checks every
    /// parameter got one and that tapped gradients match them).
    pub grads: Option<candle::backprop::GradStore>,
}

/// A chunk pass; `own_conv`: tapped convs may run [`crate::conv_op`] (the CPU path).
pub(crate) fn run_pass<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    t: &Tensor,
    loss: &Loss,
    own_conv: bool,
) -> Result<Pass> {
    run(net, x, t, loss, false, own_conv)
}

/// The planning pass: keeps the backward's gradients, candle's convs throughout.
pub(crate) fn run_pass_keep<N: Network + ?Sized>(net: &N, x: &Tensor, t: &Tensor, loss: &Loss) -> Result<Pass> {
    run(net, x, t, loss, true, false)
}

fn run<N: Network + ?Sized>(net: &N, x: &Tensor, t: &Tensor, loss: &Loss, keep: bool, own_conv: bool) -> Result<Pass> {
    let rec = Recording::start(own_conv);
    let out = net.forward(x)?;
    let tape = rec.finish();
    let l = loss.per_example(&out, t)?;
    let grads = l.sum_all()?.backward()?;
    let deltas = tape
        .records
        .iter()
        .map(|r| match grads.get(r.probe.as_tensor()) {
            Some(g) => Ok(g.detach()),
            // No path from this output to the loss. The planning pass refuses a layer with
            // parameters in this state (`plan::missing_gradients`), so a zero here only stands
            // for layers whose tensors are all frozen.
            None => Ok(r.probe.as_tensor().zeros_like()?),
        })
        .collect::<Result<Vec<_>>>()?;
    let loss_v = l.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.to_vec1::<f64>()?;
    Ok(Pass { tape, deltas, loss: loss_v, grads: keep.then_some(grads) })
}

/// Per-parameter per-example gradients of one record: `(param slot, (n, numel))`.
pub(crate) fn record_grads(r: &Record, delta: &Tensor, acc: DType) -> Result<Vec<(Option<TensorId>, Tensor)>> {
    let a = r.input.to_dtype(acc)?;
    let d = delta.to_dtype(acc)?;
    let n = a.dim(0)?;
    let (gw, gb) = match &r.kind {
        RecKind::Linear | RecKind::LinearT => {
            let (i, o) = (a.dim(a.rank() - 1)?, d.dim(d.rank() - 1)?);
            let a3 = a.reshape((n, (), i))?;
            let d3 = d.reshape((n, (), o))?;
            let gw = if matches!(r.kind, RecKind::Linear) {
                d3.transpose(1, 2)?.contiguous()?.matmul(&a3)?
            } else {
                a3.transpose(1, 2)?.contiguous()?.matmul(&d3)?
            };
            (gw.reshape((n, o * i))?, d3.sum(1)?)
        }
        RecKind::Conv { win } => {
            let u = unfold(&a, win)?; // (n, F, S)
            let c = d.dim(1)?;
            let d3 = d.reshape((n, c, ()))?;
            // A transposed (column-major) right operand is fine for the batched gemm: no copy.
            let gw = d3.matmul(&u.transpose(1, 2)?)?.reshape((n, ()))?;
            (gw, d3.sum(2)?)
        }
        RecKind::Offset { shape } => {
            let k = d.rank();
            let mut full = vec![1; k.saturating_sub(shape.len())];
            full.extend_from_slice(shape);
            let mut g = d.clone();
            for j in (1..k).rev() {
                if full[j] == 1 && d.dim(j)? != 1 {
                    g = g.sum_keepdim(j)?;
                }
            }
            let g = g.reshape((n, ()))?;
            (g.clone(), g)
        }
        RecKind::Norm { layout } => {
            let prod = (&d * &a)?;
            match layout {
                NormLayout::Channel => {
                    let c = a.dim(1)?;
                    (prod.reshape((n, c, ()))?.sum(2)?, d.reshape((n, c, ()))?.sum(2)?)
                }
                NormLayout::Trailing(k) => {
                    let p: usize = a.dims()[a.rank() - k..].iter().product();
                    (prod.reshape((n, (), p))?.sum(1)?, d.reshape((n, (), p))?.sum(1)?)
                }
            }
        }
    };
    let mut v = Vec::new();
    if let Some(w) = &r.weight {
        v.push((Some(w.id()), gw));
    }
    if let Some(b) = &r.bias {
        v.push((Some(b.id()), gb));
    }
    Ok(v)
}
