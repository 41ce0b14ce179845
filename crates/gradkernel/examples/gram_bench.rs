//! Prints Gram timings and peak RSS: `cargo run --release -p stiff-gradkernel --example gram_bench -- fc6 500 [reps] [method] [budget_mib]`.
//! Presets fc6/fc4 use MNIST-shaped inputs, cnn5/cnn4 CIFAR-shaped; `method` is auto, factorised,
//! materialised, `autograd` (probe deltas), `tensor` (the general engine, no CPU kernel), `pergrad` (per-example
//! gradients then G G^T) or `reference` (one backward per example).

use candle::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use stiff_gradkernel::{gram, reference_gram, DeltaRoute, GramOptions, Method};
use stiff_models::{InputShape, Model, ModelConfig, Preset};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset: Preset = args.first().map(|s| s.parse()).transpose()?.unwrap_or(Preset::Fc6);
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(500);
    let reps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let method = args.get(3).map(String::as_str).unwrap_or("auto");
    // Memory budget of the Gram (default 2 GiB): peak RSS minus the inputs should stay under it.
    let budget_mib: Option<usize> = args.get(4).map(|s| s.parse()).transpose()?;
    let shape = match preset {
        Preset::Fc6 | Preset::Fc4 => InputShape::new(1, 28, 28),
        _ => InputShape::new(3, 32, 32),
    };
    let model = Model::new(&ModelConfig::preset(preset, shape, 10), 0, DType::F32, &Device::Cpu)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let xv: Vec<f32> = (0..n * shape.numel()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(xv, (n, shape.numel()), &Device::Cpu)?;
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, &Device::Cpu)?;
    let mut opts = GramOptions::default().with_per_layer(false);
    if let Some(b) = budget_mib {
        opts.memory_budget_bytes = b << 20;
    }
    match method {
        "factorised" => opts.method = Method::Factorised,
        "materialised" => opts.method = Method::Materialised,
        "autograd" => opts.delta_route = DeltaRoute::Autograd,
        "tensor" => opts.cpu_fast_path = false,
        _ => {}
    }
    let mut times = Vec::new();
    let mut chunk = 0;
    for _ in 0..reps {
        if method == "pergrad" {
            // The materialised route: per-example gradients (N, P), then G G^T.
            let t = std::time::Instant::now();
            let g = stiff_gradkernel::per_example_gradients(
                &model,
                &x,
                &y,
                &opts.clone().with_memory_budget_bytes(8 << 30),
            )?;
            let _k = g.matmul(&g.t()?)?;
            times.push(t.elapsed().as_secs_f64());
        } else if method == "reference" {
            let t = std::time::Instant::now();
            reference_gram(&model, &x, &y)?;
            times.push(t.elapsed().as_secs_f64());
        } else {
            let r = gram(&model, &x, &y, &opts)?;
            chunk = r.chunk;
            times.push(r.seconds);
        }
    }
    times.sort_by(f64::total_cmp);
    let best = times[0];
    let median = times[times.len() / 2];
    // Gram multiply-adds of the factorised dense form, upper triangle only: N(N+1)/2 * sum(in + out).
    let dense_dims: usize = model.layers().iter().map(|l| l.in_dims.iter().product::<usize>() + l.out_dims[0]).sum();
    let gflop = 2.0 * (n * (n + 1) / 2) as f64 * dense_dims as f64 / 1e9;
    println!(
        "preset={preset} n={n} method={method} threads={} chunk={chunk} best_s={best:.4} median_s={median:.4} reps={reps} \
         peak_rss_mib={:.0} gram_gflop_per_s(dense factorised count)={:.1}",
        rayon::current_num_threads(),
        vm_hwm_kib() as f64 / 1024.0,
        gflop / best
    );
    if method == "auto" && matches!(preset, Preset::Fc6 | Preset::Fc4) {
        // Per-phase breakdown of the CPU kernel: best of `reps` per phase (ms); dd/aa/hadamard
        // are CPU ms summed over threads, the rest wall ms.
        let mut best: Option<stiff_gradkernel::DensePhases> = None;
        for _ in 0..reps {
            let p = stiff_gradkernel::dense_gram_phases(&model, &x, &y, false)?;
            best = Some(match best {
                None => p,
                Some(b) => stiff_gradkernel::DensePhases {
                    inputs: b.inputs.min(p.inputs),
                    forward: b.forward.min(p.forward),
                    backward: b.backward.min(p.backward),
                    gram: b.gram.min(p.gram),
                    dd: b.dd.min(p.dd),
                    aa: b.aa.min(p.aa),
                    hadamard: b.hadamard.min(p.hadamard),
                    mirror: b.mirror.min(p.mirror),
                    output: b.output.min(p.output),
                },
            });
        }
        let p = best.expect("reps >= 1");
        let ms = |s: f64| s * 1e3;
        println!(
            "phases_ms(best of {reps}) inputs={:.3} forward={:.3} backward={:.3} gram={:.3} [cpu: dd={:.3} aa={:.3} hadamard={:.3}] \
             mirror={:.3} output={:.3} sum={:.3}",
            ms(p.inputs),
            ms(p.forward),
            ms(p.backward),
            ms(p.gram),
            ms(p.dd),
            ms(p.aa),
            ms(p.hadamard),
            ms(p.mirror),
            ms(p.output),
            ms(p.inputs + p.forward + p.backward + p.gram + p.mirror + p.output),
        );
    }
    Ok(())
}
