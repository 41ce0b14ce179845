//! How each part of the network reached the Gram: one enum of routes ([`LayerForm`]) for every
//! engine and kernel, and the per-layer record of the result ([`Route`]).

use serde::{Deserialize, Serialize};

/// How one layer's (or unit's) contribution to the Gram is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerForm {
    /// Dense: `(D_a D_b^T) o (A_a A_b^T + 1)`.
    DenseFactorised,
    /// Pairwise "ghost" form over positions (a conv, or a dense layer applied at several
    /// positions): `sum_{s,t} (D_i^T D_j)[s,t] ((U_i^T U_j)[s,t] + 1)` with `U` the unfolded
    /// input patches (conv) or the inputs (dense) and `D` the deltas, `(positions, features)` per
    /// example.
    #[serde(alias = "conv_ghost")]
    Ghost,
    /// Per-example gradients `G: (n, P_layer)` (weights then bias), materialised per chunk, and
    /// `G_a G_b^T`.
    Materialised,
    /// Conv, CPU kernel (`conv_fast`): per-example gradient rows rebuilt per upper tile pair from
    /// the stored layer inputs and deltas, `G_a G_b^T` (upper triangle only).
    ConvTiles,
    /// Conv, CPU kernel (`conv_fast`): the ghost form with the patch Gram `U_i U_jᵀ` assembled
    /// from shifted entries of the input-pixel Gram `X_i X_jᵀ` (chosen where it needs fewer
    /// multiply-adds than gradient rows: small maps, many channels).
    ConvPixelGhost,
    /// Parameters used by several tapped calls (weight sharing): per-call gradients
    /// materialised and summed.
    Shared,
    /// Parameters no tapped layer covers: one autograd backward per example (exact, slow).
    Fallback,
}

/// One layer (or unit) of a result: its name (the layer's, `a+b` for layers sharing
/// parameters, or `fallback`), the parameters it covers and its route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// The layer's name, or `fallback`.
    pub name: String,
    /// Names of the parameters this unit covers.
    pub params: Vec<String>,
    /// How its Gram contribution was computed.
    pub form: LayerForm,
}

impl Route {
    /// A chain layer's route: its parameters are `{name}.weight` and `{name}.bias`.
    pub(crate) fn of_layer(name: &str, form: LayerForm) -> Self {
        Self { name: name.to_string(), params: vec![format!("{name}.weight"), format!("{name}.bias")], form }
    }
}
