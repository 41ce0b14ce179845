//! `stiff cross` end to end on generated inputs files: 4 shards + `cross merge` equal the
//! single-process run; bad arguments fail with a message and no result.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use candle::{DType, Device, Tensor};
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig};

fn write_inputs(path: &Path, n: usize, offset: usize) {
    // Every 4th image is flat (all zero): ReLU inputs sit at their bias.
    let v: Vec<f32> = (0..n * 16)
        .map(|i| if (i / 16) % 4 == 3 { 0.0 } else { (((i + offset) * 37 % 11) as f32 - 5.0) / 5.0 })
        .collect();
    let x = Tensor::from_vec(v, (n, 1, 4, 4), &Device::Cpu).unwrap();
    let y: Vec<u8> = (0..n).map(|i| ((i + offset) % 3) as u8).collect();
    let y = Tensor::from_vec(y, n, &Device::Cpu).unwrap();
    stiff_models::io::save_tensors_atomic(&[("x".into(), x), ("y".into(), y)], HashMap::new(), path).unwrap();
}

fn stiff(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stiff"));
    c.args(args);
    for (flag, p) in paths {
        c.arg(flag).arg(p);
    }
    c.output().unwrap()
}

fn json_sans_timing(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("cross.json")).unwrap()).unwrap();
    assert!(v["timing"]["seconds"].as_f64().unwrap() > 0.0);
    v.as_object_mut().unwrap().remove("timing");
    v
}

#[test]
fn four_shards_and_merge_equal_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::new(ArchSpec::Mlp { hidden: vec![6, 5] }, InputShape::new(1, 4, 4), 3);
    let weights = dir.path().join("w.safetensors");
    Model::new(&cfg, 2, DType::F32, &Device::Cpu).unwrap().save(&weights).unwrap();
    let (rows, cols) = (dir.path().join("rows.safetensors"), dir.path().join("cols.safetensors"));
    write_inputs(&rows, 23, 0);
    write_inputs(&cols, 14, 5);
    let (single, sharded) = (dir.path().join("single"), dir.path().join("sharded"));
    let base = ["cross", "--tile-rows", "5", "--tile-cols", "6", "--quiet"];
    let files = |out: &Path| {
        [
            ("--weights", weights.clone()),
            ("--rows", rows.clone()),
            ("--cols", cols.clone()),
            ("--out", out.to_path_buf()),
        ]
    };
    let run = |extra: &[&str], out: &Path| {
        let f = files(out);
        let f: Vec<(&str, &Path)> = f.iter().map(|(a, p)| (*a, p.as_path())).collect();
        let o = stiff(&[&base[..], extra].concat(), &f);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&[], &single);
    for k in [2, 0, 3, 1] {
        run(&["--shard", &format!("{k}/4"), "--no-merge"], &sharded);
    }
    assert!(!sharded.join("cross.json").exists(), "--no-merge writes no result");
    let o = stiff(&["cross", "merge"], &[]);
    assert!(!o.status.success(), "merge needs a folder");
    let o = Command::new(env!("CARGO_BIN_EXE_stiff")).args(["cross", "merge"]).arg(&sharded).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json_sans_timing(&single), json_sans_timing(&sharded));
    for f in ["class_sign.csv", "class_cosine.csv", "columns.csv"] {
        assert_eq!(std::fs::read(single.join(f)).unwrap(), std::fs::read(sharded.join(f)).unwrap(), "{f}");
    }
    let v = json_sans_timing(&single);
    assert_eq!(v["pairs"], 23 * 14);
    assert_eq!(v["settings"]["row_tiles"], 5);
    assert!(single.join("cross.png").exists() && single.join("cross.svg").exists());
}

#[test]
fn bad_arguments_fail_with_a_message_and_no_result() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cases: [(&[&str], &str); 4] = [
        // Checked before any data is loaded. Before the fix `--budget-mb << 20` was computed after
        // loading and wrapped to 0 bytes (an error blaming a 16 MiB minimum).
        (
            &["cross", "--weights", "w", "--rows", "train", "--cols", "test", "--budget-mb", "17592186044416"],
            "--budget-mb 17592186044416 is too large",
        ),
        (
            &["cross", "--weights", "nope.safetensors", "--rows", "no-such-file", "--cols", "test"],
            "--rows `no-such-file`",
        ),
        (&["cross", "--weights", "w", "--rows", "train", "--cols", "test", "--shard", "3/3"], "invalid shard"),
        (&["cross", "--weights", "w", "--rows", "train", "--cols", "test"], "--dataset"),
    ];
    for (args, want) in cases {
        let o = stiff(args, &[("--out", &out)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_stiff")).args(["cross", "merge"]).arg(dir.path()).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("plan.json"));
    assert!(!out.join("cross.json").exists());
}

/// A `cross merge` killed after the first rename of its file set (stiff-fs's abort hook) over an
/// earlier merge: `cross.json`, the completion file, is gone, so the folder does not look merged;
/// merging again gives the same result as before.
#[test]
fn merge_killed_between_renames_is_not_a_result_and_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::new(ArchSpec::Mlp { hidden: vec![5] }, InputShape::new(1, 4, 4), 3);
    let weights = dir.path().join("w.safetensors");
    Model::new(&cfg, 3, DType::F32, &Device::Cpu).unwrap().save(&weights).unwrap();
    let (rows, cols) = (dir.path().join("rows.safetensors"), dir.path().join("cols.safetensors"));
    write_inputs(&rows, 11, 0);
    write_inputs(&cols, 7, 2);
    let out = dir.path().join("job");
    let o = stiff(
        &["cross", "--tile-rows", "4", "--quiet"],
        &[("--weights", &weights), ("--rows", &rows), ("--cols", &cols), ("--out", &out)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let merged = json_sans_timing(&out);
    let killed = Command::new(env!("CARGO_BIN_EXE_stiff"))
        .env(stiff_fs::ABORT_AFTER_RENAMES_ENV, "1")
        .args(["cross", "merge"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the abort hook did not fire");
    assert!(out.join("class_sign.csv").exists());
    assert!(!out.join("cross.json").exists(), "an interrupted merge still looks complete");
    let o = Command::new(env!("CARGO_BIN_EXE_stiff")).args(["cross", "merge"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json_sans_timing(&out), merged);
}

/// `cross --spec`: the same MLP as a PyTorch-style spec with its `state_dict` (the path a user's
/// own `nn.Sequential` takes) gives the same class matrices and column summaries as the preset
/// checkpoint; `--key-map` without `--spec` and a bad `--preprocess` are refused.
#[test]
fn a_spec_model_gives_the_presets_cross_stiffness() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::new(ArchSpec::Mlp { hidden: vec![6, 5] }, InputShape::new(1, 4, 4), 3);
    let model = Model::new(&cfg, 2, DType::F32, &Device::Cpu).unwrap();
    let weights = dir.path().join("w.safetensors");
    model.save(&weights).unwrap();
    let spec = model.to_spec_model().unwrap();
    let (spec_json, _) = cfg.to_spec().unwrap();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec_json).unwrap()).unwrap();
    let sd = dir.path().join("state_dict.safetensors");
    stiff_models::io::save_tensors_atomic(&spec.named_tensors(), HashMap::new(), &sd).unwrap();
    let (rows, cols) = (dir.path().join("rows.safetensors"), dir.path().join("cols.safetensors"));
    write_inputs(&rows, 17, 0);
    write_inputs(&cols, 11, 5);
    let run = |model: &[(&str, &Path)], out: &Path| {
        let mut f = model.to_vec();
        f.extend([("--rows", rows.as_path()), ("--cols", cols.as_path()), ("--out", out)]);
        stiff(&["cross", "--quiet", "--preprocess", "per-example"], &f)
    };
    let (a, b) = (dir.path().join("preset"), dir.path().join("spec"));
    let o = run(&[("--weights", weights.as_path())], &a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[("--spec", spec_path.as_path()), ("--weights", sd.as_path())], &b);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ja, jb) = (json_sans_timing(&a), json_sans_timing(&b));
    for key in ["class_sign", "class_cosine", "pairs"] {
        assert_eq!(ja[key], jb[key], "{key}");
    }
    assert_eq!(std::fs::read(a.join("columns.csv")).unwrap(), std::fs::read(b.join("columns.csv")).unwrap());
    let o = run(&[("--weights", weights.as_path()), ("--key-map", spec_path.as_path())], &dir.path().join("c"));
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--spec"));
    let o = stiff(&["cross", "--preprocess", "zscore"], &[("--weights", weights.as_path())]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("preprocess"));
}
