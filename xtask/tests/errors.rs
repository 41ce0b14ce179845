//! `cargo xtask` reports a failure as one line (the error and its causes), never as anyhow's
//! debug dump with a stack backtrace, even when `RUST_BACKTRACE` is set in the environment.

use std::process::Command;

#[test]
fn an_error_is_one_line_even_with_rust_backtrace_set() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "no-such-crate"])
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown bench target must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "expected one line, got:\n{stderr}");
    assert!(stderr.starts_with("error: unknown bench target `no-such-crate`"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}
