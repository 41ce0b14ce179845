//! Does the Fig 8 number depend on how often the training loss is checked?
//!
//! Trains fc6 on MNIST (SGD) to a training loss below a threshold under two protocols and two
//! evaluation cadences, and prints the between-class sign stiffness on the fixed 500-example
//! validation subset, seed by seed and as seed means with 95% intervals:
//! * `legacy`: the crossing is the first evaluation (every `eval_every` steps, 1,000 training
//!   examples) below the threshold; stiffness is measured at that one step.
//! * `window`: the crossing is decided on the running mean of the last `smooth` mini-batch
//!   losses after every step (independent of `eval_every`); stiffness is the mean over a window
//!   of snapshots after the crossing.
//!
//! ```text
//! cargo run --release -p stiff-experiments --example cadence_check -- \
//!     --data-dir ../shared/datasets --seeds 3 --lrs 0.01,0.1 --threshold 0.2
//! # the new protocol's own choice, the smoothing length:
//! cargo run --release -p stiff-experiments --example cadence_check -- \
//!     --data-dir ../shared/datasets --protocols window --cadences 100 --smooth 400
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle::{DType, Device, Tensor};
use stiff_analysis::{class_stiffness, StiffnessSettings};
use stiff_data::{preprocess::Preprocess, sampling::balanced_subset, DatasetName};
use stiff_gradkernel::{gram, GramOptions};
use stiff_models::{InputShape, Model, ModelConfig, Preset};
use stiff_train::{
    LabelledData, OptimizerConfig, Progress, SinkError, Snapshot, SnapshotReason, ThresholdRule, ThresholdWindow,
    TrainConfig, Trainer,
};

struct Args {
    data_dir: Option<PathBuf>,
    seeds: u64,
    lrs: Vec<f64>,
    threshold: f64,
    smooth: u64,
    window: u32,
    window_every: u64,
    protocols: Vec<String>,
    cadences: Vec<u64>,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        data_dir: None,
        seeds: 3,
        lrs: vec![0.01, 0.1],
        threshold: 0.2,
        smooth: 200,
        window: 5,
        window_every: 20,
        protocols: vec!["legacy".into(), "window".into()],
        cadences: vec![20, 100],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--data-dir" => a.data_dir = Some(val.into()),
            "--seeds" => a.seeds = val.parse()?,
            "--lrs" => a.lrs = val.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--threshold" => a.threshold = val.parse()?,
            "--smooth" => a.smooth = val.parse()?,
            "--window" => a.window = val.parse()?,
            "--window-every" => a.window_every = val.parse()?,
            "--protocols" => a.protocols = val.split(',').map(String::from).collect(),
            "--cadences" => a.cadences = val.split(',').map(str::parse).collect::<Result<_, _>>()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn mean_ci(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, f64::NAN);
    }
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // Student t 97.5% quantiles for 1..=9 degrees of freedom.
    const T: [f64; 9] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262];
    (m, T[(v.len() - 2).min(8)] * sd / n.sqrt())
}

fn main() -> Result<()> {
    let args = parse()?;
    let dev = Device::Cpu;
    let ds = stiff_data::load_with(DatasetName::Mnist, args.data_dir.as_deref(), &Default::default())?;
    let pre = Preprocess::default();
    let train_x = pre.apply(&ds.train.images)?;
    let val_x = pre.apply(&ds.test.images)?;
    let idx = balanced_subset(&ds.test.labels, 10, 500, 0)?;
    let idx_t = Tensor::new(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), &dev)?;
    let sx = val_x.index_select(&idx_t, 0)?;
    let sy_v: Vec<u32> = idx.iter().map(|&i| ds.test.labels[i]).collect();
    let sy = Tensor::new(sy_v.as_slice(), &dev)?;
    let train = LabelledData::new(train_x, ds.train.labels.clone())?;
    let cfg = ModelConfig::preset(Preset::Fc6, InputShape::new(1, 28, 28), 10);
    let between = |model: &Model| -> std::result::Result<f64, SinkError> {
        let g = gram(model, &sx, &sy, &GramOptions::default().with_per_layer(false))?;
        let k = stiff_gradkernel::to_ndarray_f64(&g.k)?;
        Ok(class_stiffness(k.view(), &sy_v, 10, &StiffnessSettings::default())?.sign.between)
    };

    println!("protocol  eval_every  lr      seed  crossing_step  between_sign  window_sd");
    let mut table: Vec<(String, u64, f64, Vec<f64>)> = Vec::new();
    for (protocol, rule, window) in [
        ("legacy", ThresholdRule::Evaluated, None),
        (
            "window",
            ThresholdRule::RunningMean { steps: args.smooth },
            Some(ThresholdWindow { count: args.window, every: args.window_every }),
        ),
    ] {
        if !args.protocols.iter().any(|p| p == protocol) {
            continue;
        }
        for &eval_every in &args.cadences {
            for &lr in &args.lrs {
                let mut values = Vec::new();
                for seed in 0..args.seeds {
                    let model = Model::new(&cfg, seed, DType::F32, &dev)?;
                    let tc = TrainConfig::default()
                        .with_optimizer(OptimizerConfig::sgd(lr))
                        .with_seed(seed)
                        .with_max_steps(30_000)
                        .with_eval_every(eval_every)
                        .with_train_eval_subset(1_000)
                        .with_thresholds(vec![args.threshold])
                        .with_threshold_rule(rule)
                        .with_threshold_window(window)
                        .with_overfit_patience(None);
                    let mut vals = Vec::new();
                    let mut crossing = None;
                    let mut sink = |s: &Snapshot<'_>| -> std::result::Result<(), SinkError> {
                        match s.reason {
                            SnapshotReason::Threshold { .. } => {
                                crossing = Some(s.step);
                                vals.push(between(s.model)?);
                            }
                            SnapshotReason::ThresholdWindow { .. } => vals.push(between(s.model)?),
                            _ => {}
                        }
                        Ok(())
                    };
                    Trainer::new(model, tc)?.with_progress(Progress::Hidden).run(&train, None, &mut sink)?;
                    let (m, _) = mean_ci(&vals);
                    let sd = if vals.len() > 1 {
                        (vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (vals.len() - 1) as f64).sqrt()
                    } else {
                        f64::NAN
                    };
                    println!(
                        "{protocol:<9} {eval_every:<11} {lr:<7} {seed:<5} {:<14} {m:<13.4} {sd:.4}",
                        crossing.map_or("-".into(), |c| c.to_string())
                    );
                    values.push(m);
                }
                table.push((protocol.to_string(), eval_every, lr, values));
            }
        }
    }
    println!("\nseed means (95% t-interval):");
    for (p, e, lr, v) in &table {
        let (m, h) = mean_ci(v);
        println!("{p:<9} eval_every {e:<4} lr {lr:<6} between_sign {m:+.4} ± {h:.4}  (n = {})", v.len());
    }
    Ok(())
}
