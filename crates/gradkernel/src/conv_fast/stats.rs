//! What the conv kernel reports besides the Gram: pooling statistics and a per-layer time
//! breakdown.

use serde::Serialize;

use crate::routes::LayerForm;

/// Max pooling windows of one conv layer over a set of examples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Pooled windows (examples x channels x output positions).
    pub windows: u64,
    /// Windows whose maximum (after ReLU) is attained by two or more elements; the gradient goes
    /// to the first in row-major order.
    pub tied: u64,
    /// Tied windows whose maximum is positive: here the first-maximum convention decides which
    /// input receives the gradient.
    pub tied_live: u64,
    /// Windows whose maximum is 0 (every pre-activation `<= 0`): no gradient, `relu'(0) = 0`.
    pub zero: u64,
}

impl std::ops::Add for PoolStats {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            windows: self.windows + o.windows,
            tied: self.tied + o.tied,
            tied_live: self.tied_live + o.tied_live,
            zero: self.zero + o.zero,
        }
    }
}

/// Wall-clock seconds of one layer's share of the kernel.
#[derive(Debug, Clone, Serialize)]
pub struct LayerProfile {
    /// The layer's parameter prefix (`conv.0`, ..., `head`).
    pub name: String,
    /// im2col, `W U`, ReLU and pooling (the head: its gemm, loss and `softmax - onehot`).
    pub forward: f64,
    /// Scatter to the argmax, `Wᵀ D` and col2im (the head: `Wᵀ d`).
    pub backward: f64,
    /// Building the per-example gradient rows `G` of each tile (im2col and `D Uᵀ` again),
    /// including the first touch of fresh tile buffers.
    pub build: f64,
    /// The Gram products (`G_a G_bᵀ`; the head: `D Dᵀ`, `A Aᵀ` and their product).
    pub gram: f64,
    /// Pooling statistics (conv layers).
    pub pool: PoolStats,
    /// Examples per row tile of this layer's Gram (N when its whole `G` is built once); with the
    /// pixel-Gram route, examples per block.
    pub tile: usize,
    /// How the layer's Gram was computed ([`LayerForm::ConvTiles`], [`LayerForm::ConvPixelGhost`];
    /// the head: [`LayerForm::DenseFactorised`]).
    pub form: LayerForm,
}

/// Where the kernel's time went, per layer and in total.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConvProfile {
    /// Forward order, head last.
    pub layers: Vec<LayerProfile>,
    /// Host copies: weights and inputs into the kernel's dtype, mirroring `K`, tensors out.
    pub copies: f64,
    /// Everything, as [`GramResult::seconds`].
    pub total: f64,
}
