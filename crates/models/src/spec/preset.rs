//! The presets (`ModelConfig`) written as specs, and a preset model viewed as a spec model.

use std::collections::HashMap;

use super::layer::{LayerSpec, Size2};
use super::model::SpecModel;
use super::shapes::ModelSpec;
use super::weights::KeyMap;
use crate::Result;

impl crate::ModelConfig {
    /// This configuration as an `nn.Sequential` spec, plus the key map from the checkpoint keys of
    /// [`crate::Model`] (`layers.{i}`, `conv.{i}`, `head`) to the spec's indices. MLP:
    /// `Flatten, (Linear, ReLU)*, Linear`; CNN: `(Conv2d same-padded, ReLU, MaxPool2d)*, Flatten, Linear`.
    pub fn to_spec(&self) -> Result<(ModelSpec, KeyMap)> {
        self.validate()?;
        let inp = self.input;
        let mut layers = Vec::new();
        let mut rename = HashMap::new();
        let mut alias = |from: &str, to: usize| {
            for f in ["weight", "bias"] {
                rename.insert(format!("{from}.{f}"), format!("{to}.{f}"));
            }
        };
        let input;
        match &self.arch {
            crate::ArchSpec::Mlp { hidden } => {
                input = vec![inp.numel()];
                layers.push(LayerSpec::Flatten { start_dim: 1, end_dim: -1 });
                let mut d = inp.numel();
                for (i, &h) in hidden.iter().enumerate() {
                    alias(&format!("layers.{i}"), layers.len());
                    layers.push(LayerSpec::Linear { in_features: d, out_features: h, bias: true });
                    layers.push(LayerSpec::ReLU { inplace: false });
                    d = h;
                }
                alias(&format!("layers.{}", hidden.len()), layers.len());
                layers.push(LayerSpec::Linear { in_features: d, out_features: self.num_classes, bias: true });
            }
            crate::ArchSpec::Cnn { channels, kernel, pool } => {
                input = vec![inp.channels, inp.height, inp.width];
                let (mut c, mut h, mut w) = (inp.channels, inp.height, inp.width);
                for (i, &co) in channels.iter().enumerate() {
                    alias(&format!("conv.{i}"), layers.len());
                    layers.push(LayerSpec::Conv2d {
                        in_channels: c,
                        out_channels: co,
                        kernel_size: Size2::One(*kernel),
                        stride: Size2::One(1),
                        padding: Size2::One(kernel / 2),
                        dilation: Size2::One(1),
                        groups: 1,
                        bias: true,
                    });
                    layers.push(LayerSpec::ReLU { inplace: false });
                    layers.push(LayerSpec::MaxPool2d {
                        kernel_size: Size2::One(*pool),
                        stride: None,
                        padding: Size2::One(0),
                        dilation: Size2::One(1),
                        ceil_mode: false,
                    });
                    c = co;
                    h /= pool;
                    w /= pool;
                }
                layers.push(LayerSpec::Flatten { start_dim: 1, end_dim: -1 });
                alias("head", layers.len());
                layers.push(LayerSpec::Linear { in_features: c * h * w, out_features: self.num_classes, bias: true });
            }
        }
        Ok((ModelSpec { input, layers }, KeyMap { rename }))
    }
}

impl crate::Model {
    /// The same network as a [`SpecModel`] whose parameters are this model's own `Var`s (shared
    /// storage, not copies), keyed by the spec's indices.
    pub fn to_spec_model(&self) -> Result<SpecModel> {
        let (spec, keys) = self.config().to_spec()?;
        let mut params = Vec::new();
        for l in self.layers() {
            let (wk, bk) = l.keys();
            params.push((keys.apply(&wk), l.weight.clone()));
            params.push((keys.apply(&bk), l.bias.clone()));
        }
        Ok(SpecModel { spec, params, buffers: HashMap::new() })
    }
}
