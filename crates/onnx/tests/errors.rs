//! Bad graphs end in typed errors naming the file, node or tensor, before any computation. The
//! graphs are written by the tests themselves (prost encoding of a tiny Gemm classifier).

use std::path::{Path, PathBuf};

#[path = "common/graphs.rs"]
mod graphs;

use graphs::{classifier, floats, int_attr, node, value};
use prost::Message;
use stiff_onnx::proto::{ModelProto, StringStringEntryProto};
use stiff_onnx::{OnnxError, OnnxNet, OnnxOptions};

fn write(dir: &Path, name: &str, m: &ModelProto) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

fn load(p: &Path) -> Result<OnnxNet, OnnxError> {
    OnnxNet::load(p, &OnnxOptions::default())
}

#[test]
fn the_hand_written_model_loads_and_names_its_parameters() {
    let d = tempfile::tempdir().unwrap();
    let net = load(&write(d.path(), "ok.onnx", &classifier())).unwrap();
    let names: Vec<&str> = net.parameter_info().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["fc.weight", "fc.bias"]);
    assert_eq!(net.num_outputs(), 3);
}

#[test]
fn an_unsupported_op_is_named_with_its_node_and_position() {
    let d = tempfile::tempdir().unwrap();
    let mut m = classifier();
    m.graph.as_mut().unwrap().node[1].op_type = "Celu".into();
    let e = load(&write(d.path(), "celu.onnx", &m)).unwrap_err();
    let s = e.to_string();
    assert!(matches!(e, OnnxError::UnsupportedOp { position: 1, .. }), "{s}");
    assert!(s.contains("`act`") && s.contains("Celu") && s.contains("celu.onnx"), "{s}");
}

#[test]
fn a_custom_domain_op_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut m = classifier();
    m.graph.as_mut().unwrap().node[1].domain = "com.microsoft".into();
    let e = load(&write(d.path(), "ms.onnx", &m)).unwrap_err();
    assert!(e.to_string().contains("com.microsoft::Relu"), "{e}");
}

#[test]
fn external_data_must_stay_beside_the_model_and_inside_its_file() {
    let d = tempfile::tempdir().unwrap();
    let sub = d.path().join("model");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(d.path().join("secret.bin"), [0u8; 48]).unwrap();
    std::fs::write(sub.join("w.bin"), [0u8; 40]).unwrap();
    let external = |loc: &str, offset: &str| {
        let mut m = classifier();
        let w = &mut m.graph.as_mut().unwrap().initializer[0];
        w.raw_data.clear();
        w.data_location = 1;
        w.external_data = vec![
            StringStringEntryProto { key: "location".into(), value: loc.into() },
            StringStringEntryProto { key: "offset".into(), value: offset.into() },
            StringStringEntryProto { key: "length".into(), value: "48".into() },
        ];
        m
    };
    let escape = load(&write(&sub, "a.onnx", &external("../secret.bin", "0"))).unwrap_err();
    assert!(escape.to_string().contains("not a plain relative path"), "{escape}");
    let abs = load(&write(&sub, "b.onnx", &external(d.path().join("secret.bin").to_str().unwrap(), "0"))).unwrap_err();
    assert!(abs.to_string().contains("not a plain relative path"), "{abs}");
    let missing = load(&write(&sub, "c.onnx", &external("nope.bin", "0"))).unwrap_err();
    assert!(missing.to_string().contains("cannot open the external data file `nope.bin`"), "{missing}");
    let short = load(&write(&sub, "e.onnx", &external("w.bin", "0"))).unwrap_err();
    assert!(matches!(short, OnnxError::Initializer { ref tensor, .. } if tensor == "fc.weight"), "{short}");
    assert!(short.to_string().contains("outside the file"), "{short}");
}

#[test]
fn an_initializer_whose_data_does_not_fit_its_shape_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut m = classifier();
    m.graph.as_mut().unwrap().initializer[0].dims = vec![3, 5];
    let e = load(&write(d.path(), "short.onnx", &m)).unwrap_err();
    assert!(e.to_string().contains("48 data bytes, but shape [3, 5] needs 60"), "{e}");
}

#[test]
fn an_initializer_of_the_wrong_shape_for_its_node_fails_the_dry_run() {
    let d = tempfile::tempdir().unwrap();
    let mut m = classifier();
    // A (4, 3) weight where the input has 4 features and transB = 1 wants (out, 4).
    let w = &mut m.graph.as_mut().unwrap().initializer[0];
    w.dims = vec![4, 3];
    let e = load(&write(d.path(), "shape.onnx", &m)).unwrap_err();
    assert!(matches!(e, OnnxError::Model { .. }) && e.to_string().contains("dry run"), "{e}");
}

#[test]
fn a_nan_parameter_is_refused_up_front() {
    let d = tempfile::tempdir().unwrap();
    let mut m = classifier();
    m.graph.as_mut().unwrap().initializer[1] = floats("fc.bias", &[3], &[0.0, f32::NAN, 1.0]);
    let e = load(&write(d.path(), "nan.onnx", &m)).unwrap_err();
    assert!(e.to_string().contains("`fc.bias`") && e.to_string().contains("NaN"), "{e}");
}

#[test]
fn a_weights_file_with_another_shape_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "ok.onnx", &classifier());
    let sd = d.path().join("sd.safetensors");
    let dev = candle::Device::Cpu;
    let t = std::collections::HashMap::from([
        ("fc.weight".to_string(), candle::Tensor::zeros((3, 5), candle::DType::F32, &dev).unwrap()),
        ("fc.bias".to_string(), candle::Tensor::zeros(3, candle::DType::F32, &dev).unwrap()),
    ]);
    candle::safetensors::save(&t, &sd).unwrap();
    let e = OnnxNet::load(&p, &OnnxOptions { weights: Some(sd), ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("`fc.weight` has shape [3, 5] in the file but [3, 4]"), "{e}");
}

#[test]
fn a_ceil_mode_pool_is_refused_with_its_position() {
    let d = tempfile::tempdir().unwrap();
    let mut m = classifier();
    let g = m.graph.as_mut().unwrap();
    g.node[1] = node("MaxPool", "pool", &["h"], &["logits"], vec![int_attr("ceil_mode", 1)]);
    let e = load(&write(d.path(), "ceil.onnx", &m)).unwrap_err();
    assert!(matches!(e, OnnxError::Node { position: 1, .. }) && e.to_string().contains("ceil_mode"), "{e}");
}

#[test]
fn an_old_opset_is_refused_with_the_supported_range() {
    let d = tempfile::tempdir().unwrap();
    let mut m = classifier();
    m.opset_import[0].version = 9;
    let e = load(&write(d.path(), "old.onnx", &m)).unwrap_err();
    assert!(e.to_string().contains("opset 9 is not supported"), "{e}");
}

/// `x -> Gemm(W) -> Relu -> Gemm(W) -> + pos -> logits` with one square `W` used twice and a
/// learned offset: the Gram equals the one-backward-per-example oracle on the same graph.
#[test]
fn a_weight_used_twice_is_summed_exactly() {
    use candle::{DType, Device, Tensor};
    let d = tempfile::tempdir().unwrap();
    let w: Vec<f32> = (0..16).map(|i| ((i * 7 % 11) as f32 - 5.0) / 6.0).collect();
    let mut m = classifier();
    let g = m.graph.as_mut().unwrap();
    g.node = vec![
        node("Gemm", "fc_a", &["x", "w", "b"], &["h"], vec![int_attr("transB", 1)]),
        node("Relu", "act", &["h"], &["r"], vec![]),
        node("MatMul", "fc_b", &["r", "w"], &["z"], vec![]),
        node("Add", "shift", &["z", "pos"], &["logits"], vec![]),
    ];
    g.initializer = vec![
        floats("w", &[4, 4], &w),
        floats("b", &[4], &[0.1, 0.0, -0.1, 0.2]),
        floats("pos", &[4], &[0.3, -0.3, 0.0, 0.5]),
    ];
    g.output = vec![value("logits", &[None, Some(4)])];
    let p = write(d.path(), "shared.onnx", &m);
    let net = OnnxNet::load(&p, &OnnxOptions { dtype: DType::F64, ..Default::default() }).unwrap();
    let names: Vec<&str> = net.parameter_info().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["w", "b", "pos"]);
    // Half the inputs zero: the ReLU sits at 0 for some units.
    let xs: Vec<f64> = (0..40).map(|i| if i % 3 == 0 { 0.0 } else { ((i * 5 % 9) as f64 - 4.0) / 3.0 }).collect();
    let x = Tensor::from_vec(xs, (10, 4), &Device::Cpu).unwrap();
    let y = Tensor::from_vec((0..10u32).map(|i| i % 4).collect::<Vec<_>>(), 10, &Device::Cpu).unwrap();
    let ours = stiff_gradkernel::gram(&net, &x, &y, &Default::default()).unwrap();
    let forms: Vec<_> = ours.routes.iter().map(|r| (r.name.as_str(), r.form)).collect();
    assert!(forms.contains(&("w+w", stiff_gradkernel::LayerForm::Shared)), "{forms:?}");
    assert!(forms.iter().all(|(_, f)| *f != stiff_gradkernel::LayerForm::Fallback), "{forms:?}");
    let loss = stiff_gradkernel::Loss::CrossEntropy;
    let oracle = stiff_gradkernel::reference_gram_net(&net, &x, &y.to_dtype(DType::U32).unwrap(), &loss).unwrap();
    let (a, b) = (ours.k.to_vec2::<f64>().unwrap(), oracle.to_vec2::<f64>().unwrap());
    for i in 0..10 {
        for j in 0..10 {
            let s = (b[i][i] * b[j][j]).sqrt();
            assert!((a[i][j] - b[i][j]).abs() / s < 1e-12, "K[{i},{j}] {} vs {}", a[i][j], b[i][j]);
        }
    }
}
