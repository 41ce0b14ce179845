//! Loading a located dataset into tensors.

use std::path::{Path, PathBuf};

use crate::cifar::{self, CifarKind, CifarRecords};
use crate::error::{DataError, Result};
use crate::idx;
use crate::io::{read_file, read_maybe_gz, sha256_hex};
use crate::locate::{
    locate_source, manual_hint, probe, IdxFiles, Probe, Source, CIFAR100_TEST, CIFAR100_TRAIN, CIFAR10_TEST,
    CIFAR10_TRAIN,
};
use crate::{classes, Dataset, DatasetName, SourceFile, Split};

/// Options for [`load_with`]: [`LoadOptions::default`], [`LoadOptions::lenient`] or a setter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Require the official example counts (60,000/10,000 for MNIST and Fashion-MNIST; 10,000 per
    /// CIFAR-10 batch file; 50,000/10,000 for CIFAR-100). CIFAR files have no header, so this is
    /// what catches a file truncated exactly at a record boundary. Default `true`.
    pub check_official_counts: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { check_official_counts: true }
    }
}

impl LoadOptions {
    /// Accept any number of (well-formed) examples, e.g. for small test files.
    pub fn lenient() -> Self {
        LoadOptions { check_official_counts: false }
    }

    /// Sets [`LoadOptions::check_official_counts`].
    #[must_use]
    pub fn with_check_official_counts(mut self, check: bool) -> Self {
        self.check_official_counts = check;
        self
    }
}

/// Loads `name`, searching `data_dir` (the `--data-dir` flag), then `$STIFF_DATA_DIR`, then the
/// cache dir; official counts are checked (see [`LoadOptions`]).
pub fn load(name: DatasetName, data_dir: Option<&Path>) -> Result<Dataset> {
    load_with(name, data_dir, &LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(name: DatasetName, data_dir: Option<&Path>, opts: &LoadOptions) -> Result<Dataset> {
    let (_, src) = locate_source(name, data_dir)?;
    load_source(name, &src, opts)
}

/// Loads `name` from exactly `dir` (the dataset's own folder, e.g. `.../datasets/mnist`), without
/// searching elsewhere.
pub fn load_from_dir(name: DatasetName, dir: &Path, opts: &LoadOptions) -> Result<Dataset> {
    match probe(name, dir) {
        Probe::Complete(src) => load_source(name, &src, opts),
        Probe::Partial(missing) => {
            Err(DataError::Incomplete { dataset: name.to_string(), dir: dir.to_path_buf(), missing })
        }
        Probe::Absent => Err(DataError::NotFound {
            dataset: name.to_string(),
            searched: vec![dir.to_path_buf()],
            hint: manual_hint(name, dir),
        }),
    }
}

pub(crate) fn load_source(name: DatasetName, src: &Source, opts: &LoadOptions) -> Result<Dataset> {
    let mut ds = match src {
        Source::Idx(files) => {
            let bytes = read_idx_bytes(files)?;
            build_idx(name, files, bytes, opts)?
        }
        Source::CifarTar(_) | Source::CifarBins { .. } => {
            let files = read_cifar_files(name, src)?;
            build_cifar(name, files, opts)?
        }
    };
    ds.files = record_files(src)?;
    Ok(ds)
}

/// The files `name` would be loaded from (same search as [`load`]), with size and SHA-256, for
/// a result to record what it read.
pub fn source_files(name: DatasetName, data_dir: Option<&Path>) -> Result<Vec<SourceFile>> {
    let (_, src) = locate_source(name, data_dir)?;
    record_files(&src)
}

/// Path, size and SHA-256 of every file of `src`.
fn record_files(src: &Source) -> Result<Vec<SourceFile>> {
    let paths: Vec<&PathBuf> = match src {
        Source::Idx(f) => f.paths.iter().collect(),
        Source::CifarTar(p) => vec![p],
        Source::CifarBins { train, test } => train.iter().chain(std::iter::once(test)).collect(),
    };
    paths
        .into_iter()
        .map(|p| {
            let bytes = read_file(p)?;
            Ok(SourceFile { path: p.clone(), sha256: sha256_hex(&bytes), bytes: bytes.len() as u64 })
        })
        .collect()
}

/// Reads (and gunzips) the four IDX files; the big train-images file on its own thread.
pub(crate) fn read_idx_bytes(files: &IdxFiles) -> Result<[Vec<u8>; 4]> {
    let [ti, tl, vi, vl] = &files.paths;
    std::thread::scope(|s| {
        let train_images = s.spawn(|| read_maybe_gz(ti));
        let rest = (|| Ok::<_, DataError>([read_maybe_gz(tl)?, read_maybe_gz(vi)?, read_maybe_gz(vl)?]))();
        let train_images = train_images.join().unwrap_or_else(|_| {
            Err(DataError::InvalidArgument {
                arg: "train images",
                reason: format!("reader thread for {} panicked", ti.display()),
            })
        })?;
        let [a, b, c] = rest?;
        Ok([train_images, a, b, c])
    })
}

/// Parses IDX bytes (as read by [`read_idx_bytes`]) into a dataset.
pub(crate) fn build_idx(
    name: DatasetName,
    files: &IdxFiles,
    bytes: [Vec<u8>; 4],
    opts: &LoadOptions,
) -> Result<Dataset> {
    let [ti, tl, vi, vl] = bytes;
    let (official_train, official_test) = name.official_counts();
    let train = idx_split(name, &files.paths[0], ti, &files.paths[1], &tl, "train", official_train, opts)?;
    let test = idx_split(name, &files.paths[2], vi, &files.paths[3], &vl, "test", official_test, opts)?;
    Ok(Dataset {
        name,
        train,
        test,
        class_names: name.class_names().iter().map(|s| s.to_string()).collect(),
        coarse_class_names: None,
        files: Vec::new(),
    })
}

#[allow(clippy::too_many_arguments)]
fn idx_split(
    name: DatasetName,
    images_path: &Path,
    images_bytes: Vec<u8>,
    labels_path: &Path,
    labels_bytes: &[u8],
    split: &'static str,
    official: usize,
    opts: &LoadOptions,
) -> Result<Split> {
    let images = idx::parse_images(images_path, images_bytes)?;
    let labels = idx::parse_labels(labels_path, labels_bytes, name.num_classes())?;
    if images.n != labels.len() {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: images.n,
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
        });
    }
    let (c, h, w) = name.input_shape();
    if (images.rows, images.cols) != (h, w) {
        return Err(DataError::BadDims {
            path: images_path.to_path_buf(),
            rows: images.rows,
            cols: images.cols,
            expected_rows: h,
            expected_cols: w,
        });
    }
    if opts.check_official_counts && images.n != official {
        return Err(DataError::UnofficialCount {
            path: images_path.to_path_buf(),
            split,
            found: images.n,
            expected: official,
        });
    }
    Split::from_u8(images.pixels(), (c, h, w), labels, None)
}

/// The CIFAR batch files' bytes, train files first, test file last.
pub(crate) fn read_cifar_files(name: DatasetName, src: &Source) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut names: Vec<&str> = match name {
        DatasetName::Cifar10 => CIFAR10_TRAIN.to_vec(),
        _ => vec![CIFAR100_TRAIN],
    };
    names.push(if name == DatasetName::Cifar10 { CIFAR10_TEST } else { CIFAR100_TEST });
    match src {
        Source::CifarTar(tar) => cifar::read_tar_members(tar, &names),
        Source::CifarBins { train, test } => {
            train.iter().chain(std::iter::once(test)).map(|p| Ok((p.clone(), read_file(p)?))).collect()
        }
        Source::Idx(_) => {
            Err(DataError::InvalidArgument { arg: "source", reason: format!("{name} is not stored as IDX files") })
        }
    }
}

/// Parses CIFAR batch files (train files then the test file) into a dataset.
pub(crate) fn build_cifar(name: DatasetName, files: Vec<(PathBuf, Vec<u8>)>, opts: &LoadOptions) -> Result<Dataset> {
    let kind = match name {
        DatasetName::Cifar10 => CifarKind::Ten,
        DatasetName::Cifar100 => CifarKind::Hundred,
        _ => return Err(DataError::InvalidArgument { arg: "name", reason: format!("{name} is not a CIFAR dataset") }),
    };
    let (official_train, official_test) = name.official_counts();
    let n_train_files = files.len().saturating_sub(1);
    let per_train_file = official_train / n_train_files.max(1);
    let mut train = CifarRecords::default();
    let mut test = CifarRecords::default();
    for (i, (path, bytes)) in files.iter().enumerate() {
        let is_test = i == n_train_files;
        let (out, expected, split) =
            if is_test { (&mut test, official_test, "test") } else { (&mut train, per_train_file, "train") };
        let n = cifar::parse_batch(path, bytes, kind, out)?;
        if opts.check_official_counts && n != expected {
            return Err(DataError::UnofficialCount { path: path.clone(), split, found: n, expected });
        }
    }
    let shape = name.input_shape();
    let to_split = |r: CifarRecords| {
        let coarse = (kind == CifarKind::Hundred).then_some(r.coarse);
        Split::from_u8(&r.pixels, shape, r.labels, coarse)
    };
    let train = to_split(train)?;
    let test = to_split(test)?;
    Ok(Dataset {
        name,
        train,
        test,
        class_names: name.class_names().iter().map(|s| s.to_string()).collect(),
        coarse_class_names: (kind == CifarKind::Hundred)
            .then(|| classes::CIFAR100_COARSE_CLASSES.iter().map(|s| s.to_string()).collect()),
        files: Vec::new(),
    })
}
