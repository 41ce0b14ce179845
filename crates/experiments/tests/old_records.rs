//! Run records and configurations written before the pipelines shared one training-settings type
//! ([`stiff_experiments::training::TrainSpec`]) still read, are the runs today's configurations
//! plan (same ids, equal specs), resume as finished through the runner, and are written back byte
//! for byte.
//!
//! The fixtures in `tests/fixtures/records-40035c7/` come from commit 40035c7's `stiff`:
//! `reproduce fig8 --quick --datasets mnist --lrs 0.1 --seeds 1`, `reproduce fig2 --quick
//! --seeds 1` and `reproduce spherical --quick` on the real MNIST files. To keep them small,
//! every list outside a record's `spec` was cut to its first 3 entries (by a script writing
//! serde_json's own format, checked to reproduce the untouched files byte for byte); the specs,
//! ids and configs are as written.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use stiff_data::DatasetName;
use stiff_experiments::dynamics::{DynConfig, DynRunRecord, Dynamics};
use stiff_experiments::lr_sweep::{LrRunRecord, LrSweep, LrSweepConfig};
use stiff_experiments::options::{ReproduceOptions, SweepFlags};
use stiff_experiments::pipeline::Pipeline;
use stiff_experiments::runner::reproduce_with;
use stiff_experiments::spherical::{SphRunRecord, Spherical, SphericalConfig};
use stiff_experiments::store::{read_json, write_json};
use stiff_experiments::testdata::write_synthetic_idx;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records-40035c7").join(rel)
}

/// Reads the fixture `rel` as `T` and checks that writing it back gives the same bytes.
fn read_back<T: Serialize + DeserializeOwned>(rel: &str) -> T {
    let path = fixture(rel);
    let value: T = read_json(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let tmp = tempfile::tempdir().unwrap();
    let again = tmp.path().join("again.json");
    write_json(&again, &value).unwrap();
    assert!(
        std::fs::read(&again).unwrap() == std::fs::read(&path).unwrap(),
        "{rel}: written back differently:\n{}",
        std::fs::read_to_string(&again).unwrap()
    );
    value
}

/// The figure configuration recorded beside the runs (`runs/figures/<fig>.json`, under `key`).
fn figure_config<T: DeserializeOwned>(rel: &str, key: &str) -> T {
    let v: serde_json::Value = read_json(&fixture(rel)).unwrap();
    serde_json::from_value(v[key].clone()).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn quick_opts(figure: &str, out: &Path, data: &Path) -> ReproduceOptions {
    let mut o = ReproduceOptions::new(figure, out);
    o.quick = true;
    o.seeds = Some(1);
    o.data_dir = Some(data.to_path_buf());
    o
}

/// Puts the fixture record into `out`'s store as `stored`, runs the runner on today's
/// configuration selecting only that run, and checks that nothing ran: the record is unchanged.
/// (Selecting one run makes the invocation partial, so no figure is drawn from the cut records.)
fn resumes_as_finished<P: Pipeline>(p: &P, figure: &str, cfg: P::Config, opts: &mut ReproduceOptions, rel: &str) {
    let id = p.run_id(&p.runs(figure, &cfg)[0]);
    let stored = p.store(&cfg, &opts.out).path(&id);
    std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
    std::fs::copy(fixture(rel), &stored).unwrap();
    opts.selection.only = vec![id.clone()];
    reproduce_with(p, &[(figure, cfg)], opts).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert!(std::fs::read(&stored).unwrap() == std::fs::read(fixture(rel)).unwrap(), "{id} was run again");
}

#[test]
fn an_old_learning_rate_sweep_record_is_todays_run_and_resumes_as_finished() {
    let rel = "lr-sweep-quick/mnist-fc6-sgd-lr0.1-s0.json";
    let record: LrRunRecord = read_back(rel);
    let tmp = tempfile::tempdir().unwrap();
    // No data at all: a run that is not recognised as finished fails to load MNIST.
    let mut opts = quick_opts("fig8", &tmp.path().join("out"), &tmp.path().join("no-data"));
    opts.sweep = SweepFlags::parse(Some("mnist"), Some("0.1"), None, None).unwrap();
    let cfg = LrSweep.config("fig8", &opts).unwrap();
    assert_eq!(LrSweep.runs("fig8", &cfg), vec![record.spec.clone()]);
    assert_eq!(LrSweep.run_id(&record.spec), record.id);
    assert_eq!(record.spec.train.max_steps, 4_000);
    assert_eq!(record.spec.train.train_eval_subset, 1_000);
    let old_cfg: LrSweepConfig = figure_config("figures/fig8.json", "sweep");
    assert_eq!(old_cfg, cfg);
    resumes_as_finished(&LrSweep, "fig8", cfg, &mut opts, rel);
}

#[test]
fn an_old_dynamics_record_keeps_its_eval_subset_name_and_resumes_as_finished() {
    let rel = "dynamics-quick/mnist-fc6-sgd-lr0.05-train2000-s0.json";
    let record: DynRunRecord = read_back(rel);
    assert!(std::fs::read_to_string(fixture(rel)).unwrap().contains("\"eval_subset\": 1000"));
    assert_eq!(record.spec.train.train_eval_subset, 1_000);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The figure checks that MNIST is present; generated files pass the check, and a run not
    // recognised as finished would train on them and rewrite the record.
    write_synthetic_idx(&data, DatasetName::Mnist, 20, 10, 1).unwrap();
    let mut opts = quick_opts("fig2", &tmp.path().join("out"), &data);
    let cfg = Dynamics.config("fig2", &opts).unwrap();
    assert_eq!(Dynamics.runs("fig2", &cfg), vec![record.spec.clone()]);
    assert_eq!(Dynamics.run_id(&record.spec), record.id);
    let old_cfg: DynConfig = figure_config("figures/fig2.json", "dynamics");
    assert_eq!(old_cfg, cfg);
    resumes_as_finished(&Dynamics, "fig2", cfg, &mut opts, rel);
}

#[test]
fn an_old_spherical_record_and_sweep_file_read_back_and_resume_as_finished() {
    let rel = "spherical-quick/sph-d3-l3-sgd-lr0.03-s0.json";
    let record: SphRunRecord = read_back(rel);
    let sweep: SphericalConfig = read_back("spherical-quick.sweep.json");
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = quick_opts("spherical", &tmp.path().join("out"), &tmp.path().join("no-data"));
    opts.seeds = None;
    let cfg = Spherical.config("spherical", &opts).unwrap();
    assert_eq!(sweep, cfg);
    let old_cfg: SphericalConfig = figure_config("figures/spherical.json", "sweep");
    assert_eq!(old_cfg, cfg);
    let runs = Spherical.runs("spherical", &cfg);
    assert!(runs.contains(&record.spec), "the old run is not in today's sweep");
    // Only the fixture's run is selected: put it first so the helper finds its id.
    let mut only = cfg.clone();
    only.degrees = vec![record.spec.data.degree];
    only.lrs = vec![record.spec.optimizer.lr()];
    only.lr = record.spec.optimizer.lr();
    only.lr_sweep_degree = record.spec.data.degree;
    assert_eq!(Spherical.runs("spherical", &only), vec![record.spec.clone()]);
    resumes_as_finished(&Spherical, "spherical", only, &mut opts, rel);
}
