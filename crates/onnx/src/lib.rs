//! # stiff-onnx
//!
//! Any model exported to ONNX (`torch.onnx.export`, a JAX or TensorFlow exporter) as a
//! [`stiff_gradkernel::Network`]: ResNets with residual adds and batch norm, transformers with
//! attention, learned positions and layer norm. The exact per-example gradient Gram of such a
//! graph comes from the same front door as every other network (`stiff_gradkernel::gram`).
//!
//! * [`Graph::load`] reads the protobuf (message structs in [`proto`], no `protoc` needed),
//!   initializers inline, raw or in external data files beside the model (never outside its
//!   folder), opsets 13-23 of the default domain.
//! * [`ops::check`] refuses an op outside [`ops::SUPPORTED`] (naming the op, the node and its
//!   position) before any computation.
//! * [`trainable_parameters`] picks the parameters: float initializers feeding a parameter slot
//!   (Conv/Gemm weight and bias, MatMul's constant operand, BatchNormalization/LayerNormalization
//!   scale and bias, a Gather table, a tensor added to activations); batch norm statistics and
//!   shape constants are not parameters. [`Trainable::Matching`] overrides the rule.
//! * [`OnnxNet`] evaluates the graph with candle ops; Conv, BatchNormalization,
//!   LayerNormalization and dense (Gemm/MatMul with a constant weight, bias Add fused) nodes are
//!   tapped layers, so they take the kernel's routes (dense factorised, ghost or materialised
//!   over positions, conv tiles, norm affine); a parameter used twice is one shared unit.
//!
//! ```no_run
//! use stiff_onnx::{OnnxNet, OnnxOptions};
//! let net = OnnxNet::load("resnet18.onnx".as_ref(), &OnnxOptions::default())?;
//! # let (x, y): (candle::Tensor, candle::Tensor) = todo!();
//! let k = stiff_gradkernel::gram(&net, &x, &y, &Default::default())?.k;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod attrs;
mod error;
mod eval;
mod graph;
mod net;
mod node_ctx;
pub mod ops;
mod params;
pub mod proto;
mod shape_ops;
mod value;
mod weights;

pub use error::{OnnxError, Result};
pub use graph::{Attr, Graph, HostData, HostTensor, Node, OPSETS};
pub use net::{OnnxNet, OnnxOptions, ParamInfo};
pub use params::{trainable_parameters, Trainable};
