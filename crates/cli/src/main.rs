//! `stiff`: the command-line front end of the stiffness toolkit.
//!
//! Subcommands: `gram` (per-example gradient Gram matrix and class stiffness for a checkpoint),
//! `measure`, `cross` (stiffness between whole datasets, tiled and shardable), `data` (fetch / verify datasets), `reproduce` / `report` / `list` (the paper's
//! figures; `cargo xtask reproduce` calls this in a release build), `completions`.
//!
//! Results go to stdout, diagnostics (progress, notes, errors) to stderr. An error prints one
//! message and its causes once, never a backtrace.

mod cross;
mod data;
mod examples;
mod gram;
mod limits;
mod measure;
mod memory;
mod model_source;
mod outdir;
mod reproduce;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "stiff", version, about = "Stiffness of neural networks: gradient alignment between examples")]
struct Cli {
    /// CPU threads for the numeric kernels, at most 4 x the cores [default: all cores, or $RAYON_NUM_THREADS].
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-example gradient Gram matrix (and per-layer Grams) plus class stiffness for given weights.
    Gram(gram::GramArgs),
    /// Stiffness between whole datasets (e.g. all train x all test), streamed in tiles; `cross merge DIR` combines shards.
    Cross(cross::CrossArgs),
    /// Datasets: fetch and verify.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Stiffness of your own checkpoint on a dataset subset: class matrices, distance curves, figures.
    Measure(measure::MeasureArgs),
    /// Reproduce a figure of the paper (resumable, shardable).
    Reproduce(reproduce::ReproduceArgs),
    /// Redraw every figure and the index from the finished runs in a results folder.
    Report(reproduce::ReportArgs),
    /// List the figures, what each shows and how long it takes.
    List,
    /// Print a shell completion script to stdout (e.g. `stiff completions bash > ~/.local/share/bash-completion/completions/stiff`).
    Completions {
        /// The shell to write the script for.
        shell: clap_complete::Shell,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Gram(args) => gram::run(args),
        Command::Cross(args) => cross::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Measure(args) => measure::run(args),
        Command::Reproduce(args) => reproduce::run(args),
        Command::Report(args) => reproduce::report(args),
        Command::List => reproduce::list(),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "stiff", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // An ordinary user error is a message, not a backtrace dump: anyhow captures a backtrace when
    // RUST_BACKTRACE=1 unless RUST_LIB_BACKTRACE says otherwise (panics keep theirs).
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        if let Err(e) = limits::check_threads(usize::from(n), limits::cores()) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        // Read by rayon and candle when their thread pools start (nothing has started yet).
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // candle splits large element-wise ops over a pool of its own whose workers spin while they
    // wait; on a few shared cores that spinning cost the general engine 1.5-2.5x (resnet18 Gram:
    // 2.0 vs 0.75 CPU s). Its matrix products and convolutions use the rayon threads above either
    // way, and element-wise results do not depend on the split. `CANDLE_NUM_THREADS` overrides.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut last = e.to_string();
            for cause in e.chain().skip(1) {
                let msg = cause.to_string();
                // Many errors repeat their source in their own message: print each text once.
                if !last.contains(&msg) {
                    eprintln!("  caused by: {msg}");
                }
                last = msg;
            }
            ExitCode::FAILURE
        }
    }
}
