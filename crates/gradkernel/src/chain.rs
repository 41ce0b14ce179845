//! A network seen as a plain chain of parameterised layers: what the hand-written CPU kernels
//! (`cpu_fast`, `conv_fast`) take. Any [`Network`](crate::Network) may describe itself this way
//! ([`Network::chain`](crate::Network::chain)); the presets and every spec model of the same
//! shape do, so a user's `nn.Sequential` gets the presets' kernels, not a slower path of its own.
//!
//! A chain layer is a `stiff_models::Layer`: dense `z = a Wᵀ + b`, or a stride-1 "same" conv
//! with bias, each optionally followed by ReLU (`relu'(0) = 0`) and, for a conv, non-overlapping
//! first-max pooling. Parameter names are `{layer name}.weight` / `{layer name}.bias`.

use candle::{DType, Device};
use stiff_models::{Layer, LayerKind, LayerSpec, SpecModel};

/// Device of a non-empty chain.
pub(crate) fn device(layers: &[Layer]) -> &Device {
    layers[0].weight.device()
}

/// Dtype of a non-empty chain.
pub(crate) fn dtype(layers: &[Layer]) -> DType {
    layers[0].weight.dtype()
}

/// Output width (classes) of a non-empty chain.
pub(crate) fn classes(layers: &[Layer]) -> usize {
    layers.last().map_or(0, |l| l.out_dims[0])
}

/// A spec model as a chain, when every layer is one the kernels know in an order they take:
/// Linear (with bias) on flat inputs, Conv2d (stride 1, dilation 1, odd square kernel,
/// padding `k/2`, bias) on `(C, H, W)`, a ReLU right after either, MaxPool2d with window =
/// stride and no padding right after a conv's ReLU, and Flatten, Identity and Dropout (eval:
/// identity) anywhere. The last layer must be dense without ReLU (the logits). `None` otherwise:
/// the general engine then takes the network, layer by layer.
pub(crate) fn of_spec(m: &SpecModel) -> Option<Vec<Layer>> {
    let spec = m.spec();
    let shapes = spec.shapes().ok()?;
    let mut cur = spec.input.clone();
    let mut out: Vec<Layer> = Vec::new();
    // Whether the last chain layer may still take a ReLU / a pooling window.
    let (mut open_relu, mut open_pool) = (false, false);
    for (i, l) in spec.layers.iter().enumerate() {
        let next = shapes[i].clone();
        // Layer `i` with its weight and bias, before its ReLU and pooling.
        let layer = |kind| {
            let (weight, bias) = (m.param(i, "weight")?.clone(), m.param(i, "bias")?.clone());
            Some(Layer {
                name: i.to_string(),
                kind,
                weight,
                bias,
                relu: false,
                in_dims: cur.clone(),
                out_dims: next.clone(),
            })
        };
        match l {
            LayerSpec::Linear { bias: true, in_features, .. } => {
                if cur != [*in_features] {
                    return None; // a Linear over positions: not a chain layer
                }
                out.push(layer(LayerKind::Dense)?);
                (open_relu, open_pool) = (true, false);
            }
            LayerSpec::Conv2d { bias: true, groups: 1, .. } => {
                let win = l.window()?;
                let (k, p) = (win.kernel.0, win.padding.0);
                let square = win.kernel.1 == k && win.padding.1 == p;
                if !square || win.stride != (1, 1) || win.dilation != (1, 1) || k != 2 * p + 1 || cur.len() != 3 {
                    return None;
                }
                out.push(layer(LayerKind::Conv2d { kernel: k, padding: p, pool: 1 })?);
                (open_relu, open_pool) = (true, false);
            }
            LayerSpec::ReLU { .. } => {
                let last = out.last_mut().filter(|_| open_relu)?;
                last.relu = true;
                open_relu = false;
                open_pool = matches!(last.kind, LayerKind::Conv2d { .. });
            }
            LayerSpec::MaxPool2d { .. } => {
                let win = l.window()?;
                let k = win.kernel.0;
                let plain =
                    win.kernel == (k, k) && win.stride == (k, k) && win.padding == (0, 0) && win.dilation == (1, 1);
                let last = out.last_mut().filter(|_| open_pool && plain)?;
                let LayerKind::Conv2d { kernel, padding, .. } = last.kind else { return None };
                last.kind = LayerKind::Conv2d { kernel, padding, pool: k };
                open_pool = false;
            }
            LayerSpec::Flatten { .. } | LayerSpec::Identity {} | LayerSpec::Dropout { .. } => {
                // Flatten changes only the per-example shape; the chain's next dense layer reads
                // the flattened map (checked by its `cur` above).
                if matches!(l, LayerSpec::Flatten { .. }) {
                    (open_relu, open_pool) = (false, false);
                }
            }
            _ => return None,
        }
        cur = next;
    }
    let last = out.last()?;
    (last.kind == LayerKind::Dense && !last.relu && cur.len() == 1).then_some(out)
}
