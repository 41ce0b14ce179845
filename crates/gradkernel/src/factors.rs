//! How a preset layer's contribution reached the Gram ([`crate::GramResult::forms`]).

use serde::{Deserialize, Serialize};

/// How one layer's contribution to the Gram is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerForm {
    /// Dense: `(D_a D_b^T) o (A_a A_b^T + 1)`.
    DenseFactorised,
    /// Conv, pairwise "ghost" form: `sum_{s,t} (D_i^T D_j)[s,t] ((U_i^T U_j)[s,t] + 1)` with `U` the
    /// unfolded input patches and `D` the deltas, both `(positions, features)` per example.
    ConvGhost,
    /// Per-example gradients `G: (n, P_layer)` (weights then bias) and `G_a G_b^T`.
    Materialised,
    /// Conv, CPU kernel (`conv_fast`): per-example gradient rows rebuilt per upper tile pair from
    /// the stored layer inputs and deltas, `G_a G_b^T` (upper triangle only).
    ConvTiles,
    /// Conv, CPU kernel (`conv_fast`): the ghost form with the patch Gram `U_i U_jᵀ` assembled
    /// from shifted entries of the input-pixel Gram `X_i X_jᵀ` (chosen where it needs fewer
    /// multiply-adds than gradient rows: small maps, many channels).
    ConvPixelGhost,
}
