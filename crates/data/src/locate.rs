//! Where a dataset's files are. An explicit `--data-dir` is the only place looked; without it,
//! `$STIFF_DATA_DIR` is the only place; only when neither is given are the per-user cache dir
//! and `/usr/share/datasets/fashion-mnist` (Debian's Fashion-MNIST package) searched. A user who
//! names a folder never silently gets a copy from somewhere else.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::DatasetName;

/// Environment variable naming a data dir (one subfolder per dataset).
pub const DATA_DIR_ENV: &str = "STIFF_DATA_DIR";

/// Where Debian's `dataset-fashion-mnist` package installs the files.
const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The IDX file stems, in the order train images, train labels, test images, test labels.
pub(crate) const IDX_STEMS: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

pub(crate) const CIFAR10_TAR: &str = "cifar-10-binary.tar.gz";
pub(crate) const CIFAR10_SUBDIR: &str = "cifar-10-batches-bin";
pub(crate) const CIFAR10_TRAIN: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub(crate) const CIFAR10_TEST: &str = "test_batch.bin";
pub(crate) const CIFAR100_TAR: &str = "cifar-100-binary.tar.gz";
pub(crate) const CIFAR100_SUBDIR: &str = "cifar-100-binary";
pub(crate) const CIFAR100_TRAIN: &str = "train.bin";
pub(crate) const CIFAR100_TEST: &str = "test.bin";

/// `dirs::cache_dir()/stiffness/datasets`, when the platform has a cache dir.
pub fn default_cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("stiffness").join("datasets"))
}

/// The data dir given explicitly: `data_dir` (the `--data-dir` flag), else `$STIFF_DATA_DIR` when
/// set and non-empty.
pub fn explicit_root(data_dir: Option<&Path>) -> Option<PathBuf> {
    data_dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(DATA_DIR_ENV).filter(|e| !e.is_empty()).map(PathBuf::from))
}

/// The data dirs searched: the explicit one alone (see [`explicit_root`]), else
/// [`default_cache_dir`].
pub fn search_roots(data_dir: Option<&Path>) -> Vec<PathBuf> {
    match explicit_root(data_dir) {
        Some(root) => vec![root],
        None => default_cache_dir().into_iter().collect(),
    }
}

/// The dataset folders searched for `name`, in priority order.
pub(crate) fn candidate_dirs(name: DatasetName, data_dir: Option<&Path>) -> Vec<PathBuf> {
    let explicit = explicit_root(data_dir).is_some();
    let mut dirs: Vec<PathBuf> = search_roots(data_dir).into_iter().map(|r| r.join(name.as_str())).collect();
    if name == DatasetName::FashionMnist && !explicit {
        dirs.push(PathBuf::from(DEBIAN_FASHION_MNIST));
    }
    dirs
}

/// The files of one IDX dataset.
#[derive(Debug, Clone)]
pub(crate) struct IdxFiles {
    /// train images, train labels, test images, test labels.
    pub paths: [PathBuf; 4],
}

/// Where a dataset's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Idx(IdxFiles),
    CifarTar(PathBuf),
    CifarBins { train: Vec<PathBuf>, test: PathBuf },
}

/// What a folder holds for one dataset.
#[derive(Debug)]
pub(crate) enum Probe {
    Complete(Source),
    Partial(Vec<String>),
    Absent,
}

/// Finds an IDX file under any accepted spelling: `-idx`/`.idx`, raw preferred over `.gz`.
pub(crate) fn find_idx_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [stem, dotted.as_str()]
        .iter()
        .flat_map(|s| [s.to_string(), format!("{s}.gz")])
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// The first folder among `dirs` (in order) holding all `names`.
fn find_all(dirs: &[PathBuf], names: &[&str]) -> Option<(PathBuf, Vec<PathBuf>)> {
    dirs.iter().find_map(|d| {
        let paths: Vec<PathBuf> = names.iter().map(|n| d.join(n)).collect();
        paths.iter().all(|p| p.is_file()).then(|| (d.clone(), paths))
    })
}

/// What `dir` holds for `name`.
pub(crate) fn probe(name: DatasetName, dir: &Path) -> Probe {
    if !dir.is_dir() {
        return Probe::Absent;
    }
    match name {
        DatasetName::Mnist | DatasetName::FashionMnist => {
            let found: Vec<Option<PathBuf>> = IDX_STEMS.iter().map(|s| find_idx_file(dir, s)).collect();
            if found.iter().all(Option::is_some) {
                let p: Vec<PathBuf> = found.into_iter().flatten().collect();
                Probe::Complete(Source::Idx(IdxFiles {
                    paths: [p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone()],
                }))
            } else if found.iter().any(Option::is_some) {
                Probe::Partial(
                    IDX_STEMS.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(s, _)| format!("{s}.gz")).collect(),
                )
            } else {
                Probe::Absent
            }
        }
        DatasetName::Cifar10 | DatasetName::Cifar100 => {
            let (subdir, tar, mut names) = match name {
                DatasetName::Cifar10 => (CIFAR10_SUBDIR, CIFAR10_TAR, CIFAR10_TRAIN.to_vec()),
                _ => (CIFAR100_SUBDIR, CIFAR100_TAR, vec![CIFAR100_TRAIN]),
            };
            names.push(if name == DatasetName::Cifar10 { CIFAR10_TEST } else { CIFAR100_TEST });
            let dirs = [dir.join(subdir), dir.to_path_buf()];
            if let Some((_, mut paths)) = find_all(&dirs, &names) {
                let test = paths.pop().unwrap_or_default();
                return Probe::Complete(Source::CifarBins { train: paths, test });
            }
            let tar_path = dir.join(tar);
            if tar_path.is_file() {
                return Probe::Complete(Source::CifarTar(tar_path));
            }
            let some_bin = dirs.iter().any(|d| names.iter().any(|n| d.join(n).is_file()));
            if some_bin {
                // Report against whichever folder holds more of the batch files.
                let best = dirs
                    .iter()
                    .max_by_key(|d| names.iter().filter(|n| d.join(n).is_file()).count())
                    .unwrap_or(&dirs[0]);
                Probe::Partial(
                    names.iter().filter(|n| !best.join(n).is_file()).map(|n| format!("{subdir}/{n}")).collect(),
                )
            } else {
                Probe::Absent
            }
        }
    }
}

/// Finds `name` in the search order and returns its complete source.
pub(crate) fn locate_source(name: DatasetName, data_dir: Option<&Path>) -> Result<(PathBuf, Source)> {
    let dirs = candidate_dirs(name, data_dir);
    let mut first_partial: Option<(PathBuf, Vec<String>)> = None;
    for dir in &dirs {
        match probe(name, dir) {
            Probe::Complete(src) => return Ok((dir.clone(), src)),
            Probe::Partial(missing) => {
                if first_partial.is_none() {
                    first_partial = Some((dir.clone(), missing));
                }
            }
            Probe::Absent => {}
        }
    }
    if let Some((dir, missing)) = first_partial {
        return Err(DataError::Incomplete { dataset: name.to_string(), dir, missing });
    }
    let target = dirs.first().cloned().unwrap_or_else(|| PathBuf::from("<data-dir>").join(name.as_str()));
    Err(DataError::NotFound { dataset: name.to_string(), searched: dirs, hint: manual_hint(name, &target) })
}

/// The folder holding `name`'s files: in `data_dir` (the `--data-dir` flag) only when given, else
/// in `$STIFF_DATA_DIR` only when set, else in the cache dir (and Debian's Fashion-MNIST folder). Each is a data dir
/// with one subfolder per dataset (`mnist/`, `fashion-mnist/`, `cifar10/`, `cifar100/`).
pub fn locate(name: DatasetName, data_dir: Option<&Path>) -> Result<PathBuf> {
    locate_source(name, data_dir).map(|(dir, _)| dir)
}

/// The file names the user must put in place by hand, and where.
pub(crate) fn manual_hint(name: DatasetName, dir: &Path) -> String {
    let files = match name {
        DatasetName::Mnist | DatasetName::FashionMnist => {
            IDX_STEMS.iter().map(|s| format!("{s}.gz")).collect::<Vec<_>>().join(", ")
        }
        DatasetName::Cifar10 => format!(
            "{CIFAR10_TAR} (or its extracted {CIFAR10_SUBDIR}/ with {} and {CIFAR10_TEST})",
            CIFAR10_TRAIN.join(", ")
        ),
        DatasetName::Cifar100 => {
            format!("{CIFAR100_TAR} (or its extracted {CIFAR100_SUBDIR}/ with {CIFAR100_TRAIN} and {CIFAR100_TEST})")
        }
    };
    format!(
        "To provide {name} by hand, put {files} into {}; or run `stiff data fetch {name}` (with \
         `--mirror file:///path/to/folder` to copy from a local folder holding those files); or \
         point --data-dir / ${DATA_DIR_ENV} at a data dir containing {name}/.",
        dir.display()
    )
}
