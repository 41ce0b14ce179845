//! The general engine's CPU fast paths (per-example gradients of linear, conv and norm records
//! written into one buffer; Gram blocks by fixed `stiff_gemm` stripes; the chunk passes' conv op)
//! against its candle-op path
//! (`cpu_fast_path = false`, the one CUDA runs) and the one-backward-per-example oracle, and the
//! same bits at 1, 2 and 3 threads across several chunks.

mod common;

use candle::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder, VarMap};
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_gradkernel::{
    cross_gram, gram, nn, reference_gram_net, reference_per_example_gradients_net, GramOptions, LayerForm, Loss,
    Method, ModuleNet,
};
use stiff_models::InputShape;

/// f64 Gram against the oracle, in cosine units (a cross Gram: relative to its largest entry).
const COS_TOL_F64: f64 = 1e-10;
/// f64 fast path against the candle path: the same products, summed in another order.
const REL_TOL_PATHS: f64 = 1e-12;

/// A stride-2 conv, batch norm, a dilated conv (whose input gradient goes through the CPU conv
/// op's backward), a linear layer over the 16 positions, layer norm, mean pooling and a head:
/// every record kind of the fast path (conv, channel norm, positional linear, trailing norm,
/// plain linear).
struct Net {
    conv: nn::Conv2d,
    bn: nn::BatchNorm,
    dil: nn::Conv2d,
    mix: nn::Linear,
    ln: nn::LayerNorm,
    head: nn::Linear,
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let h = nn::relu(&self.bn.forward(&self.conv.forward(x)?)?)?; // (n, 4, 4, 4)
        let h = nn::relu(&self.dil.forward(&h)?)?; // same size
        let tokens = h.flatten_from(2)?.transpose(1, 2)?; // (n, 16, 4)
        let t = nn::gelu(&self.ln.forward(&self.mix.forward(&tokens)?)?)?; // (n, 16, 6)
        self.head.forward(&t.mean(1)?)
    }
}

/// The net with every variable (batch norm statistics included) set to seeded values.
fn net(dtype: DType, seed: u64) -> (Net, VarMap) {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, dtype, &Device::Cpu);
    let cfg = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
    let net = Net {
        conv: nn::conv2d(2, 4, 3, cfg, vb.pp("conv")).unwrap(),
        bn: nn::batch_norm(4, 1e-5, vb.pp("bn")).unwrap(),
        dil: nn::conv2d(4, 4, 3, Conv2dConfig { padding: 2, dilation: 2, ..Default::default() }, vb.pp("dil")).unwrap(),
        mix: nn::linear(4, 6, vb.pp("mix")).unwrap(),
        ln: nn::layer_norm(6, 1e-5, vb.pp("ln")).unwrap(),
        head: nn::linear(6, 3, vb.pp("head")).unwrap(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, v) in vars.data().lock().unwrap().iter() {
        let lo = if name.ends_with("running_var") { 0.5 } else { -0.6 };
        let vals: Vec<f64> = (0..v.elem_count()).map(|_| rng.random_range(lo..1.2)).collect();
        v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap();
    }
    (net, vars)
}

fn inputs(n: usize, dtype: DType, seed: u64) -> (Tensor, Tensor) {
    (rand_input(n, InputShape::new(2, 8, 8), seed, dtype, &Device::Cpu), rand_labels(n, 3, seed + 1, &Device::Cpu))
}

#[test]
fn fast_path_equals_the_candle_path_and_the_oracle() {
    let (m, vars) = net(DType::F64, 1);
    let wrapped = ModuleNet::new(&m, &vars);
    // More examples than a Gram stripe (16 rows): several stripes, a ragged last one.
    let (x, y) = inputs(37, DType::F64, 2);
    let (xb, yb) = inputs(20, DType::F64, 3);
    let oracle = reference_gram_net(&wrapped, &x, &y, &Loss::CrossEntropy).unwrap();
    let ga = reference_per_example_gradients_net(&wrapped, &x, &y, &Loss::CrossEntropy).unwrap();
    let gb = reference_per_example_gradients_net(&wrapped, &xb, &yb, &Loss::CrossEntropy).unwrap();
    let cross_oracle = ga.matmul(&gb.t().unwrap()).unwrap();
    for method in [Method::Auto, Method::Materialised] {
        // A budget that cuts the 37 examples into several chunks: diagonal and off-diagonal blocks.
        for budget in [2usize << 30, 400 << 10] {
            let opts = |fast: bool| {
                GramOptions::default().with_method(method).with_cpu_fast_path(fast).with_memory_budget_bytes(budget)
            };
            let fast = gram(&wrapped, &x, &y, &opts(true)).unwrap();
            let slow = gram(&wrapped, &x, &y, &opts(false)).unwrap();
            let what = format!("{method:?}, budget {budget}, chunk {}", fast.chunk);
            assert!(cos_err(&fast.k, &oracle) < COS_TOL_F64, "{what}");
            assert!(rel_err(&fast.k, &slow.k) < REL_TOL_PATHS, "{what}: {}", rel_err(&fast.k, &slow.k));
            assert_eq!(fast.per_layer.len(), slow.per_layer.len());
            for ((name, a), (_, b)) in fast.per_layer.iter().zip(&slow.per_layer) {
                assert!(rel_err(a, b) < REL_TOL_PATHS, "{what}: layer {name}");
            }
            if method == Method::Materialised {
                assert!(fast.routes.iter().all(|r| r.form == LayerForm::Materialised), "{what}: {:?}", fast.routes);
            }
            if budget < 1 << 20 {
                assert!(fast.chunk < 37, "{what}: the small budget must give several chunks");
            }
            let cf = cross_gram(&wrapped, &x, &y, &xb, &yb, &opts(true)).unwrap();
            let cs = cross_gram(&wrapped, &x, &y, &xb, &yb, &opts(false)).unwrap();
            assert!(rel_err(&cf.k, &cross_oracle) < COS_TOL_F64, "{what}: cross");
            assert!(rel_err(&cf.k, &cs.k) < REL_TOL_PATHS, "{what}: cross paths");
        }
    }
}

/// `K`, the per-layer Grams and the losses as bits.
fn bits(r: &stiff_gradkernel::GramResult) -> (Vec<u64>, Vec<Vec<u64>>, Vec<u64>) {
    let b = |t: &Tensor| -> Vec<u64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .map(f64::to_bits)
            .collect()
    };
    (b(&r.k), r.per_layer.iter().map(|(_, k)| b(k)).collect(), r.loss_per_example.iter().map(|v| v.to_bits()).collect())
}

#[test]
fn fast_path_is_bit_identical_at_1_2_3_threads() {
    let (m, vars) = net(DType::F32, 4);
    let wrapped = ModuleNet::new(&m, &vars);
    // 37 examples: several gradient blocks and Gram stripes, with ragged last ones.
    let (x, y) = inputs(37, DType::F32, 5);
    for method in [Method::Auto, Method::Materialised] {
        for (per_layer, budget) in [(true, 2usize << 30), (false, 300 << 10)] {
            let opts =
                GramOptions::default().with_method(method).with_per_layer(per_layer).with_memory_budget_bytes(budget);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| gram(&wrapped, &x, &y, &opts).unwrap())
            };
            let one = run(1);
            let what = format!("{method:?}, per-layer {per_layer}, chunk {}", one.chunk);
            let k: Vec<f32> = one.k.flatten_all().unwrap().to_vec1().unwrap();
            assert!(k.iter().all(|v| v.is_finite()) && k.iter().any(|&v| v != 0.0), "{what}: informative K");
            for t in [2, 3] {
                assert!(bits(&one) == bits(&run(t)), "{what}: 1 and {t} threads differ");
            }
        }
    }
}
