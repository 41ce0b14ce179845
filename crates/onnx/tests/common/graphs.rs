//! Small ONNX graphs written with prost, for the tests of stiff-onnx and of the CLI (included
//! by path).
#![allow(dead_code)]

use stiff_onnx::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TensorTypeProto, TypeProto, ValueInfoProto,
};

pub fn value(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Some(v) => Dimension { dim_value: Some(*v), dim_param: None },
            None => Dimension { dim_value: None, dim_param: Some("batch".into()) },
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type: 1, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

pub fn floats(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

pub fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i, r#type: 2, ..Default::default() }
}

/// `x (batch, 4) -> Gemm(W (3, 4), b, transB=1) -> Relu -> logits (batch, 3)`.
pub fn classifier() -> ModelProto {
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 7.0).collect();
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 18 }],
        graph: Some(GraphProto {
            name: "tiny".into(),
            node: vec![
                node("Gemm", "fc", &["x", "fc.weight", "fc.bias"], &["h"], vec![int_attr("transB", 1)]),
                node("Relu", "act", &["h"], &["logits"], vec![]),
            ],
            initializer: vec![floats("fc.weight", &[3, 4], &w), floats("fc.bias", &[3], &[0.1, -0.2, 0.3])],
            input: vec![value("x", &[None, Some(4)])],
            output: vec![value("logits", &[None, Some(3)])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Integer-list attribute.
pub fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: v.to_vec(), r#type: 7, ..Default::default() }
}

/// An MNIST-shaped CNN: `x (batch, 1, 28, 28) -> Conv(4, 3x3, stride 2, pad 1) + bias -> Relu ->
/// MaxPool(2) -> Flatten -> Gemm(10, transB = 1) -> logits`, weights from a fixed formula.
pub fn mnist_conv() -> ModelProto {
    let wc: Vec<f32> = (0..36).map(|i| ((i * 5 % 13) as f32 - 6.0) / 8.0).collect();
    let wf: Vec<f32> = (0..1960).map(|i| ((i * 7 % 17) as f32 - 8.0) / 40.0).collect();
    let conv_attrs =
        vec![ints_attr("kernel_shape", &[3, 3]), ints_attr("strides", &[2, 2]), ints_attr("pads", &[1, 1, 1, 1])];
    let pool_attrs = vec![ints_attr("kernel_shape", &[2, 2]), ints_attr("strides", &[2, 2])];
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 18 }],
        graph: Some(GraphProto {
            name: "mnist_conv".into(),
            node: vec![
                node("Conv", "conv", &["x", "conv.weight", "conv.bias"], &["c"], conv_attrs),
                node("Relu", "relu", &["c"], &["r"], vec![]),
                node("MaxPool", "pool", &["r"], &["p"], pool_attrs),
                node("Flatten", "flat", &["p"], &["f"], vec![int_attr("axis", 1)]),
                node("Gemm", "fc", &["f", "fc.weight", "fc.bias"], &["logits"], vec![int_attr("transB", 1)]),
            ],
            initializer: vec![
                floats("conv.weight", &[4, 1, 3, 3], &wc),
                floats("conv.bias", &[4], &[0.05, -0.05, 0.0, 0.1]),
                floats("fc.weight", &[10, 196], &wf),
                floats("fc.bias", &[10], &[0.0; 10]),
            ],
            input: vec![value("x", &[None, Some(1), Some(28), Some(28)])],
            output: vec![value("logits", &[None, Some(10)])],
            ..Default::default()
        }),
        ..Default::default()
    }
}
