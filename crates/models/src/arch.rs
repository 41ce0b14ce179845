use serde::{Deserialize, Serialize};
use std::str::FromStr;

use crate::{ModelError, Result};

/// Shape of one input example: channels, height, width (MNIST: 1x28x28, CIFAR: 3x32x32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    /// Input channels (1 for MNIST, 3 for CIFAR).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

impl InputShape {
    /// The shape `channels x height x width`.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self { channels, height, width }
    }
    /// Number of input features when flattened (`C*H*W`).
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// The layer structure of a net, independent of input size and class count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ArchSpec {
    /// Fully-connected ReLU net: flatten, then `hidden` widths, then a linear layer to the logits.
    Mlp {
        /// Widths of the hidden layers, input side first (fc6: `[500, 300, 100, 100, 100]`).
        hidden: Vec<usize>,
    },
    /// Conv net without batch norm: per entry of `channels`, a `kernel`x`kernel` conv (stride 1,
    /// "same" padding `kernel/2`), ReLU, `pool`x`pool` max pooling (stride = kernel, as candle's
    /// max-pool backward requires); then flatten and one linear layer to the logits.
    Cnn {
        /// Output channels of each conv layer, input side first (cnn5: `[32, 64, 128, 256]`).
        channels: Vec<usize>,
        /// Side of the square conv kernel (odd; the presets use 3).
        kernel: usize,
        /// Side and stride of the square max-pooling window after each conv (presets: 2).
        pool: usize,
    },
}

/// The paper's architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// 784-500-300-100-100-100-10: our reading of v1's "6 layer network" (an assumption).
    Fc6,
    /// 784-500-300-100-10, as in v3.
    Fc4,
    /// v1's CNN: four 3x3 convs with 32, 64, 128, 256 channels, each followed by 2x2 max pooling, then one FC layer.
    Cnn5,
    /// v3's CNN: three 3x3 convs with 16, 32, 32 channels, 2x2 max pooling, then one FC layer.
    Cnn4,
}

impl Preset {
    /// Every preset, in the order of [`Preset::name`]'s list (fc6, fc4, cnn5, cnn4).
    pub const ALL: [Preset; 4] = [Preset::Fc6, Preset::Fc4, Preset::Cnn5, Preset::Cnn4];

    /// The preset's layer structure.
    pub fn arch(self) -> ArchSpec {
        match self {
            Preset::Fc6 => ArchSpec::Mlp { hidden: vec![500, 300, 100, 100, 100] },
            Preset::Fc4 => ArchSpec::Mlp { hidden: vec![500, 300, 100] },
            Preset::Cnn5 => ArchSpec::Cnn { channels: vec![32, 64, 128, 256], kernel: 3, pool: 2 },
            Preset::Cnn4 => ArchSpec::Cnn { channels: vec![16, 32, 32], kernel: 3, pool: 2 },
        }
    }

    /// The preset's name on the command line and in run ids (`fc6`, `fc4`, `cnn5`, `cnn4`).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Fc6 => "fc6",
            Preset::Fc4 => "fc4",
            Preset::Cnn5 => "cnn5",
            Preset::Cnn4 => "cnn4",
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s.to_ascii_lowercase())
            .ok_or_else(|| ModelError::UnknownPreset(s.to_string()))
    }
}

/// A complete description of a model: architecture, input shape and number of classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The layer structure.
    pub arch: ArchSpec,
    /// Shape of one input example.
    pub input: InputShape,
    /// Number of classes (outputs of the last layer).
    pub num_classes: usize,
}

impl ModelConfig {
    /// A configuration from its parts; checked by [`crate::Model::new`], not here.
    pub fn new(arch: ArchSpec, input: InputShape, num_classes: usize) -> Self {
        Self { arch, input, num_classes }
    }

    /// A preset's layers for the given input shape and class count.
    pub fn preset(preset: Preset, input: InputShape, num_classes: usize) -> Self {
        Self::new(preset.arch(), input, num_classes)
    }

    /// Parameter and activation counts of every layer computed with overflow checks; the total
    /// parameter count must also fit. `numel`: the (already checked) input size.
    fn check_sizes(&self, numel: usize) -> std::result::Result<(), String> {
        let too_big = |what: String| format!("{what} is too large (its size overflows {} bits)", usize::BITS);
        let mut total: usize = 0;
        let mut add = |what: String, n: Option<usize>| -> std::result::Result<(), String> {
            let n = n.ok_or_else(|| too_big(what.clone()))?;
            total = total.checked_add(n).ok_or_else(|| too_big("the total parameter count".into()))?;
            Ok(())
        };
        let dense = |inp: usize, out: usize| inp.checked_mul(out).and_then(|w| w.checked_add(out));
        match &self.arch {
            ArchSpec::Mlp { hidden } => {
                let mut prev = numel;
                for (l, &h) in hidden.iter().enumerate() {
                    add(format!("hidden layer {l} ({prev} -> {h})"), dense(prev, h))?;
                    prev = h;
                }
                add(format!("the output layer ({prev} -> {})", self.num_classes), dense(prev, self.num_classes))?;
            }
            ArchSpec::Cnn { channels, kernel, pool } => {
                let kk = kernel.checked_mul(*kernel).ok_or_else(|| too_big(format!("kernel {kernel}")))?;
                let (mut c, mut h, mut w) = (self.input.channels, self.input.height, self.input.width);
                for (l, &co) in channels.iter().enumerate() {
                    let p = c.checked_mul(co).and_then(|x| x.checked_mul(kk)).and_then(|x| x.checked_add(co));
                    add(format!("conv layer {l} ({c} -> {co} channels)"), p)?;
                    co.checked_mul(h)
                        .and_then(|x| x.checked_mul(w))
                        .ok_or_else(|| too_big(format!("conv layer {l}'s output ({co}x{h}x{w})")))?;
                    c = co;
                    h /= (*pool).max(1);
                    w /= (*pool).max(1);
                }
                let flat = c
                    .checked_mul(h)
                    .and_then(|x| x.checked_mul(w))
                    .ok_or_else(|| too_big("the flattened conv output".into()))?;
                add(format!("the output layer ({flat} -> {})", self.num_classes), dense(flat, self.num_classes))?;
            }
        }
        Ok(())
    }

    /// Checks that every layer has a positive size and the conv stack does not shrink the image to nothing.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        // Sizes come from user files: multiply with checks so a huge value is reported as too
        // large instead of wrapping around (to zero, in release builds).
        let i = &self.input;
        let Some(numel) = i.channels.checked_mul(i.height).and_then(|x| x.checked_mul(i.width)) else {
            return bad(format!(
                "input shape {}x{}x{} is too large (its size overflows {} bits)",
                i.channels,
                i.height,
                i.width,
                usize::BITS
            ));
        };
        if let Err(m) = self.check_sizes(numel) {
            return bad(m);
        }
        if self.input.numel() == 0 {
            return bad(format!("input shape {:?} has a zero dimension", self.input));
        }
        if self.num_classes < 2 {
            return bad(format!("num_classes must be at least 2, got {}", self.num_classes));
        }
        match &self.arch {
            ArchSpec::Mlp { hidden } => {
                if hidden.contains(&0) {
                    return bad(format!("hidden widths must be positive, got {hidden:?}"));
                }
            }
            ArchSpec::Cnn { channels, kernel, pool } => {
                if channels.is_empty() || channels.contains(&0) {
                    return bad(format!("conv channels must be non-empty and positive, got {channels:?}"));
                }
                if *kernel == 0 || kernel % 2 == 0 {
                    return bad(format!("conv kernel must be odd (same padding), got {kernel}"));
                }
                if *pool == 0 {
                    return bad("pool size must be positive".into());
                }
                let (mut h, mut w) = (self.input.height, self.input.width);
                for (i, _) in channels.iter().enumerate() {
                    h /= pool;
                    w /= pool;
                    if h == 0 || w == 0 {
                        return bad(format!(
                            "the image shrinks to nothing after pooling in conv layer {i} (input {}x{}, pool {pool})",
                            self.input.height, self.input.width
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
