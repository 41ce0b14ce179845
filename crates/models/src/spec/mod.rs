//! A network as a list of layers in PyTorch terms (`nn.Sequential`), its parameters under the
//! exact `state_dict()` keys, weight loading (safetensors, PyTorch `.pt`/`.pth`), and a plain
//! forward pass built from candle ops with the project's conventions ([`crate::ops`]).
//!
//! JSON form (type and argument names are PyTorch's constructor names; omitted arguments take
//! PyTorch's defaults; unknown arguments are an error):
//! ```json
//! {"input": [3, 32, 32],
//!  "layers": [{"type": "Conv2d", "in_channels": 3, "out_channels": 16, "kernel_size": 3,
//!              "stride": 2, "padding": 1},
//!             {"type": "BatchNorm2d", "num_features": 16},
//!             {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2},
//!             {"type": "Flatten"}, {"type": "Linear", "in_features": 1024, "out_features": 10}]}
//! ```
//! Layer `i`'s parameters are `{i}.weight`, `{i}.bias`; batch norm buffers `{i}.running_mean`,
//! `{i}.running_var` (and `{i}.num_batches_tracked`, accepted and ignored).

mod forward;
mod layer;
mod model;
mod preset;
mod shapes;
mod weights;

pub use forward::{channel_shape, layer_norm_hat};
pub use layer::{LayerSpec, Shape1, Size2};
pub use model::SpecModel;
pub use shapes::{ModelSpec, ParamSpec, TensorRole};
pub use weights::{read_weights, KeyMap};
