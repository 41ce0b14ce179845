//! `stiff reproduce`, `stiff report`, `stiff list`: the paper's figures.

use std::path::PathBuf;

use anyhow::Result;
use stiff_experiments::options::{parse_device, OptimizerKind, ReproduceOptions, SweepFlags};
use stiff_experiments::runner;
use stiff_experiments::sweep::RunSelection;

#[derive(clap::Args)]
pub struct ReproduceArgs {
    /// A figure (fig2 .. fig10, spherical; see `stiff list`) or all.
    figure: String,
    /// The same pipeline scaled down (fewer rates, one seed, higher loss thresholds): minutes, not quarter hours.
    #[arg(long)]
    quick: bool,
    /// Dataset root (overrides STIFF_DATA_DIR and the user cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Results folder.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seeds (runs) per configuration, 1 to 1000: fig8-10 5 (2 with --quick); fig2-5 3; fig6-7 1; spherical 3 (1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=crate::limits::MAX_SEEDS))]
    seeds: Option<u64>,
    /// sgd or adam (constant learning rate). Figures of a non-default optimizer go to `<figure>-adam/`.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// Datasets of the learning-rate sweep (fig8-10), comma-separated, e.g. `mnist,fashion-mnist`.
    #[arg(long)]
    datasets: Option<String>,
    /// Learning rates of the sweep (fig8-10), comma-separated, e.g. `0.01,0.1`.
    #[arg(long)]
    lrs: Option<String>,
    /// Training-loss thresholds of the sweep (fig8-10), comma-separated, applied to every dataset.
    #[arg(long)]
    thresholds: Option<String>,
    /// Steps between evaluations of the sweep (fig8-10; the crossing itself is decided on a running mean).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Skip runs already finished in --out (the default).
    #[arg(long, default_value_t = true, overrides_with = "fresh")]
    resume: bool,
    /// Redo every selected run even if finished.
    #[arg(long)]
    fresh: bool,
    /// Print the run ids of the sweep (with done/pending) and exit.
    #[arg(long)]
    list_runs: bool,
    /// Run only these ids (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// Do not download missing datasets (by default they are fetched into the data dir or the user cache).
    #[arg(long)]
    no_fetch: bool,
    /// Run the K-th of N shards (0-based K), e.g. a Slurm array task: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT.
    #[arg(long)]
    shard: Option<String>,
}

pub fn run(args: ReproduceArgs) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    stiff_fs::ensure_writable_dir(&args.out).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    if !args.no_fetch && !args.list_runs {
        // A dataset that cannot be fetched is not fatal here: `all` skips its figures (listing them
        // in OUT/skipped.md) and a single figure stops with a message saying how to fetch it.
        for name in stiff_experiments::registry::datasets_for(&args.figure) {
            if let Err(e) = crate::data::fetch_missing(&[name], args.data_dir.as_deref()) {
                eprintln!("warning: {e:#}");
            }
        }
    }
    let mut opts = ReproduceOptions::new(&args.figure, args.out);
    opts.quick = args.quick;
    opts.data_dir = args.data_dir;
    opts.device = parse_device(&args.device)?;
    // Bounded by the parser, so the run lists built from it cannot overflow.
    opts.seeds = args.seeds.map(|n| n as usize);
    opts.optimizer = args.optimizer.parse::<OptimizerKind>()?;
    opts.resume = args.resume && !args.fresh;
    opts.list_runs = args.list_runs;
    opts.sweep =
        SweepFlags::parse(args.datasets.as_deref(), args.lrs.as_deref(), args.thresholds.as_deref(), args.eval_every)?;
    opts.selection =
        RunSelection { only: args.only, shard: args.shard.as_deref().map(RunSelection::parse_shard).transpose()? };
    opts.command = command;
    runner::reproduce(&opts)?;
    Ok(())
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Results folder filled by `reproduce` (possibly by many shards).
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

pub fn report(args: ReportArgs) -> Result<()> {
    runner::report(&args.out)?;
    eprintln!("wrote {}", args.out.join("index.md").display());
    Ok(())
}

pub fn list() -> Result<()> {
    print!("{}", stiff_experiments::registry::table());
    Ok(())
}
