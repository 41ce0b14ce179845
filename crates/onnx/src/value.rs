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
    let idx = |t: &HostTensor, flat: usize| -> usize {
        // Index of `flat` (in `dims`) in a broadcast operand.
        let mut rem = flat;
        let mut off = 0;
        let mut stride = 1;
        let r = dims.len();
        let mut coords = vec![0; r];
        for d in (0..r).rev() {
            coords[d] = rem % dims[d];
            rem /= dims[d];
        }
        for (k, &sz) in t.dims.iter().enumerate().rev() {
            let c = coords[r - t.dims.len() + k];
            off += if sz == 1 { 0 } else { c * stride };
            stride *= sz;
        }
        off
    };
    let data = match (&a.data, &b.data) {
        (HostData::Int(x), HostData::Int(y)) => HostData::Int((0..n).map(|i| f(x[idx(a, i)], y[idx(b, i)])).collect()),
        _ => {
            let (x, y) = (a.floats(), b.floats());
            HostData::Float((0..n).map(|i| g(x[idx(a, i)], y[idx(b, i)])).collect())
        }
    };
    Some(HostTensor { dims, data })
}
