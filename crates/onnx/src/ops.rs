//! The supported operator set and the static checks every node passes before any computation:
//! an op outside the set, or attributes outside what the evaluator implements (a ceil-mode pool,
//! a training-mode batch norm, asymmetric padding), are errors naming the node and its position.

use crate::attrs;
use crate::error::{OnnxError, Result};
use crate::graph::{Graph, Node};

/// Op types of the default domain the evaluator runs.
pub const SUPPORTED: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "MatMul",
    "MaxPool",
    "Mul",
    "Neg",
    "Pow",
    "Range",
    "Reciprocal",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
];

fn node_err(pos: usize, n: &Node, problem: impl Into<String>) -> OnnxError {
    OnnxError::Node { position: pos, node: n.name.clone(), op: n.op.clone(), problem: problem.into() }
}

/// Symmetric 2-D pads `[top, left, bottom, right]` as `(rows, cols)`.
pub(crate) fn pads2(n: &Node) -> std::result::Result<(usize, usize), String> {
    let p = attrs::ints(n, "pads").unwrap_or_else(|| vec![0; 4]);
    match p.as_slice() {
        [t, l, b, r] if t == b && l == r && *t >= 0 && *l >= 0 => Ok((*t as usize, *l as usize)),
        _ => Err(format!("pads {p:?}: only symmetric 2-D padding [t, l, t, l] is supported")),
    }
}

/// A 2-D attribute pair (`strides`, `dilations`, `kernel_shape`) with a default.
pub(crate) fn pair(n: &Node, name: &str, default: usize) -> std::result::Result<(usize, usize), String> {
    match attrs::ints(n, name) {
        None => Ok((default, default)),
        Some(v) => match v.as_slice() {
            [a, b] if *a > 0 && *b > 0 => Ok((*a as usize, *b as usize)),
            _ => Err(format!("{name} {v:?}: only 2-D windows with positive sizes are supported")),
        },
    }
}

/// Checks every node of `g` against the supported set and attributes.
pub fn check(g: &Graph) -> Result<()> {
    for (pos, n) in g.nodes.iter().enumerate() {
        let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
        if !default_domain || !SUPPORTED.contains(&n.op.as_str()) {
            let op = if default_domain { n.op.clone() } else { format!("{}::{}", n.domain, n.op) };
            return Err(OnnxError::UnsupportedOp {
                path: g.path.clone(),
                op,
                node: n.name.clone(),
                position: pos,
                supported: SUPPORTED.join(", "),
            });
        }
        let e = |p: String| node_err(pos, n, p);
        match n.op.as_str() {
            "Conv" | "MaxPool" | "AveragePool" => {
                let ap = attrs::string(n, "auto_pad", "NOTSET");
                if ap != "NOTSET" && ap != "VALID" {
                    return Err(e(format!("auto_pad {ap} is not supported (re-export with explicit pads)")));
                }
                pads2(n).map_err(e)?;
                pair(n, "strides", 1).map_err(e)?;
                pair(n, "dilations", 1).map_err(e)?;
                if n.op != "Conv" {
                    pair(n, "kernel_shape", 1).map_err(e)?;
                    if attrs::int(n, "ceil_mode", 0) != 0 {
                        return Err(e("ceil_mode = 1 is not supported (floor mode only)".into()));
                    }
                }
                if n.op == "MaxPool" && n.outputs.get(1).is_some_and(|o| !o.is_empty()) {
                    return Err(e("the indices output of MaxPool is not supported".into()));
                }
            }
            "BatchNormalization"
                if attrs::int(n, "training_mode", 0) != 0 || n.outputs.iter().skip(1).any(|o| !o.is_empty()) =>
            {
                return Err(e("training-mode batch norm couples the examples; export the model in eval mode".into()));
            }
            "Gelu" => {
                let a = attrs::string(n, "approximate", "none");
                if a != "none" && a != "tanh" {
                    return Err(e(format!("approximate = {a}")));
                }
            }
            // Strings and complex numbers.
            "Cast" if matches!(attrs::int(n, "to", 1), 8 | 14 | 15) => {
                return Err(e(format!("cast to element type {} is not supported", attrs::int(n, "to", 1))));
            }
            _ => {}
        }
    }
    Ok(())
}
