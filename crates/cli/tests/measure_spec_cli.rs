//! `stiff measure --spec` end to end: a PyTorch-style `nn.Sequential` state dict (stride-2 conv,
//! ReLU, max pooling, Linear) written by the test, measured on a generated MNIST-format dataset
//! whose images are flat (exactly 0) on their left half, so that conv outputs there equal the
//! bias: ReLU inputs at exactly 0 (channel 0 has bias 0) and tied max-pool windows (positive
//! biases). Its class stiffness must equal the one computed from an independent Gram: the plain
//! spec forward with one autograd backward per example in f64 (`reference_gram_net`), on the same
//! examples (drawn by `prepare`, as the command does).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_analysis::{class_stiffness, StiffnessSettings};
use stiff_gradkernel::{reference_gram_net, Loss, PlainSpec};
use stiff_models::{KeyMap, ModelSpec, SpecModel};

mod common;
use common::write_flat_mnist;

/// f32 Gram (the command) against the f64 oracle, in cosine stiffness units: sums of a few
/// thousand f32 products.
const COS_TOL: f64 = 1e-4;
/// Oracle cosines closer to 0 than this could change sign under f32 rounding.
const SIGN_MARGIN: f64 = 1e-4;

const SPEC: &str = r#"{"input": [1, 28, 28], "layers": [
  {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
  {"type": "ReLU"},
  {"type": "MaxPool2d", "kernel_size": 2},
  {"type": "Flatten"},
  {"type": "Linear", "in_features": 196, "out_features": 10}]}"#;

/// A state dict under DataParallel's `module.` prefix for the spec with `outputs` classes; conv
/// bias 0 on channel 0, positive on the others.
fn write_state_dict(path: &Path, outputs: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut u = |n: usize, b: f32| (0..n).map(|_| rng.random_range(-b..b)).collect::<Vec<f32>>();
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, &Device::Cpu).unwrap();
    let named = vec![
        ("module.0.weight".to_string(), t(u(36, 0.6), &[4, 1, 3, 3])),
        ("module.0.bias".to_string(), t(vec![0.0, 0.3, 0.5, 0.2], &[4])),
        ("module.4.weight".to_string(), t(u(196 * outputs, 0.2), &[outputs, 196])),
        ("module.4.bias".to_string(), t(u(outputs, 0.1), &[outputs])),
    ];
    stiff_models::io::save_tensors_atomic(&named, HashMap::new(), path).unwrap();
}

fn stiff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stiff")).args(args).env("RUST_BACKTRACE", "0").output().unwrap()
}

#[test]
fn measure_spec_matches_the_independent_oracle_and_records_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_flat_mnist(root);
    let (spec_path, weights) = (root.join("net.json"), root.join("sd.safetensors"));
    std::fs::write(&spec_path, SPEC).unwrap();
    write_state_dict(&weights, 10);
    let out = root.join("out");
    let (d, s, w, o) =
        (root.to_str().unwrap(), spec_path.to_str().unwrap(), weights.to_str().unwrap(), out.to_str().unwrap());
    let common = ["measure", "--spec", s, "--weights", w, "--dataset", "mnist", "--data-dir", d, "--subset", "40"];
    let r = stiff(&[&common[..], &["--preprocess", "none", "--bootstrap", "0", "--out", o][..]].concat());
    let rec = common::measurement(&r, &out);
    assert_eq!(rec["model"]["kind"], "spec");
    assert_eq!(rec["preprocess"]["kind"], "none");
    assert_eq!(rec["loss"], "cross-entropy");
    let m = &rec["measurement"];

    // The independent route: the same examples, the plain forward, one backward per example, f64.
    let data = common::mnist_subset(root, 40);
    let spec: ModelSpec = serde_json::from_str(SPEC).unwrap();
    let model = SpecModel::load(&spec, &weights, &KeyMap::default(), DType::F64, &Device::Cpu).unwrap();
    let y = Tensor::new(data.stiff_y.as_slice(), &Device::Cpu).unwrap();
    let k = reference_gram_net(&PlainSpec(&model), &data.stiff_x, &y, &Loss::CrossEntropy).unwrap();
    let k = stiff_gradkernel::to_ndarray_f64(&k).unwrap();

    // The premise: flat regions really give ReLU inputs at exactly 0 and tied pooling windows.
    let x = model.prepare_input(&data.stiff_x).unwrap();
    let conv = model.layer_forward(0, &x).unwrap();
    let z: Vec<f64> = conv.narrow(1, 0, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(z.iter().filter(|&&v| v == 0.0).count() > 1000, "ReLU inputs at exactly 0");
    let a = model.layer_forward(1, &conv).unwrap();
    let a1: Vec<f64> = a.narrow(1, 1, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let ties = a1.chunks(14).take(14 * 40).flat_map(|row| row.chunks(2)).filter(|p| p[0] == p[1] && p[0] > 0.0).count();
    assert!(ties > 100, "tied positive max-pool pairs: {ties}");

    let labels = &data.stiff_y;
    let cs = class_stiffness(k.view(), labels, 10, &StiffnessSettings::default()).unwrap();
    let near_zero = (0..40)
        .flat_map(|i| (0..40).map(move |j| (i, j)))
        .filter(|&(i, j)| i != j && (k[[i, j]] / (k[[i, i]] * k[[j, j]]).sqrt()).abs() < SIGN_MARGIN)
        .count();
    let got = |kind: &str, part: &str| m[kind][part].as_f64().unwrap();
    assert!(
        (got("cosine", "within") - cs.cosine.within).abs() < COS_TOL,
        "{} vs {}",
        got("cosine", "within"),
        cs.cosine.within
    );
    assert!((got("cosine", "between") - cs.cosine.between).abs() < COS_TOL);
    if near_zero == 0 {
        assert_eq!(got("sign", "within"), cs.sign.within);
        assert_eq!(got("sign", "between"), cs.sign.between);
    }
    // A non-trivial answer: within-class stiffness differs from between-class stiffness.
    assert!((cs.cosine.within - cs.cosine.between).abs() > 1e-3);

    // mean-std preprocessing is applied and recorded; the figures are written.
    let out2 = root.join("out2");
    let tail = ["--preprocess", "mean-std:0.1,0.3", "--bootstrap", "0", "--out", out2.to_str().unwrap()];
    let r = stiff(&[&common[..], &tail[..]].concat());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let rec2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out2.join("measurement.json")).unwrap()).unwrap();
    assert_eq!(rec2["preprocess"], serde_json::json!({"kind": "mean-std", "mean": 0.1, "std": 0.3}));
    assert_ne!(rec2["measurement"]["cosine"]["within"], m["cosine"]["within"]);
    assert!(out.join("class_stiffness.png").exists());
}

#[test]
fn measure_spec_errors_name_the_flag_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_flat_mnist(root);
    let weights = root.join("sd.safetensors");
    write_state_dict(&weights, 10);
    let w = weights.to_str().unwrap();
    let d = root.to_str().unwrap();
    let o = root.join("o");
    let o = o.to_str().unwrap();
    let err = |args: &[&str]| {
        let r = stiff(args);
        assert!(!r.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&r.stderr).to_string()
    };
    // A missing spec file is named.
    let e = err(&[
        "measure",
        "--spec",
        "/nonexistent/net.json",
        "--weights",
        w,
        "--dataset",
        "mnist",
        "--data-dir",
        d,
        "--out",
        o,
    ]);
    assert!(e.contains("--spec") && e.contains("/nonexistent/net.json"), "{e}");
    // A spec whose outputs do not fit the dataset's classes.
    let wrong_out = root.join("wrong.json");
    std::fs::write(&wrong_out, SPEC.replace("\"out_features\": 10", "\"out_features\": 7")).unwrap();
    let w7 = root.join("sd7.safetensors");
    write_state_dict(&w7, 7);
    let w7 = w7.to_str().unwrap();
    let e = err(&[
        "measure",
        "--spec",
        wrong_out.to_str().unwrap(),
        "--weights",
        w7,
        "--dataset",
        "mnist",
        "--data-dir",
        d,
        "--out",
        o,
    ]);
    assert!(e.contains("7 outputs") && e.contains("10 classes"), "{e}");
    // A weights file that does not match the spec names the key and both shapes.
    let small = SPEC.replace("\"out_channels\": 4", "\"out_channels\": 2").replace("196", "98");
    let small_path = root.join("small.json");
    std::fs::write(&small_path, small).unwrap();
    let e = err(&[
        "measure",
        "--spec",
        small_path.to_str().unwrap(),
        "--weights",
        w,
        "--dataset",
        "mnist",
        "--data-dir",
        d,
        "--out",
        o,
    ]);
    assert!(e.contains("--weights") && e.contains("0.weight"), "{e}");
    // --key-map needs --spec; --spec and --preset exclude each other; mse is not a measurement loss.
    let e = err(&["measure", "--key-map", "m.json", "--weights", w, "--dataset", "mnist", "--out", o]);
    assert!(e.contains("--spec"), "{e}");
    let e = err(&["measure", "--spec", "s.json", "--preset", "fc6", "--weights", w, "--dataset", "mnist", "--out", o]);
    assert!(e.contains("--preset"), "{e}");
    let e = err(&["measure", "--loss", "mse", "--weights", w, "--dataset", "mnist", "--out", o]);
    assert!(e.contains("--loss"), "{e}");
    let e = err(&["measure", "--preprocess", "mean-std:1,0", "--weights", w, "--dataset", "mnist", "--out", o]);
    assert!(e.contains("--preprocess"), "{e}");
}
