//! The routes ONNX graphs bring: dense layers over token positions with the weight held either
//! way (`nn::linear_forward`, `nn::linear_t_forward`), a learned positional table added to
//! activations (`nn::add_offset`), against the one-backward-per-example oracle in f64, square
//! and cross, ghost and materialised forced, with chunking forced by a small budget.

mod common;

use candle::{Device, Tensor, Var};
use common::cos_err;
use stiff_gradkernel::{
    cross_gram_net, gram, nn, reference_gram_net, reference_per_example_gradients_net, GramOptions, LayerForm, Loss,
    Method, Network,
};

/// f64 end to end against the oracle, in cosine units.
const COS_TOL_F64: f64 = 1e-10;
const T: usize = 5;

/// `x (N, T, 4) -> x W1 + b1 (W1 held (4, 6)) -> + P (T, 6) -> relu -> h W2ᵀ (W2 (6, 6)) ->
/// + s (1, 1, 6) (broadcast over positions) -> mean over T -> z W3 + b3 (W3 held (6, 3))`.
struct SeqNet {
    w1: Var,
    b1: Var,
    pos: Var,
    w2: Var,
    shift: Var,
    w3: Var,
    b3: Var,
}

fn var(n: usize, shape: &[usize], seed: usize) -> Var {
    let v: Vec<f64> = (0..n).map(|i| (((i * 7 + seed * 13) % 19) as f64 - 9.0) / 10.0).collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
}

impl SeqNet {
    fn new() -> Self {
        Self {
            w1: var(24, &[4, 6], 1),
            b1: var(6, &[6], 2),
            pos: var(30, &[T, 6], 3),
            w2: var(36, &[6, 6], 4),
            shift: var(6, &[1, 1, 6], 7),
            w3: var(18, &[6, 3], 5),
            b3: var(3, &[3], 6),
        }
    }
}

impl Network for SeqNet {
    fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
        let h = nn::linear_t_forward("in", x, self.w1.as_tensor(), Some(self.b1.as_tensor()))?;
        let h = nn::relu(&nn::add_offset("pos", &h, self.pos.as_tensor())?)?;
        let h = nn::linear_forward("mid", &h, self.w2.as_tensor(), None)?;
        let h = nn::add_offset("shift", &h, self.shift.as_tensor())?;
        let z = h.mean(1)?;
        nn::linear_t_forward("head", &z, self.w3.as_tensor(), Some(self.b3.as_tensor()))
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        [
            ("w1", &self.w1),
            ("b1", &self.b1),
            ("pos", &self.pos),
            ("w2", &self.w2),
            ("shift", &self.shift),
            ("w3", &self.w3),
            ("b3", &self.b3),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }
}

/// `(n, T, 4)` inputs: every third example all zero, the rest a fixed pattern with zeros, so
/// some ReLU inputs sit exactly at the bias plus table.
fn inputs(n: usize, seed: usize) -> (Tensor, Tensor) {
    let v: Vec<f64> = (0..n * T * 4)
        .map(|i| {
            let e = i / (T * 4);
            if e % 3 == 0 || i % 5 == 0 {
                0.0
            } else {
                (((i * 11 + seed) % 17) as f64 - 8.0) / 6.0
            }
        })
        .collect();
    let x = Tensor::from_vec(v, (n, T, 4), &Device::Cpu).unwrap();
    let y =
        Tensor::from_vec((0..n as u32).map(|i| (i + seed as u32) % 3).collect::<Vec<_>>(), n, &Device::Cpu).unwrap();
    (x, y)
}

fn opts(method: Method, budget: Option<usize>) -> GramOptions {
    let mut o = GramOptions::default();
    o.method = method;
    o.per_layer = true;
    if let Some(b) = budget {
        o.memory_budget_bytes = b;
    }
    o
}

#[test]
fn positional_dense_and_offset_routes_equal_the_oracle() {
    let net = SeqNet::new();
    let (x, y) = inputs(21, 0);
    let oracle = reference_gram_net(&net, &x, &y, &Loss::CrossEntropy).unwrap();
    for method in [Method::Auto, Method::Factorised, Method::Materialised] {
        for budget in [None, Some(48 << 10)] {
            let r = gram(&net, &x, &y, &opts(method, budget)).unwrap();
            let err = cos_err(&r.k, &oracle);
            assert!(err < COS_TOL_F64, "{method:?} budget {budget:?}: {err:.3e}");
            let forms: Vec<(String, LayerForm)> = r.routes.iter().map(|u| (u.name.clone(), u.form)).collect();
            assert!(forms.iter().all(|(_, f)| *f != LayerForm::Fallback), "{forms:?}");
            assert!(forms.iter().any(|(n, _)| n == "pos"), "the table has its own route: {forms:?}");
            if method == Method::Factorised {
                assert!(forms.contains(&("in".to_string(), LayerForm::Ghost)), "{forms:?}");
            }
            if budget.is_some() {
                assert!(r.chunk < 21, "the small budget forces chunks (chunk {})", r.chunk);
            }
        }
    }
}

#[test]
fn positional_cross_gram_equals_the_oracle() {
    let net = SeqNet::new();
    let (xa, ya) = inputs(13, 1);
    let (xb, yb) = inputs(8, 2);
    let ga = reference_per_example_gradients_net(&net, &xa, &ya, &Loss::CrossEntropy).unwrap();
    let gb = reference_per_example_gradients_net(&net, &xb, &yb, &Loss::CrossEntropy).unwrap();
    let want = ga.matmul(&gb.t().unwrap()).unwrap();
    for budget in [None, Some(48 << 10)] {
        let r = cross_gram_net(&net, &xa, &ya, &xb, &yb, &Loss::CrossEntropy, &opts(Method::Auto, budget)).unwrap();
        let (a, b) = (r.k.to_vec2::<f64>().unwrap(), want.to_vec2::<f64>().unwrap());
        let na: Vec<f64> = ga.sqr().unwrap().sum(1).unwrap().sqrt().unwrap().to_vec1().unwrap();
        let nb: Vec<f64> = gb.sqr().unwrap().sum(1).unwrap().sqrt().unwrap().to_vec1().unwrap();
        for i in 0..13 {
            for j in 0..8 {
                let e = (a[i][j] - b[i][j]).abs() / (na[i] * nb[j]);
                assert!(e < COS_TOL_F64, "K[{i},{j}] {} vs {} (budget {budget:?})", a[i][j], b[i][j]);
            }
            assert!((r.norms_a[i] - na[i]).abs() / na[i] < COS_TOL_F64);
        }
    }
}
