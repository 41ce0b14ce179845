//! Conv-net Gram benchmark: time, peak RSS, a per-layer breakdown and the pooling ties of the
//! inputs. `cargo build --release -p stiff-gradkernel --example conv_bench`, then
//!
//! `target/release/examples/conv_bench [--preset cnn5] [--n 500] [--classes 10] [--reps 3]
//!  [--route fast|old] [--cross M] [--dump FILE.safetensors]`
//!
//! * Inputs: CIFAR-shaped `3x32x32`, seeded; the left half of every image is one constant (per
//!   image), the right half uniform noise in (-1, 1), so max-pool windows tie and whole windows
//!   are zero after ReLU. The tie counts of every conv layer are printed.
//! * `--route fast`: `gram` through the conv CPU kernel (`conv_gram_profiled`); `old`: the candle
//!   route (`cpu_fast_path = false`, materialised/ghost per layer, autograd deltas).
//! * `--cross M`: times `cross_gram` between the N inputs and M others (seeded differently)
//!   instead of `gram`; `--route old` sends it to the general engine.
//! * f32, no per-layer Grams, default 2 GiB budget; threads from `RAYON_NUM_THREADS`.
//! * `--dump FILE`: writes the weights (PyTorch keys), `x (N, 3, 32, 32)`, `y (N)` and our `K`
//!   to a safetensors file for the JAX peer (`benches/peers/jax_conv_gram.py`).

use std::collections::HashMap;

use anyhow::{bail, Context};
use candle::{DType, Device, Tensor};
use stiff_gradkernel::{conv_gram_profiled, cross_gram, gram, pooling_stats, GramOptions, GramResult, LayerForm};
use stiff_models::{InputShape, Model, ModelConfig, Preset};

mod bench_util;
use bench_util::{cpu_seconds, inputs, vm_hwm_mib};

struct Args {
    preset: Preset,
    n: usize,
    classes: usize,
    reps: usize,
    route: String,
    dump: Option<std::path::PathBuf>,
    cross: Option<usize>,
}

fn args() -> anyhow::Result<Args> {
    let mut a =
        Args { preset: Preset::Cnn5, n: 500, classes: 10, reps: 3, route: "fast".into(), dump: None, cross: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--preset" => a.preset = val()?.parse()?,
            "--n" => a.n = val()?.parse().context("--n")?,
            "--classes" => a.classes = val()?.parse().context("--classes")?,
            "--reps" => a.reps = val()?.parse::<usize>().context("--reps")?.max(1),
            "--route" => a.route = val()?,
            "--dump" => a.dump = Some(val()?.into()),
            "--cross" => a.cross = Some(val()?.parse().context("--cross")?),
            other => bail!("unknown argument {other:?} (see the doc comment of conv_bench.rs)"),
        }
    }
    if !matches!(a.route.as_str(), "fast" | "old") {
        bail!("--route must be fast or old, got {:?}", a.route);
    }
    if !matches!(a.preset, Preset::Cnn5 | Preset::Cnn4) {
        bail!("--preset must be a conv preset (cnn5, cnn4)");
    }
    Ok(a)
}

fn dump(path: &std::path::Path, model: &Model, x: &Tensor, y: &Tensor, r: &GramResult) -> anyhow::Result<()> {
    let mut t: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    t.insert("x".into(), x.clone());
    t.insert("y".into(), y.to_dtype(DType::I64)?);
    t.insert("k".into(), r.k.clone());
    let bytes = safetensors::tensor::serialize(t, None)?;
    stiff_fs::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `--cross M`: `cross_gram` of the N inputs against M others, best of `reps`.
fn cross_bench(a: &Args, model: &Model, x: &Tensor, y: &Tensor, m: usize, opts: &GramOptions) -> anyhow::Result<()> {
    let shape = InputShape::new(3, 32, 32);
    let xb = inputs(m, shape, 2)?;
    let yb = Tensor::from_vec((0..m as u32).map(|i| (i * 7) % a.classes as u32).collect::<Vec<_>>(), m, &Device::Cpu)?;
    let opts = if a.route == "old" { opts.clone().with_cpu_fast_path(false) } else { opts.clone() };
    let mut best = (f64::INFINITY, 0.0);
    for _ in 0..a.reps {
        let cpu0 = cpu_seconds();
        let r = cross_gram(model, x, y, &xb, &yb, &opts)?;
        let cpu = cpu_seconds() - cpu0;
        if r.seconds < best.0 {
            best = (r.seconds, cpu);
        }
    }
    println!(
        "conv_bench cross preset={} n={} m={m} route={} threads={} best_s={:.4} best_rep_cpu_s={:.2} peak_rss_mib={:.0}",
        a.preset,
        a.n,
        a.route,
        rayon::current_num_threads(),
        best.0,
        best.1,
        vm_hwm_mib()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let shape = InputShape::new(3, 32, 32);
    let model = Model::new(&ModelConfig::preset(a.preset, shape, a.classes), 0, DType::F32, &Device::Cpu)?;
    let x = inputs(a.n, shape, 1)?;
    let y = Tensor::from_vec((0..a.n as u32).map(|i| i % a.classes as u32).collect::<Vec<_>>(), a.n, &Device::Cpu)?;
    let threads = rayon::current_num_threads();
    let stats = pooling_stats(&model, &x)?;
    for (l, s) in stats.iter().enumerate() {
        println!(
            "pool conv.{l}: windows={} tied={} tied_with_positive_max={} all_zero={}",
            s.windows, s.tied, s.tied_live, s.zero
        );
    }
    let opts = GramOptions::default().with_per_layer(false);
    if let Some(m) = a.cross {
        return cross_bench(&a, &model, &x, &y, m, &opts);
    }
    let mut times = Vec::new();
    let mut last = None;
    // Every repetition's breakdown: on a shared machine the per-phase minimum over repetitions is
    // a steadier estimate of each phase than the breakdown of the fastest repetition.
    let mut all: Vec<stiff_gradkernel::ConvProfile> = Vec::new();
    let mut cpus: Vec<f64> = Vec::new();
    for _ in 0..a.reps {
        let cpu0 = cpu_seconds();
        let (r, p) = if a.route == "fast" {
            let (r, p) = conv_gram_profiled(&model, &x, &y, &opts)?;
            (r, Some(p))
        } else {
            (gram(&model, &x, &y, &opts.clone().with_cpu_fast_path(false))?, None)
        };
        let cpu = cpu_seconds() - cpu0;
        all.extend(p.clone());
        cpus.push(cpu);
        // Keep the fastest repetition's breakdown and CPU time.
        if times.iter().all(|&t| r.seconds < t) {
            last = Some((r.clone(), p, cpu));
        }
        times.push(r.seconds);
    }
    let (r, profile, cpu) = last.expect("reps >= 1");
    if let Some(p) = &profile {
        // build_G: the gradient rows (route "rows") or the position-major copies ("pixel").
        println!(
            "{:<8} {:>9} {:>9} {:>9} {:>9} {:>6}  route",
            "layer", "forward", "backward", "build_G", "gram", "tile"
        );
        for l in &p.layers {
            let route = match l.form {
                LayerForm::ConvTiles => "rows",
                LayerForm::ConvPixelGhost => "pixel",
                _ => "factorised",
            };
            println!(
                "{:<8} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>6}  {route}",
                l.name, l.forward, l.backward, l.build, l.gram, l.tile
            );
        }
        let sum = |f: fn(&stiff_gradkernel::LayerProfile) -> f64| p.layers.iter().map(f).sum::<f64>();
        let parts = sum(|l| l.forward) + sum(|l| l.backward) + sum(|l| l.build) + sum(|l| l.gram) + p.copies;
        // "other": validation, allocation and freeing of the big buffers, planning.
        println!(
            "{:<8} {:>9.4} {:>9.4} {:>9.4} {:>9.4}   copies {:.4}  other {:.4}  total {:.4}",
            "all",
            sum(|l| l.forward),
            sum(|l| l.backward),
            sum(|l| l.build),
            sum(|l| l.gram),
            p.copies,
            p.total - parts,
            p.total
        );
    }
    if all.len() > 1 {
        println!("per-phase minimum over {} repetitions:", all.len());
        let min = |f: &dyn Fn(&stiff_gradkernel::ConvProfile) -> f64| all.iter().map(f).fold(f64::INFINITY, f64::min);
        for (i, l) in all[0].layers.iter().enumerate() {
            println!(
                "{:<8} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
                l.name,
                min(&|p| p.layers[i].forward),
                min(&|p| p.layers[i].backward),
                min(&|p| p.layers[i].build),
                min(&|p| p.layers[i].gram)
            );
        }
        let parts = |p: &stiff_gradkernel::ConvProfile| {
            p.layers.iter().map(|l| l.forward + l.backward + l.build + l.gram).sum::<f64>() + p.copies
        };
        println!(
            "{:<8} {:>9.4} {:>9.4} {:>9.4} {:>9.4}   copies {:.4}  other {:.4}  total {:.4}",
            "all",
            min(&|p| p.layers.iter().map(|l| l.forward).sum()),
            min(&|p| p.layers.iter().map(|l| l.backward).sum()),
            min(&|p| p.layers.iter().map(|l| l.build).sum()),
            min(&|p| p.layers.iter().map(|l| l.gram).sum()),
            min(&|p| p.copies),
            min(&|p| p.total - parts(p)),
            min(&|p| p.total)
        );
    }
    if let Some(path) = &a.dump {
        dump(path, &model, &x, &y, &r)?;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "conv_bench preset={} n={} classes={} route={} threads={threads} chunk={} best_s={:.4} median_s={:.4} reps={} \
         best_rep_cpu_s={cpu:.2} mean_rep_cpu_s={:.3} peak_rss_mib={:.0}",
        a.preset,
        a.n,
        a.classes,
        a.route,
        r.chunk,
        times[0],
        times[times.len() / 2],
        a.reps,
        cpus.iter().sum::<f64>() / cpus.len() as f64,
        vm_hwm_mib()
    );
    Ok(())
}
