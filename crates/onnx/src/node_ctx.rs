//! What the evaluation of one node works with: the dtype and device of float values, the
//! parameters' tensor ids, a node's inputs, errors naming the node, and host copies of small
//! values (shapes, indices).

use std::collections::HashSet;

use candle::{DType, Device, TensorId};

use crate::graph::{HostData, HostTensor, Node};
use crate::value::Value;

/// Device and dtype of float values.
pub(crate) struct Ctx<'a> {
    pub dtype: DType,
    pub dev: &'a Device,
    /// Tensor ids of the trainable parameters (a constant bias is added outside the tap).
    pub params: &'a HashSet<TensorId>,
}

/// An error naming the node.
pub(crate) fn msg(n: &Node, problem: impl std::fmt::Display) -> candle::Error {
    candle::Error::Msg(format!("node `{}` ({}): {problem}", n.name, n.op))
}

/// The `i`-th input, which must be present.
pub(crate) fn input<'v>(n: &Node, ins: &'v [Option<Value>], i: usize) -> candle::Result<&'v Value> {
    ins.get(i).and_then(Option::as_ref).ok_or_else(|| msg(n, format!("input {i} is missing")))
}

/// A value as a host tensor (device floats are copied back: small shape values only).
pub(crate) fn host(n: &Node, v: &Value) -> candle::Result<HostTensor> {
    match v {
        Value::H(h) => Ok(h.clone()),
        Value::F(t) => {
            if t.elem_count() > 1 << 16 {
                return Err(msg(n, "a large activation is used as a shape or index"));
            }
            let data = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            Ok(HostTensor { dims: t.dims().to_vec(), data: HostData::Float(data) })
        }
    }
}
