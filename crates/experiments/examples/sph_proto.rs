//! Temporary driver for tuning the spherical experiment (removed before hand-off).
use std::path::PathBuf;

use candle::Device;
use stiff_experiments::lr_sweep::OptimizerKind;
use stiff_experiments::runner::ReproduceOptions;
use stiff_experiments::spherical::{reproduce_spherical_with, SphericalConfig};
use stiff_experiments::sweep::RunSelection;

fn env<T: std::str::FromStr>(k: &str) -> Option<T> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let quick = a[1] == "quick";
    let opt: OptimizerKind = a[2].parse()?;
    let out = PathBuf::from(&a[3]);
    let mut cfg = SphericalConfig::new(quick, opt, env("SEEDS").unwrap_or(1));
    if let Ok(d) = std::env::var("DEGREES") {
        cfg.degrees = d.split(',').map(|x| x.parse().unwrap()).collect();
    }
    if let Ok(d) = std::env::var("LRS") {
        cfg.lrs = d.split(',').map(|x| x.parse().unwrap()).collect();
    }
    if let Some(v) = env("LR") {
        cfg.lr = v;
    }
    if let Some(v) = env("STEPS") {
        cfg.max_steps = v;
    }
    if let Some(v) = env("THR") {
        cfg.loss_threshold = v;
    }
    if let Some(v) = env("NTRAIN") {
        cfg.n_train = v;
    }
    let opts = ReproduceOptions {
        figure: "spherical".into(),
        quick,
        data_dir: None,
        out,
        device: Device::Cpu,
        seeds: None,
        optimizer: opt,
        resume: true,
        list_runs: false,
        selection: RunSelection::default(),
        command: a.join(" "),
    };
    reproduce_spherical_with(&opts, &cfg)?;
    Ok(())
}
