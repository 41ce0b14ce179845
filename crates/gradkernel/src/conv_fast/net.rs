//! The chain in the conv kernel's terms (host copies of the weights, per-layer shapes) and the
//! test of whether a chain is one the kernel covers.

use candle::{DType, Tensor};
use stiff_models::{Layer, LayerKind};

use crate::chain;
use crate::error::Result;
use crate::options::{DeltaRoute, GramOptions, Method};

/// The float types the kernel runs in (f32, f64).
pub(crate) trait Real: candle::WithDType + stiff_gemm::Scalar + Default {}
impl<T: candle::WithDType + stiff_gemm::Scalar + Default> Real for T {}

pub(super) use crate::rowmajor::matmul as mm;

/// Marks a pooled element whose gradient is zero (its maximum is 0 after ReLU).
pub(super) const NO_GRAD: u16 = u16::MAX;

/// One conv block: `w: (c_out, c_in*k*k)` row-major, `b: (c_out)`; input and pre-activation
/// are `h x wd`, the pooled output `ho x wo` (floor mode).
pub(super) struct Conv<T> {
    pub w: Vec<T>,
    pub b: Vec<T>,
    pub c_in: usize,
    pub h: usize,
    pub wd: usize,
    pub c_out: usize,
    pub k: usize,
    pub pad: usize,
    pub pool: usize,
    pub ho: usize,
    pub wo: usize,
}

impl<T> Conv<T> {
    pub(super) fn s(&self) -> usize {
        self.h * self.wd
    }
    pub(super) fn f(&self) -> usize {
        self.c_in * self.k * self.k
    }
    pub(super) fn in_len(&self) -> usize {
        self.c_in * self.s()
    }
    pub(super) fn delta_len(&self) -> usize {
        self.c_out * self.s()
    }
    pub(super) fn pooled_len(&self) -> usize {
        self.c_out * self.ho * self.wo
    }
    /// Parameters: weights then bias.
    pub(super) fn p(&self) -> usize {
        self.c_out * self.f() + self.c_out
    }
}

/// The dense head: `w: (classes, feat)`, `b: (classes)`.
pub(super) struct Head<T> {
    pub w: Vec<T>,
    pub b: Vec<T>,
    pub feat: usize,
    pub classes: usize,
}

/// The chain in the kernel's terms: conv blocks, then the dense head.
pub(super) struct Net<T> {
    pub convs: Vec<Conv<T>>,
    pub head: Head<T>,
}

/// Whether the model is a conv chain this kernel covers: conv+ReLU+pool blocks (stride 1, same
/// padding, pooling windows addressable in `u16`), then one dense head without ReLU on their
/// flattened output.
pub(super) fn supported(layers: &[Layer]) -> bool {
    let Some((head, convs)) = layers.split_last() else { return false };
    if convs.is_empty() || head.kind != LayerKind::Dense || head.relu {
        return false;
    }
    let mut expect: Option<Vec<usize>> = None;
    for l in convs {
        let LayerKind::Conv2d { kernel, padding, pool } = l.kind else { return false };
        let ok = l.relu
            && pool >= 1
            && l.in_dims.len() == 3
            && l.out_dims.len() == 3
            && l.in_dims[1..] == l.out_dims[1..]
            && kernel == 2 * padding + 1
            && l.out_dims[1] * l.out_dims[2] < NO_GRAD as usize
            && expect.as_ref().is_none_or(|e| *e == l.in_dims);
        if !ok {
            return false;
        }
        expect = Some(vec![l.out_dims[0], l.out_dims[1] / pool, l.out_dims[2] / pool]);
    }
    expect.is_some_and(|e| head.in_dims == [e.iter().product::<usize>()])
}

/// Whether the dispatch ([`crate::engine`]) should try this kernel on a chain.
pub(crate) fn applies(layers: &[Layer], opts: &GramOptions) -> bool {
    opts.cpu_fast_path
        && opts.method == Method::Auto
        && opts.delta_route == DeltaRoute::Auto
        && !layers.is_empty()
        && chain::device(layers).is_cpu()
        && matches!(chain::dtype(layers), DType::F32 | DType::F64)
        && supported(layers)
}

pub(super) fn host<T: Real>(t: &Tensor) -> Result<Vec<T>> {
    Ok(t.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1::<T>()?)
}

pub(super) fn net<T: Real>(layers: &[Layer]) -> Result<Net<T>> {
    let (head, convs) = layers.split_last().expect("checked by `supported`");
    let convs = convs
        .iter()
        .map(|l| {
            let LayerKind::Conv2d { kernel, padding, pool } = l.kind else { unreachable!("checked by `supported`") };
            Ok(Conv {
                w: host(l.weight.as_tensor())?,
                b: host(l.bias.as_tensor())?,
                c_in: l.in_dims[0],
                h: l.in_dims[1],
                wd: l.in_dims[2],
                c_out: l.out_dims[0],
                k: kernel,
                pad: padding,
                pool,
                ho: l.out_dims[1] / pool,
                wo: l.out_dims[2] / pool,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let head = Head {
        w: host(head.weight.as_tensor())?,
        b: host(head.bias.as_tensor())?,
        feat: head.in_dims[0],
        classes: head.out_dims[0],
    };
    Ok(Net { convs, head })
}
