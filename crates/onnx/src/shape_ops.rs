//! Layout and shape ops: on float tensors (differentiable views and copies) and on host tensors
//! (the shape arithmetic an exporter writes for a dynamic batch: Shape -> Gather -> Concat ->
//! Reshape).

use candle::Tensor;

use crate::attrs;
use crate::graph::{HostData, HostTensor, Node};
use crate::node_ctx::{host, input, msg, Ctx};
use crate::value::{host_binary, ints, Value};

fn take_host<T: Clone>(v: &[T], dims: &[usize], axis: usize, idx: &[usize]) -> (Vec<T>, Vec<usize>) {
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let s = (o * dims[axis] + i) * inner;
            out.extend_from_slice(&v[s..s + inner]);
        }
    }
    let mut d = dims.to_vec();
    d[axis] = idx.len();
    (out, d)
}

fn host_take(h: &HostTensor, axis: usize, idx: &[usize]) -> HostTensor {
    match &h.data {
        HostData::Int(v) => {
            let (v, dims) = take_host(v, &h.dims, axis, idx);
            HostTensor { dims, data: HostData::Int(v) }
        }
        HostData::Float(v) => {
            let (v, dims) = take_host(v, &h.dims, axis, idx);
            HostTensor { dims, data: HostData::Float(v) }
        }
    }
}

fn reshape_host(h: HostTensor, dims: Vec<usize>) -> HostTensor {
    HostTensor { dims, data: h.data }
}

fn with_dims(v: &Value, dims: Vec<usize>) -> candle::Result<Value> {
    Ok(match v {
        Value::F(t) => Value::F(t.reshape(dims)?),
        Value::H(h) => Value::H(reshape_host(h.clone(), dims)),
    })
}

/// Axes from input `i` (opset >= 13) or the `axes` attribute.
fn axes_of(n: &Node, ins: &[Option<Value>], i: usize) -> candle::Result<Option<Vec<i64>>> {
    match ins.get(i) {
        Some(Some(v)) => Ok(Some(host(n, v)?.ints())),
        _ => Ok(attrs::ints(n, "axes")),
    }
}

fn norm_axis(n: &Node, a: i64, rank: usize) -> candle::Result<usize> {
    attrs::axis(a, rank).ok_or_else(|| msg(n, format!("axis {a} out of range for rank {rank}")))
}

/// Start/end of a Slice on a dimension of `size` (ONNX clamping rules, positive step).
fn slice_range(start: i64, end: i64, size: usize) -> (usize, usize) {
    let s = size as i64;
    let clamp = |v: i64| if v < 0 { (v + s).clamp(0, s) } else { v.min(s) };
    let (a, b) = (clamp(start), clamp(end));
    (a as usize, b.max(a) as usize)
}

pub(crate) fn eval(n: &Node, ins: &[Option<Value>], c: &Ctx) -> candle::Result<Vec<Value>> {
    let one = |v: Value| Ok(vec![v]);
    match n.op.as_str() {
        "Constant" => {
            if let Some(t) = attrs::tensor(n, "value") {
                return one(Value::H(t.clone()));
            }
            let v = match (n.attrs.get("value_float"), n.attrs.get("value_int")) {
                (Some(_), _) => {
                    HostTensor { dims: vec![], data: HostData::Float(vec![attrs::float(n, "value_float", 0.0)]) }
                }
                (_, Some(_)) => HostTensor { dims: vec![], data: HostData::Int(vec![attrs::int(n, "value_int", 0)]) },
                _ => match (attrs::ints(n, "value_ints"), n.attrs.get("value_floats")) {
                    (Some(v), _) => HostTensor { dims: vec![v.len()], data: HostData::Int(v) },
                    (_, Some(crate::graph::Attr::Floats(f))) => {
                        HostTensor { dims: vec![f.len()], data: HostData::Float(f.iter().map(|&x| x as f64).collect()) }
                    }
                    _ => return Err(msg(n, "a Constant without a supported value attribute")),
                },
            };
            one(Value::H(v))
        }
        "Shape" => {
            let d = input(n, ins, 0)?.dims();
            let r = d.len() as i64;
            let cl = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (cl(attrs::int(n, "start", 0)), cl(attrs::int(n, "end", r)));
            let v: Vec<i64> = d[s..e.max(s)].iter().map(|&x| x as i64).collect();
            one(ints(vec![v.len()], v))
        }
        "ConstantOfShape" => {
            let dims: Vec<usize> = host(n, input(n, ins, 0)?)?.ints().iter().map(|&v| v.max(0) as usize).collect();
            let numel = dims.iter().product();
            let fill = attrs::tensor(n, "value").cloned();
            let data = match fill.map(|t| t.data) {
                Some(HostData::Int(v)) => HostData::Int(vec![v.first().copied().unwrap_or(0); numel]),
                Some(HostData::Float(v)) => HostData::Float(vec![v.first().copied().unwrap_or(0.0); numel]),
                None => HostData::Float(vec![0.0; numel]),
            };
            one(Value::H(HostTensor { dims, data }))
        }
        "Range" => {
            let g = |i| host(n, input(n, ins, i)?).map(|h| h.floats()[0]);
            let (s, l, d) = (g(0)?, g(1)?, g(2)?);
            if d == 0.0 {
                return Err(msg(n, "delta is 0"));
            }
            let count = ((l - s) / d).ceil().max(0.0) as usize;
            let int = !host(n, input(n, ins, 0)?)?.is_float();
            let vals: Vec<f64> = (0..count).map(|i| s + i as f64 * d).collect();
            let data =
                if int { HostData::Int(vals.iter().map(|&v| v as i64).collect()) } else { HostData::Float(vals) };
            one(Value::H(HostTensor { dims: vec![count], data }))
        }
        "Cast" | "CastLike" => {
            let v = input(n, ins, 0)?;
            let to_float = if n.op == "Cast" {
                matches!(attrs::int(n, "to", 1), 1 | 10 | 11 | 16)
            } else {
                match input(n, ins, 1)? {
                    Value::F(_) => true,
                    Value::H(h) => h.is_float(),
                }
            };
            match (v, to_float) {
                (Value::F(_), true) => one(v.clone()),
                (Value::H(h), true) => {
                    one(Value::H(HostTensor { dims: h.dims.clone(), data: HostData::Float(h.floats()) }))
                }
                (other, false) => {
                    let h = host(n, other)?;
                    one(ints(h.dims.clone(), h.ints()))
                }
            }
        }
        "Equal" => {
            let (a, b) = (host(n, input(n, ins, 0)?)?, host(n, input(n, ins, 1)?)?);
            let r = host_binary(&a, &b, |x, y| (x == y) as i64, |x, y| (x == y) as i64 as f64)
                .ok_or_else(|| msg(n, "operand shapes do not broadcast"))?;
            one(ints(r.dims.clone(), r.ints()))
        }
        "Where" => {
            let cond = host(n, input(n, ins, 0)?)?;
            let (a, b) = (input(n, ins, 1)?, input(n, ins, 2)?);
            if let (Value::H(a), Value::H(b)) = (a, b) {
                let ab = host_binary(a, b, |x, _| x, |x, _| x).ok_or_else(|| msg(n, "shapes do not broadcast"))?;
                let pick =
                    host_binary(&cond, &ab, |x, _| x, |x, _| x).ok_or_else(|| msg(n, "shapes do not broadcast"))?;
                let sel_a =
                    host_binary(&pick, a, |p, x| if p != 0 { x } else { 0 }, |p, x| if p != 0.0 { x } else { 0.0 });
                let sel_b =
                    host_binary(&pick, b, |p, x| if p == 0 { x } else { 0 }, |p, x| if p == 0.0 { x } else { 0.0 });
                let s = host_binary(&sel_a.expect("broadcast"), &sel_b.expect("broadcast"), |x, y| x + y, |x, y| x + y);
                return one(Value::H(s.expect("broadcast")));
            }
            let (ta, tb) = (a.tensor(c.dtype, c.dev)?, b.tensor(c.dtype, c.dev)?);
            let shape = crate::value::broadcast_shape(ta.dims(), tb.dims())
                .and_then(|s| crate::value::broadcast_shape(&s, &cond.dims))
                .ok_or_else(|| msg(n, "shapes do not broadcast"))?;
            let m = Tensor::from_vec(
                cond.ints().iter().map(|&v| (v != 0) as u8).collect::<Vec<u8>>(),
                cond.dims.as_slice(),
                c.dev,
            )?;
            let m = m.broadcast_as(shape.as_slice())?.contiguous()?;
            one(Value::F(m.where_cond(&ta.broadcast_as(shape.as_slice())?, &tb.broadcast_as(shape.as_slice())?)?))
        }
        "Reshape" => {
            let v = input(n, ins, 0)?;
            let d = v.dims();
            let spec = host(n, input(n, ins, 1)?)?.ints();
            let allow_zero = attrs::int(n, "allowzero", 0) != 0;
            let mut out: Vec<i64> = spec
                .iter()
                .enumerate()
                .map(|(i, &s)| if s == 0 && !allow_zero { d.get(i).map_or(0, |&x| x as i64) } else { s })
                .collect();
            let known: i64 = out.iter().filter(|&&s| s >= 0).product();
            let total: usize = d.iter().product();
            if let Some(p) = out.iter().position(|&s| s == -1) {
                out[p] = if known == 0 { 0 } else { total as i64 / known };
            }
            let dims: Vec<usize> = out.iter().map(|&s| s.max(0) as usize).collect();
            if dims.iter().product::<usize>() != total {
                return Err(msg(n, format!("cannot reshape {d:?} to {spec:?}")));
            }
            one(with_dims(v, dims)?)
        }
        "Flatten" => {
            let v = input(n, ins, 0)?;
            let d = v.dims();
            let ax = attrs::int(n, "axis", 1);
            let ax = if ax < 0 { ax + d.len() as i64 } else { ax }.clamp(0, d.len() as i64) as usize;
            one(with_dims(v, vec![d[..ax].iter().product(), d[ax..].iter().product()])?)
        }
        "Squeeze" | "Unsqueeze" => {
            let v = input(n, ins, 0)?;
            let d = v.dims();
            let axes = axes_of(n, ins, 1)?;
            let dims = if n.op == "Squeeze" {
                match axes {
                    None => d.iter().copied().filter(|&x| x != 1).collect(),
                    Some(a) => {
                        let a: Vec<usize> =
                            a.iter().map(|&x| norm_axis(n, x, d.len())).collect::<candle::Result<_>>()?;
                        d.iter().enumerate().filter(|(i, _)| !a.contains(i)).map(|(_, &x)| x).collect()
                    }
                }
            } else {
                let a = axes.ok_or_else(|| msg(n, "Unsqueeze without axes"))?;
                let r = d.len() + a.len();
                let mut a: Vec<usize> = a.iter().map(|&x| norm_axis(n, x, r)).collect::<candle::Result<_>>()?;
                a.sort_unstable();
                let mut dims = d.clone();
                for &ax in &a {
                    dims.insert(ax, 1);
                }
                dims
            };
            one(with_dims(v, dims)?)
        }
        "Transpose" => {
            let v = input(n, ins, 0)?;
            let r = v.dims().len();
            let perm: Vec<usize> = match attrs::ints(n, "perm") {
                Some(p) => p.iter().map(|&x| norm_axis(n, x, r)).collect::<candle::Result<_>>()?,
                None => (0..r).rev().collect(),
            };
            match v {
                Value::F(t) => one(Value::F(t.permute(perm)?.contiguous()?)),
                Value::H(h) if r <= 1 => one(Value::H(h.clone())),
                Value::H(h) => {
                    let t = Tensor::from_vec(h.floats(), h.dims.as_slice(), &candle::Device::Cpu)?
                        .permute(perm)?
                        .contiguous()?;
                    let data = t.flatten_all()?.to_vec1::<f64>()?;
                    let dims = t.dims().to_vec();
                    one(Value::H(if h.is_float() {
                        HostTensor { dims, data: HostData::Float(data) }
                    } else {
                        HostTensor { dims, data: HostData::Int(data.iter().map(|&x| x as i64).collect()) }
                    }))
                }
            }
        }
        "Concat" => {
            let vals: Vec<&Value> = ins.iter().flatten().collect();
            let r = vals.first().map(|v| v.dims().len()).unwrap_or(1);
            let ax = norm_axis(n, attrs::int(n, "axis", 0), r)?;
            if vals.iter().all(|v| v.is_host_int()) && r == 1 {
                let v: Vec<i64> =
                    vals.iter().map(|v| host(n, v).map(|h| h.ints())).collect::<candle::Result<Vec<_>>>()?.concat();
                return one(ints(vec![v.len()], v));
            }
            let ts: Vec<Tensor> = vals.iter().map(|v| v.tensor(c.dtype, c.dev)).collect::<candle::Result<_>>()?;
            one(Value::F(Tensor::cat(&ts, ax)?))
        }
        "Split" => {
            let v = input(n, ins, 0)?;
            let d = v.dims();
            let ax = norm_axis(n, attrs::int(n, "axis", 0), d.len())?;
            let parts = n.outputs.len();
            let sizes: Vec<usize> = match ins.get(1) {
                Some(Some(s)) => host(n, s)?.ints().iter().map(|&x| x.max(0) as usize).collect(),
                _ => match attrs::ints(n, "split") {
                    Some(s) => s.iter().map(|&x| x.max(0) as usize).collect(),
                    None => {
                        let k = attrs::int(n, "num_outputs", parts as i64).max(1) as usize;
                        let chunk = d[ax].div_ceil(k);
                        (0..k).map(|i| chunk.min(d[ax].saturating_sub(i * chunk))).collect()
                    }
                },
            };
            if sizes.iter().sum::<usize>() != d[ax] || sizes.len() != parts {
                return Err(msg(
                    n,
                    format!("split sizes {sizes:?} do not fit dimension {ax} of {d:?} into {parts} outputs"),
                ));
            }
            let t = v.tensor(c.dtype, c.dev)?;
            let mut start = 0;
            let mut out = Vec::new();
            for s in sizes {
                out.push(Value::F(t.narrow(ax, start, s)?));
                start += s;
            }
            Ok(out)
        }
        "Slice" => {
            let v = input(n, ins, 0)?;
            let d = v.dims();
            let starts = host(n, input(n, ins, 1)?)?.ints();
            let ends = host(n, input(n, ins, 2)?)?.ints();
            let axes: Vec<i64> = match ins.get(3) {
                Some(Some(a)) => host(n, a)?.ints(),
                _ => (0..starts.len() as i64).collect(),
            };
            let steps: Vec<i64> = match ins.get(4) {
                Some(Some(s)) => host(n, s)?.ints(),
                _ => vec![1; starts.len()],
            };
            let mut cur = v.clone();
            for k in 0..starts.len() {
                let ax = norm_axis(n, axes[k], d.len())?;
                if steps[k] <= 0 {
                    return Err(msg(n, "only positive Slice steps are supported"));
                }
                let (a, b) = slice_range(starts[k], ends[k], d[ax]);
                let idx: Vec<usize> = (a..b).step_by(steps[k] as usize).collect();
                cur = match cur {
                    Value::H(h) => Value::H(host_take(&h, ax, &idx)),
                    Value::F(t) if steps[k] == 1 => Value::F(t.narrow(ax, a, b - a)?),
                    Value::F(t) => {
                        let i =
                            Tensor::from_vec(idx.iter().map(|&x| x as u32).collect::<Vec<_>>(), idx.len(), t.device())?;
                        Value::F(t.index_select(&i, ax)?)
                    }
                };
            }
            one(cur)
        }
        "Gather" => {
            let v = input(n, ins, 0)?;
            let d = v.dims();
            let ax = norm_axis(n, attrs::int(n, "axis", 0), d.len())?;
            let ih = host(n, input(n, ins, 1)?)?;
            let idx: Vec<usize> = ih
                .ints()
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + d[ax] as i64 } else { i };
                    usize::try_from(j)
                        .ok()
                        .filter(|&j| j < d[ax])
                        .ok_or_else(|| msg(n, format!("index {i} out of range")))
                })
                .collect::<candle::Result<_>>()?;
            let mut out_dims = d[..ax].to_vec();
            out_dims.extend_from_slice(&ih.dims);
            out_dims.extend_from_slice(&d[ax + 1..]);
            let g = match v {
                Value::H(h) => Value::H(host_take(h, ax, &idx)),
                Value::F(t) => {
                    let i = Tensor::from_vec(idx.iter().map(|&x| x as u32).collect::<Vec<_>>(), idx.len(), t.device())?;
                    Value::F(t.index_select(&i, ax)?)
                }
            };
            one(with_dims(&g, out_dims)?)
        }
        "Expand" => {
            let v = input(n, ins, 0)?;
            let target: Vec<usize> = host(n, input(n, ins, 1)?)?.ints().iter().map(|&x| x.max(0) as usize).collect();
            let shape = crate::value::broadcast_shape(&v.dims(), &target)
                .ok_or_else(|| msg(n, format!("cannot expand {:?} to {target:?}", v.dims())))?;
            match v {
                Value::H(h) => {
                    let zero = HostTensor {
                        dims: shape.clone(),
                        data: if h.is_float() {
                            HostData::Float(vec![0.0; shape.iter().product()])
                        } else {
                            HostData::Int(vec![0; shape.iter().product()])
                        },
                    };
                    one(Value::H(host_binary(h, &zero, |x, _| x, |x, _| x).expect("broadcast checked")))
                }
                Value::F(t) => one(Value::F(t.broadcast_as(shape)?.contiguous()?)),
            }
        }
        other => Err(msg(n, format!("op {other} has no evaluator (bug: it passed the op check)"))),
    }
}
