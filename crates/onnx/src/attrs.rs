//! Typed access to node attributes, with the ONNX defaults supplied by the caller.

use crate::graph::{Attr, HostTensor, Node};

/// Integer attribute or `default`.
pub(crate) fn int(n: &Node, name: &str, default: i64) -> i64 {
    match n.attrs.get(name) {
        Some(Attr::Int(v)) => *v,
        _ => default,
    }
}

/// Float attribute or `default`.
pub(crate) fn float(n: &Node, name: &str, default: f64) -> f64 {
    match n.attrs.get(name) {
        Some(Attr::Float(v)) => *v as f64,
        _ => default,
    }
}

/// Integer-list attribute, if present.
pub(crate) fn ints(n: &Node, name: &str) -> Option<Vec<i64>> {
    match n.attrs.get(name) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        _ => None,
    }
}

/// String attribute or `default`.
pub(crate) fn string<'a>(n: &'a Node, name: &str, default: &'a str) -> &'a str {
    match n.attrs.get(name) {
        Some(Attr::Str(v)) => v.as_str(),
        _ => default,
    }
}

/// Tensor attribute, if present.
pub(crate) fn tensor<'a>(n: &'a Node, name: &str) -> Option<&'a HostTensor> {
    match n.attrs.get(name) {
        Some(Attr::Tensor(t)) => Some(t),
        _ => None,
    }
}

/// A negative axis counted from the end, checked against `rank`.
pub(crate) fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    (0..r.max(1)).contains(&v).then_some(v as usize)
}
