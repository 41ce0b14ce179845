//! The streamed, tiled route against independent in-memory routes, and the bookkeeping that
//! makes it "same answer however split": shards, order, resume; plus typed errors.

use std::path::Path;

use candle::{DType, Device, Tensor};
use ndarray::Array2;
use stiff_analysis::{class_stiffness, rectangular_class_stiffness, StiffnessSettings};
use stiff_cross::{merge, run, CrossError, CrossOptions, ExampleSet, ModelId, RunControl, Shard};
use stiff_gradkernel::{cross_gram, gram, to_ndarray_f64, GramOptions};
use stiff_models::{ArchSpec, InputShape, Model, ModelConfig};

/// f64 model and f64 Gram: the routes differ only in summation order, so class means agree to
/// about 1e-15; a sign could flip only for |K_ij| below ~1e-14 |g_i||g_j|, which these inputs
/// do not produce (checked: the smallest |cos| is printed on failure).
const TOL: f64 = 1e-10;
const CLASSES: usize = 3;

fn model() -> Model {
    let cfg = ModelConfig::new(ArchSpec::Mlp { hidden: vec![7, 5] }, InputShape::new(1, 3, 4), CLASSES);
    Model::new(&cfg, 3, DType::F64, &Device::Cpu).unwrap()
}

fn model_id() -> ModelId {
    ModelId { fingerprint: "mlp-7-5-seed3".into(), description: "test model".into() }
}

/// `n` examples of 12 features from a seeded LCG; every 5th example has a flat (all-zero) input
/// so ReLU inputs sit exactly at their bias; labels cycle unevenly over the classes.
fn examples(n: usize, seed: u64, name: &str) -> ExampleSet {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut x = Vec::with_capacity(n * 12);
    for i in 0..n {
        for _ in 0..12 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((s >> 11) as f64) / ((1u64 << 53) as f64) - 0.5;
            x.push(if i % 5 == 4 { 0.0 } else { 2.0 * u });
        }
    }
    let labels: Vec<u32> = (0..n).map(|i| ((i * 7 + i / 3) % CLASSES) as u32).collect();
    let x = Tensor::from_vec(x, (n, 12), &Device::Cpu).unwrap();
    ExampleSet::new(name, x, labels, (100..100 + n).collect()).unwrap()
}

fn opts(tile_rows: usize, tile_cols: usize, same_set: bool) -> CrossOptions {
    CrossOptions::default().with_tile_rows(Some(tile_rows)).with_tile_cols(Some(tile_cols)).with_same_set(same_set)
}

fn go(dir: &Path, rows: &ExampleSet, cols: &ExampleSet, o: &CrossOptions, shard: Option<Shard>) {
    run(&model(), model_id(), rows, cols, o, dir, RunControl::default().with_shard(shard)).unwrap();
}

fn labels_tensor(l: &[u32]) -> Tensor {
    Tensor::new(l, &Device::Cpu).unwrap()
}

fn assert_close(what: &str, a: &Array2<f64>, b: &Array2<f64>) {
    assert_eq!(a.dim(), b.dim(), "{what}: shape");
    for (ij, (x, y)) in a.indexed_iter().zip(b.iter()).map(|((ij, x), y)| (ij, (x, y))) {
        assert!((x - y).abs() <= TOL, "{what}{ij:?}: streamed {x} vs in-memory {y}");
    }
}

/// cross.json as JSON without the timing (the only field allowed to differ between runs).
fn report_sans_timing(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("cross.json")).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("timing").expect("cross.json has timing");
    v
}

fn same_outputs(a: &Path, b: &Path) {
    assert_eq!(report_sans_timing(a), report_sans_timing(b), "cross.json differs (timing aside)");
    for f in ["class_sign.csv", "class_cosine.csv", "columns.csv"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
}

#[test]
fn square_streamed_equals_class_stiffness_of_full_gram() {
    let set = examples(37, 1, "set");
    let m = model();
    // Independent route: the whole N x N Gram in memory, then stiff-analysis's class matrices.
    let y = labels_tensor(&set.labels);
    let g = gram(&m, &set.x, &y, &GramOptions::default()).unwrap();
    let k = to_ndarray_f64(&g.k).unwrap();
    let want = class_stiffness(k.view(), &set.labels, CLASSES, &StiffnessSettings::default()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    go(dir.path(), &set, &set, &opts(8, 11, true), None);
    let got = merge(dir.path()).unwrap();
    assert_eq!(got.report.class_sign.counts, want.sign.counts, "self-pairs must be excluded");
    assert_eq!(got.report.class_cosine.counts, want.cosine.counts);
    assert_close("sign", &got.report.class_sign.values, &want.sign.values);
    assert_close("cosine", &got.report.class_cosine.values, &want.cosine.values);
    assert!((got.report.class_sign.between - want.sign.between).abs() <= TOL);
    assert!((got.report.class_cosine.within - want.cosine.within).abs() <= TOL);

    // Per-column own-class mean cosine, by a naive loop over the full K.
    for j in 0..set.len() {
        let a = set.labels[j];
        let (mut s, mut n) = (0.0, 0);
        for i in 0..set.len() {
            if i != j && set.labels[i] == a {
                s += k[[i, j]] / (k[[i, i]] * k[[j, j]]).sqrt();
                n += 1;
            }
        }
        let summary = got.stiffness.column_summary(j, a);
        assert!((summary.own_cosine - s / n as f64).abs() <= TOL, "column {j}");
    }
    for f in ["cross.json", "class_sign.csv", "class_cosine.csv", "columns.csv", "cross.png", "cross.svg"] {
        assert!(dir.path().join(f).exists(), "{f} written");
    }
}

#[test]
fn rectangular_streamed_equals_full_cross_gram() {
    let rows = examples(29, 2, "rows");
    let cols = examples(17, 3, "cols");
    let m = model();
    let (ya, yb) = (labels_tensor(&rows.labels), labels_tensor(&cols.labels));
    let g = cross_gram(&m, &rows.x, &ya, &cols.x, &yb, &GramOptions::default()).unwrap();
    let k = to_ndarray_f64(&g.k).unwrap();
    let (rn, cn) = (ndarray::Array1::from_vec(g.norms_a.clone()), ndarray::Array1::from_vec(g.norms_b.clone()));
    let want = rectangular_class_stiffness(
        k.view(),
        rn.view(),
        cn.view(),
        &rows.labels,
        &cols.labels,
        CLASSES,
        &StiffnessSettings::default(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    go(dir.path(), &rows, &cols, &opts(6, 5, false), None);
    let got = merge(dir.path()).unwrap().report;
    assert_eq!(got.class_sign.counts, want.sign.counts);
    assert_eq!(got.pairs, 29 * 17);
    assert_close("sign", &got.class_sign.values, &want.sign.values);
    assert_close("cosine", &got.class_cosine.values, &want.cosine.values);
    // The ranked list is sorted ascending by own-class cosine and carries source ids.
    let r = &got.most_anti_stiff;
    assert!(!r.is_empty() && r.windows(2).all(|w| w[0].own_cosine <= w[1].own_cosine));
    assert!(r.iter().all(|a| a.id == a.col + 100));
}

#[test]
fn four_shards_in_any_order_merge_to_the_single_process_answer() {
    let rows = examples(31, 4, "rows");
    let cols = examples(23, 5, "cols");
    let o = opts(7, 6, false); // 5 x 4 = 20 tiles, ragged edges
    let single = tempfile::tempdir().unwrap();
    go(single.path(), &rows, &cols, &o, None);
    merge(single.path()).unwrap();

    let sharded = tempfile::tempdir().unwrap();
    for k in [3, 1, 0, 2] {
        let before = merge(sharded.path());
        assert!(matches!(before, Err(CrossError::Incomplete { .. }) | Err(CrossError::BadFile { .. })));
        go(sharded.path(), &rows, &cols, &o, Some(Shard { k, n: 4 }));
    }
    merge(sharded.path()).unwrap();
    same_outputs(single.path(), sharded.path());
}

#[test]
fn interrupted_run_resumes_to_identical_output() {
    let set = examples(26, 6, "set");
    let o = opts(5, 9, true);
    let full = tempfile::tempdir().unwrap();
    go(full.path(), &set, &set, &o, None);
    merge(full.path()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ctl = RunControl::default().with_max_tiles(Some(4));
    let s = run(&model(), model_id(), &set, &set, &o, dir.path(), ctl).unwrap();
    assert_eq!((s.computed, s.complete), (4, false));
    // A stray temporary file from a killed writer must not count as a tile.
    std::fs::write(dir.path().join("tiles").join(".tile-000005.safetensors.tmp123"), b"junk").unwrap();
    match merge(dir.path()) {
        Err(CrossError::Incomplete { missing, total, .. }) => {
            assert_eq!((missing, total), (s.tiles_total - 4, s.tiles_total))
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    let s2 = run(&model(), model_id(), &set, &set, &o, dir.path(), RunControl::default()).unwrap();
    assert_eq!((s2.resumed, s2.computed, s2.complete), (4, s.tiles_total - 4, true));
    merge(dir.path()).unwrap();
    same_outputs(full.path(), dir.path());
}

#[test]
fn other_tile_grids_agree_within_rounding() {
    let rows = examples(33, 7, "rows");
    let cols = examples(19, 8, "cols");
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    go(a.path(), &rows, &cols, &opts(33, 19, false), None); // one tile
    go(b.path(), &rows, &cols, &opts(4, 3, false), None); // 9 x 7 tiles
    let (ra, rb) = (merge(a.path()).unwrap().report, merge(b.path()).unwrap().report);
    assert_eq!(ra.class_sign.counts, rb.class_sign.counts);
    assert_close("sign", &ra.class_sign.values, &rb.class_sign.values);
    assert_close("cosine", &ra.class_cosine.values, &rb.class_cosine.values);
}

#[test]
fn bad_inputs_give_typed_errors() {
    let rows = examples(12, 9, "rows");
    let cols = examples(10, 10, "cols");
    let dir = tempfile::tempdir().unwrap();

    for s in ["4/4", "1", "a/b", "0/0", "-1/3"] {
        assert!(matches!(Shard::parse(s), Err(CrossError::Shard(_))), "{s}");
    }
    assert!(matches!(merge(dir.path()), Err(CrossError::BadFile { .. })), "empty folder");

    let mut bad = rows.clone();
    bad.labels[3] = CLASSES as u32;
    let e = run(&model(), model_id(), &bad, &cols, &opts(4, 4, false), dir.path(), RunControl::default());
    assert!(matches!(e, Err(CrossError::Invalid { what: "labels", .. })), "{e:?}");

    let e = run(&model(), model_id(), &rows, &cols, &opts(4, 4, true), dir.path(), RunControl::default());
    assert!(matches!(e, Err(CrossError::Invalid { what: "same_set", .. })), "{e:?}");

    let x = Tensor::zeros((3, 12), DType::F64, &Device::Cpu).unwrap();
    assert!(matches!(ExampleSet::new("x", x, vec![0, 1], vec![0, 1, 2]), Err(CrossError::Invalid { .. })));

    go(dir.path(), &rows, &cols, &opts(4, 4, false), None);
    // Same folder, other tile grid: refused, naming the field.
    let e = run(&model(), model_id(), &rows, &cols, &opts(5, 4, false), dir.path(), RunControl::default());
    match e {
        Err(CrossError::PlanMismatch { field, .. }) => assert!(field.starts_with("tile_rows") || field == "row_tiles"),
        other => panic!("expected PlanMismatch, got {other:?}"),
    }
    // Other weights: refused.
    let other = ModelId { fingerprint: "other".into(), description: "x".into() };
    let e = run(&model(), other, &rows, &cols, &opts(4, 4, false), dir.path(), RunControl::default());
    assert!(matches!(e, Err(CrossError::PlanMismatch { ref field, .. }) if field == "model"), "{e:?}");

    // A damaged tile is reported by name, by merge and by a resuming run.
    let tile = dir.path().join("tiles/tile-000002.safetensors");
    std::fs::write(&tile, b"not a tile").unwrap();
    assert!(matches!(merge(dir.path()), Err(CrossError::BadFile { ref path, .. }) if *path == tile));
    let e = run(&model(), model_id(), &rows, &cols, &opts(4, 4, false), dir.path(), RunControl::default());
    assert!(matches!(e, Err(CrossError::BadFile { ref path, .. }) if *path == tile), "{e:?}");
}

/// `plan.json`, `examples.json` and `cross.json` carry `schema_version` at the top; a job folder
/// from version 1 (`format_version: 1`) is refused with the field named, not silently reused.
#[test]
fn outputs_carry_schema_version_and_old_plans_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    let (rows, cols) = (examples(9, 4, "rows"), examples(6, 5, "cols"));
    let o = opts(4, 6, false);
    go(&dir, &rows, &cols, &o, None);
    merge(&dir).unwrap();
    for f in ["plan.json", "examples.json", "cross.json"] {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(f)).unwrap()).unwrap();
        assert_eq!(v["schema_version"], stiff_cross::SCHEMA_VERSION, "{f}");
    }
    let mut plan: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("plan.json")).unwrap()).unwrap();
    let obj = plan.as_object_mut().unwrap();
    obj.remove("schema_version");
    obj.insert("format_version".into(), 1.into());
    std::fs::write(dir.join("plan.json"), serde_json::to_vec(&plan).unwrap()).unwrap();
    let err = run(&model(), model_id(), &rows, &cols, &o, &dir, RunControl::default()).unwrap_err();
    assert!(matches!(&err, CrossError::PlanMismatch { field, .. } if field == "schema_version"), "{err}");
    let err = merge(&dir).unwrap_err();
    assert!(err.to_string().contains("schema_version 1"), "{err}");
}

/// `(offset, length)` of tensor `name`'s bytes in a safetensors file.
fn tensor_bytes(file: &[u8], name: &str) -> (usize, usize) {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
    let off = &header[name]["data_offsets"];
    let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
    (8 + n + a, b - a)
}

/// One changed `sign_count` byte, or a NaN written into `cos_sum`, is found by `merge` (and a
/// resuming `run`), naming the tile; before tiles carried a checksum merge published
/// `pairs: 2000016` for a 2000 x 1000 job, or NaN stiffness, and succeeded.
#[test]
fn tampered_tiles_are_refused_by_merge_and_resume() {
    let (rows, cols) = (examples(12, 21, "rows"), examples(10, 22, "cols"));
    let o = opts(4, 5, false);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    go(&dir, &rows, &cols, &o, None);
    let pairs = merge(&dir).unwrap().report.pairs;
    assert_eq!(pairs, 120);
    let tile = dir.join("tiles/tile-000003.safetensors");
    let good = std::fs::read(&tile).unwrap();
    let tamper = |name: &str, f: &dyn Fn(&mut [u8])| {
        let mut b = good.clone();
        let (at, len) = tensor_bytes(&b, name);
        f(&mut b[at..at + len]);
        std::fs::write(&tile, &b).unwrap();
    };
    tamper("sign_count", &|d| d[0] = d[0].wrapping_add(16));
    for err in [
        merge(&dir).unwrap_err(),
        run(&model(), model_id(), &rows, &cols, &o, &dir, RunControl::default()).unwrap_err(),
    ] {
        assert!(matches!(&err, CrossError::BadFile { path, .. } if *path == tile), "{err:?}");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }
    tamper("cos_sum", &|d| d[..8].copy_from_slice(&f64::NAN.to_le_bytes()));
    let err = merge(&dir).unwrap_err();
    assert!(matches!(&err, CrossError::BadFile { path, .. } if *path == tile), "{err:?}");
    std::fs::write(&tile, &good).unwrap();
    assert_eq!(merge(&dir).unwrap().report.pairs, pairs, "the restored tile merges again");
}

/// The same weights and data under other paths (`./fc6.safetensors` and its absolute path, a
/// symlink) resume the job: only fingerprints are compared, not the descriptions holding paths.
#[test]
fn same_contents_under_other_paths_resume_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    let (rows, cols) = (examples(9, 31, "rows ./x.safetensors (9)"), examples(6, 32, "cols ./y.safetensors (6)"));
    let o = opts(4, 3, false);
    let first =
        run(&model(), model_id(), &rows, &cols, &o, &dir, RunControl::default().with_max_tiles(Some(2))).unwrap();
    assert_eq!((first.computed, first.complete), (2, false));
    let moved = ModelId { fingerprint: model_id().fingerprint, description: "/abs/path/fc6.safetensors".into() };
    let rename = |s: &ExampleSet, name: &str| ExampleSet { name: name.into(), ..s.clone() };
    let (rows2, cols2) = (rename(&rows, "rows /abs/x.safetensors (9)"), rename(&cols, "cols /abs/y.safetensors (6)"));
    let second = run(&model(), moved, &rows2, &cols2, &o, &dir, RunControl::default()).unwrap();
    assert_eq!((second.resumed, second.computed, second.complete), (2, 4, true));
    assert_eq!(second.plan.model.description, "test model", "the job keeps its stored plan");
    merge(&dir).unwrap();
    // Other contents are still refused.
    let mut other = rows.clone();
    other.labels[0] = (other.labels[0] + 1) % CLASSES as u32;
    let e = run(&model(), model_id(), &other, &cols, &o, &dir, RunControl::default());
    assert!(matches!(e, Err(CrossError::PlanMismatch { ref field, .. }) if field == "rows"), "{e:?}");
}

/// An `--out` that cannot be created says so (it said "cannot read .../tiles").
#[test]
fn an_output_folder_that_cannot_be_created_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let (rows, cols) = (examples(4, 51, "rows"), examples(3, 52, "cols"));
    let dir = file.join("job");
    let err = run(&model(), model_id(), &rows, &cols, &opts(2, 3, false), &dir, RunControl::default()).unwrap_err();
    assert!(matches!(&err, CrossError::CreateDir { path, .. } if *path == dir.join("tiles")), "{err:?}");
    assert!(err.to_string().starts_with("cannot create folder"), "{err}");
}

/// A NaN input is refused when the example set is built, before any tile, naming the set (for
/// an inputs file, its path) and the example.
#[test]
fn non_finite_inputs_are_refused_before_computing() {
    let good = examples(7, 41, "x");
    let mut v = good.x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    v[5 * 12 + 3] = f64::NAN;
    let x = Tensor::from_vec(v, (7, 12), &Device::Cpu).unwrap();
    let err = ExampleSet::new("inputs /data/bad.safetensors (7)", x, good.labels.clone(), good.ids.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("/data/bad.safetensors") && err.contains("example 5") && err.contains("feature 3"), "{err}");
}

/// Two different jobs started at the same moment in one folder: the plan is published by one of
/// them only, the other is refused naming the folder's `plan.json`, and the folder then holds a
/// consistent job (its plan, its tiles, a merge that works). Before the fix both wrote
/// `plan.json` (rename over) and both went on, each with its own plan (30 trials).
#[test]
fn two_different_jobs_racing_for_one_folder_leave_one_plan() {
    let (rows, cols) = (examples(9, 41, "rows"), examples(6, 42, "cols"));
    let grids = [opts(4, 3, false), opts(5, 2, false)];
    for trial in 0..30 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("job");
        let gate = std::sync::Barrier::new(2);
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = grids
                .iter()
                .map(|o| {
                    let (gate, dir, rows, cols) = (&gate, &dir, &rows, &cols);
                    s.spawn(move || {
                        let m = model();
                        gate.wait();
                        run(&m, model_id(), rows, cols, o, dir, RunControl::default())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok: Vec<usize> = (0..2).filter(|&k| results[k].is_ok()).collect();
        assert_eq!(ok.len(), 1, "trial {trial}: exactly one job may own the folder: {results:?}");
        let (win, lose) = (ok[0], 1 - ok[0]);
        match &results[lose] {
            Err(CrossError::PlanMismatch { path, .. }) => assert_eq!(path, &dir.join("plan.json"), "trial {trial}"),
            other => panic!("trial {trial}: expected a plan mismatch, got {other:?}"),
        }
        let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("plan.json")).unwrap()).unwrap();
        let want = grids[win].tile_rows.unwrap();
        assert_eq!(stored["tile_rows"], want, "trial {trial}: plan.json is the winner's");
        merge(&dir).unwrap_or_else(|e| panic!("trial {trial}: the folder is one consistent job: {e}"));
    }
}
