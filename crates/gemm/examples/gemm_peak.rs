//! Measured f32/f64 multiply throughput through `stiff_gemm` on this machine, the denominator of
//! the lower bounds in `docs/benchmarks.md`.
//!
//! `cargo run --release -p stiff-gemm --example gemm_peak -- [square SIZE | gram N P] [reps] [f32|f64]`
//!
//! * `square SIZE` (default 2048): `C = A B` with `A, B: (SIZE, SIZE)`, `SIZE^3` multiply-adds.
//! * `gram N P`: `C = G Gᵀ` with `G: (N, P)` row-major (the shape of a materialised per-example
//!   gradient Gram), full square product, `N^2 P` multiply-adds.
//!
//! Threads: `RAYON_NUM_THREADS` (default: all cores). Prints the best of `reps` (default 5) after
//! one warm-up, in GFLOP/s (2 flops per multiply-add), and GFLOP per CPU-second over the timed
//! reps (user + system time of all threads): on a shared machine the second barely moves with
//! the load, and "GFLOP per CPU-second x threads" is the throughput of the same threads on free cores.

use std::time::Instant;

use stiff_gemm::{matmul, MatMut, MatRef, Parallelism, Scalar};

/// CPU seconds (user + system, all threads) used by this process, from /proc/self/stat (ticks of
/// 1/100 s); NaN where unavailable.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn fill<T: Scalar>(len: usize, from: fn(f64) -> T) -> Vec<T> {
    // A cheap deterministic pattern in [-1, 1): no denormals, no zeros to skip.
    (0..len).map(|i| from(((i.wrapping_mul(2_654_435_761) % 1000) as f64) / 500.0 - 1.0)).collect()
}

/// Best wall seconds, GFLOP/s at that time, and GFLOP per CPU-second over all timed products.
fn run<T: Scalar>(mode: &str, a: usize, b: usize, reps: usize, from: fn(f64) -> T) -> (f64, f64, f64) {
    let (m, n, k, lhs, rhs_len) = match mode {
        "gram" => (a, a, b, fill(a * b, from), 0),
        _ => (a, a, a, fill(a * a, from), a * a),
    };
    let rhs = fill(rhs_len, from);
    let mut c = vec![T::ZERO; m * n];
    let par = Parallelism::Rayon(0);
    let mut best = f64::INFINITY;
    let mut cpu = 0.0;
    for rep in 0..reps + 1 {
        let c0 = cpu_seconds();
        let t = Instant::now();
        let r = if mode == "gram" { MatRef::row_major(&lhs, n, k).t() } else { MatRef::row_major(&rhs, k, n) };
        matmul(MatMut::row_major(&mut c, m, n), None, MatRef::row_major(&lhs, m, k), r, from(1.0), par)
            .expect("shapes are consistent by construction");
        best = best.min(t.elapsed().as_secs_f64());
        if rep > 0 {
            cpu += cpu_seconds() - c0;
        }
    }
    let macs = (m * n) as f64 * k as f64;
    (best, 2.0 * macs / best / 1e9, 2.0 * macs * reps as f64 / cpu / 1e9)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("square");
    let parse = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (a, b, rest) = match mode {
        "gram" => (parse(1, 500), parse(2, 295_168), 3),
        "square" => (parse(1, 2048), 0, 2),
        other => {
            eprintln!("unknown mode {other:?}: use `square SIZE` or `gram N P`");
            std::process::exit(2);
        }
    };
    let reps = parse(rest, 5).max(1);
    let dtype = args.get(rest + 1).map(String::as_str).unwrap_or("f32");
    let (best, gflops, per_cpu) = match dtype {
        "f64" => run::<f64>(mode, a, b, reps, |v| v),
        _ => run::<f32>(mode, a, b, reps, |v| v as f32),
    };
    let shape = if mode == "gram" { format!("n={a} p={b}") } else { format!("size={a}") };
    println!(
        "gemm_peak mode={mode} {shape} dtype={dtype} threads={} best_s={best:.4} gflop_per_s={gflops:.1} \
         gflop_per_cpu_s={per_cpu:.1}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(std::env::var("RAYON_NUM_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX))
    );
}
