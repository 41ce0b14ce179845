//! The one model loader of `gram`, `measure` and `cross`: each subcommand takes the same flags,
//! and a preset checkpoint read as a `--spec` (its layer list from `ModelConfig::to_spec`, its
//! keys renamed by `--key-map`) gives the preset's numbers, with a non-default `--preprocess`.
//! The two runs share the weights file and the examples, so they differ only in the loader path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle::{DType, Device};
use stiff_models::{InputShape, Model, ModelConfig, Preset};

mod common;
use common::write_flat_mnist;

/// Both routes run the same f32 conv kernel on the same numbers (a spec shaped like a preset is
/// the same chain), so stiffness values agree to f32 rounding of the Gram, far below this.
const TOL: f64 = 1e-6;

/// `mean-std`, not the dataset default (`per-example`): the flag must reach both paths.
const PREPROCESS: &str = "mean-std:0.2,0.4";

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    weights: std::path::PathBuf,
    spec: std::path::PathBuf,
    key_map: std::path::PathBuf,
}

impl Fixture {
    /// Runs `base` once with `--preset cnn4` and once with the same checkpoint read as `--spec`
    /// + `--key-map`, into `root/preset` and `root/spec` (both must succeed).
    fn preset_and_spec(&self, base: &[&str]) -> (PathBuf, PathBuf) {
        let (a, b) = (self.root.join("preset"), self.root.join("spec"));
        let data = ("--data-dir", self.root.as_path());
        ok(&stiff(&[base, &["--preset", "cnn4"]].concat(), &[data, ("--weights", &self.weights), ("--out", &a)]));
        let spec = [("--spec", self.spec.as_path()), ("--key-map", &self.key_map), ("--weights", &self.weights)];
        ok(&stiff(base, &[&[data][..], &spec[..], &[("--out", b.as_path())][..]].concat()));
        (a, b)
    }
}

/// A cnn4 checkpoint for MNIST (seeded init), its spec and the key map from its keys to the spec's,
/// and a generated MNIST folder.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    write_flat_mnist(&root);
    let cfg = ModelConfig::preset(Preset::Cnn4, InputShape::new(1, 28, 28), 10);
    let weights = root.join("cnn4.safetensors");
    Model::new(&cfg, 5, DType::F32, &Device::Cpu).unwrap().save(&weights).unwrap();
    let (spec, keys) = cfg.to_spec().unwrap();
    let (spec_path, key_map) = (root.join("cnn4.json"), root.join("keys.json"));
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    std::fs::write(&key_map, serde_json::to_vec(&keys.rename).unwrap()).unwrap();
    Fixture { _dir: dir, root, weights, spec: spec_path, key_map }
}

fn stiff(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stiff"));
    c.args(args).env("RUST_BACKTRACE", "0");
    for (flag, p) in paths {
        c.arg(flag).arg(p);
    }
    c.output().unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Every number in `a` equals the one at the same place in `b` within [`TOL`]; everything else
/// is equal. Timing fields are skipped.
fn assert_same(path: &str, a: &serde_json::Value, b: &serde_json::Value) {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= TOL, "{path}: preset {x} vs spec {y}");
        }
        (V::Array(x), V::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_same(&format!("{path}[{i}]"), x, y);
            }
        }
        (V::Object(x), V::Object(y)) => {
            let keys: Vec<&String> = x.keys().filter(|k| !k.ends_with("seconds") && *k != "timing").collect();
            assert_eq!(keys.len(), y.keys().filter(|k| !k.ends_with("seconds") && *k != "timing").count(), "{path}");
            for k in keys {
                assert_same(&format!("{path}.{k}"), &x[k], &y[k]);
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn measure_gives_the_presets_numbers_for_a_spec_that_is_the_preset() {
    let f = fixture();
    let base = ["measure", "--dataset", "mnist", "--subset", "40", "--bootstrap", "0", "--preprocess", PREPROCESS];
    let (a, b) = f.preset_and_spec(&base);
    let data = ("--data-dir", f.root.as_path());
    let (ra, rb) = (read_json(&a.join("measurement.json")), read_json(&b.join("measurement.json")));
    assert_eq!((ra["model"]["kind"].as_str(), rb["model"]["kind"].as_str()), (Some("preset"), Some("spec")));
    let pre = serde_json::json!({"kind": "mean-std", "mean": 0.2, "std": 0.4});
    assert_eq!((&ra["preprocess"], &rb["preprocess"]), (&pre, &pre));
    let (ma, mb) = (&ra["measurement"], &rb["measurement"]);
    // Not a vacuous comparison: a real answer with distinct within and between values.
    let within = ma["cosine"]["within"].as_f64().unwrap();
    assert!((within - ma["cosine"]["between"].as_f64().unwrap()).abs() > 1e-3, "{ma}");
    assert!(!ma["curves"].as_array().unwrap().is_empty());
    assert_same("measurement", ma, mb);
    // The preprocessing reached the network: the default gives other numbers.
    let c = f.root.join("default");
    let base_default = ["measure", "--dataset", "mnist", "--subset", "40", "--bootstrap", "0"];
    let paths = [data, ("--spec", &f.spec), ("--key-map", &f.key_map), ("--weights", &f.weights), ("--out", &c)];
    ok(&stiff(&base_default, &paths));
    assert_ne!(read_json(&c.join("measurement.json"))["measurement"]["cosine"]["within"], ma["cosine"]["within"]);
}

#[test]
fn cross_gives_the_presets_numbers_for_a_spec_that_is_the_preset() {
    let f = fixture();
    let base =
        ["cross", "--dataset", "mnist", "--rows", "20", "--cols", "test:30", "--quiet", "--preprocess", PREPROCESS];
    let (a, b) = f.preset_and_spec(&base);
    let data = ("--data-dir", f.root.as_path());
    let (ja, jb) = (read_json(&a.join("cross.json")), read_json(&b.join("cross.json")));
    assert_eq!(ja["pairs"], 600);
    for key in ["class_sign", "class_cosine", "pairs"] {
        assert_same(key, &ja[key], &jb[key]);
    }
    // The preprocessing is part of the job (recorded in the plan's side descriptions).
    let plan = read_json(&b.join("plan.json"));
    assert!(plan["rows"]["name"].as_str().unwrap().contains("MeanStd"), "{plan}");
    // The class count can only repeat the network's.
    let o = stiff(
        &[&base[..], &["--num-classes", "7"]].concat(),
        &[
            data,
            ("--spec", &f.spec),
            ("--key-map", &f.key_map),
            ("--weights", &f.weights),
            ("--out", &f.root.join("c")),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--num-classes 7 contradicts") && err.contains("10"), "{err}");
}

#[test]
fn gram_gives_the_presets_numbers_for_a_spec_that_is_the_preset() {
    let f = fixture();
    let base = ["gram", "--dataset", "mnist", "--subset", "20", "--preprocess", PREPROCESS];
    let (a, b) = f.preset_and_spec(&base);
    let data = ("--data-dir", f.root.as_path());
    let k = |d: &Path| {
        let t = candle::safetensors::load(d.join("gram.safetensors"), &Device::Cpu).unwrap();
        t["K"].to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
    };
    let (ka, kb) = (k(&a), k(&b));
    for i in 0..20 {
        for j in 0..20 {
            let cos = (ka[i][j] - kb[i][j]).abs() / (ka[i][i] * ka[j][j]).sqrt();
            assert!(cos <= TOL, "K[{i},{j}]: preset {} vs spec {}", ka[i][j], kb[i][j]);
        }
    }
    let (sa, sb) = (read_json(&a.join("stiffness.json")), read_json(&b.join("stiffness.json")));
    assert_eq!((&sa["preprocess"]["kind"], &sb["preprocess"]["kind"]), (&"mean-std".into(), &"mean-std".into()));
    assert!(sa["model"].is_object() && sb["spec"].is_object(), "each records its architecture");
    let roles = |s: &serde_json::Value| -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in s["files_read"].as_array().unwrap() {
            *m.entry(r["role"].as_str().unwrap().to_string()).or_default() += 1;
        }
        m
    };
    assert_eq!(roles(&sb).get("spec"), Some(&1));
    assert_eq!(roles(&sb).get("key_map"), Some(&1));
    // --key-map without --spec is refused, beside --preset too.
    let o = stiff(
        &[&base[..], &["--preset", "cnn4"]].concat(),
        &[data, ("--weights", &f.weights), ("--key-map", &f.key_map), ("--out", &f.root.join("c"))],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--key-map") && err.contains("--spec"), "{err}");
}
