//! `cargo xtask`: the project's orchestrator. It stays small and quick to build; the numeric work
//! runs in a release build of the `stiff` CLI (crate `stiff-cli`), which it spawns through `$CARGO`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod slurm;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_device_is_detected_in_both_spellings() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(wants_cuda(&v(&["fig8", "--device", "cuda:0"])));
        assert!(wants_cuda(&v(&["fig8", "--device=cuda:1"])));
        assert!(!wants_cuda(&v(&["fig8", "--device", "cpu"])));
        assert!(!wants_cuda(&v(&["fig8", "--out", "cuda:0"])));
    }

    #[test]
    fn cuda_binary_lives_apart_from_the_cpu_build() {
        let root = Path::new("/w");
        if std::env::var_os("STIFF_CUDA_TARGET_DIR").is_none() {
            assert_eq!(cuda_binary(root), Path::new("/w/target/cuda/release/stiff"));
        }
    }
}

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Reproduce the stiffness paper's figures, manage data, run benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Reproduce a figure of the paper (fig2..fig10, spherical, all); see `cargo xtask list`.
    /// Options: --quick --data-dir D --out DIR --device cpu|cuda:N --seeds N --resume --list-runs --only ID --shard K/N
    Reproduce {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Merge the per-run results under --out DIR and redraw every figure and the index.
    Report {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the figures, what each shows and how long quick/full runs take.
    List,
    /// Datasets: `data fetch <mnist|fashion-mnist|cifar10|cifar100|all> [--mirror URL] [--data-dir D]`,
    /// `data verify [--data-dir D]`.
    Data {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a crate's benchmarks in release mode: gradkernel, train, analysis, data (or all).
    Bench {
        #[arg(default_value = "all")]
        which: String,
        /// Extra arguments for criterion (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the `stiff` binary with `--features cuda` on a machine without a CUDA toolkit: installs
    /// nvcc and the CUDA 13.0 libraries from PyPI into a venv and links against a libcuda stub
    /// (scripts/cuda-build-env.sh). Takes ~10 minutes the first time.
    BuildCuda,
    /// Run docs/slurm.md's job arrays (Fig 8 --quick sweep, tiled `stiff cross`) on a throw-away
    /// single-node Slurm cluster on this machine (as root; installs slurm-wlm and munge if
    /// missing) and compare the merged results with a single-process run.
    SlurmCheck(slurm::SlurmCheckArgs),
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Whether the arguments ask for a GPU (`--device cuda...` or `--device=cuda...`).
fn wants_cuda(args: &[String]) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        a.strip_prefix("--device=").is_some_and(|d| d.starts_with("cuda"))
            || (a == "--device" && args.get(i + 1).is_some_and(|d| d.starts_with("cuda")))
    })
}

/// Where `cargo xtask build-cuda` puts the CUDA build of `stiff` (its own target dir, so the CPU
/// build is never overwritten by it nor it by a CPU rebuild).
fn cuda_binary(root: &Path) -> PathBuf {
    let dir = std::env::var_os("STIFF_CUDA_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target/cuda"));
    dir.join("release").join("stiff")
}

/// The CUDA 13 runtime libraries installed by `build-cuda`, for the loader.
fn cuda_lib_dir() -> Option<PathBuf> {
    let venv = std::env::var_os("STIFF_CUDA_VENV").map(PathBuf::from).or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("stiffness/cuda-13.0"))
    })?;
    let lib = std::fs::read_dir(venv.join("lib"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("python3")))?;
    Some(lib.join("site-packages/nvidia/cu13/lib")).filter(|p| p.is_dir())
}

/// Runs the release `stiff` binary with the given arguments: the CUDA build (from
/// `cargo xtask build-cuda`) when the arguments ask for `--device cuda:N`, else the CPU build
/// (built first if needed).
fn stiff(args: &[String]) -> Result<ExitCode> {
    let root = workspace_root();
    if wants_cuda(args) {
        let bin = cuda_binary(&root);
        if !bin.is_file() {
            bail!(
                "--device cuda needs the CUDA build of stiff, not found at {}; run `cargo xtask build-cuda` first",
                bin.display()
            );
        }
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&root).args(args);
        if let Some(lib) = cuda_lib_dir() {
            let old = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
            cmd.env(
                "LD_LIBRARY_PATH",
                if old.is_empty() { lib.display().to_string() } else { format!("{}:{old}", lib.display()) },
            );
        }
        return run(cmd);
    }
    let bin = build_stiff(&root, &cargo())?;
    let mut cmd = Command::new(bin);
    cmd.current_dir(&root).args(args);
    run(cmd)
}

/// The cargo arguments that build the CPU `stiff` binary: the whole workspace's package selection
/// (so features resolve as in `cargo build --workspace` and `cargo test --workspace`, and the test
/// build's dependencies are reused instead of rebuilt), the `stiff` binary target only. Cargo's
/// own output is kept: a first build takes minutes and shows its progress.
const BUILD_STIFF: [&str; 6] =
    ["build", "--release", "--workspace", "--bin", "stiff", "--message-format=json-render-diagnostics"];

/// `cargo xtask` runs xtask through `cargo run`, which sets the package's variables
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...) in our environment. A build script that watches one
/// of them (ring's does) would see a different value than under `cargo test` and rebuild the whole
/// chain above it; every cargo xtask spawns gets the environment a person's shell has.
fn without_cargo_run_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let set_by_cargo_run = k.starts_with("CARGO_PKG_")
            || matches!(
                k.as_str(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            );
        if set_by_cargo_run {
            cmd.env_remove(&k);
        }
    }
}

/// Builds the release `stiff` binary (nothing is rebuilt when it is current) and returns its path,
/// as cargo reports it (so `CARGO_TARGET_DIR` and `build.target-dir` are honoured).
pub(crate) fn build_stiff(root: &Path, cargo: &str) -> Result<PathBuf> {
    let mut cmd = Command::new(cargo);
    without_cargo_run_env(&mut cmd);
    let out = cmd
        .current_dir(root)
        .args(BUILD_STIFF)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{cargo} {}`", BUILD_STIFF.join(" ")))?;
    // Progress and rendered diagnostics went to stderr; stdout holds one JSON message per line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("`cargo {}` failed ({})", BUILD_STIFF.join(" "), out.status);
    }
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|m| stiff_executable(&m))
        .with_context(|| format!("`cargo {}` reported no `stiff` executable", BUILD_STIFF.join(" ")))
}

/// The executable of a cargo `compiler-artifact` message for the `stiff` binary.
fn stiff_executable(msg: &serde_json::Value) -> Option<PathBuf> {
    let is_stiff = msg["reason"] == "compiler-artifact"
        && msg["target"]["name"] == "stiff"
        && msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|v| v == "bin"));
    is_stiff.then(|| msg["executable"].as_str().map(PathBuf::from)).flatten()
}

fn run(mut cmd: Command) -> Result<ExitCode> {
    let status = cmd.status().with_context(|| format!("could not start {cmd:?}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
        None => ExitCode::FAILURE,
    })
}

/// One line per failure: the error and its causes, never anyhow's backtrace dump (which
/// `fn main() -> Result` prints when `RUST_BACKTRACE` is set).
fn main() -> ExitCode {
    match task(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `error: outer: cause: root cause`.
fn one_line(e: &anyhow::Error) -> String {
    format!("error: {e:#}")
}

fn task(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Task::Reproduce { args } => stiff(&[vec!["reproduce".into()], args].concat()),
        Task::Report { args } => stiff(&[vec!["report".into()], args].concat()),
        Task::List => stiff(&["list".into()]),
        Task::Data { args } => stiff(&[vec!["data".into()], args].concat()),
        Task::Bench { which, args } => {
            let crates: Vec<&str> = match which.as_str() {
                "all" => vec!["stiff-gradkernel", "stiff-train", "stiff-analysis", "stiff-data"],
                "gradkernel" | "train" | "analysis" | "data" => vec![],
                other => bail!("unknown bench target `{other}` (expected gradkernel, train, analysis, data or all)"),
            };
            let owned = format!("stiff-{which}");
            let crates = if crates.is_empty() { vec![owned.as_str()] } else { crates };
            for c in crates {
                let mut cmd = Command::new(cargo());
                without_cargo_run_env(&mut cmd);
                cmd.current_dir(workspace_root()).args(["bench", "--package", c]);
                if !args.is_empty() {
                    cmd.arg("--").args(&args);
                }
                let code = run(cmd)?;
                if code != ExitCode::SUCCESS {
                    return Ok(code);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Task::SlurmCheck(args) => {
            slurm::run(args, &workspace_root(), &cargo())?;
            Ok(ExitCode::SUCCESS)
        }
        Task::BuildCuda => {
            let root = workspace_root();
            let script = root.join("scripts/cuda-build-env.sh");
            let mut cmd = Command::new("bash");
            without_cargo_run_env(&mut cmd);
            cmd.current_dir(&root).arg("-c").arg(format!(
                "source '{}' && \"$CARGO_BIN\" build --release --features cuda --package stiff-cli",
                script.display()
            ));
            cmd.env("CARGO_BIN", cargo())
                .env("CARGO_TARGET_DIR", cuda_binary(&root).parent().and_then(Path::parent).unwrap_or(&root));
            let code = run(cmd)?;
            if code == ExitCode::SUCCESS {
                eprintln!(
                    "built {}; `cargo xtask reproduce ... --device cuda:0` runs it",
                    cuda_binary(&root).display()
                );
            }
            Ok(code)
        }
    }
}
