//! `stiff data fetch` and `stiff data verify`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use stiff_data::DatasetName;

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Download a dataset (or `all`) from its canonical location or a mirror, verifying checksums.
    Fetch {
        /// The dataset to download, or all of them.
        #[arg(value_parser = ["mnist", "fashion-mnist", "cifar10", "cifar100", "all"])]
        dataset: String,
        /// Base URL of a mirror holding the official file names (http://, https:// or file:///).
        #[arg(long)]
        mirror: Option<String>,
        /// Where to put the data (default: STIFF_DATA_DIR, else the user cache directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check every dataset present: checksums, counts, shapes, label ranges. Exits 1 if one is broken.
    Verify {
        /// The data dir to check, the only place looked [default: $STIFF_DATA_DIR, else the user cache].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch { dataset, mirror, data_dir } => {
            let names: Vec<DatasetName> =
                if dataset == "all" { DatasetName::ALL.to_vec() } else { vec![dataset.parse::<DatasetName>()?] };
            let root = fetch_root(data_dir.as_deref())?;
            for name in names {
                let report = stiff_data::download::fetch(name, &root, mirror.as_deref(), true)?;
                for f in &report.files {
                    eprintln!("{name}: {} {:?} ({} bytes)", f.path.display(), f.action, f.bytes_transferred);
                }
            }
            Ok(())
        }
        DataCommand::Verify { data_dir } => {
            // A mistyped folder would otherwise list every dataset as missing and exit 0.
            if let Some(d) = data_dir.as_deref().filter(|d| !d.is_dir()) {
                bail!("--data-dir {}: no such folder", d.display());
            }
            let rows = stiff_data::verify(data_dir.as_deref());
            println!("{:<14} {:<9} {:<9} details", "dataset", "status", "checksum");
            for r in &rows {
                println!("{r}");
            }
            let broken: Vec<String> = rows.iter().filter(|r| r.is_broken()).map(|r| r.dataset.to_string()).collect();
            if !broken.is_empty() {
                bail!("broken datasets: {}", broken.join(", "));
            }
            Ok(())
        }
    }
}

/// Where downloads go: `--data-dir`, else `STIFF_DATA_DIR`, else the user cache.
fn fetch_root(data_dir: Option<&std::path::Path>) -> Result<PathBuf> {
    match data_dir.map(PathBuf::from).or_else(|| std::env::var_os(stiff_data::DATA_DIR_ENV).map(PathBuf::from)) {
        Some(d) => Ok(d),
        None => stiff_data::default_cache_dir().context("no user cache directory; pass --data-dir"),
    }
}

/// Downloads each dataset in `names` that cannot be found (so the main job works on a fresh machine).
pub fn fetch_missing(names: &[DatasetName], data_dir: Option<&std::path::Path>) -> Result<()> {
    for &name in names {
        if stiff_data::locate(name, data_dir).is_ok() {
            continue;
        }
        let root = fetch_root(data_dir)?;
        eprintln!("{name} not found; downloading it into {} (use --no-fetch to skip)", root.display());
        stiff_data::download::fetch(name, &root, None, true)
            .with_context(|| format!("{name} is needed and could not be downloaded"))?;
    }
    Ok(())
}
