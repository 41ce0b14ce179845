//! Bring your own model: a small CNN written with candle (stride-2 conv, eval-mode batch norm, a
//! residual block, global average pooling, a learnable gate that no tapped layer covers) run
//! through the exact Gram, printing the routes, a check against the per-example oracle, and the
//! class stiffness.
//!
//! `cargo run --release -p stiff-gradkernel --example own_model [N]`
//!
//! The only changes to ordinary candle code: layers come from `stiff_gradkernel::nn` instead of
//! `candle_nn` (same constructors, same `VarBuilder` paths), and ReLU / pooling use the
//! convention-correct functions from the same module.

use candle::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv2dConfig, Optimizer, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_gradkernel::nn::{self, BatchNorm, Conv2d, Linear};
use stiff_gradkernel::{gram_net, reference_gram_net, GramOptions, Loss, ModuleNet, Network};

const CLASSES: usize = 4;

/// conv(3x3, stride 2) -> BN -> ReLU -> [residual: conv -> BN -> ReLU -> conv, times a learnable
/// gate] -> ReLU -> global average pool -> linear.
struct Net {
    stem: Conv2d,
    stem_bn: BatchNorm,
    res_a: Conv2d,
    res_bn: BatchNorm,
    res_b: Conv2d,
    /// A bare parameter used outside any tapped layer: it takes the exact fallback route.
    gate: Tensor,
    head: Linear,
}

impl Net {
    fn new(vb: VarBuilder) -> candle::Result<Self> {
        let s2 = Conv2dConfig { stride: 2, padding: 1, ..Default::default() };
        let same = Conv2dConfig { padding: 1, ..Default::default() };
        Ok(Self {
            stem: nn::conv2d(3, 8, 3, s2, vb.pp("stem"))?,
            stem_bn: nn::batch_norm(8, 1e-5, vb.pp("stem_bn"))?,
            res_a: nn::conv2d(8, 8, 3, same, vb.pp("res.a"))?,
            res_bn: nn::batch_norm(8, 1e-5, vb.pp("res.bn"))?,
            res_b: nn::conv2d_no_bias(8, 8, 3, same, vb.pp("res.b"))?,
            gate: vb.get_with_hints((), "res.gate", candle_nn::Init::Const(0.5))?,
            head: nn::linear(8, CLASSES, vb.pp("head"))?,
        })
    }
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let h = nn::relu(&self.stem_bn.forward(&self.stem.forward(x)?)?)?;
        let r = self.res_b.forward(&nn::relu(&self.res_bn.forward(&self.res_a.forward(&h)?)?)?)?;
        let h = nn::relu(&(h + r.broadcast_mul(&self.gate)?)?)?;
        self.head.forward(&nn::global_avg_pool(&h)?)
    }
}

/// Class-dependent images `(n, 3, 16, 16)`: a bright quadrant per class on noise, flat background.
fn data(n: usize, seed: u64) -> candle::Result<(Tensor, Vec<u32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v = vec![0f32; n * 3 * 16 * 16];
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i % CLASSES) as u32;
        y.push(c);
        let (r0, c0) = ((c as usize / 2) * 8, (c as usize % 2) * 8);
        for ch in 0..3 {
            for r in 0..16 {
                for col in 0..16 {
                    let inside = (r0..r0 + 8).contains(&r) && (c0..c0 + 8).contains(&col);
                    v[((i * 3 + ch) * 16 + r) * 16 + col] =
                        if inside { 1.0 + 0.3 * rng.random_range(-1.0f32..1.0) } else { 0.0 };
                }
            }
        }
    }
    Ok((Tensor::from_vec(v, (n, 3, 16, 16), &Device::Cpu)?, y))
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(48);
    let vars = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;

    // A few SGD steps so the stiffness is not that of a random net.
    let (xt, yt) = data(64, 1)?;
    let yt = Tensor::new(yt.as_slice(), &Device::Cpu)?;
    // Trainable parameters only (the batch norm running statistics are buffers).
    let params = ModuleNet::new(&net, &vars).parameters().into_iter().map(|(_, v)| v).collect();
    let mut opt = candle_nn::SGD::new(params, 0.1)?;
    for _ in 0..30 {
        let loss = candle_nn::loss::cross_entropy(&net.forward(&xt)?, &yt)?;
        opt.backward_step(&loss)?;
    }

    let (x, y) = data(n, 2)?;
    let yl = Tensor::new(y.as_slice(), &Device::Cpu)?;
    let model = ModuleNet::new(&net, &vars);
    let r = gram_net(&model, &x, &yl, &Loss::CrossEntropy, &GramOptions::default())?;
    println!("N = {n}, Gram in {:.3} s (chunk {})", r.seconds, r.chunk);
    for u in &r.routes {
        println!("  {:<10} {:?}  {:?}", u.name, u.form, u.params);
    }
    // The independent check: one autograd backward per example (slow; a few examples).
    let m = n.min(8);
    let oracle = reference_gram_net(&model, &x.narrow(0, 0, m)?, &yl.narrow(0, 0, m)?, &Loss::CrossEntropy)?;
    let k = r.k.narrow(0, 0, m)?.narrow(1, 0, m)?.to_dtype(DType::F64)?;
    let diag = oracle.to_vec2::<f64>()?.iter().enumerate().map(|(i, r)| r[i].sqrt()).collect::<Vec<_>>();
    let d = (k - &oracle)?.abs()?.to_vec2::<f64>()?;
    let worst = (0..m)
        .flat_map(|i| (0..m).map(move |j| (i, j)))
        .map(|(i, j)| d[i][j] / (diag[i] * diag[j]))
        .fold(0f64, f64::max);
    println!("max |K - K_oracle| / sqrt(K_ii K_jj) on the first {m} examples: {worst:.2e}");
    // f32 rounding of two different summation orders, in cosine units.
    anyhow::ensure!(worst < 1e-4, "the fast Gram disagrees with the per-example oracle ({worst:.2e})");

    let k = stiff_gradkernel::to_ndarray_f64(&r.k)?;
    let cs = stiff_analysis::class_stiffness(k.view(), &y, CLASSES, &stiff_analysis::StiffnessSettings::default())?;
    println!("sign stiffness: within {:.3}, between {:.3}", cs.sign.within, cs.sign.between);
    println!("cosine stiffness: within {:.3}, between {:.3}", cs.cosine.within, cs.cosine.between);
    let acc = net.forward(&x)?.argmax(D::Minus1)?.eq(&yl)?.to_dtype(DType::F32)?.mean_all()?.to_scalar::<f32>()?;
    println!("accuracy on these examples: {acc:.2}");
    Ok(())
}
