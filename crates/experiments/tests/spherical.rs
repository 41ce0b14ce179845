//! End-to-end test of `reproduce spherical` on a shrunken quick configuration: outputs exist and
//! parse, stiffness values are in range, resume skips finished runs, shards + `report` redraw
//! from stored runs, and the label-agreement reference matches a hand derivation.

use std::path::Path;

use stiff_analysis::BinSpec;
use stiff_experiments::measure::crossing_distance;
use stiff_experiments::options::{OptimizerKind, ReproduceOptions};
use stiff_experiments::runner::{report, reproduce, reproduce_with};
use stiff_experiments::spherical::{SphRunRecord, Spherical, SphericalConfig, FIGURE};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

fn opts(out: &Path) -> ReproduceOptions {
    let mut o = ReproduceOptions::new(FIGURE, out);
    o.quick = true;
    o.command = "test reproduce spherical --quick".into();
    o
}

/// The quick defaults shrunk to a few seconds: 2 degrees, 2 learning rates (one shared), a small net.
fn tiny() -> SphericalConfig {
    let mut c = SphericalConfig::new(true, OptimizerKind::Sgd, 1);
    c.degrees = vec![1, 3];
    c.lrs = vec![0.05, 0.1];
    c.lr_sweep_degree = 3;
    c.hidden = vec![32, 32];
    c.n_train = 1_000;
    c.n_val = 400;
    c.stiffness_subset = 300;
    c.train.max_steps = 400;
    c.train.eval_every = 50;
    c.train.train_eval_subset = 400;
    c.loss_threshold = 0.3;
    c.measure.bins = BinSpec { bins: 40, lo: 0.0, hi: 2.0 };
    c
}

/// `reproduce spherical` with an explicit configuration, through the generic runner.
fn run_with(o: &ReproduceOptions, cfg: &SphericalConfig) -> stiff_experiments::Result<()> {
    reproduce_with(&Spherical, &[(FIGURE, cfg.clone())], o)
}

fn records(out: &Path) -> Vec<SphRunRecord> {
    let dir = out.join("runs").join("spherical-quick");
    let mut v: Vec<SphRunRecord> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap())
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// Checks the figure folder the way CI does; returns the number of stiffness rows.
fn check_outputs(out: &Path) -> usize {
    let d = out.join(FIGURE);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["figure"], FIGURE);
    let _: SphericalConfig = serde_json::from_value(cfg["sweep"].clone()).expect("config.json holds the sweep");
    let res: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("results.json")).unwrap()).unwrap();
    assert!(res["length_scale_fits"].is_array() && res["degree_cells"].is_array());
    let png = std::fs::read(d.join(format!("{FIGURE}.png"))).unwrap();
    assert!(png.starts_with(PNG_MAGIC) && png.len() > 1000, "not a real PNG");
    let svg = std::fs::read_to_string(d.join(format!("{FIGURE}.svg"))).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    let summary = std::fs::read_to_string(d.join("summary.md")).unwrap();
    assert!(summary.contains("Paper's claim") && summary.contains("This run:"));
    let mut rdr = csv::Reader::from_path(d.join("results.csv")).unwrap();
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        ["run_id", "dataset", "optimizer", "lr", "seed", "threshold", "space", "metric", "value", "note"]
    );
    let mut checked = 0;
    for rec in rdr.records() {
        let rec = rec.unwrap();
        if rec[7].contains("stiffness") {
            let v: f64 = rec[8].parse().unwrap_or_else(|_| panic!("stiffness row without a value: {rec:?}"));
            // Sign and cosine stiffness are means of values in [-1, 1].
            assert!(v.is_finite() && (-1.0..=1.0).contains(&v), "{} = {v}", &rec[7]);
            checked += 1;
        }
    }
    assert!(checked > 0, "no stiffness rows");
    assert!(out.join("index.md").is_file());
    checked
}

#[test]
fn quick_pipeline_end_to_end_with_resume_shards_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a");
    let cfg = tiny();
    run_with(&opts(&out), &cfg).unwrap();
    check_outputs(&out);
    let recs = records(&out);
    // Degrees 1 and 3 at lr 0.1, plus lr 0.05 at degree 3 (lr 0.1 at degree 3 is shared).
    assert_eq!(
        recs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["sph-d3-l1-sgd-lr0.1-s0", "sph-d3-l3-sgd-lr0.05-s0", "sph-d3-l3-sgd-lr0.1-s0"]
    );
    for r in &recs {
        assert!(r.measurement.is_some() || matches!(r.end, stiff_experiments::spherical::SphEnd::Diverged { .. }));
    }
    // l = 1: labels are sign(c . x), so two points at angle theta agree with probability
    // 1 - theta/pi and E[s_i s_j] = 1 - 2 theta/pi: zero at theta = pi/2, distance 1 - cos = 1.
    // 300 points give ~1,100 pairs per bin (se ~0.03 in value, slope 2/pi per unit distance),
    // so the interpolated crossing is within 0.15 of 1.
    let l1 = &recs[0];
    let d = crossing_distance(&l1.label_crossing).expect("l = 1 label agreement crosses zero");
    assert!((d - 1.0).abs() < 0.15, "label-agreement zero at distance {d}, expected 1");

    // Resume: nothing reruns (the records, timings included, stay byte-identical).
    let before = std::fs::read(out.join("runs/spherical-quick/sph-d3-l1-sgd-lr0.1-s0.json")).unwrap();
    run_with(&opts(&out), &cfg).unwrap();
    let after = std::fs::read(out.join("runs/spherical-quick/sph-d3-l1-sgd-lr0.1-s0.json")).unwrap();
    assert_eq!(before, after, "a finished run was redone");

    // Two shards into another folder: no figure until `report`, which finds the sweep file.
    let out2 = tmp.path().join("b");
    for k in 0..2 {
        let mut o = opts(&out2);
        o.selection.shard = Some((k, 2));
        run_with(&o, &cfg).unwrap();
    }
    assert!(!out2.join(FIGURE).exists(), "a shard drew the figure");
    report(&out2).unwrap();
    check_outputs(&out2);
    // Same seeds, same runs: the measurements agree bit for bit across the two folders.
    for (a, b) in recs.iter().zip(records(&out2)) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.step, b.step);
        assert_eq!(a.measurement.as_ref().map(|m| &m.curves), b.measurement.as_ref().map(|m| &m.curves));
    }
    // Report on a folder with no runs draws nothing and says so.
    let err = report(&tmp.path().join("empty")).unwrap_err().to_string();
    assert!(err.contains("no finished runs"), "{err}");
}

#[test]
fn list_runs_and_bad_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path());
    o.list_runs = true;
    // The real quick defaults: listing runs trains nothing and writes nothing.
    reproduce(&o).unwrap();
    assert!(!tmp.path().join(FIGURE).exists() && !tmp.path().join("runs").exists());
    let quick = SphericalConfig::new(true, OptimizerKind::Sgd, 1);
    // Degrees 1, 2, 4 plus the l = 3 learning-rate sweep (its 0.1 run is not in the degree sweep).
    assert_eq!(quick.runs().len(), 3 + 2);
    let full = SphericalConfig::new(false, OptimizerKind::Adam, 3);
    assert_eq!(full.runs().len(), (8 + 3 - 1) * 3);

    let mut o = opts(tmp.path());
    o.seeds = Some(0);
    assert!(reproduce(&o).is_err());
    let mut c = tiny();
    c.stiffness_subset = c.n_val + 1;
    assert!(run_with(&opts(tmp.path()), &c).is_err());
    let mut c = tiny();
    c.degrees = vec![0];
    assert!(run_with(&opts(tmp.path()), &c).is_err());
}
