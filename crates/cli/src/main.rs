//! `stiff`: the command-line front end of the stiffness toolkit.
//!
//! Subcommands: `gram` (per-example gradient Gram matrix and class stiffness for a checkpoint),
//! `cross` (stiffness between whole datasets, tiled and shardable),
//! `data` (fetch / verify datasets), `reproduce` / `report` / `list` (the paper's figures;
//! `cargo xtask reproduce` calls this in a release build).

mod cross;
mod data;
mod gram;
mod measure;
mod reproduce;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "stiff", version, about = "Stiffness of neural networks: gradient alignment between examples")]
struct Cli {
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Gram(args) => gram::run(args),
        Command::Cross(args) => cross::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Measure(args) => measure::run(args),
        Command::Reproduce(args) => reproduce::run(args),
        Command::Report(args) => reproduce::report(args),
        Command::List => reproduce::list(),
    }
}
