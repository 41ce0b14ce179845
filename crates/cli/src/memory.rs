//! `--budget-mb`: what a command holds besides the Gram kernel's own memory (the decoded
//! dataset while a subset is drawn, the examples, the model) is counted against the budget, and
//! only the rest is handed to the kernel. A budget below what loading alone needs is refused
//! before anything is read, with the reason. Not counted: the program itself (code, libraries,
//! thread stacks, allocator slack: some tens of MiB, see the README).

use anyhow::{anyhow, bail};
use candle::Tensor;
use stiff_data::DatasetName;

/// Peak bytes [`stiff_data::load`] holds for `name`: both splits decoded to f32, the raw bytes
/// of the split being decoded, and the labels.
pub fn dataset_load_bytes(name: DatasetName) -> u64 {
    let (train, test) = name.official_counts();
    let (c, h, w) = name.input_shape();
    let pixels = (c * h * w) as u64;
    let all = (train + test) as u64;
    all * pixels * 4 + (train.max(test) as u64) * pixels + all * 8
}

/// Bytes of a tensor's elements.
pub fn tensor_bytes(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

/// Bytes of a file (0 if it cannot be read; the loader reports that).
pub fn file_bytes(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Refuses `budget` (from `--budget-mb budget_mb`) when loading needs `need` bytes or more;
/// `what` says what the loading is.
pub fn check_loading(budget_mb: u64, budget: u64, need: u64, what: &str) -> anyhow::Result<()> {
    if need >= budget {
        bail!(
            "--budget-mb {budget_mb} is too small: {what} holds about {} MiB before the Gram starts; give \
             --budget-mb {} or more",
            mib(need),
            mib(need) + 1
        );
    }
    Ok(())
}

/// What is left of `budget` for the kernel once `held` bytes (examples, model) are counted.
pub fn kernel_budget(budget_mb: u64, budget: u64, held: u64, what: &str) -> anyhow::Result<u64> {
    budget.checked_sub(held).filter(|&left| left > 0).ok_or_else(|| {
        anyhow!(
            "--budget-mb {budget_mb} is too small: {what} take {} MiB of it before the Gram starts; give \
             --budget-mb {} or more",
            mib(held),
            mib(held) + 1
        )
    })
}

/// Bytes in MiB, rounded up.
pub fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnist_loading_is_both_splits_in_f32() {
        // 70,000 images of 784 pixels as f32 (219.5 MB), the 60,000 raw train bytes, labels.
        assert_eq!(dataset_load_bytes(DatasetName::Mnist), 70_000 * 784 * 4 + 60_000 * 784 + 70_000 * 8);
    }

    #[test]
    fn budgets_below_what_is_held_are_refused_with_the_need() {
        let err = check_loading(128, 128 << 20, 240 << 20, "loading mnist").unwrap_err().to_string();
        assert!(err.contains("--budget-mb 128 is too small") && err.contains("240 MiB"), "{err}");
        assert_eq!(kernel_budget(512, 512 << 20, 12 << 20, "the examples").unwrap(), 500 << 20);
        assert!(kernel_budget(1, 1 << 20, 1 << 20, "the examples").is_err());
    }
}
