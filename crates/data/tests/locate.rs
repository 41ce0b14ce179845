//! Where datasets are looked for: an explicit folder is the only place looked, and a loaded
//! dataset records the files it came from. One test per binary because it sets an environment
//! variable.

mod common;

use common::*;
use stiff_data::{load_with, DataError, DatasetName, LoadOptions, DATA_DIR_ENV};

#[test]
fn explicit_data_dir_is_the_only_place_looked_and_files_are_recorded() {
    let files = idx_files(&idx_split(8, 1), &idx_split(4, 2));
    // A complete copy where $STIFF_DATA_DIR points (standing in for any other location).
    let elsewhere = tempfile::tempdir().unwrap();
    write_idx_dir(&elsewhere.path().join("mnist"), &files, true, false);
    std::env::set_var(DATA_DIR_ENV, elsewhere.path());

    // --data-dir D with an incomplete D/mnist: an error about D, not the copy elsewhere.
    let d = tempfile::tempdir().unwrap();
    write_idx_dir(&d.path().join("mnist"), &files, true, false);
    std::fs::remove_file(d.path().join("mnist").join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let err = load_with(DatasetName::Mnist, Some(d.path()), &LoadOptions::lenient()).unwrap_err();
    assert!(matches!(err, DataError::Incomplete { .. }), "{err}");
    assert!(err.to_string().contains(&d.path().display().to_string()), "{err}");

    // --data-dir D with no D/mnist at all: not found, and only D was searched.
    let empty = tempfile::tempdir().unwrap();
    match load_with(DatasetName::Mnist, Some(empty.path()), &LoadOptions::lenient()).unwrap_err() {
        DataError::NotFound { searched, .. } => assert_eq!(searched, vec![empty.path().join("mnist")]),
        other => panic!("expected NotFound, got {other}"),
    }

    // No --data-dir: $STIFF_DATA_DIR is used, and every file read is recorded with its SHA-256.
    let ds = load_with(DatasetName::Mnist, None, &LoadOptions::lenient()).unwrap();
    assert_eq!(ds.files.len(), 4);
    for f in &ds.files {
        assert!(f.path.starts_with(elsewhere.path()), "{}", f.path.display());
        let bytes = std::fs::read(&f.path).unwrap();
        assert_eq!(f.sha256, stiff_data::sha256_hex(&bytes));
        assert_eq!(f.bytes, bytes.len() as u64);
    }
    std::env::remove_var(DATA_DIR_ENV);
}
