//! Output folders: checked writable before any work, locked for the whole run so a second
//! writer is refused instead of mixing its files into this run's set, and the run id that ties
//! the files of one result set together.

use std::path::Path;

use anyhow::Context;
use stiff_fs::{DirLock, LockMode};

/// Checks that `dir` (given as `flag`) can be written into (creating it), then locks it for
/// `what` (e.g. `stiff gram`) in `mode`. Keep the lock until the results are published.
pub fn claim(dir: &Path, flag: &str, mode: LockMode, what: &str) -> anyhow::Result<DirLock> {
    stiff_fs::ensure_writable_dir(dir).map_err(|e| {
        let not_writable = e.source.kind() == std::io::ErrorKind::PermissionDenied;
        let hint = if not_writable { " (the folder is not writable)" } else { "" };
        anyhow::Error::new(e).context(format!("{flag} {}{hint}", dir.display()))
    })?;
    DirLock::try_acquire(dir, mode, what).with_context(|| format!("{flag} {}", dir.display()))
}

/// A fresh random id (32 hex digits) for one run's result set. Every file of the set records it,
/// so a reader can tell a set from a mix of two runs' files. Randomness comes from the standard
/// library's randomly keyed hasher (seeded by the operating system), mixed with the time and
/// process id.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let half = |i: u8| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u8(i);
        h.finish()
    };
    format!("{:016x}{:016x}", half(0), half(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_distinct_hex() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_run_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn a_claimed_folder_is_refused_to_a_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o");
        let _held = claim(&out, "--out", LockMode::Exclusive, "stiff gram").unwrap();
        let err = format!("{:#}", claim(&out, "--out", LockMode::Exclusive, "stiff gram").unwrap_err());
        assert!(err.contains("--out") && err.contains("in use by another process"), "{err}");
        assert!(err.contains(&format!("PID {}", std::process::id())), "{err}");
    }
}
