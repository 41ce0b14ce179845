//! `stiff measure` and `stiff gram --dataset` on the real MNIST data. These run when
//! `STIFF_DATA_DIR` points at a data folder (CI sets it); otherwise they say so and return.

use std::process::Command;

use candle::{DType, Device};
use stiff_models::{InputShape, Model, ModelConfig, Preset};

fn data_dir() -> Option<String> {
    let d = std::env::var("STIFF_DATA_DIR").ok().filter(|d| !d.is_empty());
    if d.is_none() {
        eprintln!("skipped: STIFF_DATA_DIR is not set");
    }
    d
}

fn checkpoint(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = ModelConfig::preset(Preset::Fc4, InputShape::new(1, 28, 28), 10);
    let path = dir.join("fc4.safetensors");
    Model::new(&cfg, 3, DType::F32, &Device::Cpu).unwrap().save(&path).unwrap();
    path
}

fn stiff(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_stiff")).args(args).output().unwrap();
    assert!(out.status.success(), "stiff {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn measure_writes_json_and_figures() {
    let Some(data) = data_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let w = checkpoint(tmp.path());
    let out = tmp.path().join("m");
    stiff(&[
        "measure",
        "--weights",
        w.to_str().unwrap(),
        "--dataset",
        "mnist",
        "--subset",
        "100",
        "--bootstrap",
        "20",
        "--data-dir",
        &data,
        "--out",
        out.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("measurement.json")).unwrap()).unwrap();
    let m = &v["measurement"];
    assert_eq!(m["n"], 100);
    for kind in ["sign", "cosine"] {
        for which in ["within", "between"] {
            let x = m[kind][which].as_f64().unwrap();
            assert!((-1.0..=1.0).contains(&x), "{kind} {which} = {x}");
        }
    }
    // Input space plus the three hidden layers of fc4.
    assert_eq!(m["curves"].as_array().unwrap().len(), 4);
    for stem in ["class_stiffness", "distance_curves"] {
        let png = std::fs::read(out.join(format!("{stem}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{stem}.png");
        assert!(std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap().contains("<svg"));
    }
}

#[test]
fn gram_on_a_dataset_subset() {
    let Some(data) = data_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let w = checkpoint(tmp.path());
    let out = tmp.path().join("g");
    stiff(&[
        "gram",
        "--weights",
        w.to_str().unwrap(),
        "--dataset",
        "mnist",
        "--subset",
        "50",
        "--data-dir",
        &data,
        "--out",
        out.to_str().unwrap(),
    ]);
    let k = candle::safetensors::load(out.join("gram.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(k["K"].dims(), &[50, 50]);
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stiffness.json")).unwrap()).unwrap();
    assert!(s["timing"]["gram_seconds"].as_f64().unwrap() >= 0.0);
}
