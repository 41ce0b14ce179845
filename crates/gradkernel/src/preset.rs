//! The paper's presets (`stiff_models::Model`: ReLU MLPs; conv/ReLU/max-pool stacks and a dense
//! head) as instances of the general description: `impl Network for Model` runs the model's own
//! `Var`s through the tapped layers of [`crate::nn`], so [`crate::gram`], [`crate::cross_gram`],
//! [`crate::per_example_gradients`] and [`crate::logit_jacobians`] on a `&Model` use the general
//! engine ([`crate::gram_net`] and friends) unless a specialised CPU kernel takes the call first
//! (see [`crate::gram`]).
//!
//! Each trainable layer is recorded under its checkpoint prefix (`layers.{i}`, `conv.{i}`,
//! `head`), so the per-layer Grams keep their names; parameters are `{prefix}.weight`,
//! `{prefix}.bias` in [`Model::vars`] order (the gradient column order).

use std::sync::Arc;
use std::time::Instant;

use candle::{Tensor, Var};
use stiff_models::ops::Window;
use stiff_models::{LayerKind, Model};

use crate::engine::{validate, Set};
use crate::general::{cross_gram_net, gram_net, per_example_gradients_net, Loss, Network};
use crate::{CrossGramResult, DeltaRoute, GradKernelError, GramOptions, GramResult, Result};

/// The same function as [`Model::forward`], built from the tapped layers: dense `x W^T + b`,
/// stride-1 convolutions with the model's padding, `relu'(0) = 0`, and max pooling that passes
/// the gradient to the first maximum of each window (floor mode).
impl Network for Model {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let mut a = x.clone();
        for l in self.layers() {
            let (w, b) = (l.weight.as_tensor(), l.bias.as_tensor());
            let z = match l.kind {
                LayerKind::Dense => {
                    if a.rank() > 2 {
                        a = a.flatten_from(1)?;
                    }
                    crate::nn::linear_forward(&l.name, &a, w, Some(b))?
                }
                LayerKind::Conv2d { kernel, padding, .. } => {
                    let win = Window {
                        kernel: (kernel, kernel),
                        stride: (1, 1),
                        padding: (padding, padding),
                        dilation: (1, 1),
                    };
                    crate::nn::conv2d_forward(&l.name, &a, w, Some(b), &win)?
                }
            };
            a = if l.relu { crate::nn::relu(&z)? } else { z };
            if let LayerKind::Conv2d { pool, .. } = l.kind {
                if pool > 1 {
                    a = crate::nn::max_pool2d(&a, pool, pool, 0)?;
                }
            }
        }
        Ok(a)
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        self.layers()
            .iter()
            .flat_map(|l| {
                let (wk, bk) = l.keys();
                [(wk, l.weight.clone()), (bk, l.bias.clone())]
            })
            .collect()
    }

    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.prepare_input(&x.to_device(self.device())?)?)
    }
}

/// Whether `opts` asks for the deprecated [`DeltaRoute::Manual`].
#[allow(deprecated)]
pub(crate) fn wants_manual(opts: &GramOptions) -> bool {
    opts.delta_route == DeltaRoute::Manual
}

/// The error for [`DeltaRoute::Manual`] where the hand-written backward does not run.
#[allow(deprecated)]
pub(crate) fn manual_unsupported(what: &str) -> GradKernelError {
    GradKernelError::Unsupported(format!(
        "{what}: DeltaRoute::Manual (deprecated) asks for the hand-written backward, which exists only in the CPU \
         dense kernel of `gram` (dense nets, CPU, f32/f64, cpu_fast_path, Method::Auto/Factorised, within the \
         memory budget); use DeltaRoute::Auto"
    ))
}

/// [`crate::gram`] through the general engine on a validated set (prepared inputs, u32 labels).
pub(crate) fn gram_general(model: &Model, set: &Set, opts: &GramOptions, start: Instant) -> Result<GramResult> {
    let r = gram_net(model, &set.x, &set.y, &Loss::CrossEntropy, opts)?;
    let forms = r.routes.iter().map(|u| (u.name.clone(), crate::general::layer_form(u.form))).collect();
    Ok(GramResult {
        k: r.k,
        per_layer: r.per_unit,
        norms: r.norms,
        loss_per_example: r.loss_per_example,
        seconds: start.elapsed().as_secs_f64(),
        forms,
        chunk: r.chunk,
    })
}

/// [`crate::cross_gram`]: validation with the model's class count, then the conv CPU kernel where
/// it applies, else the general engine.
pub(crate) fn cross_gram(
    model: &Model,
    x_a: &Tensor,
    y_a: &Tensor,
    x_b: &Tensor,
    y_b: &Tensor,
    opts: &GramOptions,
) -> Result<CrossGramResult> {
    let start = Instant::now();
    if crate::preset::wants_manual(opts) {
        return Err(manual_unsupported("cross_gram"));
    }
    let a = validate(model, x_a, Some(y_a), "cross_gram rows (set a)")?;
    let b = validate(model, x_b, Some(y_b), "cross_gram columns (set b)")?;
    if crate::conv_fast::applies(model, opts) {
        if let Some(r) = crate::conv_fast::try_cross(model, &a, &b, opts, start)? {
            return Ok(r);
        }
    }
    let mut r = cross_gram_net(model, &a.x, &a.y, &b.x, &b.y, &Loss::CrossEntropy, opts)?;
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// Per-example loss gradients `g_i = dL(f(x_i), y_i)/dW`, all parameters flattened in
/// [`Model::vars`] order (per layer: weight row-major, then bias): `(N, P)` on the model's device,
/// in f64 if the model is f64 or `opts.accumulate_f64`, else the model's dtype. Computed by the
/// general engine with every layer materialised (one batched forward and backward per chunk).
///
/// x: `(N, ...)`; y: integer labels `(N)`. Fails with [`GradKernelError::OverBudget`] when
/// `N * P` values exceed `opts.memory_budget_bytes`.
pub fn per_example_gradients(model: &Model, x: &Tensor, y: &Tensor, opts: &GramOptions) -> Result<Tensor> {
    if crate::preset::wants_manual(opts) {
        return Err(manual_unsupported("per_example_gradients"));
    }
    let set = validate(model, x, Some(y), "per_example_gradients inputs")?;
    per_example_gradients_net(model, &set.x, &set.y, &Loss::CrossEntropy, opts)
}

/// Per-example Jacobians of the logits, `J[i, c, :] = d logit_c(x_i) / dW` in [`Model::vars`]
/// order: `(N, C, P)`, dtype as in [`per_example_gradients`]. One general-engine pass per class
/// with the per-example "loss" `logit_c`. Meant for small models: fails with
/// [`GradKernelError::OverBudget`] when `N * C * P` values exceed the memory budget.
pub fn logit_jacobians(model: &Model, x: &Tensor, opts: &GramOptions) -> Result<Tensor> {
    if crate::preset::wants_manual(opts) {
        return Err(manual_unsupported("logit_jacobians"));
    }
    let set = validate(model, x, None, "logit_jacobians inputs")?;
    let acc = crate::engine::acc_dtype(model, opts);
    let classes = model.config().num_classes;
    let p = model.num_params();
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
        per_class.push(per_example_gradients_net(model, &set.x, &set.y, &logit_c, &per_class_opts)?);
    }
    Ok(Tensor::stack(&per_class, 1)?)
}
