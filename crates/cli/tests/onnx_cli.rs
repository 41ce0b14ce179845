//! `--onnx` through `gram`, `measure` and `cross`: the repository's ONNX fixtures (torch.onnx
//! exports with torch.func references) and an MNIST-shaped graph the test writes itself.

mod common;

#[path = "../../onnx/tests/common/graphs.rs"]
mod graphs;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle::{DType, Device, Tensor};
use common::write_flat_mnist;
use prost::Message;
use stiff_gradkernel::{reference_gram_net, Loss};
use stiff_onnx::{OnnxNet, OnnxOptions};

/// f64 on both sides (torch.func's reference, our routes): summation order only.
const COS_TOL_F64: f64 = 1e-9;

fn stiff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stiff")).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx").join(name)
}

fn read_k(path: &Path, key: &str) -> Vec<Vec<f64>> {
    let t = candle::safetensors::load(path, &Device::Cpu).unwrap();
    t[key].to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

fn max_cos_error(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let mut worst = 0f64;
    for i in 0..b.len() {
        for j in 0..b.len() {
            worst = worst.max((a[i][j] - b[i][j]).abs() / (b[i][i] * b[j][j]).sqrt());
        }
    }
    worst
}

#[test]
fn gram_onnx_equals_torch_func_and_lists_every_parameter_with_its_route() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let onnx = fixture("resnet_tiny.onnx");
    let inputs = fixture("resnet_tiny.ref.safetensors");
    let args = ["gram", "--onnx", onnx.to_str().unwrap(), "--inputs", inputs.to_str().unwrap(), "--f64"];
    let r = stiff(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let err = max_cos_error(&read_k(&out.join("gram.safetensors"), "K"), &read_k(&inputs, "gram"));
    assert!(err < COS_TOL_F64, "{err:.3e} cosine units from torch.func");
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stiffness.json")).unwrap()).unwrap();
    let params = rec["onnx"]["parameters"].as_array().unwrap();
    assert_eq!(params.len(), 20, "resnet_tiny has 20 named parameters");
    let routed: usize = rec["routes"].as_array().unwrap().iter().map(|r| r["params"].as_array().unwrap().len()).sum();
    assert_eq!(routed, 20, "every parameter has a route: {}", rec["routes"]);

    // The trained state dict may replace the graph's values (same Gram); a graph with BatchNorm
    // folded at export does not have those parameters, and says so.
    let sd = fixture("resnet_tiny.state_dict.safetensors");
    let out2 = dir.path().join("out2");
    let r = stiff(&[&args[..], &["--weights", sd.to_str().unwrap(), "--out", out2.to_str().unwrap()]].concat());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(max_cos_error(&read_k(&out2.join("gram.safetensors"), "K"), &read_k(&inputs, "gram")) < COS_TOL_F64);
    let folded = fixture("resnet_tiny_folded.onnx");
    let out3 = dir.path().join("out3");
    let r = stiff(&[
        "gram",
        "--onnx",
        folded.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--weights",
        sd.to_str().unwrap(),
        "--out",
        out3.to_str().unwrap(),
    ]);
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && msg.contains("optimize=False") && msg.contains("resnet_tiny_folded.onnx"), "{msg}");
    assert!(!out3.join("gram.safetensors").exists());
}

#[test]
fn onnx_flags_are_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let inputs = fixture("resnet_tiny.ref.safetensors");
    let onnx = fixture("resnet_tiny.onnx");
    // --trainable without --onnx, and with --preset.
    let r = stiff(&["gram", "--preset", "fc6", "--trainable", "fc", "--weights", "w", "--inputs", "i", "--out", "o"]);
    assert!(!r.status.success());
    let r = stiff(&[
        "gram",
        "--onnx",
        onnx.to_str().unwrap(),
        "--trainable",
        "(unclosed",
        "--inputs",
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && msg.contains("--trainable `(unclosed`"), "{msg}");
    // Inputs of another shape than the graph's input.
    let mnist_like = dir.path().join("x.safetensors");
    let x = Tensor::zeros((4, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::new(&[0u32, 1, 2, 3], &Device::Cpu).unwrap();
    candle::safetensors::save(&std::collections::HashMap::from([("x", x), ("y", y)]), &mnist_like).unwrap();
    let r = stiff(&[
        "gram",
        "--onnx",
        onnx.to_str().unwrap(),
        "--inputs",
        mnist_like.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && msg.contains("do not fit the graph input"), "{msg}");
}

#[test]
fn measure_and_cross_take_an_onnx_graph() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_flat_mnist(root);
    let onnx = root.join("mnist_conv.onnx");
    std::fs::write(&onnx, graphs::mnist_conv().encode_to_vec()).unwrap();
    let (d, g) = (root.to_str().unwrap(), onnx.to_str().unwrap());
    let out = root.join("m");
    let r = stiff(&[
        "measure",
        "--onnx",
        g,
        "--dataset",
        "mnist",
        "--data-dir",
        d,
        "--subset",
        "40",
        "--preprocess",
        "none",
        "--bootstrap",
        "0",
        "--f64",
        "--out",
        out.to_str().unwrap(),
    ]);
    let rec = common::measurement(&r, &out);
    assert_eq!(rec["model"]["kind"], "onnx");
    let m = &rec["measurement"];

    // The independent route: the same examples, one backward per example on the graph, f64.
    let data = common::mnist_subset(root, 40);
    let net = OnnxNet::load(&onnx, &OnnxOptions { dtype: DType::F64, ..Default::default() }).unwrap();
    let x = data.stiff_x.to_dtype(DType::F64).unwrap();
    let y = Tensor::new(data.stiff_y.as_slice(), &Device::Cpu).unwrap();
    let k = reference_gram_net(&net, &x, &y, &Loss::CrossEntropy).unwrap();
    let k = stiff_gradkernel::to_ndarray_f64(&k).unwrap();
    let cs = stiff_analysis::class_stiffness(k.view(), &data.stiff_y, 10, &Default::default()).unwrap();
    let got = |kind: &str, part: &str| m[kind][part].as_f64().unwrap();
    assert!(
        (got("cosine", "within") - cs.cosine.within).abs() < COS_TOL_F64,
        "{} vs {}",
        got("cosine", "within"),
        cs.cosine.within
    );
    assert!((got("cosine", "between") - cs.cosine.between).abs() < COS_TOL_F64);
    assert!((cs.cosine.within - cs.cosine.between).abs() > 1e-3, "a non-trivial answer");
    for f in ["class_stiffness.png", "class_stiffness.svg", "distance_curves.png", "distance_curves.svg"] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The distance curves read the input space and the graph's hidden space (the dense layer's input).
    assert_eq!(m["curves"].as_array().map(Vec::len), Some(2), "{}", m["curves"]);

    let cross = root.join("c");
    let r = stiff(&[
        "cross",
        "--onnx",
        g,
        "--dataset",
        "mnist",
        "--data-dir",
        d,
        "--rows",
        "test:60",
        "--cols",
        "test:40",
        "--preprocess",
        "none",
        "--out",
        cross.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(cross.join("cross.json")).unwrap()).unwrap();
    assert!(c.to_string().contains("pairs"), "{c}");
}
