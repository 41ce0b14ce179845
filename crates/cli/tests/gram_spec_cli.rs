//! `stiff gram --spec` end to end: a PyTorch-style `nn.Sequential` state dict (keys exactly as
//! `state_dict()` writes them, under DataParallel's `module.` prefix) with a stride-2 conv,
//! BatchNorm2d (eval), a conv without bias, max pooling with tied windows, average pooling, Tanh
//! and GELU. The CLI's Gram (f64) must equal an independent per-example autograd computation
//! (plain forward, one backward per example, f64) in cosine units < 1e-6.

use std::collections::HashMap;
use std::process::Command;

use candle::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_gradkernel::{reference_gram_net, Loss, PlainSpec};
use stiff_models::{KeyMap, ModelSpec, SpecModel};

/// The issue's acceptance bound.
const COS_TOL_DONE: f64 = 1e-6;

const SPEC: &str = r#"{"input": [3, 12, 12], "layers": [
  {"type": "Conv2d", "in_channels": 3, "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1},
  {"type": "BatchNorm2d", "num_features": 6},
  {"type": "ReLU"},
  {"type": "Conv2d", "in_channels": 6, "out_channels": 8, "kernel_size": 3, "padding": 1, "bias": false},
  {"type": "MaxPool2d", "kernel_size": 2},
  {"type": "AvgPool2d", "kernel_size": 3, "stride": 1, "padding": 1},
  {"type": "Tanh"},
  {"type": "Flatten"},
  {"type": "Linear", "in_features": 72, "out_features": 16},
  {"type": "GELU"},
  {"type": "Linear", "in_features": 16, "out_features": 4}]}"#;

/// PyTorch's `state_dict()` of the spec above: `(key, shape)` in order, including the
/// `num_batches_tracked` counter PyTorch stores for batch norm.
fn torch_layout() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("0.weight", vec![6, 3, 3, 3]),
        ("0.bias", vec![6]),
        ("1.weight", vec![6]),
        ("1.bias", vec![6]),
        ("1.running_mean", vec![6]),
        ("1.running_var", vec![6]),
        ("3.weight", vec![8, 6, 3, 3]),
        ("8.weight", vec![16, 72]),
        ("8.bias", vec![16]),
        ("10.weight", vec![4, 16]),
        ("10.bias", vec![4]),
    ]
}

fn write_state_dict(
    path: &std::path::Path,
    prefix: &str,
    drop: Option<&str>,
    extra: Option<&str>,
) -> HashMap<String, Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut named = Vec::new();
    let mut plain = HashMap::new();
    for (k, shape) in torch_layout() {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| if k.ends_with("running_var") { rng.random_range(0.5..2.0) } else { rng.random_range(-0.6..0.6) })
            .collect();
        let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        plain.insert(k.to_string(), t.clone());
        if Some(k) != drop {
            named.push((format!("{prefix}{k}"), t));
        }
    }
    named.push((
        format!("{prefix}1.num_batches_tracked"),
        Tensor::new(&[100i64], &Device::Cpu).unwrap().squeeze(0).unwrap(),
    ));
    if let Some(e) = extra {
        named.push((e.to_string(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()));
    }
    stiff_models::io::save_tensors_atomic(&named, HashMap::new(), path).unwrap();
    plain
}

fn write_inputs(path: &std::path::Path, n: usize) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let per = 3 * 12 * 12;
    let mut v = Vec::new();
    for _ in 0..n {
        // Flat left half (tied max-pool windows, zero responses), random right half.
        let c: f32 = rng.random_range(-1.0..1.0);
        for k in 0..per {
            v.push(if (k % 12) < 6 { c } else { rng.random_range(-1.0..1.0) });
        }
    }
    let x = Tensor::from_vec(v, (n, 3, 12, 12), &Device::Cpu).unwrap();
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 4).collect::<Vec<_>>(), n, &Device::Cpu).unwrap();
    stiff_models::io::save_tensors_atomic(&[("x".into(), x.clone()), ("y".into(), y.clone())], HashMap::new(), path)
        .unwrap();
    (x, y)
}

fn run(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stiff")).arg("gram").args(args).output().unwrap()
}

#[test]
fn gram_spec_matches_independent_f64_autograd() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, SPEC).unwrap();
    let weights = dir.path().join("sd.safetensors");
    let tensors = write_state_dict(&weights, "module.", None, None);
    let inputs = dir.path().join("in.safetensors");
    let (x, y) = write_inputs(&inputs, 12);
    let out = dir.path().join("out");
    let o = run(&[
        "--spec".as_ref(),
        spec_path.as_os_str(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--inputs".as_ref(),
        inputs.as_os_str(),
        "--f64".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let k =
        candle::safetensors::load(out.join("gram.safetensors"), &Device::Cpu).unwrap()["K"].to_vec2::<f64>().unwrap();

    // Independent route: the f64 model built from the same tensors, plain forward, per-example autograd.
    let spec: ModelSpec = serde_json::from_str(SPEC).unwrap();
    let m =
        SpecModel::from_tensors(&spec, tensors, "test".as_ref(), &KeyMap::default(), DType::F64, &Device::Cpu).unwrap();
    let oracle = reference_gram_net(&PlainSpec(&m), &x.to_dtype(DType::F64).unwrap(), &y, &Loss::CrossEntropy)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let mut worst = 0f64;
    for i in 0..12 {
        for j in 0..12 {
            worst = worst.max((k[i][j] - oracle[i][j]).abs() / (oracle[i][i] * oracle[j][j]).sqrt());
        }
    }
    assert!(worst < COS_TOL_DONE, "cosine error {worst:e}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stiffness.json")).unwrap()).unwrap();
    let routes = json["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 5, "{routes:?}");
    assert!(routes.iter().all(|r| r["form"] != "fallback"));
}

#[test]
fn gram_spec_bad_weights_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, SPEC).unwrap();
    let inputs = dir.path().join("in.safetensors");
    write_inputs(&inputs, 4);
    let case = |name: &str, drop: Option<&str>, extra: Option<&str>, want: &[&str]| {
        let weights = dir.path().join(format!("{name}.safetensors"));
        write_state_dict(&weights, "", drop, extra);
        let out = dir.path().join(format!("out-{name}"));
        let o = run(&[
            "--spec".as_ref(),
            spec_path.as_os_str(),
            "--weights".as_ref(),
            weights.as_os_str(),
            "--inputs".as_ref(),
            inputs.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ]);
        assert!(!o.status.success(), "{name}: should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        for w in want {
            assert!(err.contains(w), "{name}: `{w}` not in: {err}");
        }
        assert!(!out.join("gram.safetensors").exists(), "{name}: no partial output");
    };
    case("missing", Some("3.weight"), None, &["missing key `3.weight`", "layer 3 (Conv2d)", "[8, 6, 3, 3]"]);
    case("extra", None, Some("head.weight"), &["unexpected parameter `head.weight`"]);
    // Wrong shape: a spec whose Linear expects other sizes than the file holds.
    let wrong = SPEC.replace(r#""in_features": 16, "out_features": 4"#, r#""in_features": 16, "out_features": 5"#);
    let wrong_path = dir.path().join("wrong.json");
    std::fs::write(&wrong_path, wrong).unwrap();
    let weights = dir.path().join("ok.safetensors");
    write_state_dict(&weights, "", None, None);
    let o = run(&[
        "--spec".as_ref(),
        wrong_path.as_os_str(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--inputs".as_ref(),
        inputs.as_os_str(),
        "--out".as_ref(),
        dir.path().join("o3").as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("`10.weight` of layer 10 (Linear) has shape [4, 16], expected [5, 16]"), "{err}");
}
