//! Sizes given on the command line, checked before any work: each error names its flag, the
//! value and the limit, instead of an allocation abort or a panic after minutes of computing.

use anyhow::bail;
use stiff_data::DatasetName;

/// `--threads` above this multiple of the cores is refused: more threads than that only add
/// scheduling overhead (10,000 threads made a 0.4 s job run for minutes).
pub const MAX_THREADS_PER_CORE: usize = 4;
/// `measure --bins`: distance bins over [0, 2]; far beyond what a few thousand examples fill.
pub const MAX_BINS: usize = 100_000;
/// `measure --bootstrap`: replicates, each a pass over all N^2 pairs.
pub const MAX_BOOTSTRAP: usize = 100_000;
/// `reproduce --seeds`: training runs per configuration.
pub const MAX_SEEDS: u64 = 1_000;

/// The cores this process may use (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--threads N`: at least 1 (clap checks that) and at most [`MAX_THREADS_PER_CORE`] x cores.
pub fn check_threads(n: usize, cores: usize) -> anyhow::Result<()> {
    let max = cores.saturating_mul(MAX_THREADS_PER_CORE);
    if n > max {
        bail!(
            "--threads {n}: at most {max} ({MAX_THREADS_PER_CORE} x the {cores} cores available); more threads than \
             cores only add overhead"
        );
    }
    Ok(())
}

/// A count flag that must lie in `1..=max`.
pub fn check_range(flag: &str, value: usize, min: usize, max: usize, what: &str) -> anyhow::Result<()> {
    if value < min || value > max {
        bail!("{flag} {value}: must be between {min} and {max} ({what})");
    }
    Ok(())
}

/// A class-balanced subset of `n` examples from a split of `dataset` with `available` examples
/// (the official count): positive, a multiple of the class count, at most the split.
pub fn check_subset(flag: &str, n: usize, dataset: DatasetName, split: &str, available: usize) -> anyhow::Result<()> {
    let k = dataset.num_classes();
    if n == 0 || n % k != 0 {
        bail!("{flag} {n}: must be a positive multiple of the {k} classes of {dataset} (class-balanced)");
    }
    if n > available {
        bail!("{flag} {n}: the {dataset} {split} split has only {available} examples");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_bounded_by_the_cores() {
        check_threads(8, 2).unwrap();
        let err = check_threads(9, 2).unwrap_err().to_string();
        assert!(err.contains("--threads 9") && err.contains("at most 8") && err.contains("2 cores"), "{err}");
        check_threads(1, 1).unwrap();
    }

    #[test]
    fn subsets_must_fit_the_split() {
        check_subset("--subset", 10_000, DatasetName::Mnist, "test", 10_000).unwrap();
        let err = check_subset("--subset", 10_000_000_000, DatasetName::Mnist, "test", 10_000).unwrap_err();
        assert!(err.to_string().contains("--subset 10000000000") && err.to_string().contains("only 10000"), "{err}");
        assert!(check_subset("--subset", 15, DatasetName::Mnist, "test", 10_000).is_err());
        assert!(check_subset("--subset", 0, DatasetName::Mnist, "test", 10_000).is_err());
        assert!(check_subset("--subset", usize::MAX - 5, DatasetName::Mnist, "test", 10_000).is_err());
    }

    #[test]
    fn ranges_name_the_flag() {
        check_range("--bins", 40, 1, MAX_BINS, "distance bins").unwrap();
        let err = check_range("--bins", 1_000_000_000_000, 1, MAX_BINS, "distance bins").unwrap_err();
        assert!(err.to_string().starts_with("--bins 1000000000000: must be between 1 and 100000"), "{err}");
    }
}
