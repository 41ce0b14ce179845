//! Hostile and careless inputs to `stiff gram` (and the CLI around it): every failure is found
//! before any work, says which flag or file is wrong, and leaves no half-written result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle::{DType, Device, Tensor};
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig};

struct Fixture {
    dir: tempfile::TempDir,
    weights: PathBuf,
}

/// A 3-class MLP 16 -> 6 -> 3 saved with its configuration.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::new(ArchSpec::Mlp { hidden: vec![6] }, InputShape::new(1, 4, 4), 3);
    let weights = dir.path().join("w.safetensors");
    Model::new(&cfg, 1, DType::F32, &Device::Cpu).unwrap().save(&weights).unwrap();
    Fixture { dir, weights }
}

fn write_inputs(path: &Path, labels: Vec<u8>, poison: Option<f32>) {
    let n = labels.len();
    let mut v: Vec<f32> = (0..n * 16).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect();
    if let Some(p) = poison {
        v[21] = p;
    }
    let x = Tensor::from_vec(v, (n, 16), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(labels, n, &Device::Cpu).unwrap();
    stiff_models::io::save_tensors_atomic(&[("x".into(), x), ("y".into(), y)], HashMap::new(), path).unwrap();
}

fn balanced(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 3) as u8).collect()
}

fn gram(f: &Fixture, inputs: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stiff"))
        .env("RUST_BACKTRACE", "1")
        .args(["gram", "--weights"])
        .arg(&f.weights)
        .arg("--inputs")
        .arg(inputs)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// N = 30,000 with --no-per-layer and the default 2 GiB budget: K alone is 3.6 GB, so the run is
/// refused before any work, saying what fits (before the fix it started and reached 17.7 GB RSS).
#[test]
fn over_budget_gram_is_refused_up_front_with_what_fits() {
    let f = fixture();
    let inputs = f.dir.path().join("big.safetensors");
    write_inputs(&inputs, balanced(30_000), None);
    let out = f.dir.path().join("out");
    let t = std::time::Instant::now();
    let o = gram(&f, &inputs, &out, &["--no-per-layer"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    // Largest N with K (4 N^2 bytes) plus one example's pass in what 2 GiB leaves after the
    // examples (30,000 x 16 f32 = 1,920,000 bytes) and the model (123 f32): sqrt(536,390,789) = 23160.
    assert!(
        err.contains("at most N = 23160")
            && err.contains("--budget-mb 2048 leaves")
            && err.contains("examples in --inputs"),
        "{err}"
    );
    assert!(t.elapsed().as_secs() < 60, "refused before the work, not after");
    assert!(!out.join("gram.safetensors").exists());
}

/// Per-layer Grams that do not fit are skipped with a note by default (so defaults never fail
/// because of them), refused when forced with --per-layer.
#[test]
fn per_layer_grams_yield_to_the_budget() {
    let f = fixture();
    let inputs = f.dir.path().join("in.safetensors");
    // N = 300: K = 360,000 bytes; the two per-layer Grams double that: over 1 MiB in all.
    write_inputs(&inputs, balanced(300), None);
    let out = f.dir.path().join("auto");
    let o = gram(&f, &inputs, &out, &["--budget-mb", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("per-layer Grams skipped"), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stiffness.json")).unwrap()).unwrap();
    assert_eq!(json["per_layer"]["computed"], false);
    let t = candle::safetensors::load(out.join("gram.safetensors"), &Device::Cpu).unwrap();
    assert!(t.contains_key("K") && !t.contains_key("K.layers.0"));

    let o = gram(&f, &inputs, &f.dir.path().join("forced"), &["--budget-mb", "1", "--per-layer"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--no-per-layer (fits up to 300 examples)") || stderr(&o).contains("--no-per-layer"),
        "{}",
        stderr(&o)
    );
}

/// 2^44 MiB overflows a 64-bit byte count: an error naming the flag, not a budget of 0 bytes.
#[test]
fn budget_that_overflows_is_an_error() {
    let f = fixture();
    let inputs = f.dir.path().join("in.safetensors");
    write_inputs(&inputs, balanced(6), None);
    let o = gram(&f, &inputs, &f.dir.path().join("o"), &["--budget-mb", "17592186044416"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--budget-mb 17592186044416 is too large"), "{}", stderr(&o));
}

/// --out that is a file is found before loading anything; nothing is left beside it.
#[test]
fn unusable_out_is_found_before_any_work() {
    let f = fixture();
    let inputs = f.dir.path().join("in.safetensors");
    write_inputs(&inputs, balanced(6), None);
    let out = f.dir.path().join("taken");
    std::fs::write(&out, b"a file").unwrap();
    let before = names(f.dir.path());
    // The inputs do not even exist: the --out check must come first.
    let o = gram(&f, &f.dir.path().join("missing.safetensors"), &out, &[]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("--out") && err.contains("not a directory"), "{err}");
    assert_eq!(names(f.dir.path()), before);
}

/// NaN / Inf in the inputs are reported on load, naming the file and the tensor.
#[test]
fn non_finite_inputs_name_file_and_tensor() {
    let f = fixture();
    for (i, bad) in [f32::NAN, f32::NEG_INFINITY].into_iter().enumerate() {
        let inputs = f.dir.path().join(format!("poisoned{i}.safetensors"));
        write_inputs(&inputs, balanced(6), Some(bad));
        let out = f.dir.path().join(format!("o{i}"));
        let o = gram(&f, &inputs, &out, &[]);
        let err = stderr(&o);
        assert!(!o.status.success());
        assert!(
            err.contains(&format!("poisoned{i}.safetensors")) && err.contains("`x`") && err.contains("index 21"),
            "{err}"
        );
        assert!(!out.join("gram.safetensors").exists());
    }
}

/// A class with no example: the Gram is still written (with its report, which records the
/// analysis error), the exit status says it failed and names --allow-empty-classes; with the flag
/// the analysis succeeds.
#[test]
fn failed_class_analysis_keeps_the_gram() {
    let f = fixture();
    let inputs = f.dir.path().join("two.safetensors");
    write_inputs(&inputs, vec![0, 1, 0, 1, 0, 1], None);
    let out = f.dir.path().join("o");
    let o = gram(&f, &inputs, &out, &[]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("--allow-empty-classes"), "{err}");
    assert_eq!(names(&out), [stiff_fs::LOCK_FILE, "gram.safetensors", "stiffness.json"]);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stiffness.json")).unwrap()).unwrap();
    assert!(json["analysis_error"].as_str().unwrap().contains("--allow-empty-classes"));
    assert!(json["within_sign"].is_null());
    let t = candle::safetensors::load(out.join("gram.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(t["K"].dims(), &[6, 6]);

    let o = gram(&f, &inputs, &f.dir.path().join("ok"), &["--allow-empty-classes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.dir.path().join("ok/stiffness.json")).unwrap()).unwrap();
    assert_eq!(json["class_stiffness"]["empty_classes"], serde_json::json!([2]));
}

/// --num-classes that contradicts the checkpoint is an error, not silently ignored.
#[test]
fn num_classes_is_never_ignored() {
    let f = fixture();
    let inputs = f.dir.path().join("in.safetensors");
    write_inputs(&inputs, balanced(6), None);
    let o = gram(&f, &inputs, &f.dir.path().join("o"), &["--num-classes", "5"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--num-classes 5 contradicts"), "{}", stderr(&o));
    // With --preset the class count comes from the checkpoint's head.bias (3), not a default 10.
    let o = gram(&f, &inputs, &f.dir.path().join("p"), &["--preset", "fc6"]);
    // fc6's layers differ from the fixture's, so loading fails, but on shapes, never on classes.
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("head.bias` has shape [3], the model expects [10]"), "{}", stderr(&o));
}

/// Outputs are versioned, record the preprocessing and every file read (with checksums).
#[test]
fn outputs_record_schema_preprocessing_and_files() {
    let f = fixture();
    let inputs = f.dir.path().join("in.safetensors");
    write_inputs(&inputs, balanced(6), None);
    let read = |out: &str, extra: &[&str]| -> serde_json::Value {
        let o = gram(&f, &inputs, &f.dir.path().join(out), extra);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("N = 6"), "the result goes to stdout");
        serde_json::from_slice(&std::fs::read(f.dir.path().join(out).join("stiffness.json")).unwrap()).unwrap()
    };
    let plain = read("plain", &[]);
    assert!(plain["schema_version"].as_u64().unwrap() >= 2);
    assert_eq!(plain["preprocess"]["kind"], "none", "files are used as given by default");
    let roles: Vec<&str> =
        plain["files_read"].as_array().unwrap().iter().map(|r| r["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["inputs", "weights"]);
    let sha = stiff_data::sha256_hex(&std::fs::read(&f.weights).unwrap());
    assert_eq!(plain["files_read"][1]["sha256"], sha);
    let scaled = read("scaled", &["--preprocess", "mean-std:0.5,2"]);
    assert_eq!(scaled["preprocess"], serde_json::json!({"kind": "mean-std", "mean": 0.5, "std": 2.0}));
    assert_ne!(scaled["mean_loss"], plain["mean_loss"], "the preprocessing is applied");
}

/// An ordinary error is one message (causes once), no backtrace even with RUST_BACKTRACE=1;
/// a file that is not safetensors is called that.
#[test]
fn errors_are_plain_messages() {
    let f = fixture();
    let junk = f.dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"hello").unwrap();
    let o = gram(&f, &junk, &f.dir.path().join("o"), &[]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(!err.contains("backtrace") && !err.contains("Stack"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(err.contains("not a safetensors file") && err.contains("--inputs"), "{err}");
}

/// `--help` lists the closed choices; completions are generated.
#[test]
fn help_lists_values_and_completions_exist() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_stiff")).args(args).output().unwrap();
    let help = String::from_utf8_lossy(&run(&["gram", "--help"]).stdout).into_owned();
    for v in [
        "fashion-mnist",
        "cifar100",
        "cnn5",
        "materialised",
        "--device",
        "--preprocess",
        "--allow-empty-classes",
        "--threads",
    ] {
        assert!(help.contains(v), "gram --help lacks {v}:\n{help}");
    }
    let o = run(&["completions", "bash"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("stiff"));
}

/// `measure` and `reproduce` check --out first too: a file there is reported before any data is
/// looked for or any run trains (before the fix, minutes of training were lost first).
#[test]
fn measure_and_reproduce_check_out_first() {
    let f = fixture();
    let out = f.dir.path().join("taken");
    std::fs::write(&out, b"a file").unwrap();
    let empty = f.dir.path().join("no-data");
    std::fs::create_dir(&empty).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stiff"))
            .args(args)
            .arg("--data-dir")
            .arg(&empty)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let w = f.weights.to_str().unwrap();
    for o in
        [run(&["measure", "--weights", w, "--dataset", "mnist"]), run(&["reproduce", "fig8", "--quick", "--no-fetch"])]
    {
        let err = stderr(&o);
        assert!(!o.status.success());
        assert!(err.contains("--out") && err.contains("not a directory"), "{err}");
    }
}

/// `gram --device cuda:0` on a CPU build says how to get CUDA instead of running on the CPU.
#[test]
fn gram_device_flag_is_honoured() {
    let f = fixture();
    let inputs = f.dir.path().join("in.safetensors");
    write_inputs(&inputs, balanced(6), None);
    let o = gram(&f, &inputs, &f.dir.path().join("o"), &["--device", "cuda:0"]);
    if cfg!(feature = "cuda") {
        return;
    }
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no CUDA support") && stderr(&o).contains("build-cuda"), "{}", stderr(&o));
    let o = gram(&f, &inputs, &f.dir.path().join("o"), &["--device", "tpu"]);
    assert!(!o.status.success() && stderr(&o).contains("--device"), "{}", stderr(&o));
}

/// A `gram` killed between the renames of its two outputs (simulated with stiff-fs's abort hook
/// after the first rename) over an older complete result: the old `stiffness.json` is gone, so the
/// folder never pairs a new Gram with an old report; a rerun publishes the complete new set.
#[test]
fn gram_killed_between_renames_leaves_no_stale_report() {
    let f = fixture();
    let (six, nine) = (f.dir.path().join("six.safetensors"), f.dir.path().join("nine.safetensors"));
    write_inputs(&six, balanced(6), None);
    write_inputs(&nine, balanced(9), None);
    let out = f.dir.path().join("o");
    assert!(gram(&f, &six, &out, &[]).status.success());
    let killed = Command::new(env!("CARGO_BIN_EXE_stiff"))
        .env(stiff_fs::ABORT_AFTER_RENAMES_ENV, "1")
        .args(["gram", "--weights"])
        .arg(&f.weights)
        .arg("--inputs")
        .arg(&nine)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the abort hook did not fire");
    let k = candle::safetensors::load(out.join("gram.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(k["K"].dims(), &[9, 9], "the first rename published the new Gram");
    assert!(!out.join("stiffness.json").exists(), "a stale report sits beside the new Gram");

    let o = gram(&f, &nine, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stiffness.json")).unwrap()).unwrap();
    assert_eq!(json["n"], 9);
}
