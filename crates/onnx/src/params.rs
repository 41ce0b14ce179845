//! Which initializers are trainable parameters: the float tensors that feed a parameter slot
//! (Conv/Gemm weight and bias, the constant operand of a MatMul, BatchNormalization and
//! LayerNormalization scale and bias, a table a Gather reads, a tensor added to activations),
//! looking through Transpose/Identity/Cast of an initializer. Batch norm statistics and shape
//! constants are not parameters. `--trainable REGEX` replaces the rule.

use std::collections::{BTreeSet, HashMap};

use crate::error::{OnnxError, Result};
use crate::graph::{Graph, Node};

/// Which parameter rule to apply.
#[derive(Debug, Clone, Default)]
pub enum Trainable {
    /// The rule above.
    #[default]
    Slots,
    /// Float initializers whose name matches the pattern (anchored nowhere: `search` semantics).
    Matching(String),
}

/// Initializer name behind `value` if `value` is an initializer, or the output of a chain of
/// Transpose/Identity/Cast nodes starting at one.
pub(crate) fn initializer_behind<'g>(
    g: &'g Graph,
    producers: &HashMap<&str, &'g Node>,
    value: &'g str,
) -> Option<&'g str> {
    let mut v = value;
    for _ in 0..8 {
        if g.initializers.contains_key(v) {
            return Some(v);
        }
        let n = producers.get(v)?;
        if !matches!(n.op.as_str(), "Transpose" | "Identity" | "Cast") {
            return None;
        }
        v = n.inputs.first()?.as_str();
    }
    None
}

/// Map from value name to the node producing it.
pub(crate) fn producers(g: &Graph) -> HashMap<&str, &Node> {
    let mut m = HashMap::new();
    for n in &g.nodes {
        for o in &n.outputs {
            m.insert(o.as_str(), n);
        }
    }
    m
}

/// The trainable parameters, in the file's initializer order.
pub fn trainable_parameters(g: &Graph, rule: &Trainable) -> Result<Vec<String>> {
    let float = |name: &str| g.initializers.get(name).is_some_and(|t| t.is_float() && t.numel() > 0);
    let chosen: BTreeSet<String> = match rule {
        Trainable::Matching(pattern) => {
            let re = regex_lite::Regex::new(pattern)
                .map_err(|e| OnnxError::Trainable { pattern: pattern.clone(), problem: e.to_string() })?;
            let set: BTreeSet<String> =
                g.initializer_order.iter().filter(|n| float(n) && re.is_match(n)).cloned().collect();
            if set.is_empty() {
                let some: Vec<&str> =
                    g.initializer_order.iter().filter(|n| float(n)).take(8).map(String::as_str).collect();
                return Err(OnnxError::Trainable {
                    pattern: pattern.clone(),
                    problem: format!("matches no float initializer (some of them: {some:?})"),
                });
            }
            set
        }
        Trainable::Slots => {
            let prod = producers(g);
            let mut set = BTreeSet::new();
            let is_const = |v: &str| initializer_behind(g, &prod, v).is_some();
            for n in &g.nodes {
                let slots: Vec<usize> = match n.op.as_str() {
                    "Conv" | "Gemm" | "BatchNormalization" | "LayerNormalization" => vec![1, 2],
                    "MatMul" => (0..2).filter(|&i| n.inputs.get(1 - i).is_some_and(|o| !is_const(o))).collect(),
                    "Gather" => vec![0],
                    // A tensor (not a scalar) added to activations: a learned offset such as a
                    // positional table.
                    "Add" | "Sub" => (0..2)
                        .filter(|&i| n.inputs.get(1 - i).is_some_and(|o| !is_const(o)))
                        .filter(|&i| {
                            n.inputs
                                .get(i)
                                .and_then(|v| initializer_behind(g, &prod, v))
                                .is_some_and(|name| g.initializers[name].numel() > 1)
                        })
                        .collect(),
                    _ => vec![],
                };
                for s in slots {
                    if let Some(name) = n.inputs.get(s).and_then(|v| initializer_behind(g, &prod, v)) {
                        if float(name) {
                            set.insert(name.to_string());
                        }
                    }
                }
            }
            set
        }
    };
    Ok(g.initializer_order.iter().filter(|n| chosen.contains(*n)).cloned().collect())
}
