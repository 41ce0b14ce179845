//! `stiff gram` end to end on a tiny generated checkpoint and inputs file.

use std::collections::HashMap;
use std::process::Command;

use candle::{DType, Device, Tensor};
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig};

fn write_inputs(path: &std::path::Path, n: usize, labels: Vec<u8>) {
    let v: Vec<f32> = (0..n * 16).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect();
    let x = Tensor::from_vec(v, (n, 1, 4, 4), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(labels, n, &Device::Cpu).unwrap();
    stiff_models::io::save_tensors_atomic(&[("x".into(), x), ("y".into(), y)], HashMap::new(), path).unwrap();
}

#[test]
fn gram_writes_parseable_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::new(ArchSpec::Mlp { hidden: vec![6] }, InputShape::new(1, 4, 4), 3);
    let model = Model::new(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
    let weights = dir.path().join("w.safetensors");
    model.save(&weights).unwrap();
    let inputs = dir.path().join("in.safetensors");
    write_inputs(&inputs, 6, vec![0, 1, 2, 0, 1, 2]);
    let out = dir.path().join("out");
    let status = Command::new(env!("CARGO_BIN_EXE_stiff"))
        .args(["gram", "--weights"])
        .arg(&weights)
        .arg("--inputs")
        .arg(&inputs)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let t = candle::safetensors::load(out.join("gram.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(t["K"].dims(), &[6, 6]);
    assert_eq!(t["K.layers.0"].dims(), &[6, 6]);
    // The per-layer parts sum to K (both written by the same run).
    let sum = (&t["K.layers.0"] + &t["K.layers.1"]).unwrap();
    let diff: f32 = (sum - &t["K"]).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
    assert!(diff < 1e-5);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stiffness.json")).unwrap()).unwrap();
    assert_eq!(json["n"], 6);
    assert!(json["timing"]["gram_seconds"].as_f64().unwrap() > 0.0);
    let w = json["within_sign"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&w));
}

#[test]
fn gram_rejects_bad_labels_and_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::new(ArchSpec::Mlp { hidden: vec![6] }, InputShape::new(1, 4, 4), 3);
    let weights = dir.path().join("w.safetensors");
    Model::new(&cfg, 1, DType::F32, &Device::Cpu).unwrap().save(&weights).unwrap();
    let inputs = dir.path().join("bad.safetensors");
    write_inputs(&inputs, 3, vec![0, 7, 1]);
    let run = |inp: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_stiff"))
            .args(["gram", "--weights"])
            .arg(&weights)
            .arg("--inputs")
            .arg(inp)
            .arg("--out")
            .arg(dir.path().join("o"))
            .output()
            .unwrap()
    };
    let o = run(&inputs);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.safetensors") && err.contains("label 7"), "{err}");
    let only_x = dir.path().join("nox.safetensors");
    let x = Tensor::zeros((2, 16), DType::F32, &Device::Cpu).unwrap();
    stiff_models::io::save_tensors_atomic(&[("x".into(), x)], HashMap::new(), &only_x).unwrap();
    let o = run(&only_x);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("nox.safetensors") && err.contains("`y`"), "{err}");
}
