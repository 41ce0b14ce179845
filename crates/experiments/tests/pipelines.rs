//! Every registered pipeline through the one interface the runner uses: it lists its runs,
//! runs at test scale (`tiny`) on generated files in the official formats, and `report`
//! redraws its figures from the stored records alone, to the same numbers. Also: sweeps of
//! two optimizers in one `--out` keep their figure folders apart. The module layering is
//! checked in `tests/layering.rs`.

use std::path::{Path, PathBuf};

use stiff_data::DatasetName;
use stiff_experiments::index::write_index;
use stiff_experiments::options::{OptimizerKind, ReproduceOptions};
use stiff_experiments::registry::pipelines;
use stiff_experiments::runner::{report, reproduce};
use stiff_experiments::store::{read_json, SCHEMA_VERSION};
use stiff_experiments::testdata::{write_synthetic_cifar, write_synthetic_idx};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Generated MNIST, Fashion-MNIST (20 train + 10 test images per class) and CIFAR folders.
fn generated_data(root: &Path) {
    write_synthetic_idx(root, DatasetName::Mnist, 20, 10, 1).unwrap();
    write_synthetic_idx(root, DatasetName::FashionMnist, 20, 10, 2).unwrap();
    write_synthetic_cifar(root, 30, 10, 5, 3, 7).unwrap();
}

fn tiny_opts(figure: &str, data: &Path, out: &Path) -> ReproduceOptions {
    let mut o = ReproduceOptions::new(figure, out);
    o.quick = true;
    o.tiny = true;
    o.data_dir = Some(data.to_path_buf());
    o.command = format!("test reproduce {figure} --tiny");
    o
}

/// The folder's files exist and parse; stiffness values are in [-1, 1]. Returns the rows checked.
fn check_figure(dir: &Path, file_stem: &str) -> usize {
    for name in ["config.json", "results.json"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()));
        let _: serde_json::Value = serde_json::from_str(&text).unwrap();
    }
    let png = std::fs::read(dir.join(format!("{file_stem}.png"))).expect("png");
    assert!(png.starts_with(PNG_MAGIC) && png.len() > 1000, "{}: not a real PNG", dir.display());
    let svg = std::fs::read_to_string(dir.join(format!("{file_stem}.svg"))).expect("svg");
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    let summary = std::fs::read_to_string(dir.join("summary.md")).expect("summary.md");
    assert!(summary.contains("Paper's"), "{}: summary states no claim", dir.display());
    let mut rdr = csv::Reader::from_path(dir.join("results.csv")).expect("results.csv");
    let mut checked = 0;
    for rec in rdr.records() {
        let rec = rec.unwrap();
        if rec[7].contains("stiffness") && !rec[8].is_empty() {
            let v: f64 = rec[8].parse().unwrap();
            assert!(v.is_finite() && (-1.0..=1.0).contains(&v), "{}: {} = {v}", dir.display(), &rec[7]);
            checked += 1;
        }
    }
    checked
}

/// Every file under `OUT/runs/` (records, sweep and figure configs).
fn run_record_paths(out: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for sweep in std::fs::read_dir(out.join("runs")).unwrap() {
        let sweep = sweep.unwrap().path();
        if sweep.is_dir() {
            v.extend(std::fs::read_dir(&sweep).unwrap().map(|e| e.unwrap().path()));
        }
    }
    v
}

#[test]
fn every_registered_pipeline_lists_runs_tiny_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("out"));
    generated_data(&data);
    let registry = pipelines();
    assert_eq!(registry.len(), 3);
    let mut all_figs = Vec::new();
    for p in registry {
        let figs: Vec<&str> = p.figures().iter().map(|f| f.name).collect();
        assert!(!figs.is_empty());
        // Lists: ids, no training, no files.
        let mut o = tiny_opts("all", &data, &out);
        o.list_runs = true;
        let ids = p.run_ids(&figs, &o).unwrap();
        assert!(!ids.is_empty(), "{figs:?}: no runs");
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "{figs:?}: duplicate run ids");
        let records_before = if out.join("runs").exists() { run_record_paths(&out).len() } else { 0 };
        p.reproduce(&figs, &o).unwrap();
        let records_after = if out.join("runs").exists() { run_record_paths(&out).len() } else { 0 };
        assert_eq!(records_before, records_after, "--list-runs wrote files");

        // Runs and draws every figure.
        p.reproduce(&figs, &tiny_opts("all", &data, &out)).unwrap();
        for f in &figs {
            let n = check_figure(&out.join(f), f);
            assert!(n > 0, "{f}: no stiffness rows");
        }
        let stored: Vec<String> =
            run_record_paths(&out).iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
        for id in &ids {
            assert!(stored.contains(id), "run {id} has no record");
        }
        all_figs.extend(figs);
    }
    let index = std::fs::read_to_string(out.join("index.md")).unwrap();
    for f in &all_figs {
        assert!(index.contains(&format!("[{f}]({f}/summary.md)")), "index.md lacks {f}");
    }

    // Every JSON file written (figure configs and results, run records, configs beside the runs)
    // carries the crate's schema_version at the top, and reads back; a newer version is refused.
    let mut json_files = run_record_paths(&out);
    for f in &all_figs {
        json_files.extend(["config.json", "results.json"].map(|n| out.join(f).join(n)));
    }
    json_files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    assert!(json_files.len() > all_figs.len() * 2, "no run records found");
    for p in &json_files {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.starts_with("{\n  \"schema_version\": "), "{}: schema_version is not first", p.display());
        let v: serde_json::Value = read_json(p).unwrap();
        assert_eq!(v["schema_version"], SCHEMA_VERSION, "{}", p.display());
    }
    let newer = tmp.path().join("newer.json");
    std::fs::write(&newer, format!("{{\"schema_version\": {}}}", SCHEMA_VERSION + 1)).unwrap();
    let err = read_json::<serde_json::Value>(&newer).unwrap_err().to_string();
    assert!(err.contains("newer.json") && err.contains("schema_version"), "{err}");

    // Resume: a second pass reruns nothing (records byte-identical, timings included).
    let before: Vec<Vec<u8>> = run_record_paths(&out).iter().map(|p| std::fs::read(p).unwrap()).collect();
    reproduce(&tiny_opts("all", &data, &out)).unwrap();
    assert!(!out.join("skipped.md").exists(), "all skipped a figure whose generated data is present");
    let after: Vec<Vec<u8>> = run_record_paths(&out).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(before, after, "a finished run was redone");

    // `report` from the records alone (figure folders removed) gives the same numbers.
    let results: Vec<(String, Vec<u8>, Vec<u8>)> = all_figs
        .iter()
        .map(|f| {
            let d = out.join(f);
            (
                f.to_string(),
                std::fs::read(d.join("results.json")).unwrap(),
                std::fs::read(d.join("results.csv")).unwrap(),
            )
        })
        .collect();
    for f in &all_figs {
        std::fs::remove_dir_all(out.join(f)).unwrap();
    }
    report(&out).unwrap();
    for (f, json, csv) in results {
        let d = out.join(&f);
        assert_eq!(std::fs::read(d.join("results.csv")).unwrap(), csv, "{f}: report changed results.csv");
        assert_eq!(std::fs::read(d.join("results.json")).unwrap(), json, "{f}: report changed results.json");
    }
}

#[test]
fn two_optimizers_in_one_out_keep_their_figures_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("out"));
    generated_data(&data);
    let optimizer_of = |dir: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(dir).join("config.json")).unwrap()).unwrap();
        v["sweep"]["optimizer"].as_str().unwrap().to_string()
    };
    reproduce(&tiny_opts("fig8", &data, &out)).unwrap();
    let sgd_results = std::fs::read(out.join("fig8/results.json")).unwrap();
    let mut o = tiny_opts("fig8", &data, &out);
    o.optimizer = OptimizerKind::Adam;
    reproduce(&o).unwrap();
    // Before the fix the Adam sweep overwrote fig8/.
    assert_eq!(optimizer_of("fig8"), "sgd");
    assert_eq!(optimizer_of("fig8-adam"), "adam");
    assert_eq!(std::fs::read(out.join("fig8/results.json")).unwrap(), sgd_results);
    check_figure(&out.join("fig8-adam"), "fig8");
    let index = std::fs::read_to_string(out.join("index.md")).unwrap();
    assert!(index.contains("[fig8](fig8/summary.md)") && index.contains("[fig8-adam](fig8-adam/summary.md)"));
    // `report` from the runs folder alone redraws both sweeps into their own folders.
    std::fs::remove_dir_all(out.join("fig8")).unwrap();
    std::fs::remove_dir_all(out.join("fig8-adam")).unwrap();
    report(&out).unwrap();
    assert_eq!(optimizer_of("fig8"), "sgd");
    assert_eq!(optimizer_of("fig8-adam"), "adam");
}

/// A redraw that fails part-way (here: a folder where the figure's PNG goes, after `config.json`
/// and `results.json` were rewritten) leaves no `summary.md`, the folder's completion file, so
/// `index.md` does not list a half-new folder; once the obstacle is gone `report` completes it.
/// Before the fix the old `summary.md` stayed beside the new files.
#[test]
fn interrupted_redraw_leaves_a_folder_that_counts_as_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("out"));
    generated_data(&data);
    reproduce(&tiny_opts("fig8", &data, &out)).unwrap();
    let fig = out.join("fig8");
    assert!(fig.join("summary.md").is_file());
    std::fs::remove_file(fig.join("fig8.png")).unwrap();
    std::fs::create_dir(fig.join("fig8.png")).unwrap();
    assert!(report(&out).is_err(), "the obstacle did not stop the redraw");
    assert!(fig.join("results.json").is_file());
    assert!(!fig.join("summary.md").exists(), "an interrupted folder still looks complete");
    write_index(&out).unwrap();
    let index = std::fs::read_to_string(out.join("index.md")).unwrap();
    assert!(!index.contains("(fig8/summary.md)"), "index.md lists an interrupted folder:\n{index}");
    std::fs::remove_dir(fig.join("fig8.png")).unwrap();
    report(&out).unwrap();
    check_figure(&fig, "fig8");
}
