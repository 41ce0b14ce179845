//! Trains fc6 (784-500-300-100-100-100-10) on MNIST with SGD until the measured training loss
//! falls below 0.2 (thresholds 1.0, 0.5, 0.2 snapshot on the way), then checks that the final
//! checkpoint reloads into an identical model.
//!
//! ```text
//! cargo run --release -p stiff-train --example train_mnist -- [--lr 0.1] [--adam] [--seed 0]
//!     [--max-steps 20000] [--out target/train_mnist]
//! ```
//! Data: `$STIFF_DATA_DIR/mnist/*-idx?-ubyte.gz`, else `/work/shared/datasets/mnist`. Inputs are
//! standardised per example (zero mean, unit variance), as in the paper.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use stiff_models::{InputShape, Model, ModelConfig, Preset};
use stiff_train::{load_model, LabelledData, OptimizerConfig, SinkError, Snapshot, TrainConfig, Trainer};

/// Reads a gzipped IDX file: magic (2 zero bytes, type 0x08 = u8, rank), big-endian dims, data.
fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut bytes)
        .with_context(|| format!("decompressing {}", path.display()))?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        bail!("{}: not an unsigned-byte IDX file", path.display());
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        bail!("{}: truncated header", path.display());
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        bail!("{}: expected {} data bytes for dims {dims:?}, found {}", path.display(), n, bytes.len() - header);
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// One split as `(N, 1, 28, 28)` f32, standardised per example, plus labels.
fn load_split(dir: &Path, prefix: &str) -> Result<LabelledData> {
    let (dims, pixels) = read_idx(&dir.join(format!("{prefix}-images-idx3-ubyte.gz")))?;
    let (ldims, labels) = read_idx(&dir.join(format!("{prefix}-labels-idx1-ubyte.gz")))?;
    if dims.len() != 3 || dims[1..] != [28, 28] || ldims != dims[..1] {
        bail!("{}: unexpected MNIST shapes {dims:?} / {ldims:?}", dir.display());
    }
    let n = dims[0];
    let x = Tensor::from_vec(pixels.iter().map(|&p| f32::from(p) / 255.0).collect::<Vec<_>>(), (n, 784), &Device::Cpu)?;
    let mean = x.mean_keepdim(1)?;
    let centred = x.broadcast_sub(&mean)?;
    let std = centred.sqr()?.mean_keepdim(1)?.sqrt()?;
    let x = centred.broadcast_div(&(std + 1e-8)?)?.reshape((n, 1, 28, 28))?;
    Ok(LabelledData::new(x, labels.into_iter().map(u32::from).collect())?)
}

fn main() -> Result<()> {
    let mut lr = 0.1;
    let mut adam = false;
    let mut seed = 0u64;
    let mut max_steps = 20_000u64;
    let mut out = PathBuf::from("target/train_mnist");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--lr" => lr = val()?.parse()?,
            "--adam" => adam = true,
            "--seed" => seed = val()?.parse()?,
            "--max-steps" => max_steps = val()?.parse()?,
            "--out" => out = PathBuf::from(val()?),
            other => bail!("unknown argument `{other}`"),
        }
    }
    let root = std::env::var_os("STIFF_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| "/work/shared/datasets".into());
    let dir = root.join("mnist");
    let train = load_split(&dir, "train")?;
    let test = load_split(&dir, "t10k")?;
    eprintln!("MNIST from {}: {} train, {} test", dir.display(), train.len(), test.len());

    let model =
        Model::new(&ModelConfig::preset(Preset::Fc6, InputShape::new(1, 28, 28), 10), seed, DType::F32, &Device::Cpu)?;
    let optimizer = if adam { OptimizerConfig::adam(lr) } else { OptimizerConfig::sgd(lr) };
    let ckpt = out.join("checkpoint.safetensors");
    let cfg = TrainConfig {
        optimizer,
        seed,
        max_steps,
        eval_every: 250,
        thresholds: vec![1.0, 0.5, 0.2],
        snapshot_steps: vec![0],
        checkpoint_path: Some(ckpt.clone()),
        checkpoint_every: Some(2_000),
        metrics_path: Some(out.join("metrics.jsonl")),
        ..Default::default()
    };
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("train_config.json"), serde_json::to_string_pretty(&cfg)?)?;
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
