//! The front door: the Gram, cross Gram, per-example gradients and logit Jacobians of any
//! [`Network`] (a preset `Model`, a spec model, a user's candle module). Every call goes through
//! the one dispatch in [`crate::engine`]; the `_net` forms take any [`Loss`], the short forms
//! cross-entropy.

use std::sync::Arc;

use candle::{Tensor, Var};

use crate::engine;
use crate::error::{GradKernelError, Result};
use crate::general::{per_example_gradients_net, prepare};
use crate::loss::Loss;
use crate::network::{is_buffer_name, Network};
use crate::options::GramOptions;
use crate::result::{CrossGramResult, GramResult};

/// The Gram matrix `K[i,j] = g_i . g_j` of per-example cross-entropy gradients of `net` on
/// `(x, y)`, over all its parameters: the memory check, then the specialised CPU kernels where
/// the network is a chain they cover, else the general engine (see the crate docs).
///
/// x: `(N, ...)` in any shape [`Network::prepare`] accepts; y: integer labels `(N)` (u8, u32 or
/// i64) in `0..classes`.
pub fn gram<N: Network + ?Sized>(net: &N, x: &Tensor, y: &Tensor, opts: &GramOptions) -> Result<GramResult> {
    engine::gram(net, x, y, &Loss::CrossEntropy, opts)
}

/// [`gram`] with any per-example loss. targets: labels `(N)` or float `(N, ...)` per `loss`.
/// The CPU kernels take cross-entropy only; other losses run the general engine.
pub fn gram_net<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    targets: &Tensor,
    loss: &Loss,
    opts: &GramOptions,
) -> Result<GramResult> {
    engine::gram(net, x, targets, loss, opts)
}

/// The `(N, M)` Gram between two example sets (e.g. validation rows, training columns), through
/// the same routes as [`gram`]. x_a: `(N, ...)`, y_a: `(N)`, x_b: `(M, ...)`, y_b: `(M)`.
pub fn cross_gram<N: Network + ?Sized>(
    net: &N,
    x_a: &Tensor,
    y_a: &Tensor,
    x_b: &Tensor,
    y_b: &Tensor,
    opts: &GramOptions,
) -> Result<CrossGramResult> {
    engine::cross(net, (x_a, y_a), (x_b, y_b), &Loss::CrossEntropy, opts)
}

/// [`cross_gram`] with any per-example loss.
pub fn cross_gram_net<N: Network + ?Sized>(
    net: &N,
    x_a: &Tensor,
    t_a: &Tensor,
    x_b: &Tensor,
    t_b: &Tensor,
    loss: &Loss,
    opts: &GramOptions,
) -> Result<CrossGramResult> {
    engine::cross(net, (x_a, t_a), (x_b, t_b), loss, opts)
}

/// Per-example loss gradients `g_i = dL(f(x_i), y_i)/dW`, all parameters flattened in
/// [`Network::parameters`] order (per parameter row-major; for a preset: per layer weight then
/// bias): `(N, P)` on the network's device, in f64 if the network is f64 or
/// `opts.accumulate_f64`, else its dtype. Computed by the general engine with every layer
/// materialised (one batched forward and backward per chunk).
///
/// x: `(N, ...)`; y: integer labels `(N)`. Fails with [`GradKernelError::OverBudget`] when
/// `N * P` values exceed `opts.memory_budget_bytes`.
pub fn per_example_gradients<N: Network + ?Sized>(
    net: &N,
    x: &Tensor,
    y: &Tensor,
    opts: &GramOptions,
) -> Result<Tensor> {
    if engine::wants_manual(opts) {
        return Err(engine::manual_unsupported("per_example_gradients"));
    }
    per_example_gradients_net(net, x, y, &Loss::CrossEntropy, opts)
}

/// Per-example Jacobians of the outputs, `J[i, c, :] = d f_c(x_i) / dW` in
/// [`Network::parameters`] order: `(N, C, P)`, dtype as in [`per_example_gradients`]. One
/// general-engine pass per output with the per-example "loss" `f_c`. Meant for small models:
/// fails with [`GradKernelError::OverBudget`] when `N * C * P` values exceed the memory budget.
pub fn logit_jacobians<N: Network + ?Sized>(net: &N, x: &Tensor, opts: &GramOptions) -> Result<Tensor> {
    if engine::wants_manual(opts) {
        return Err(engine::manual_unsupported("logit_jacobians"));
    }
    // The output width comes from `prepare`'s one-example forward; the targets are unused.
    let n = x.dims().first().copied().unwrap_or(0);
    let dummy = Tensor::zeros(n, candle::DType::U32, x.device())?;
    let any = Loss::PerExample(Arc::new(|out: &Tensor, _t: &Tensor| out.flatten_from(1)?.sum(1)));
    let set = prepare(net, x, &dummy, &any, "logit_jacobians inputs")?;
    let &[_, classes] = set.out_dims.as_slice() else {
        return Err(GradKernelError::Shape {
            what: "logit_jacobians outputs",
            expected: "(N, classes)".into(),
            got: set.out_dims.clone(),
        });
    };
    let params: Vec<(String, Var)> = net.parameters().into_iter().filter(|(k, _)| !is_buffer_name(k)).collect();
    let p: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    let acc = crate::inputs::acc_dtype(params.first().map_or(candle::DType::F32, |(_, v)| v.dtype()), opts);
    let output = set.n.saturating_mul(classes).saturating_mul(p).saturating_mul(acc.size_in_bytes());
    if output > opts.memory_budget_bytes {
        return Err(GradKernelError::OverBudget {
            what: format!("logit Jacobians ({} x {} x {})", set.n, classes, p),
            needed: output,
            budget: opts.memory_budget_bytes,
        });
    }
    // The output is held while each class is computed: the rest of the budget is the working room.
    let mut per_class_opts = opts.clone();
    per_class_opts.memory_budget_bytes = opts.memory_budget_bytes - output / classes.max(1) * (classes - 1);
    let mut per_class = Vec::with_capacity(classes);
    for c in 0..classes {
        let logit_c = Loss::PerExample(Arc::new(move |out: &Tensor, _t: &Tensor| out.narrow(1, c, 1)?.squeeze(1)));
        per_class.push(per_example_gradients_net(net, &set.x, &set.t, &logit_c, &per_class_opts)?);
    }
    Ok(Tensor::stack(&per_class, 1)?)
}
