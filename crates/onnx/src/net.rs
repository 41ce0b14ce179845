//! [`OnnxNet`]: an ONNX graph as a [`Network`] of the gradient kernel. Conv, BatchNormalization
//! and LayerNormalization nodes run as tapped layers, Gemm/MatMul nodes with a constant weight as
//! tapped dense layers (a following `Add` of a bias vector is fused into them), so those
//! parameters take the kernel's fast exact routes; the rest of the graph is plain candle ops
//! through which the deltas flow, and any parameter used elsewhere takes the exact fallback.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle::{DType, Device, Tensor, TensorId, Var};
use stiff_gradkernel::Network;

use crate::attrs;
use crate::error::{OnnxError, Result};
use crate::eval;
use crate::graph::Graph;
use crate::node_ctx::{self, Ctx};
use crate::params::{initializer_behind, producers, trainable_parameters, Trainable};
use crate::value::{host_to_tensor, Value};
use crate::weights::{apply_weights, check_finite};

/// How to build an [`OnnxNet`].
#[derive(Debug, Clone)]
pub struct OnnxOptions {
    /// Dtype of the computation (f32, or f64 for oracle-grade checks).
    pub dtype: DType,
    /// Device of the computation.
    pub device: Device,
    /// Which initializers are parameters.
    pub trainable: Trainable,
    /// Optional state dict (safetensors or `.pt`) replacing the graph's initializer values; every
    /// parameter must be in it by name with the same shape.
    pub weights: Option<PathBuf>,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        Self { dtype: DType::F32, device: Device::Cpu, trainable: Trainable::Slots, weights: None }
    }
}

/// One trainable parameter of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// Initializer name.
    pub name: String,
    /// Shape in the graph (per-example gradient columns follow it, row-major).
    pub shape: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Step {
    /// Evaluate a node; tapped layers inside record under `rec`.
    Eval { node: usize, rec: String },
    /// A tapped dense layer: `out = x W^T (+ b)` for a weight held `(out, in)`, `x W (+ b)` for one
    /// held `(in, out)` (`in_out`).
    Linear { node: usize, rec: String, x: String, w: usize, in_out: bool, b: Option<usize>, out: String },
}

/// An ONNX graph ready for the gradient kernel.
pub struct OnnxNet {
    graph: Graph,
    params: Vec<(String, Var)>,
    info: Vec<ParamInfo>,
    /// Every initializer's value by name (parameters as their `Var`s' tensors).
    fixed: HashMap<String, Value>,
    /// Tensor ids of the parameters (a constant bias stays off the tape).
    param_ids: HashSet<TensorId>,
    steps: Vec<Step>,
    dtype: DType,
    device: Device,
    input_dims: Vec<usize>,
    num_outputs: usize,
}

impl std::fmt::Debug for OnnxNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxNet").field("path", &self.graph.path).field("params", &self.info.len()).finish()
    }
}

fn stem(name: &str) -> String {
    name.strip_suffix(".weight").unwrap_or(name).to_string()
}

impl OnnxNet {
    /// Reads the model at `path` and prepares it: checks every op, picks the parameters, applies
    /// `--weights`, and runs the graph once on zeros to check shapes (before any real work).
    pub fn load(path: &Path, opts: &OnnxOptions) -> Result<OnnxNet> {
        let graph = Graph::load(path)?;
        Self::from_graph(graph, opts)
    }

    /// As [`OnnxNet::load`], from a parsed graph.
    pub fn from_graph(mut graph: Graph, opts: &OnnxOptions) -> Result<OnnxNet> {
        crate::ops::check(&graph)?;
        let names = trainable_parameters(&graph, &opts.trainable)?;
        if let Some(w) = &opts.weights {
            apply_weights(&mut graph, &names, w)?;
        }
        check_finite(&graph, &names)?;
        let steps = plan_steps(&graph, &names);
        let (dtype, device) = (opts.dtype, opts.device.clone());
        let mut params = Vec::new();
        let mut info = Vec::new();
        for name in &names {
            let h = &graph.initializers[name];
            params.push((name.clone(), Var::from_tensor(&host_to_tensor(h, dtype, &device)?)?));
            info.push(ParamInfo { name: name.clone(), shape: h.dims.clone() });
        }
        let mut fixed: HashMap<String, Value> =
            params.iter().map(|(k, v)| (k.clone(), Value::F(v.as_tensor().clone()))).collect();
        for (k, h) in &graph.initializers {
            if !fixed.contains_key(k) {
                let v = if h.is_float() { Value::F(host_to_tensor(h, dtype, &device)?) } else { Value::H(h.clone()) };
                fixed.insert(k.clone(), v);
            }
        }
        let param_ids = params.iter().map(|(_, v)| v.as_tensor().id()).collect();
        let input_dims: Vec<usize> = graph
            .input
            .1
            .iter()
            .skip(1)
            .enumerate()
            .map(|(i, d)| {
                d.ok_or_else(|| OnnxError::Model {
                    path: graph.path.clone(),
                    problem: format!("input dimension {} is symbolic; only the batch dimension may be", i + 1),
                })
            })
            .collect::<Result<_>>()?;
        let mut net =
            OnnxNet { graph, params, info, fixed, param_ids, steps, dtype, device, input_dims, num_outputs: 0 };
        // A dry run on two zero examples: shapes, attribute values and the output width, checked
        // before the caller's real work.
        let mut shape = vec![2];
        shape.extend_from_slice(&net.input_dims);
        let z = Tensor::zeros(shape, dtype, &net.device)?;
        let y = net.run(&z).map_err(|e| OnnxError::Model {
            path: net.graph.path.clone(),
            problem: format!("dry run on zeros: {e}"),
        })?;
        if y.rank() != 2 || y.dim(0)? != 2 {
            return Err(OnnxError::Model {
                path: net.graph.path.clone(),
                problem: format!("the output must be logits (batch, classes); a batch of 2 gives {:?}", y.dims()),
            });
        }
        net.num_outputs = y.dim(1)?;
        Ok(net)
    }

    /// The trainable parameters, in gradient-column order.
    pub fn parameter_info(&self) -> &[ParamInfo] {
        &self.info
    }

    /// Width of the output (the class count for a classifier).
    pub fn num_outputs(&self) -> usize {
        self.num_outputs
    }

    /// Shape of one example (without the batch dimension).
    pub fn input_shape(&self) -> &[usize] {
        &self.input_dims
    }

    /// The parsed graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Hidden representations of `x` (prepared inputs), flattened per example and detached: the
    /// inputs of every dense and conv layer after the first, in forward order (the spaces the
    /// distance curves of `stiff measure` use for the presets too).
    pub fn representations(&self, x: &Tensor) -> candle::Result<Vec<Tensor>> {
        let mut reps = Vec::new();
        self.run_capture(x, Some(&mut reps))?;
        if !reps.is_empty() {
            reps.remove(0);
        }
        reps.iter().map(|t| t.flatten_from(1).map(|t| t.detach())).collect()
    }

    /// SHA-256 (hex) of what determines the network's function: the model file's bytes (hashed
    /// when it was read) and every initializer's name, shape and values as loaded (external data
    /// and `--weights` included), and the parameter names. Resumable jobs compare it, not paths.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.graph.file_sha256);
        for name in &self.graph.initializer_order {
            let t = &self.graph.initializers[name];
            h.update(name.as_bytes());
            h.update(format!("{:?}", t.dims).as_bytes());
            match &t.data {
                crate::graph::HostData::Float(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
                crate::graph::HostData::Int(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            }
        }
        for p in &self.info {
            h.update(p.name.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }

    fn run(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.run_capture(x, None)
    }

    fn run_capture(&self, x: &Tensor, mut capture: Option<&mut Vec<Tensor>>) -> candle::Result<Tensor> {
        let c = Ctx { dtype: self.dtype, dev: &self.device, params: &self.param_ids };
        // Values computed in this pass; initializers are read from `fixed`.
        let mut env: HashMap<&str, Value> = HashMap::new();
        env.insert(self.graph.input.0.as_str(), Value::F(x.clone()));
        let get = |env: &HashMap<&str, Value>, name: &str| env.get(name).or_else(|| self.fixed.get(name)).cloned();
        for s in &self.steps {
            match s {
                Step::Eval { node, rec } => {
                    let n = &self.graph.nodes[*node];
                    let ins: Vec<Option<Value>> =
                        n.inputs.iter().map(|i| if i.is_empty() { None } else { get(&env, i) }).collect();
                    for (i, v) in n.inputs.iter().zip(&ins) {
                        if !i.is_empty() && v.is_none() {
                            return Err(node_ctx::msg(n, format!("input `{i}` is not computed before this node")));
                        }
                    }
                    if let (Some(cap), "Conv") = (capture.as_deref_mut(), n.op.as_str()) {
                        if let Some(Some(Value::F(t))) = ins.first() {
                            cap.push(t.clone());
                        }
                    }
                    let outs = eval::eval(n, rec, &ins, &c)?;
                    for (name, v) in n.outputs.iter().zip(outs) {
                        env.insert(name.as_str(), v);
                    }
                }
                Step::Linear { node, rec, x, w, in_out, b, out } => {
                    let n = &self.graph.nodes[*node];
                    let xv = get(&env, x).ok_or_else(|| node_ctx::msg(n, format!("input `{x}` missing")))?;
                    let xt = xv.tensor(self.dtype, &self.device)?;
                    if let Some(cap) = capture.as_deref_mut() {
                        cap.push(xt.clone());
                    }
                    let wt = self.params[*w].1.as_tensor();
                    let bt = b.map(|b| self.params[b].1.as_tensor().clone());
                    let y = if *in_out {
                        stiff_gradkernel::nn::linear_t_forward(rec, &xt, wt, bt.as_ref())?
                    } else {
                        stiff_gradkernel::nn::linear_forward(rec, &xt, wt, bt.as_ref())?
                    };
                    env.insert(out.as_str(), Value::F(y));
                }
            }
        }
        match env.remove(self.graph.output.as_str()).or_else(|| self.fixed.get(&self.graph.output).cloned()) {
            Some(v) => v.tensor(self.dtype, &self.device),
            None => Err(candle::Error::Msg(format!("the graph output `{}` was not computed", self.graph.output))),
        }
    }
}

/// The evaluation steps: live nodes only, dense layers with a constant weight as tapped linear
/// steps (with a following bias `Add` fused).
fn plan_steps(g: &Graph, params: &[String]) -> Vec<Step> {
    let index: HashMap<&str, usize> = params.iter().enumerate().map(|(i, p)| (p.as_str(), i)).collect();
    let prod = producers(g);
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for v in &n.inputs {
            consumers.entry(v.as_str()).or_default().push(i);
        }
    }
    // Dense layers with a parameter weight, a Gemm's bias or a following bias Add fused in.
    let mut linear: HashMap<usize, Step> = HashMap::new();
    let mut fused_adds: HashSet<usize> = HashSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let (gemm, mm) = (n.op == "Gemm", n.op == "MatMul");
        if !(gemm || mm) || n.inputs.len() < 2 {
            continue;
        }
        if gemm
            && (attrs::int(n, "transA", 0) != 0
                || attrs::float(n, "alpha", 1.0) != 1.0
                || attrs::float(n, "beta", 1.0) != 1.0)
        {
            continue;
        }
        let b_val = n.inputs[1].as_str();
        let Some(p) = initializer_behind(g, &prod, b_val).and_then(|p| index.get(p).copied()) else { continue };
        let direct = b_val == params[p];
        let via_transpose = !direct
            && prod.get(b_val).is_some_and(|t| {
                t.op == "Transpose"
                    && t.inputs[0] == params[p]
                    && attrs::ints(t, "perm").is_none_or(|perm| perm == [1, 0])
            });
        if (!direct && !via_transpose) || g.initializers[&params[p]].dims.len() != 2 {
            continue;
        }
        // Graph operand B is (in, out) unless transposed once (Gemm transB, or a Transpose node).
        let trans_b = gemm && attrs::int(n, "transB", 0) != 0;
        let b_is_out_in = trans_b != via_transpose;
        let out_dim = g.initializers[&params[p]].dims[if b_is_out_in { 0 } else { 1 }];
        let bias_ok = |name: &str| index.get(name).copied().filter(|&bi| g.initializers[&params[bi]].dims == [out_dim]);
        let mut out = n.outputs[0].clone();
        let b = if gemm {
            match n.inputs.get(2).filter(|s| !s.is_empty()) {
                Some(c) => match bias_ok(c) {
                    Some(bi) => Some(bi),
                    None => continue,
                },
                None => None,
            }
        } else {
            // A MatMul whose only consumer adds a bias vector: the Add is part of the layer.
            let add = match consumers.get(out.as_str()).map(Vec::as_slice) {
                Some([a]) if out != g.output => Some((*a, &g.nodes[*a])),
                _ => None,
            };
            match add.filter(|(_, add)| add.op == "Add" && add.inputs.len() == 2) {
                Some((a, add)) => {
                    let bi = add.inputs.iter().find(|v| **v != out).and_then(|o| bias_ok(o));
                    if bi.is_some() {
                        out = add.outputs[0].clone();
                        fused_adds.insert(a);
                    }
                    bi
                }
                None => None,
            }
        };
        let step =
            Step::Linear { node: i, rec: stem(&params[p]), x: n.inputs[0].clone(), w: p, in_out: !b_is_out_in, b, out };
        linear.insert(i, step);
    }
    // Steps in graph order, then keep only those the output needs.
    let mut steps = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if fused_adds.contains(&i) {
            continue;
        }
        if let Some(s) = linear.remove(&i) {
            steps.push(s);
            continue;
        }
        let rec = match n.op.as_str() {
            "Conv" | "BatchNormalization" | "LayerNormalization" => {
                n.inputs.get(1).filter(|v| g.initializers.contains_key(*v)).map(|v| stem(v)).unwrap_or(n.name.clone())
            }
            _ => n.name.clone(),
        };
        steps.push(Step::Eval { node: i, rec });
    }
    let mut needed: HashSet<String> = HashSet::from([g.output.clone()]);
    let mut live = vec![false; steps.len()];
    for (k, s) in steps.iter().enumerate().rev() {
        let (outs, ins): (Vec<&String>, Vec<&String>) = match s {
            Step::Eval { node, .. } => {
                (g.nodes[*node].outputs.iter().collect(), g.nodes[*node].inputs.iter().collect())
            }
            Step::Linear { out, x, .. } => (vec![out], vec![x]),
        };
        if outs.iter().any(|o| needed.contains(*o)) {
            live[k] = true;
            needed.extend(ins.into_iter().cloned());
        }
    }
    steps.into_iter().zip(live).filter(|(_, l)| *l).map(|(s, _)| s).collect()
}

impl Network for OnnxNet {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        self.run(x)
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        self.params.clone()
    }
    fn prepare(&self, x: &Tensor) -> stiff_gradkernel::Result<Tensor> {
        let d = x.dims();
        if d.len() != self.input_dims.len() + 1 || d[1..] != self.input_dims[..] {
            return Err(stiff_gradkernel::GradKernelError::Unsupported(format!(
                "inputs of shape {d:?} do not fit the graph input `{}` (batch, {:?})",
                self.graph.input.0, self.input_dims
            )));
        }
        Ok(x.to_device(&self.device)?.to_dtype(self.dtype)?)
    }
}
