//! Trains fc6 (784-500-300-100-100-100-10) on MNIST with SGD until the measured training loss
//! falls below 0.2 (thresholds 1.0, 0.5, 0.2 snapshot on the way), then checks that the final
//! checkpoint reloads into an identical model.
//!
//! ```text
//! cargo run --release -p stiff-train --example train_mnist -- [--lr 0.1] [--adam] [--seed 0]
//!     [--max-steps 20000] [--out target/train_mnist] [--data-dir DIR]
//! ```
//! Data: `--data-dir`, else `$STIFF_DATA_DIR`, else the user cache (see stiff-data); fetch it with
//! `cargo xtask data fetch mnist`. Inputs are standardised per example (zero mean, unit
//! variance), as in the paper.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::{DType, Device};
use stiff_data::{preprocess::Preprocess, DatasetName};
use stiff_models::{InputShape, Model, ModelConfig, Preset};
use stiff_train::{load_model, LabelledData, OptimizerConfig, SinkError, Snapshot, TrainConfig, Trainer};

/// Both MNIST splits, standardised per example (the paper's preprocessing).
fn load_mnist(data_dir: Option<&Path>) -> Result<(LabelledData, LabelledData)> {
    let ds = stiff_data::load(DatasetName::Mnist, data_dir)?;
    let pre = Preprocess::default();
    let train = LabelledData::new(pre.apply(&ds.train.images)?, ds.train.labels.clone())?;
    let test = LabelledData::new(pre.apply(&ds.test.images)?, ds.test.labels.clone())?;
    Ok((train, test))
}

fn main() -> Result<()> {
    let mut lr = 0.1;
    let mut adam = false;
    let mut seed = 0u64;
    let mut max_steps = 20_000u64;
    let mut out = PathBuf::from("target/train_mnist");
    let mut data_dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--lr" => lr = val()?.parse()?,
            "--adam" => adam = true,
            "--seed" => seed = val()?.parse()?,
            "--max-steps" => max_steps = val()?.parse()?,
            "--out" => out = PathBuf::from(val()?),
            "--data-dir" => data_dir = Some(PathBuf::from(val()?)),
            other => bail!("unknown argument `{other}`"),
        }
    }
    let (train, test) = load_mnist(data_dir.as_deref())?;
    eprintln!("MNIST: {} train, {} test", train.len(), test.len());

    let model =
        Model::new(&ModelConfig::preset(Preset::Fc6, InputShape::new(1, 28, 28), 10), seed, DType::F32, &Device::Cpu)?;
    let optimizer = if adam { OptimizerConfig::adam(lr) } else { OptimizerConfig::sgd(lr) };
    let ckpt = out.join("checkpoint.safetensors");
    let cfg = TrainConfig::default()
        .with_optimizer(optimizer)
        .with_seed(seed)
        .with_max_steps(max_steps)
        .with_eval_every(250)
        .with_thresholds(vec![1.0, 0.5, 0.2])
        .with_snapshot_steps(vec![0])
        .with_checkpoint_path(Some(ckpt.clone()))
        .with_checkpoint_every(Some(2_000))
        .with_metrics_path(Some(out.join("metrics.jsonl")));
    std::fs::create_dir_all(&out)?;
    // Versioned like every JSON file the workspace writes, and written atomically.
    let doc = serde_json::json!({ "schema_version": stiff_train::SCHEMA_VERSION, "config": &cfg });
    stiff_fs::write_atomic(&out.join("train_config.json"), serde_json::to_string_pretty(&doc)?.as_bytes())?;
    let mut sink = |s: &Snapshot<'_>| -> Result<(), SinkError> {
        eprintln!(
            "snapshot [{}] step {} ({} images): train loss {:.4}, val loss {:.4}, val acc {:.4}",
            s.reason,
            s.step,
            s.images_seen,
            s.metrics.train_loss,
            s.metrics.val_loss.unwrap_or(f64::NAN),
            s.metrics.val_acc.unwrap_or(f64::NAN)
        );
        Ok(())
    };
    let mut trainer = Trainer::new(model, cfg)?;
    eprintln!("fast MLP path: {}, rayon threads: {}", trainer.uses_fast_path(), rayon::current_num_threads());
    let report = trainer.run(&train, Some(&test), &mut sink)?;
    let last = report.history.last().context("no evaluation recorded")?;
    println!(
        "status {:?} after {} steps ({} epochs): train loss {:.4} (acc {:.4}), test loss {:.4} (acc {:.4}), {:.0} steps/s",
        report.status,
        report.step,
        report.epoch,
        last.train_loss,
        last.train_acc,
        last.val_loss.unwrap_or(f64::NAN),
        last.val_acc.unwrap_or(f64::NAN),
        report.steps_per_sec
    );
    let reloaded = load_model(&ckpt, &Device::Cpu)?;
    let model = trainer.model()?;
    let identical = model.vars().iter().zip(reloaded.vars()).all(|(a, b)| {
        let (a, b) = (a.as_tensor().flatten_all(), b.as_tensor().flatten_all());
        matches!((a.and_then(|a| a.to_vec1::<f32>()), b.and_then(|b| b.to_vec1::<f32>())), (Ok(a), Ok(b)) if a == b)
    });
    println!("checkpoint {} reloads into an identical model: {identical}", ckpt.display());
    if !identical || last.train_loss >= 0.2 {
        bail!("did not reach training loss < 0.2 with an identical checkpoint");
    }
    Ok(())
}
