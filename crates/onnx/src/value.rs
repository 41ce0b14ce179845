//! Values flowing through the graph: float tensors on the network's device (differentiable), and
//! host tensors for shape arithmetic (`Shape`, `Gather` of a shape, `Concat` of sizes).

use candle::{DType, Device, Tensor};

use crate::graph::{HostData, HostTensor};

/// A value of the graph.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A float tensor in the network's dtype on its device.
    F(Tensor),
    /// A host tensor (integers, or float constants not yet moved to the device).
    H(HostTensor),
}

impl Value {
    /// The value as a float tensor (host values are converted).
    pub fn tensor(&self, dtype: DType, dev: &Device) -> candle::Result<Tensor> {
        match self {
            Value::F(t) => Ok(t.clone()),
            Value::H(h) => host_to_tensor(h, dtype, dev),
        }
    }
    /// The shape.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Value::F(t) => t.dims().to_vec(),
            Value::H(h) => h.dims.clone(),
        }
    }
    /// Whether every operand of an op is a host value holding integers (shape arithmetic).
    pub fn is_host_int(&self) -> bool {
        matches!(self, Value::H(h) if !h.is_float())
    }
}

/// A host tensor as a device tensor of `dtype`.
pub(crate) fn host_to_tensor(h: &HostTensor, dtype: DType, dev: &Device) -> candle::Result<Tensor> {
    Tensor::from_vec(h.floats(), h.dims.as_slice(), &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)
}

/// Integer host tensor.
pub(crate) fn ints(dims: Vec<usize>, v: Vec<i64>) -> Value {
    Value::H(HostTensor { dims, data: HostData::Int(v) })
}

/// Numpy broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let x = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let y = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return None;
        };
    }
    Some(out)
}

/// Element-wise op on host tensors with numpy broadcasting.
pub(crate) fn host_binary(
    a: &HostTensor,
    b: &HostTensor,
    f: impl Fn(i64, i64) -> i64,
    g: impl Fn(f64, f64) -> f64,
) -> Option<HostTensor> {
    let dims = broadcast_shape(&a.dims, &b.dims)?;
    let n: usize = dims.iter().product();
    // Each operand's strides in the broadcast shape (0 along a broadcast dimension).
    let strides = |t: &HostTensor| -> Vec<usize> {
        let mut st = vec![0; dims.len()];
        let mut step = 1;
        for (k, &sz) in t.dims.iter().enumerate().rev() {
            st[dims.len() - t.dims.len() + k] = if sz == 1 { 0 } else { step };
            step *= sz;
        }
        st
    };
    let (sa, sb) = (strides(a), strides(b));
    let offsets = |flat: usize| -> (usize, usize) {
        let (mut rem, mut oa, mut ob) = (flat, 0, 0);
        for d in (0..dims.len()).rev() {
            let c = rem % dims[d];
            rem /= dims[d];
            oa += c * sa[d];
            ob += c * sb[d];
        }
        (oa, ob)
    };
    let data = match (&a.data, &b.data) {
        (HostData::Int(x), HostData::Int(y)) => HostData::Int(
            (0..n)
                .map(|i| {
                    let (oa, ob) = offsets(i);
                    f(x[oa], y[ob])
                })
                .collect(),
        ),
        _ => {
            let (x, y) = (a.floats(), b.floats());
            HostData::Float(
                (0..n)
                    .map(|i| {
                        let (oa, ob) = offsets(i);
                        g(x[oa], y[ob])
                    })
                    .collect(),
            )
        }
    };
    Some(HostTensor { dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ops_broadcast_like_numpy() {
        let a = HostTensor { dims: vec![2, 1], data: HostData::Int(vec![10, 20]) };
        let b = HostTensor { dims: vec![3], data: HostData::Int(vec![1, 2, 3]) };
        let r = host_binary(&a, &b, |x, y| x + y, |x, y| x + y).unwrap();
        assert_eq!(r.dims, [2, 3]);
        assert_eq!(r.data, HostData::Int(vec![11, 12, 13, 21, 22, 23]));
        let s = HostTensor { dims: vec![], data: HostData::Float(vec![0.5]) };
        let r = host_binary(&b, &s, |x, y| x * y, |x, y| x * y).unwrap();
        assert_eq!(r.data, HostData::Float(vec![0.5, 1.0, 1.5]));
        assert!(host_binary(&b, &HostTensor { dims: vec![2], data: HostData::Int(vec![1, 2]) }, |x, _| x, |x, _| x)
            .is_none());
    }
}
