//! Evaluation of one untapped node with candle ops (differentiable by candle's autograd), and of
//! shape arithmetic on the host. Activations and pooling use the project's gradient conventions
//! (`relu'(0) = 0`, max pooling's gradient to the first maximum of a window).

use candle::Tensor;
use stiff_models::ops::{self as mops, Window};

use crate::attrs;
use crate::graph::Node;
use crate::node_ctx::{host, input, msg, Ctx};
use crate::ops::{pads2, pair};
use crate::shape_ops;
use crate::value::{host_binary, Value};

fn mwrap(n: &Node, e: stiff_models::ModelError) -> candle::Error {
    msg(n, e)
}

fn t(n: &Node, ins: &[Option<Value>], i: usize, c: &Ctx) -> candle::Result<Tensor> {
    input(n, ins, i)?.tensor(c.dtype, c.dev)
}

/// The 2-D window of a Conv / pool node.
pub(crate) fn window(n: &Node, kernel: (usize, usize)) -> candle::Result<Window> {
    let padding =
        if attrs::string(n, "auto_pad", "NOTSET") == "VALID" { (0, 0) } else { pads2(n).map_err(|e| msg(n, e))? };
    Ok(Window {
        kernel,
        stride: pair(n, "strides", 1).map_err(|e| msg(n, e))?,
        padding,
        dilation: pair(n, "dilations", 1).map_err(|e| msg(n, e))?,
    })
}

/// Evaluates node `n` on its inputs (`None` for omitted optional inputs). Conv, batch norm and
/// layer norm run as tapped layers recorded under `rec` (so their parameters take the kernel's
/// routes when the engine records).
pub(crate) fn eval(n: &Node, rec: &str, ins: &[Option<Value>], c: &Ctx) -> candle::Result<Vec<Value>> {
    let all_host = ins.iter().flatten().all(|v| matches!(v, Value::H(_)));
    let f = |x: Tensor| Ok(vec![Value::F(x)]);
    match n.op.as_str() {
        "Identity" | "Dropout" => Ok(vec![input(n, ins, 0)?.clone()]),
        "Add" | "Sub" | "Mul" | "Div" if all_host => {
            let (a, b) = (host(n, input(n, ins, 0)?)?, host(n, input(n, ins, 1)?)?);
            let r = match n.op.as_str() {
                "Add" => host_binary(&a, &b, |x, y| x + y, |x, y| x + y),
                "Sub" => host_binary(&a, &b, |x, y| x - y, |x, y| x - y),
                "Mul" => host_binary(&a, &b, |x, y| x * y, |x, y| x * y),
                _ => host_binary(&a, &b, |x, y| if y == 0 { 0 } else { x.div_euclid(y) }, |x, y| x / y),
            };
            Ok(vec![Value::H(r.ok_or_else(|| msg(n, "operand shapes do not broadcast"))?)])
        }
        "Add" => {
            let (a, b) = (t(n, ins, 0, c)?, t(n, ins, 1, c)?);
            // A parameter added to activations (a positional table) is a tapped offset.
            let (pa, pb) = (c.params.contains(&a.id()), c.params.contains(&b.id()));
            f(match (pa, pb) {
                (false, true) => stiff_gradkernel::nn::add_offset(n.inputs[1].as_str(), &a, &b)?,
                (true, false) => stiff_gradkernel::nn::add_offset(n.inputs[0].as_str(), &b, &a)?,
                _ => a.broadcast_add(&b)?,
            })
        }
        "Sub" => f(t(n, ins, 0, c)?.broadcast_sub(&t(n, ins, 1, c)?)?),
        "Mul" => f(t(n, ins, 0, c)?.broadcast_mul(&t(n, ins, 1, c)?)?),
        "Div" => f(t(n, ins, 0, c)?.broadcast_div(&t(n, ins, 1, c)?)?),
        "Relu" => f(mops::relu(&t(n, ins, 0, c)?).map_err(|e| mwrap(n, e))?),
        "LeakyRelu" => f(mops::leaky_relu(&t(n, ins, 0, c)?, attrs::float(n, "alpha", 0.01)).map_err(|e| mwrap(n, e))?),
        "Sigmoid" => f(mops::sigmoid(&t(n, ins, 0, c)?).map_err(|e| mwrap(n, e))?),
        "Tanh" => f(t(n, ins, 0, c)?.tanh()?),
        "Erf" => f(t(n, ins, 0, c)?.erf()?),
        "Exp" => f(t(n, ins, 0, c)?.exp()?),
        "Log" => f(t(n, ins, 0, c)?.log()?),
        "Sqrt" => f(t(n, ins, 0, c)?.sqrt()?),
        "Neg" => f(t(n, ins, 0, c)?.neg()?),
        "Abs" => f(t(n, ins, 0, c)?.abs()?),
        "Reciprocal" => f(t(n, ins, 0, c)?.recip()?),
        "Gelu" => {
            let x = t(n, ins, 0, c)?;
            if attrs::string(n, "approximate", "none") == "tanh" {
                f(x.gelu()?)
            } else {
                f(mops::gelu_erf(&x).map_err(|e| mwrap(n, e))?)
            }
        }
        "Pow" => {
            let x = t(n, ins, 0, c)?;
            let Value::H(e) = input(n, ins, 1)? else {
                return Err(msg(n, "the exponent must be a constant"));
            };
            let ev = e.floats();
            if ev.len() != 1 {
                return Err(msg(n, "the exponent must be a scalar constant"));
            }
            let e = ev[0];
            f(if e == 1.0 {
                x
            } else if e == 2.0 {
                x.sqr()?
            } else if e == 0.5 {
                x.sqrt()?
            } else {
                x.powf(e)?
            })
        }
        "Softmax" => {
            let x = t(n, ins, 0, c)?;
            let ax = attrs::axis(attrs::int(n, "axis", -1), x.rank()).ok_or_else(|| msg(n, "axis out of range"))?;
            // The shift by the (detached) maximum does not change the function or its gradient.
            let m = x.max_keepdim(ax)?.detach();
            let e = x.broadcast_sub(&m)?.exp()?;
            f(e.broadcast_div(&e.sum_keepdim(ax)?)?)
        }
        "MatMul" => f(t(n, ins, 0, c)?.broadcast_matmul(&t(n, ins, 1, c)?)?),
        "Gemm" => {
            let mut a = t(n, ins, 0, c)?;
            let mut b = t(n, ins, 1, c)?;
            if attrs::int(n, "transA", 0) != 0 {
                a = a.t()?;
            }
            if attrs::int(n, "transB", 0) != 0 {
                b = b.t()?;
            }
            let mut y = (a.matmul(&b)? * attrs::float(n, "alpha", 1.0))?;
            if ins.get(2).is_some_and(Option::is_some) {
                y = y.broadcast_add(&(t(n, ins, 2, c)? * attrs::float(n, "beta", 1.0))?)?;
            }
            f(y)
        }
        "Conv" => {
            let x = t(n, ins, 0, c)?;
            let w = t(n, ins, 1, c)?;
            if w.rank() != 4 {
                return Err(msg(n, "only 2-D convolutions are supported"));
            }
            let win = window(n, (w.dim(2)?, w.dim(3)?))?;
            let groups = attrs::int(n, "group", 1).max(1) as usize;
            let b = match ins.get(2) {
                Some(Some(v)) => Some(v.tensor(c.dtype, c.dev)?),
                _ => None,
            };
            if groups == 1 {
                // A bias that is no parameter (a constant the exporter wrote) stays off the tape.
                let (tapped_b, const_b) = match b {
                    Some(b) if !c.params.contains(&b.id()) => (None, Some(b)),
                    b => (b, None),
                };
                let y = stiff_gradkernel::nn::conv2d_forward(rec, &x, &w, tapped_b.as_ref(), &win)?;
                return f(match const_b {
                    Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?,
                    None => y,
                });
            }
            if win.stride.0 != win.stride.1 || win.padding.0 != win.padding.1 || win.dilation.0 != win.dilation.1 {
                return Err(msg(n, "grouped convolutions need equal strides, pads and dilations on both axes"));
            }
            let mut y = x.conv2d(&w, win.padding.0, win.stride.0, win.dilation.0, groups)?;
            if let Some(b) = b {
                y = y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?;
            }
            f(y)
        }
        "MaxPool" | "AveragePool" => {
            let x = t(n, ins, 0, c)?;
            let k = pair(n, "kernel_shape", 1).map_err(|e| msg(n, e))?;
            let win = window(n, k)?;
            if n.op == "MaxPool" {
                return f(mops::max_pool2d(&x, &win).map_err(|e| mwrap(n, e))?);
            }
            let y = mops::avg_pool2d(&x, &win).map_err(|e| mwrap(n, e))?;
            if win.padding == (0, 0) || attrs::int(n, "count_include_pad", 0) != 0 {
                return f(y);
            }
            // Padding excluded from the divisor: the padded average over the padded average of ones.
            let ones = Tensor::ones((1, 1, x.dim(2)?, x.dim(3)?), x.dtype(), x.device())?;
            let count = mops::avg_pool2d(&ones, &win).map_err(|e| mwrap(n, e))?;
            f(y.broadcast_div(&count)?)
        }
        "GlobalAveragePool" => {
            let x = t(n, ins, 0, c)?;
            let mut y = x.clone();
            for d in (2..x.rank()).rev() {
                y = y.mean_keepdim(d)?;
            }
            f(y)
        }
        "BatchNormalization" => {
            let x = t(n, ins, 0, c)?;
            let (g, b, m, v) = (t(n, ins, 1, c)?, t(n, ins, 2, c)?, t(n, ins, 3, c)?, t(n, ins, 4, c)?);
            let eps = attrs::float(n, "epsilon", 1e-5);
            f(stiff_gradkernel::nn::batch_norm_forward(rec, &x, &m, &v, Some((&g, &b)), eps)?)
        }
        "LayerNormalization" => {
            let x = t(n, ins, 0, c)?;
            let ax = attrs::axis(attrs::int(n, "axis", -1), x.rank()).ok_or_else(|| msg(n, "axis out of range"))?;
            let g = t(n, ins, 1, c)?;
            let b = match ins.get(2) {
                Some(Some(v)) => Some(v.tensor(c.dtype, c.dev)?),
                _ => None,
            };
            let eps = attrs::float(n, "epsilon", 1e-5);
            f(stiff_gradkernel::nn::layer_norm_forward(rec, &x, x.rank() - ax, Some(&g), b.as_ref(), eps)?)
        }
        "ReduceMean" | "ReduceSum" => reduce(n, ins, c),
        _ => shape_ops::eval(n, ins, c),
    }
}

/// The axes of a reduction (input 1 from opset 18 for ReduceMean, 13 for ReduceSum; else the
/// attribute), normalised and sorted; `None` = all axes.
fn reduce(n: &Node, ins: &[Option<Value>], c: &Ctx) -> candle::Result<Vec<Value>> {
    let x = t(n, ins, 0, c)?;
    let keep = attrs::int(n, "keepdims", 1) != 0;
    let axes: Option<Vec<i64>> = match ins.get(1) {
        Some(Some(v)) => Some(host(n, v)?.ints()),
        _ => attrs::ints(n, "axes"),
    };
    let mut ax: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&a| attrs::axis(a, x.rank()).ok_or_else(|| msg(n, format!("axis {a} out of range"))))
            .collect::<candle::Result<_>>()?,
        _ if attrs::int(n, "noop_with_empty_axes", 0) != 0 => return Ok(vec![Value::F(x)]),
        _ => (0..x.rank()).collect(),
    };
    ax.sort_unstable();
    ax.dedup();
    let mut y = x;
    for &a in ax.iter().rev() {
        y = if n.op == "ReduceMean" { y.mean_keepdim(a)? } else { y.sum_keepdim(a)? };
        if !keep {
            y = y.squeeze(a)?;
        }
    }
    Ok(vec![Value::F(y)])
}
